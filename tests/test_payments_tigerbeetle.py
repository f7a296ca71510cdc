"""Parity with TigerBeetle, measured on every run: its own state-machine test tables, replayed here.

The tables are ported from TigerBeetle's ``src/state_machine_tests.zig`` at the commit named in
``tigerbeetle_tables.SOURCE_COMMIT`` (41 tables, 1,205 rows) and replayed against the embedded engine by
``tigerbeetle_parity.py``. Every row must either agree or fall under one of the deliberate differences
listed in ``tigerbeetle_parity.DELIBERATE`` (and in docs/payments.md). ``python tests/tigerbeetle_parity.py``
prints every row that differs.
"""

from __future__ import annotations

from pathlib import Path

from tigerbeetle_parity import DELIBERATE, run_tables, summary
from tigerbeetle_tables import SOURCE_COMMIT, TABLES

#: Rows that agree today; a change to the rules that loses one fails here (raise it when rows are gained).
AGREE_AT_LEAST = 1026


def test_tigerbeetle_state_machine_tables(tmp_path: Path) -> None:
    outcomes = run_tables(TABLES, tmp_path)
    print("\n" + summary(outcomes, SOURCE_COMMIT))
    assert len(outcomes) == 1205
    unexplained = [o for o in outcomes if not o.agrees and not o.deliberate]
    assert unexplained == [], "\n".join(f"line {o.line} {o.action}: {o.detail}" for o in unexplained)
    assert all(o.deliberate in DELIBERATE for o in outcomes if not o.agrees)
    assert sum(o.agrees for o in outcomes) >= AGREE_AT_LEAST
