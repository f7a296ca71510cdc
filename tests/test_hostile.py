"""A hostile member, an outsider with any self-signed certificate, and a client sending odd bytes: each attack
is performed against the real code (a node, the executor, the HTTP API) and must be refused, changing nothing.
The attacks through real nats-servers are in ``test_hostile_consortium.py``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import NOW_MS, Chain, Live
from liangcao import encoding
from liangcao.codes import Code
from liangcao.crypto import keys
from liangcao.errors import LiangcaoError, TxRejected
from liangcao.ledger import tx as txm
from liangcao.node.genesis import Consortium, create_consortium, make_org
from liangcao.node.node import Node, NodeSettings
from liangcao.node.verify import SigVerifier
from liangcao.ordering.jetstream import BlockDeriver, CutMarker


def forged_copy(genuine: txm.Tx, *extra: txm.Signer) -> bytes:
    """The genuine body and signatures, plus ``extra`` members' certificates with junk signatures."""
    env: Any = encoding.decode(genuine.raw)
    for s in extra:
        env["signatures"].append({"cert": keys.b64(s.cert), "sig": keys.b64(b"\x01" * 64)})
    return encoding.canonical(env)


def admins(c: Consortium, *orgs: str) -> list[txm.Signer]:
    return [c.org(o).signer("admin") for o in orgs]


# ---- 1. a forged copy never borrows the genuine copy's signature verdict ---------------------------------


def test_forged_copy_in_the_same_block_gets_its_own_verdict(chain: Chain) -> None:
    org4 = make_org("org4", "insurer", now_ms=NOW_MS)
    genuine = chain.tx("consortium", "add_org", org4.org_args(), *admins(chain.c, "org1"))
    forged = forged_copy(genuine, chain.signer("org2", "admin"))
    assert txm.parse(forged).tx_id == genuine.tx_id and forged != genuine.raw
    parsed = [txm.parse(forged), genuine]
    verdicts = SigVerifier(workers=1).verify(parsed)  # what the node computes, in parallel, before executing
    assert verdicts == {parsed[0].envelope_id: False, genuine.envelope_id: True}
    chain.time_ms += 1000
    _, ex = chain.ledger.produce(
        [forged, genuine.raw], chain.time_ms, chain.signer("org1", "orderer0"), verdicts, parsed
    )
    codes = ex.codes
    assert codes == [Code.BAD_SIGNATURE, Code.QUORUM_NOT_MET]  # the forged vote did not count
    assert ex.consumed == [False, True]
    assert [o["org_id"] for o in chain.ledger.query("consortium", "config", {})["orgs"]] == ["org1", "org2", "org3"]


def test_a_block_never_takes_two_envelopes_of_one_tx_id(consortium: Consortium) -> None:
    c = consortium
    admin, alice, bob = c.org("org1").signer("admin"), c.org("org1").signer("alice"), c.org("org2").signer("bob")
    t = txm.build(c.chain_id, "demo.wallet", "mint", {"to": "org1/a", "amount": 1}, [admin], not_after=NOW_MS)
    other = txm.build(c.chain_id, "demo.wallet", "mint", {"to": "org1/b", "amount": 1}, [admin], not_after=NOW_MS)
    forged = forged_copy(t, c.org("org2").signer("alice"))
    orderer = c.org("org1").signer("orderer0")

    def cut(h: int) -> bytes:
        return CutMarker.make(c.chain_id, h, NOW_MS, orderer.member_id, orderer.key, orderer.cert).to_bytes()

    # forged copies first (many of them): dropped by their signatures, the genuine one is taken in their place
    d = BlockDeriver(c.chain_id, 1, verify_cut=lambda _m: True)
    msgs = [forged, other.raw, *[forged_copy(t, bob)] * 3, t.raw]
    for seq, data in enumerate(msgs, start=1):
        assert d.feed(seq, "tx", data) is None
    b1 = d.feed(len(msgs) + 1, "cut", cut(1))
    assert b1 is not None and b1.txs == (t.raw, other.raw)
    assert d.pending == []
    # two genuine spellings of one transaction (two signers, either order): consecutive blocks
    two = txm.build(
        c.chain_id, "demo.wallet", "transfer", {"to": "org1/b", "amount": 1}, [alice, bob], not_after=NOW_MS
    )
    env: Any = encoding.decode(two.raw)
    env["signatures"].reverse()
    swapped = encoding.canonical(env)
    d.feed(10, "tx", two.raw)
    d.feed(11, "tx", swapped)
    b2 = d.feed(12, "cut", cut(2))
    assert b2 is not None and b2.txs == (two.raw,) and b2.resume_seq == 11
    b3 = d.feed(13, "cut", cut(3))
    assert b3 is not None and b3.txs == (swapped,)


def test_a_derived_block_never_exceeds_the_bounds_peers_enforce(consortium: Consortium) -> None:
    from liangcao import limits

    d = BlockDeriver(consortium.chain_id, 1, verify_cut=lambda _m: True)
    big = [b"x" * (1024 * 1024 - 1)] * 20  # 20 MB of junk in one window: more than block_bytes_max
    for seq, data in enumerate(big, start=1):
        d.feed(seq, "tx", data)
    o = consortium.org("org1").signer("orderer0")
    b = d.feed(21, "cut", CutMarker.make(consortium.chain_id, 1, NOW_MS, o.member_id, o.key, o.cert).to_bytes())
    assert b is not None and sum(map(len, b.txs)) <= limits.block_bytes_max and len(d.pending) == 20 - len(b.txs)


# ---- 7 and 8: admission refuses what can never authenticate ---------------------------------------------


@pytest.fixture
def node(tmp_path: Path) -> Any:
    c = create_consortium(3, now_ms=int(time.time() * 1000))
    n = Node(
        tmp_path / "n.sqlite",
        c.genesis,
        orderer=c.org("org1").signer("orderer0"),
        peer=c.org("org1").signer("peer0"),
        settings=NodeSettings(verify_workers=1, block_wait_ms=5),
    )
    n.start()
    yield n, c
    n.stop()


def _wait_committed(n: Node, tx_id: str) -> tuple[int, int, int]:
    deadline = time.monotonic() + 10
    while (pos := n.position(tx_id)) is None:
        assert time.monotonic() < deadline, "not committed"
        time.sleep(0.01)
    return pos


def test_outsider_certificates_never_reach_ordering(node: Any) -> None:
    n, c = node
    fake = make_org("org2", c.org("org2").org_type)  # a CA of its own that merely names org2
    stranger = make_org("org9", "bank")
    now = n.clock.now_ms() + 60_000
    for signer, code in (
        (fake.signer("admin"), Code.UNKNOWN_CERTIFICATE),
        (stranger.signer("admin"), Code.UNKNOWN_ORGANIZATION),
    ):
        t = txm.build(c.chain_id, "demo.wallet", "mint", {"to": "org1/x", "amount": 1}, [signer], not_after=now)
        with pytest.raises(TxRejected) as exc:
            n.submit(t.raw)
        assert exc.value.code == code
    assert n.pending_count() == 0
    # a batch: each refused on its own, nothing admitted
    bad = [
        txm.build(
            c.chain_id, "demo.wallet", "mint", {"to": "org1/x", "amount": i}, [stranger.signer("alice")], not_after=now
        ).raw
        for i in range(40)
    ]
    assert all(isinstance(r, LiangcaoError) and r.code == Code.UNKNOWN_ORGANIZATION for r in n.submit_many(bad))


def test_forged_copy_submitted_first_does_not_poison_the_genuine(node: Any) -> None:
    n, c = node
    alice = c.org("org1").signer("alice")
    mint = txm.build(
        c.chain_id,
        "demo.wallet",
        "mint",
        {"to": "org1/alice", "amount": 100},
        [c.org("org1").signer("admin")],
        not_after=n.clock.now_ms() + 60_000,
    )
    n.submit(mint.raw)
    _wait_committed(n, mint.tx_id)
    genuine = txm.build(
        c.chain_id,
        "demo.wallet",
        "transfer",
        {"to": "org2/bob", "amount": 40},
        [alice],
        not_after=n.clock.now_ms() + 60_000,
    )
    env: Any = encoding.decode(genuine.raw)
    env["signatures"][0]["sig"] = keys.b64(b"\x02" * 64)
    with pytest.raises(TxRejected) as exc:
        n.submit(encoding.canonical(env))
    assert exc.value.code == Code.BAD_SIGNATURE
    # a batch of forged copies is refused too, verified together
    assert all(
        isinstance(r, LiangcaoError) and r.code == Code.BAD_SIGNATURE
        for r in n.submit_many([encoding.canonical(env)] * 3)
    )
    _, status = n.submit(genuine.raw)
    assert status == "pending"
    assert _wait_committed(n, genuine.tx_id)[2] == Code.OK


# ---- 4. cuts are judged by the current configuration -------------------------------------------------------


def test_cuts_of_a_removed_organisation_or_a_non_orderer_are_ignored(node: Any) -> None:
    n, c = node
    now = n.clock.now_ms()

    def marker(org: str, member: str) -> CutMarker:
        s = c.org(org).signer(member)
        return CutMarker.make(c.chain_id, n.head.height + 1, now, s.member_id, s.key, s.cert)

    assert n._verify_cut(marker("org3", "orderer0"))
    assert not n._verify_cut(marker("org3", "peer0"))  # not an orderer
    assert not n._verify_cut(CutMarker.make(c.chain_id, 1, now, "org3/orderer0", *_fake_orderer("org3", c)))
    remove = txm.build(
        c.chain_id, "consortium", "remove_org", {"org_id": "org3"}, admins(c, "org1", "org2"), not_after=now + 60_000
    )
    n.submit(remove.raw)
    assert _wait_committed(n, remove.tx_id)[2] == Code.OK
    assert not n._verify_cut(marker("org3", "orderer0"))
    assert n._verify_cut(marker("org2", "orderer0"))


def _fake_orderer(org: str, c: Consortium) -> tuple[Any, bytes]:
    fake = make_org(org, c.org(org).org_type)
    s = fake.signer("orderer0")
    return s.key, s.cert


def test_cut_time_is_bounded_by_the_streams_own_clock(consortium: Consortium) -> None:
    admin = consortium.org("org1").signer("admin")
    t = txm.build(consortium.chain_id, "demo.wallet", "mint", {"to": "org1/a", "amount": 1}, [admin], not_after=NOW_MS)
    o = consortium.org("org2").signer("orderer0")
    d = BlockDeriver(consortium.chain_id, 1, last_time_ms=NOW_MS)
    d.feed(1, "tx", t.raw, server_ms=NOW_MS)
    ahead = NOW_MS + 400 * 86_400_000
    cut = CutMarker.make(consortium.chain_id, 1, ahead, o.member_id, o.key, o.cert).to_bytes()
    assert d.feed(2, "cut", cut, server_ms=NOW_MS + 10) is None  # 400 days ahead of the stream: ignored
    behind = CutMarker.make(consortium.chain_id, 1, NOW_MS - 3_600_000, o.member_id, o.key, o.cert).to_bytes()
    assert d.feed(3, "cut", behind, server_ms=NOW_MS + 20) is None  # an hour behind: ignored too
    fair = CutMarker.make(consortium.chain_id, 1, NOW_MS + 25, o.member_id, o.key, o.cert).to_bytes()
    b = d.feed(4, "cut", fair, server_ms=NOW_MS + 30)
    assert b is not None and b.time_ms == NOW_MS + 25


# ---- governance and acting party ---------------------------------------------------------------------------


def test_policies_below_a_majority_are_refused(chain: Chain) -> None:
    for name, num, den in (("governance", 0, 2), ("finality", 0, 1), ("finality", 1, 3), ("governance", 2, 5)):
        r = chain.run(
            "consortium", "set_policy", {"name": name, "num": num, "den": den}, *admins(chain.c, "org1", "org2")
        )
        assert r["code"] == Code.INVALID_ARGUMENT, (name, num, den)
    r = chain.run(
        "consortium", "set_policy", {"name": "finality", "num": 1, "den": 2}, *admins(chain.c, "org1", "org2")
    )
    assert r["code"] == Code.OK


def test_the_acting_party_is_named_in_the_signed_body(chain: Chain) -> None:
    alice, bob = chain.signer("org1", "alice"), chain.signer("org2", "bob")
    chain.run("demo.wallet", "mint", {"to": "org1/alice", "amount": 50}, chain.signer("org1", "admin"))
    chain.run("demo.wallet", "mint", {"to": "org2/bob", "amount": 50}, chain.signer("org2", "admin"))
    # both sign; the body says bob acts: bob pays, whatever the order of the signatures
    t = txm.build(chain.c.chain_id, "demo.wallet", "transfer", {"to": "org3/x", "amount": 5}, [alice, bob],
                  not_after=chain.time_ms + 60_000, actor="org2/bob")  # fmt: skip
    assert t.actor == "org2/bob"
    env: Any = encoding.decode(t.raw)
    env["signatures"].reverse()
    swapped = encoding.canonical(env)
    assert txm.parse(swapped).tx_id == t.tx_id
    r = chain.commit([swapped])[0]
    assert r["code"] == Code.OK
    balances = chain.ledger.query("demo.wallet", "balance", {"member": "org2/bob"})
    assert balances == {"balance": 45}
    # several signers and no actor: no one may be taken to act
    env2: Any = encoding.decode(
        txm.build(
            chain.c.chain_id,
            "demo.wallet",
            "transfer",
            {"to": "org3/x", "amount": 5},
            [alice, bob],
            not_after=chain.time_ms + 60_000,
        ).raw
    )
    del env2["body"]["actor"]
    body_id = txm.body_id(env2["body"])
    env2["signatures"] = [{"cert": keys.b64(s.cert), "sig": keys.b64(s.sign_tx_id(body_id).sig)} for s in (alice, bob)]
    assert chain.commit([encoding.canonical(env2)])[0]["code"] == Code.NOT_SIGNED
    # an actor who did not sign is a missing signature (a stripped copy consumes nothing)
    t3 = txm.build(chain.c.chain_id, "demo.wallet", "transfer", {"to": "org3/x", "amount": 5}, [alice],
                   not_after=chain.time_ms + 60_000, actor="org2/bob")  # fmt: skip
    assert chain.commit([t3])[0]["code"] == Code.MISSING_SIGNATURE


def test_node_keys_take_no_business_actions() -> None:
    """A regulator's peer or orderer certificate belongs to a machine: it never freezes a voucher."""
    from scf_ledger import REGULATOR, Ledger

    led = Ledger()
    for machine in ("peer0", "orderer0"):
        assert (
            led.run("scf.vouchers", "freeze", {"voucher": "V" + "ab" * 32}, f"{REGULATOR}/{machine}")["code"]
            == Code.WRONG_ORG_TYPE
        )
    # the regulator's people pass the party check (and then meet the voucher's absence)
    assert (
        led.run("scf.vouchers", "freeze", {"voucher": "V" + "ab" * 32}, f"{REGULATOR}/alice")["code"]
        != Code.WRONG_ORG_TYPE
    )


# ---- 6. execution depends only on canonical bytes and fixed rules ------------------------------------------


def test_args_reach_contracts_in_canonical_order(consortium: Consortium) -> None:
    admin = consortium.org("org1").signer("admin")
    t = txm.build(consortium.chain_id, "demo.wallet", "mint", {"to": "org1/a", "amount": 1}, [admin], not_after=NOW_MS)
    env: Any = encoding.decode(t.raw)
    env["body"]["args"] = {"zeta": {"b": 1, "a": 2}, "alpha": 1}
    text = encoding._ENCODER.encode(env)  # canonical
    shuffled = text.replace(b'"alpha":1,"zeta":{"a":2,"b":1}', b'"zeta":{"b":1,"a":2},"alpha":1')
    assert shuffled != text
    a, b = txm.parse(text), txm.parse(shuffled)
    assert a.tx_id == b.tx_id and a.raw == b.raw
    assert list(b.args) == ["alpha", "zeta"] and list(b.args["zeta"]) == ["a", "b"]
    built = txm.build(consortium.chain_id, "demo.wallet", "mint", {"z": 1, "a": 2}, [admin], not_after=NOW_MS)
    assert list(built.args) == ["a", "z"]


def test_the_printable_table_is_isprintable_written_out() -> None:
    """On every character this interpreter knows, the fixed table answers as ``str.isprintable`` (space aside);
    it differs only on characters this interpreter's Unicode version has not assigned yet."""
    import unicodedata

    differ = [
        hex(cp)
        for cp in range(0x110000)
        if unicodedata.category(chr(cp)) != "Cn"
        and (chr(cp).isprintable() or cp == 0x20) != encoding.printable(chr(cp))
    ]
    assert differ == []


def test_names_and_keys_follow_a_fixed_table_not_the_interpreter() -> None:
    assert encoding.printable("org1/alice") and encoding.printable("voucher 7") and encoding.printable("中文")
    assert encoding.printable("\U0001fae8")  # a Unicode 15 character: the same answer on 3.11 and 3.12
    assert encoding.printable("\u2764\ufe0f") and encoding.printable("\U00030ede")  # a variation selector, CJK Ext G
    for bad in ("", "a\x00", "a\u2028b", "\u200b", "a\ufeff", "\ud800", "\U000e0001", "x\x7f", "\ue000"):
        assert not encoding.printable(bad), repr(bad)


def test_deep_json_is_refused_before_decoding() -> None:
    for deep in (b"[" * 3000 + b"]" * 3000, b'{"a":' * 3000 + b"1" + b"}" * 3000):
        with pytest.raises(LiangcaoError) as exc:
            encoding.decode(deep)
        assert exc.value.code == Code.VALUE_TOO_DEEP
        with pytest.raises(TxRejected) as exc2:
            txm.parse(deep)
        assert exc2.value.code == Code.VALUE_TOO_DEEP
    # brackets inside strings do not count
    assert encoding.decode(b'["' + b"[" * 5000 + b'"]') == ["[" * 5000]


def test_deep_json_gets_a_clear_400_from_every_json_route(tmp_path: Path) -> None:
    live = Live(tmp_path)
    try:
        deep = b"[" * 5000 + b"]" * 5000
        schema = httpx.get(f"{live.url}/openapi.json").json()
        posted = 0
        for path, ops in schema["paths"].items():
            if "post" not in ops or "{" in path:
                continue
            r = httpx.post(
                f"{live.url}{path}",
                content=deep,
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {live.token}"},
            )
            assert r.status_code < 500, (path, r.status_code, r.text[:200])
            assert r.json()["code"] != Code.INTERNAL
            posted += 1
        assert posted >= 3
    finally:
        live.stop()
