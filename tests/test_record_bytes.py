"""Typed records store the same bytes as the dicts they replaced: no chain migration, no changed receipt.

The golden run (``golden_scenario``) goes through every built-in contract, its refusals included. Its
numbers were recorded on the code before contract records became msgspec structs (commit 0e9f211), so a
change in any stored value, receipt (code, message, result, events) or query answer fails here.
"""

from __future__ import annotations

import golden_scenario

# Recorded on commit 0e9f211 (records as dicts), before records became typed structs.
GOLDEN_STATE_HASH = "9e550cfedde64197e6710f977aea79481df224dce3b556b18c1487ab483b2f03"
GOLDEN_RECEIPTS = "650ed371b80728f967caa58258137c2d8e899de3cfe916b8fa96dae2194417de"
GOLDEN_QUERIES = "98bf0f81f93357b0b7b15bb410239606f681543901b1b267c35973dd52572573"


def test_golden_run_gives_the_recorded_bytes() -> None:
    chain, answers = golden_scenario.run()
    assert len(chain.receipts) == 232 and len(answers) == 79
    assert golden_scenario.digest(chain.receipts) == GOLDEN_RECEIPTS
    assert chain.state_hash == GOLDEN_STATE_HASH
    assert golden_scenario.digest(answers) == GOLDEN_QUERIES
