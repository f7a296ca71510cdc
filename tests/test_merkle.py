"""RFC 6962 Merkle trees: the bottom-up build equals the recursive definition; proofs verify, forgeries fail."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from liangcao.crypto import merkle


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 section 2.1, written as the RFC states it."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def test_known_values() -> None:
    assert merkle.root([]).hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    # The hash of one empty leaf, as given in RFC 6962's test data.
    assert merkle.root([b""]).hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"


leaves_st = st.lists(st.binary(max_size=8), min_size=1, max_size=40)


@given(leaves_st)
def test_root_matches_rfc_definition(leaves: list[bytes]) -> None:
    assert merkle.root(leaves) == mth(leaves)


@given(leaves_st, st.data())
def test_every_proof_verifies_and_forgeries_fail(leaves: list[bytes], data: st.DataObject) -> None:
    root = merkle.root(leaves)
    n = len(leaves)
    i = data.draw(st.integers(0, n - 1))
    path = merkle.inclusion_proof(leaves, i)
    assert merkle.verify_inclusion(leaves[i], i, n, path, root)
    assert not merkle.verify_inclusion(leaves[i] + b"x", i, n, path, root)
    if n > 1:
        j = data.draw(st.integers(0, n - 1).filter(lambda j: j != i))
        assert not merkle.verify_inclusion(leaves[i], j, n, path, root) or leaves[i] == leaves[j]
    if path:
        bad = list(path)
        bad[0] = bytes(32)
        assert not merkle.verify_inclusion(leaves[i], i, n, bad, root)
        assert not merkle.verify_inclusion(leaves[i], i, n, path[:-1], root)
    assert not merkle.verify_inclusion(leaves[i], i, n, [*path, bytes(32)], root)
    assert not merkle.verify_inclusion(leaves[i], n, n, path, root)
