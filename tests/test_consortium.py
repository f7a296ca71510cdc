"""Governance: every configuration change needs admins of a majority of organisations."""

from __future__ import annotations

from conftest import NOW_MS, Chain
from liangcao.codes import Code
from liangcao.crypto import keys
from liangcao.node.genesis import make_org


def admins(chain: Chain, *orgs: str) -> list:  # type: ignore[type-arg]
    return [chain.signer(o, "admin") for o in orgs]


def test_add_org_needs_a_majority(chain: Chain) -> None:
    org4 = make_org("org4", "insurer", now_ms=NOW_MS)
    args = org4.org_args()
    assert chain.run("consortium", "add_org", args, *admins(chain, "org1"))["code"] == Code.QUORUM_NOT_MET
    # members (not admins) do not count
    r = chain.run("consortium", "add_org", args, chain.signer("org1", "admin"), chain.signer("org2", "alice"))
    assert r["code"] == Code.QUORUM_NOT_MET
    assert chain.run("consortium", "add_org", args, *admins(chain, "org1", "org2"))["code"] == Code.OK
    # the new organisation's members can now transact
    r = chain.run("demo.wallet", "mint", {"to": "org4/alice", "amount": 3}, org4.signer("admin"))
    assert r["code"] == Code.OK
    # with 4 organisations, a majority is 3
    org5 = make_org("org5", "logistics", now_ms=NOW_MS)
    r = chain.run("consortium", "add_org", org5.org_args(), *admins(chain, "org1", "org2"))
    assert r["code"] == Code.QUORUM_NOT_MET
    assert (
        chain.run("consortium", "add_org", args, *admins(chain, "org1", "org2", "org3"))["code"] == Code.ALREADY_EXISTS
    )


def test_add_org_refuses_bad_ca(chain: Chain) -> None:
    org4 = make_org("org4", "insurer", now_ms=NOW_MS)
    args = {**org4.org_args(), "org_id": "org5"}
    r = chain.run("consortium", "add_org", args, *admins(chain, "org1", "org2"))
    assert r["code"] == Code.INVALID_ARGUMENT and "org4" in r["message"]
    args = {**org4.org_args(), "ca_cert": keys.b64(org4.members["alice"].cert)}
    assert chain.run("consortium", "add_org", args, *admins(chain, "org1", "org2"))["code"] == Code.INVALID_ARGUMENT


def test_remove_org_retires_its_members(chain: Chain) -> None:
    assert chain.run("consortium", "remove_org", {"org_id": "org3"}, *admins(chain, "org1", "org2"))["code"] == Code.OK
    r = chain.run("demo.wallet", "mint", {"to": "org3/alice", "amount": 3}, chain.signer("org3", "admin"))
    assert r["code"] == Code.UNKNOWN_ORGANIZATION
    cfg = chain.ledger.query("consortium", "config", {})
    assert [o["active"] for o in cfg["orgs"]] == [True, True, False]
    # with two organisations left, a majority is both
    r = chain.run("consortium", "remove_org", {"org_id": "org2"}, *admins(chain, "org1"))
    assert r["code"] == Code.QUORUM_NOT_MET


def test_rotate_ca_retires_old_certificates(chain: Chain) -> None:
    fresh = make_org("org2", "supplier", now_ms=NOW_MS)
    r = chain.run(
        "consortium",
        "rotate_ca",
        {"org_id": "org2", "ca_cert": keys.b64(fresh.ca_cert)},
        *admins(chain, "org1", "org3"),
    )
    assert r["code"] == Code.OK
    old = chain.run("demo.wallet", "transfer", {"to": "org1/bob", "amount": 1}, chain.signer("org2", "alice"))
    assert old["code"] == Code.UNKNOWN_CERTIFICATE
    new = chain.run("demo.wallet", "transfer", {"to": "org1/bob", "amount": 1}, fresh.signer("alice"))
    assert new["code"] == Code.INSUFFICIENT_FUNDS  # authenticated; merely poor


def test_revoke_certificate(chain: Chain) -> None:
    alice = chain.c.org("org1").members["alice"]
    from liangcao.crypto.identity import fingerprint

    fp = fingerprint(alice.cert)
    r = chain.run(
        "consortium", "revoke_cert", {"fingerprint": fp, "reason": "key lost"}, *admins(chain, "org2", "org3")
    )
    assert r["code"] == Code.OK
    r = chain.run("demo.wallet", "transfer", {"to": "org1/bob", "amount": 1}, alice.signer)
    assert r["code"] == Code.CERTIFICATE_REVOKED
    r = chain.run("consortium", "revoke_cert", {"fingerprint": fp}, *admins(chain, "org2", "org3"))
    assert r["code"] == Code.ALREADY_EXISTS
    r = chain.run("consortium", "revoke_cert", {"fingerprint": "zz"}, *admins(chain, "org2", "org3"))
    assert r["code"] == Code.INVALID_ARGUMENT


def test_set_policy(chain: Chain) -> None:
    r = chain.run(
        "consortium", "set_policy", {"name": "governance", "num": 2, "den": 3}, *admins(chain, "org1", "org2")
    )
    assert r["code"] == Code.OK
    # now more than 2/3 of 3 organisations, i.e. all three, must sign
    org4 = make_org("org4", "insurer", now_ms=NOW_MS)
    assert (
        chain.run("consortium", "add_org", org4.org_args(), *admins(chain, "org1", "org2"))["code"]
        == Code.QUORUM_NOT_MET
    )
    assert (
        chain.run("consortium", "add_org", org4.org_args(), *admins(chain, "org1", "org2", "org3"))["code"] == Code.OK
    )
    for bad in ({"name": "nope", "num": 1, "den": 2}, {"name": "finality", "num": 3, "den": 2}):
        r = chain.run("consortium", "set_policy", bad, *admins(chain, "org1", "org2", "org3"), org4.signer("admin"))
        assert r["code"] == Code.INVALID_ARGUMENT
    cfg = chain.ledger.query("consortium", "config", {})
    assert cfg["policies"]["governance"] == {"num": 2, "den": 3}
    assert cfg["version"] == 3
