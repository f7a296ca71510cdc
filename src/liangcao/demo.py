"""``liangcao demo``: a whole consortium on this machine, a scenario through the SDK, told in plain words."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from liangcao import encoding
from liangcao.client import Client, ClientError, verify_proof
from liangcao.codes import Code
from liangcao.genesis import make_org
from liangcao.ledger.audit import audit
from liangcao.node.home import NodeHome, Server, init_network, load_signer, member_dir


def yuan(fen: int) -> str:
    return f"{fen // 100:,}.{fen % 100:02d}"


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError("no free port")


def code_name(code: int) -> str:
    try:
        return Code(code).name
    except ValueError:
        return str(code)


class Story:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.step = 0

    def say(self, text: str) -> None:
        self.step += 1
        self.console.print(f"[bold cyan]{self.step:2d}.[/] {text}")

    def result(self, receipt: dict[str, Any], ok_text: str = "") -> None:
        code = receipt["code"]
        if code == 0:
            self.console.print(f"    [green]committed[/] {ok_text}")
        else:
            self.console.print(f"    [yellow]refused[/] with code {code} {code_name(code)}: {receipt['message']}")


def scenario(home: NodeHome, client: Client, console: Console) -> dict[str, Any]:
    """The demo's story. Returns a summary (used by the tests)."""
    story = Story(console)

    def who(member: str) -> Any:
        return load_signer(member_dir(home.root, member))

    def balance(member: str) -> int:
        return int(client.query("demo.wallet", "balance", {"member": member})["balance"])

    cfg = client.query("consortium", "config", {})
    names = ", ".join(f"{o['org_id']} ({o['type']})" for o in cfg["orgs"])
    story.say(f"The consortium [bold]{cfg['chain']['chain_id']}[/] has {len(cfg['orgs'])} organisations: {names}.")

    story.say("The platform's admin (org1/admin) mints 1,000,000.00 points to org1/alice.")
    story.result(client.call("demo.wallet", "mint", {"to": "org1/alice", "amount": 100_000_000}, [who("org1/admin")]))

    story.say("org1/alice pays org2/bob 250,000.00 for Double 11 stock.")
    r = client.submit(
        client.build(
            "demo.wallet",
            "transfer",
            {"to": "org2/bob", "amount": 25_000_000, "memo": "Double 11 stock"},
            [who("org1/alice")],
        ),
        wait=True,
    )
    payment_id = r["tx_id"]
    story.result(r["receipt"], f"in block {r['height']} (tx {payment_id[:16]}…)")

    story.say("org2/bob tries to pay org3/alice 9,999,999.00, more than he has.")
    story.result(client.call("demo.wallet", "transfer", {"to": "org3/alice", "amount": 999_999_900}, [who("org2/bob")]))

    story.say("Someone alters a signed payment (1.00 -> 1,000,000.00) and submits it.")
    tx = client.build("demo.wallet", "transfer", {"to": "org2/bob", "amount": 100}, [who("org1/alice")])
    forged: Any = encoding.decode(tx.raw)
    forged["body"]["args"]["amount"] = 100_000_000
    r = client.submit(encoding.canonical(forged), wait=True)
    story.result(r["receipt"])

    story.say("A fourth organisation, a logistics company, asks to join; only org1's admin signs.")
    org4 = make_org("org4", "logistics", "Organisation 4 (logistics)")
    story.result(client.call("consortium", "add_org", org4.org_args(), [who("org1/admin")]))

    story.say("The admins of org1 and org2 sign together: a majority of three organisations.")
    story.result(
        client.call("consortium", "add_org", org4.org_args(), [who("org1/admin"), who("org2/admin")]),
        "org4 is a member",
    )

    story.say("org4's own admin now mints 500.00 points to org4/alice: its certificate is recognised.")
    story.result(client.call("demo.wallet", "mint", {"to": "org4/alice", "amount": 50_000}, [org4.signer("admin")]))

    story.say("A client fetches the payment's Merkle inclusion proof and checks it offline.")
    proof = client.proof(payment_id)
    ok, why = verify_proof(proof)
    proof_file = home.root / "proofs" / "payment.json"
    proof_file.parent.mkdir(exist_ok=True)
    proof_file.write_text(json.dumps(proof, indent=1))
    console.print(f"    proof {'[green]verifies[/]' if ok else '[red]FAILS[/]'} ({why}); saved to {proof_file}")

    events = list(client.events(0, follow=False, contract="demo.wallet"))
    story.say(
        f"The event stream replays {len(events)} wallet events from height 0 ({', '.join(sorted({e['name'] for e in events}))})."
    )

    table = Table(title="Balances (points)")
    table.add_column("member")
    table.add_column("balance", justify="right")
    balances = {m: balance(m) for m in ("org1/alice", "org2/bob", "org3/alice", "org4/alice")}
    for m, b in balances.items():
        table.add_row(m, yuan(b))
    supply = int(client.query("demo.wallet", "supply", {})["supply"])
    table.add_row("[bold]supply[/]", f"[bold]{yuan(supply)}[/]")
    console.print(table)

    head = client.head()
    report = audit(home.store_path, _runtime)
    story.say(
        f"Audit from genesis: {report.blocks} blocks, {report.txs} transactions, "
        + (
            "[green]every hash, signature and state hash checks out[/]"
            if report.ok
            else f"[red]{len(report.findings)} findings[/]"
        )
    )
    return {
        "height": head["header"]["height"],
        "balances": balances,
        "supply": supply,
        "proof_ok": ok,
        "audit_ok": report.ok,
        "events": len(events),
        "payment_tx": payment_id,
    }


def _runtime() -> Any:
    from liangcao.apps.bundle import default_registry
    from liangcao.contracts.runtime import ContractRuntime

    return ContractRuntime(default_registry())


def run_demo(home_dir: Path, port: int, serve: bool, console: Console) -> dict[str, Any]:
    if not (home_dir / "node" / "node.json").exists():
        init_network(home_dir, 3, port=free_port(port))
        console.print(f"Created a 3-organisation consortium in [bold]{home_dir}[/]")
    home = NodeHome.open(home_dir)
    home.config["port"] = free_port(int(home.config["port"]))
    node = home.node()
    server = Server(node, home.auth(), str(home.config["host"]), int(home.config["port"]))
    thread = server.start_in_thread()
    token = home.auth().create("org1/alice", days=7)
    console.print(f"Node for org1 serving the API at [bold]{home.url}[/] (OpenAPI: {home.url}/docs)\n")
    try:
        with Client(home.url, token) as client:
            summary = scenario(home, client, console)
        console.print(
            f"\nThe ledger is kept in {home.store_path}; check it any time with "
            f"[bold]liangcao audit --home {home_dir}[/]\nand the proof with "
            f"[bold]liangcao verify-proof {home_dir / 'proofs' / 'payment.json'}[/]."
        )
        if serve:
            console.print("\nServing until Ctrl-C. A read token for org1/alice:")
            console.print(token, soft_wrap=True)
            console.print(f"curl -H 'Authorization: Bearer {token}' {home.url}/v1/head", soft_wrap=True)
            try:
                while thread.is_alive():
                    time.sleep(0.5)
            except KeyboardInterrupt:
                console.print("\nStopping: committing what was admitted, then closing the store.")
        return summary
    except ClientError as exc:
        console.print(f"[red]The demo failed: {exc.code} {exc.message}[/]")
        raise
    finally:
        server.stop_thread(thread)


__all__ = ["run_demo", "scenario"]
