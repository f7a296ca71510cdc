"""Executor rules: every kind of bad transaction gets its own stable code and changes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conftest import NOW_MS, Chain
from liangcao import encoding
from liangcao.codes import Code
from liangcao.crypto import keys
from liangcao.crypto.signer import Signer
from liangcao.ledger import tx as txm


def raw_tx(body: dict[str, Any], sigs: list[dict[str, str]]) -> bytes:
    return encoding.canonical({"body": body, "signatures": sigs})


def signed(chain: Chain, body: dict[str, Any], signer: Signer) -> bytes:
    tid = txm.body_id(body)
    s = signer.sign_tx_id(tid)
    return raw_tx(body, [{"cert": keys.b64(s.cert), "sig": keys.b64(s.sig)}])


def body(chain: Chain, **over: Any) -> dict[str, Any]:
    b = {
        "chain_id": chain.c.chain_id,
        "contract": "demo.wallet",
        "method": "mint",
        "args": {"to": "org1/alice", "amount": 5},
        "nonce": "n-" + json.dumps(sorted(over.items()), default=str)[:50],
        "not_after": chain.time_ms + 60_000,
    }
    b.update(over)
    return b


def test_each_bad_transaction_has_its_code_and_changes_nothing(chain: Chain) -> None:
    admin = chain.signer("org1", "admin")
    before = chain.state()
    from liangcao.node.genesis import make_org

    stranger = make_org("org9", "bank", now_ms=NOW_MS).signer("admin")
    impostor_ca = make_org("org1", "core_enterprise", now_ms=NOW_MS).signer("admin")  # same org id, different CA
    other_key = keys.generate()
    good = body(chain)
    tid = txm.body_id(good)
    bad_sig = {"cert": keys.b64(admin.cert), "sig": keys.b64(keys.sign(other_key, keys.DOMAIN_TX, bytes.fromhex(tid)))}
    twice = admin.sign_tx_id(tid)
    cases: list[tuple[bytes, Code]] = [
        (b"not json", Code.BAD_ENCODING),
        (b'{"body": {"amount": 1.5}, "signatures": []}', Code.FLOAT_NOT_ALLOWED),
        (encoding.canonical({"body": good}), Code.MALFORMED_TX),
        (raw_tx({k: v for k, v in good.items() if k != "nonce"}, []), Code.MALFORMED_TX),
        (signed(chain, body(chain, chain_id="other-chain"), admin), Code.WRONG_CHAIN),
        (signed(chain, body(chain, not_after=chain.time_ms - 1), admin), Code.EXPIRED),
        (signed(chain, body(chain, not_after=chain.time_ms + 10**10), admin), Code.TTL_TOO_LONG),
        (raw_tx(good, []), Code.MISSING_SIGNATURE),
        (raw_tx(good, [bad_sig]), Code.BAD_SIGNATURE),
        (raw_tx(good, [{"cert": keys.b64(b"junk"), "sig": keys.b64(b"x" * 64)}]), Code.BAD_CERTIFICATE),
        (signed(chain, body(chain, nonce="s"), stranger), Code.UNKNOWN_ORGANIZATION),
        (signed(chain, body(chain, nonce="i"), impostor_ca), Code.UNKNOWN_CERTIFICATE),
        (
            raw_tx(good, [{"cert": keys.b64(twice.cert), "sig": keys.b64(twice.sig)}] * 2),
            Code.DUPLICATE_SIGNER,
        ),
        (signed(chain, body(chain, contract="nope"), admin), Code.UNKNOWN_CONTRACT),
        (signed(chain, body(chain, method="nope"), admin), Code.UNKNOWN_METHOD),
        (signed(chain, body(chain, method="balance", args={"member": "org1/alice"}), admin), Code.UNKNOWN_METHOD),
        (signed(chain, body(chain, args={"to": "org1/alice"}), admin), Code.INVALID_ARGUMENT),
        (signed(chain, body(chain, args={"to": "org1/alice", "amount": "5"}), admin), Code.INVALID_ARGUMENT),
        (signed(chain, body(chain, args={"to": "org1/alice", "amount": -5}), admin), Code.INVALID_ARGUMENT),
        (signed(chain, body(chain, args={"to": "org1/alice", "amount": 5, "x": 1}), admin), Code.INVALID_ARGUMENT),
        (signed(chain, body(chain, nonce="r"), chain.signer("org1", "alice")), Code.WRONG_ROLE),
    ]
    receipts = chain.commit([c[0] for c in cases])
    for (_, code), r in zip(cases, receipts, strict=True):
        assert r["code"] == code, r
        assert r["message"], r
        assert r["events"] == [] and r["result"] is None
    assert chain.state() == before


def test_oversized_transaction() -> None:
    with pytest.raises(txm.TxRejected) as info:
        txm.parse(b" " * (70 * 1024))
    assert info.value.code == Code.TOO_LARGE


def test_replay_is_rejected_in_the_same_and_later_blocks(chain: Chain) -> None:
    t = chain.tx("demo.wallet", "mint", {"to": "org1/alice", "amount": 5}, chain.signer("org1", "admin"))
    assert [r["code"] for r in chain.commit([t, t])] == [Code.OK, Code.DUPLICATE_TX]
    assert chain.commit([t])[0]["code"] == Code.DUPLICATE_TX
    assert chain.ledger.query("demo.wallet", "balance", {"member": "org1/alice"}) == {"balance": 5}


def test_forged_copy_does_not_consume_the_genuine_transaction(chain: Chain) -> None:
    t = chain.tx("demo.wallet", "mint", {"to": "org1/alice", "amount": 5}, chain.signer("org1", "admin"))
    forged = encoding.decode(t.raw)
    forged["signatures"][0]["sig"] = keys.b64(bytes(64))  # type: ignore[index]
    assert [r["code"] for r in chain.commit([encoding.canonical(forged), t])] == [Code.BAD_SIGNATURE, Code.OK]


def test_failed_business_rule_consumes_the_id(chain: Chain) -> None:
    t = chain.tx("demo.wallet", "transfer", {"to": "org2/bob", "amount": 5}, chain.signer("org1", "alice"))
    assert chain.commit([t])[0]["code"] == Code.INSUFFICIENT_FUNDS
    chain.run("demo.wallet", "mint", {"to": "org1/alice", "amount": 5}, chain.signer("org1", "admin"))
    assert chain.commit([t])[0]["code"] == Code.DUPLICATE_TX  # a signer's old intent cannot be replayed later


def test_multi_signer_and_receipt_contents(chain: Chain) -> None:
    r = chain.run(
        "demo.wallet",
        "mint",
        {"to": "org2/bob", "amount": 7},
        chain.signer("org2", "admin"),
        chain.signer("org1", "bob"),
    )
    assert r["code"] == Code.OK
    assert r["result"] == {"balance": 7}
    assert r["events"] == [
        {"contract": "demo.wallet", "name": "minted", "data": {"by": "org2/admin", "to": "org2/bob", "amount": 7}}
    ]


def test_sig_ok_precomputed_verdicts_give_the_same_results(chain: Chain) -> None:
    t = chain.tx("demo.wallet", "mint", {"to": "org1/alice", "amount": 5}, chain.signer("org1", "admin"))
    h1, ex1 = chain.ledger.execute_next([t.raw], chain.time_ms + 1, sig_ok={t.envelope_id: True})
    h2, ex2 = chain.ledger.execute_next([t.raw], chain.time_ms + 1)
    assert h1 == h2 and ex1.receipts == ex2.receipts
    _, ex3 = chain.ledger.execute_next([t.raw], chain.time_ms + 1, sig_ok={t.envelope_id: False})
    assert encoding.decode(ex3.receipts[0])["code"] == Code.BAD_SIGNATURE  # type: ignore[index]
