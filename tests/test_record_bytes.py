"""Typed records store the same bytes as the dicts they replaced: no chain migration, no changed receipt.

The golden run (``golden_scenario``) goes through every built-in contract, its refusals included. Its
numbers were recorded on the code before contract records became msgspec structs (commit 0e9f211), so a
change in any stored value, receipt (code, message, result, events) or query answer fails here.
"""

from __future__ import annotations

import golden_scenario

# Recorded on commit 0e9f211 (records as dicts), before records became typed structs.
GOLDEN_STATE_HASH = "7188d289802e83183bcc3c4911cf6edefe1769637e1d459a980be624f3bc1f2b"
GOLDEN_RECEIPTS = "f3e05d195855c0e680987722097259b73de596b0c53d9def8cc70f95cb00c062"
GOLDEN_QUERIES = "37db018dd8e5ec9119fba3baa18c405a928b1522f216246e996b3791a3c37008"


def test_golden_run_gives_the_recorded_bytes() -> None:
    chain, answers = golden_scenario.run()
    assert len(chain.receipts) == 232 and len(answers) == 79
    assert golden_scenario.digest(chain.receipts) == GOLDEN_RECEIPTS
    assert chain.state_hash == GOLDEN_STATE_HASH
    assert golden_scenario.digest(answers) == GOLDEN_QUERIES
