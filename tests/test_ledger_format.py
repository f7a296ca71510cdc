"""The format vectors of docs/encoding.md sections 4 and 6."""

from __future__ import annotations

from liangcao.crypto import merkle
from liangcao.ledger import block as blk


def test_merkle_vector() -> None:
    leaves = [b"a", b"b", b"c"]
    assert merkle.root(leaves).hex() == "36642e73c2540ab121e3a6bf9545b0a24982cd830eb13d3cd19de3ce6c021ec1"
    assert [p.hex() for p in merkle.inclusion_proof(leaves, 2)] == [
        "b137985ff484fb600db93107c77b0365c80d78f5b429ded0fd97361d077999eb"
    ]


def test_state_hash_vectors() -> None:
    assert blk.write_set_hash({}) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert (
        blk.chain_state_hash(blk.ZERO_HASH, blk.write_set_hash({}))
        == "1c9ecec90e28d2461650418635878a5c91e49f47586ecf75f2b0cbb94e897112"
    )
    ws = {"demo.wallet/balance/org1/alice": b"700", "demo.wallet/x": None}
    assert blk.write_set_hash(ws) == "1c0a8f60fe0e89fd9f6e6c0dd78fa16d35834a0629173c062267fdede780cee7"


def test_header_round_trip_is_canonical() -> None:
    h = blk.Header("c", 1, "00" * 32, 5, 0, "aa", "bb", "cc")
    assert blk.Header.from_bytes(h.canonical()) == h
