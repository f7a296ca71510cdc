"""A consortium in a few lines: three organisations, a few payments, a proof checked offline, an audit."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from liangcao.apps.bundle import default_registry
from liangcao.contracts.runtime import ContractRuntime
from liangcao.ledger import tx as txm
from liangcao.ledger.block import verify_proof_dict
from liangcao.ledger.chain import Ledger
from liangcao.node.audit import audit
from liangcao.node.genesis import create_consortium


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="liangcao-"))
    consortium = create_consortium(3)
    consortium.write(home / "consortium")
    ledger = Ledger.open(home / "ledger.sqlite", ContractRuntime(default_registry()))
    ledger.apply(consortium.genesis)
    org1 = consortium.org("org1")
    now = int(time.time() * 1000)

    def tx(method: str, args: dict[str, object], *signers: txm.Signer) -> txm.Tx:
        return txm.build(consortium.chain_id, "demo.wallet", method, args, list(signers), not_after=now + 60_000)

    mint = tx("mint", {"to": "org1/alice", "amount": 100_000}, org1.signer("admin"))
    pay = tx("transfer", {"to": "org2/bob", "amount": 30_000, "memo": "Double 11 stock"}, org1.signer("alice"))
    overdraw = tx("transfer", {"to": "org2/bob", "amount": 999_999}, org1.signer("alice"))
    block, ex = ledger.produce([mint.raw, pay.raw, overdraw.raw], now, org1.signer("orderer0"))
    print(f"block {block.header.height} {block.hash[:16]}… with {block.header.tx_count} transactions")
    for t, code in zip(["mint", "pay", "overdraw"], ex.codes, strict=True):
        print(f"  {t:9s} -> code {code}")
    for who in ("org1/alice", "org2/bob"):
        print(f"  balance of {who}: {ledger.query('demo.wallet', 'balance', {'member': who})['balance']} fen")
    info = ledger.tx(pay.tx_id)
    assert info is not None
    ok, why = verify_proof_dict(info["tx_proof"])
    print(f"  inclusion proof of the payment checked offline: {ok} ({why})")
    report = audit(ledger.store, lambda: ContractRuntime(default_registry()))
    print(
        f"audit of {home / 'ledger.sqlite'}: {report.blocks} blocks, {report.txs} transactions, "
        f"{'OK' if report.ok else 'FAILED'}"
    )
    ledger.close()


if __name__ == "__main__":
    main()
