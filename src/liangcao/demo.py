"""``liangcao demo``: a whole consortium on this machine, a scenario through the SDK, told in plain words."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from liangcao import codes, encoding
from liangcao.api.server import Server
from liangcao.client import Client, ClientError, verify_proof
from liangcao.codes import Code
from liangcao.crypto.signer import load_signer
from liangcao.node.audit import audit
from liangcao.node.genesis import make_org
from liangcao.node.home import NodeHome, init_network, member_dir
from liangcao.procs import free_port
from liangcao.witness import witness

#: The seed story's cast: a brand's factory, its tier-1/2/3 suppliers, a bank, a warehouse, a regulator.
DEMO_ORG_TYPES = ("core_enterprise", "supplier", "supplier", "supplier", "bank", "warehouse", "regulator")
FACTORY, TIER1, TIER2, TIER3, BANK, WAREHOUSE = "org1", "org2", "org3", "org4", "org5", "org6"


def yuan(fen: int) -> str:
    return f"{fen // 100:,}.{fen % 100:02d}"


def code_name(code: int) -> str:
    return codes.name_of(code)


class Story:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.step = 0

    def say(self, text: str) -> None:
        self.step += 1
        self.console.print(f"[bold cyan]{self.step:2d}.[/] {text}")

    def result(self, receipt: dict[str, Any], ok_text: str = "") -> None:
        code = receipt["code"]
        if code == Code.OK:
            self.console.print(f"    [green]committed[/] {ok_text}")
        else:
            self.console.print(f"    [yellow]refused[/] with code {code} {code_name(code)}: {receipt['message']}")


def scenario(
    home: NodeHome, client: Client, console: Console, advance: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """The demo's story. Returns a summary (used by the tests).

    ``advance(ms)`` moves the node's clock forward (an in-process rehearsal node); without it the story
    stops before maturity.
    """
    story = Story(console)

    def who(member: str) -> Any:
        return load_signer(member_dir(home.root, member))

    def balance(member: str) -> int:
        return int(client.query("demo.wallet", "balance", {"member": member})["balance"])

    cfg = client.query("consortium", "config", {})
    names = ", ".join(f"{o['org_id']} ({o['type']})" for o in cfg["orgs"])
    story.say(f"The consortium [bold]{cfg['chain']['chain_id']}[/] has {len(cfg['orgs'])} organisations: {names}.")

    story.say("The factory's admin (org1/admin) mints 1,000,000.00 loyalty points to org1/alice.")
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
    try:
        story.result(client.submit(encoding.canonical(forged), wait=True)["receipt"])
    except ClientError as exc:  # the node's admission refuses what cannot authenticate, before ordering
        story.result({"code": exc.code, "message": exc.message}, "")

    n_orgs = len(cfg["orgs"])
    newcomer = make_org(f"org{n_orgs + 1}", "logistics", f"Organisation {n_orgs + 1} (logistics)")
    story.say(f"A logistics company ({newcomer.org_id}) asks to join; only org1's admin signs.")
    story.result(client.call("consortium", "add_org", newcomer.org_args(), [who("org1/admin")]))

    majority = n_orgs // 2 + 1
    admins = [who(f"org{i}/admin") for i in range(1, majority + 1)]
    story.say(f"The admins of org1..org{majority} sign together: a majority of {n_orgs} organisations.")
    story.result(client.call("consortium", "add_org", newcomer.org_args(), admins), f"{newcomer.org_id} is a member")

    story.say(
        f"{newcomer.org_id}'s own admin mints 500.00 points to {newcomer.org_id}/alice: its certificate is recognised."
    )
    story.result(
        client.call(
            "demo.wallet", "mint", {"to": f"{newcomer.org_id}/alice", "amount": 50_000}, [newcomer.signer("admin")]
        )
    )

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
    balances = {m: balance(m) for m in ("org1/alice", "org2/bob", "org3/alice", f"{newcomer.org_id}/alice")}
    for m, b in balances.items():
        table.add_row(m, yuan(b))
    supply = int(client.query("demo.wallet", "supply", {})["supply"])
    table.add_row("[bold]supply[/]", f"[bold]{yuan(supply)}[/]")
    console.print(table)

    scf = double_11(client, who, story, console, advance) if n_orgs >= 5 else {}
    trace = milk_powder(home, client, who, story, console, newcomer.signer("alice")) if n_orgs >= 7 else {}
    cover = rice_cooker(home, client, who, story, console, advance, newcomer.signer("alice")) if n_orgs >= 7 else {}
    checkout = midnight_checkout(home.root / "checkout", story, console) if n_orgs >= 7 else {}
    if trace:
        # Organisations joined since the milk powder (an insurer, a platform): the majority grew, and the
        # witnesses of a majority attest every block again, so the consumer's page still finds its quorum.
        quorum = int(client.get("/v1/trace/verify", id=trace["tin"])["finality_quorum"])
        witness(client, home.genesis(), [who(f"org{i}/peer0") for i in range(2, quorum + 1)], home.root / "witnesses")

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
        "scf": scf,
        "trace": trace,
        "cover": cover,
        "checkout": checkout,
    }


def milk_powder(
    home: NodeHome,
    client: Client,
    who: Callable[[str], Any],
    story: Story,
    console: Console,
    carrier: Any,
) -> dict[str, Any]:
    """Traceability: a tin of milk powder from the factory to the bonded warehouse, checked by a consumer."""
    tins = [f"urn:epc:id:sgtin:0614141.107346.{n}" for n in (1, 2)]
    case = "urn:epc:id:sscc:0614141.1234567890"

    def doc(*events: dict[str, Any]) -> dict[str, Any]:
        return {"@context": ["https://ref.gs1.org/standards/epcis/epcis-context.jsonld"], "type": "EPCISDocument",
                "schemaVersion": "2.0", "creationDate": "2026-11-01T00:00:00Z", "epcisBody": {"eventList": list(events)}}  # fmt: skip

    def ev(kind: str, when: str, step: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "eventTime": when, "eventTimeZoneOffset": "+08:00", "bizStep": step, **fields}

    orgs = len(client.query("consortium", "config", {})["orgs"])
    admins = [who(f"org{i}/admin") for i in range(1, orgs // 2 + 2)]  # a majority of the organisations now
    story.say("Traceability: the consortium assigns GS1 company prefix 0614141 to the factory (a governance vote).")
    story.result(client.call("trace", "assign_prefix", {"prefix": "0614141", "org": "org1"}, admins))
    story.say("The factory commissions two tins of milk powder and packs them into a case (EPCIS 2.0 events).")
    made = client.capture(
        doc(
            ev("ObjectEvent", "2026-10-20T08:00:00+08:00", "commissioning", epcList=tins, action="ADD"),
            ev("AggregationEvent", "2026-10-20T09:00:00+08:00", "packing", parentID=case, childEPCs=tins, action="ADD"),
        ),
        who("org1/alice"),
    )
    console.print(f"    [green]anchored[/] {len(made)} events, e.g. {made[0]['id']} ({made[0]['status']})")
    story.say("The bank tries to record a shipping event: a bank's organisation type may not.")
    try:
        client.capture(doc(ev("ObjectEvent", "2026-10-21T08:00:00+08:00", "shipping", epcList=[case],
                              action="OBSERVE")), who("org5/alice"))  # fmt: skip
    except ClientError as exc:
        console.print(f"    [yellow]refused[/] with code {exc.code} {code_name(exc.code)}: {exc.message}")
    story.say("The logistics company ships the case; the warehouse receives it; the regulator inspects it.")
    client.capture(doc(ev("ObjectEvent", "2026-10-21T08:00:00+08:00", "shipping", epcList=[case],
                          action="OBSERVE")), carrier)  # fmt: skip
    client.capture(doc(ev("ObjectEvent", "2026-10-23T10:00:00+08:00", "receiving", epcList=[case],
                          action="OBSERVE")), who("org6/alice"))  # fmt: skip
    client.capture(doc(ev("ObjectEvent", "2026-10-24T10:00:00+08:00", "inspecting", epcList=[case],
                          action="OBSERVE", disposition="conformant")), who("org7/alice"))  # fmt: skip
    history = client.provenance(tins[0])
    table = Table(title=f"History of tin {tins[0]} (through its case)")
    for col in ("event time (UTC)", "type", "bizStep", "recorded by", "block"):
        table.add_column(col)
    for e in history["events"]:
        table.add_row(e["event"]["eventTime"], e["type"], e["event"].get("bizStep", ""), e["org"], str(e["height"]))
    console.print(table)
    # One embedded node attests alone: nothing is final, and the consumer's page says so. The other
    # organisations' peers (keys in this folder) re-execute every block and attest it (liangcao.witness).
    quorum = int(client.get("/v1/trace/verify", id=tins[0])["finality_quorum"])
    peers = [who(f"org{i}/peer0") for i in range(2, quorum + 1)]
    witness(client, home.genesis(), peers, home.root / "witnesses")
    story.say(
        f"The peers of org2..org{quorum} re-execute every block and attest it: with org1's, {quorum} organisations, "
        "the consortium's finality quorum (in a real consortium each runs its own node: liangcao network up)."
    )
    qr = client.http.get("/verify/qr.svg", params={"id": tins[0]})
    qr_file = home.root / "proofs" / "tin-1-qr.svg"
    qr_file.parent.mkdir(exist_ok=True)
    qr_file.write_bytes(qr.content)
    link = qr.headers.get("X-Digital-Link", "")
    story.say(f"A consumer scans the QR code on the tin ({qr_file}): {link}")
    console.print(
        "    the page checks every event's Merkle proof, signatures and a quorum of attestations in the browser "
        "(Web Crypto), trusting only the organisations named in the QR code."
    )
    return {
        "events": len(history["events"]),
        "link": link,
        "orgs": [e["org"] for e in history["events"]],
        "tin": tins[0],
    }


def double_11(
    client: Client, who: Any, story: Story, console: Console, advance: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """The supply-chain finance story: a factory's credit travels to its tier-3 supplier, who is paid early."""
    import datetime as dt
    import hashlib

    cast = {FACTORY: "factory", TIER1: "tier 1", TIER2: "tier 2", TIER3: "tier 3", BANK: "bank"}

    def tokens(org: str) -> int:
        return int(client.query("scf.tokens", "balance", {"bank": BANK, "org": org})["balance"])

    last: dict[str, int] = {}

    def balances(title: str) -> dict[str, int]:
        now = {org: tokens(org) for org in cast}
        table = Table(title=f"{BANK}'s settlement tokens {title}")
        for col in ("party", "balance", "change"):
            table.add_column(col, justify="left" if col == "party" else "right")
        for org, name in cast.items():
            delta = now[org] - last.get(org, 0)
            table.add_row(
                f"{name} ({org})", yuan(now[org]), ("+" if delta > 0 else "-" if delta else "") + yuan(abs(delta))
            )
        console.print(table)
        last.update(now)
        return now

    def ok(contract: str, method: str, args: dict[str, Any], *signers: str) -> Any:
        r = client.submit(client.build(contract, method, args, [who(s) for s in signers]), wait=True)
        receipt = r["receipt"]
        if receipt["code"] != Code.OK:
            raise ClientError(400, receipt["code"], receipt["message"])
        return receipt["result"]

    console.print("\n[bold]Double 11 supply-chain finance[/]")
    today = dt.date.fromtimestamp(client.node_time_ms() // 1000)
    maturity = (today + dt.timedelta(days=90)).isoformat()
    story.say(
        f"The bank ({BANK}) issues settlement tokens: 10,000,000.00 to itself, 2,000,000.00 to the factory's deposit."
    )
    ok("scf.tokens", "issue", {"to": BANK, "amount": 1_000_000_000}, f"{BANK}/admin")
    ok("scf.tokens", "issue", {"to": FACTORY, "amount": 200_000_000}, f"{BANK}/admin")
    steps = {"start": balances("at the start")}
    number = today.strftime("%m%d") + str(int(client.head()["header"]["height"]))
    story.say(
        f"Tier 1 ({TIER1}) registers its invoice {number} to the factory for 1,200,000.00 (only its hash goes on chain)."
    )
    inv = ok(
        "scf.invoices",
        "register",
        {
            "code": "3100",
            "number": number,
            "seller": TIER1,
            "buyer": FACTORY,
            "amount": 120_000_000,
            "date": today.isoformat(),
            "doc_hash": hashlib.sha256(number.encode()).hexdigest(),
        },
        f"{TIER1}/alice",
    )["key"]
    story.say(f"The brand's factory ({FACTORY}) issues a voucher of 1,000,000.00 to tier 1, due {maturity}.")
    root = ok(
        "scf.vouchers",
        "issue",
        {"to": TIER1, "face": 100_000_000, "maturity": maturity, "invoices": [inv], "settlement_bank": BANK},
        f"{FACTORY}/admin",
    )["voucher"]
    ok("scf.vouchers", "accept", {"voucher": root}, f"{TIER1}/alice")
    story.say("Tier 1 accepts it, splits off 500,000.00 and passes it to tier 2, who accepts.")
    part2, keep1 = ok("scf.vouchers", "split", {"voucher": root, "amounts": [50_000_000]}, f"{TIER1}/alice")["children"]
    ok("scf.vouchers", "offer", {"voucher": part2, "to": TIER2}, f"{TIER1}/alice")
    ok("scf.vouchers", "accept", {"voucher": part2}, f"{TIER2}/alice")
    story.say("Tier 2 splits off 300,000.00 and passes it to tier 3, who accepts.")
    part3, _ = ok("scf.vouchers", "split", {"voucher": part2, "amounts": [30_000_000]}, f"{TIER2}/alice")["children"]
    ok("scf.vouchers", "offer", {"voucher": part3, "to": TIER3}, f"{TIER2}/alice")
    ok("scf.vouchers", "accept", {"voucher": part3}, f"{TIER3}/alice")
    story.say(
        "Tier 3 asks the bank to finance its 300,000.00 at 6 % a year; the bank pays and becomes the holder, atomically."
    )
    ok("scf.vouchers", "request_financing", {"voucher": part3, "bank": BANK, "rate_bps": 600}, f"{TIER3}/alice")
    paid = ok("scf.vouchers", "accept_financing", {"voucher": part3}, f"{BANK}/admin")
    console.print(
        f"    tier 3 receives {yuan(paid['paid'])} today ({paid['days']} days at 6 %: discount {yuan(paid['discount'])})"
    )
    r = client.call(
        "scf.vouchers", "request_financing", {"voucher": part3, "bank": BANK, "rate_bps": 500}, [who(f"{BANK}/admin")]
    )
    console.print("    financing the same part a second time:")
    story.result(r)
    r = client.call(
        "scf.vouchers",
        "issue",
        {"to": TIER1, "face": 100, "maturity": maturity, "invoices": [inv], "settlement_bank": BANK},
        [who(f"{FACTORY}/admin")],
    )
    console.print("    the factory tries to issue a second voucher on the same invoice:")
    story.result(r)
    story.say(
        "Tier 1 opens a factoring pool with the bank (80 % advance, 1,000,000.00 line), assigns the 500,000.00 "
        "it kept and draws 400,000.00."
    )
    pool = ok(
        "scf.factoring",
        "open",
        {"seller": TIER1, "factor": BANK, "advance_rate_bps": 8_000, "credit_line": 100_000_000},
        f"{TIER1}/alice",
        f"{BANK}/admin",
    )["pool"]
    ok("scf.factoring", "assign", {"pool": pool, "vouchers": [keep1]}, f"{TIER1}/alice")
    console.print("    drawing 400,000.01, one fen over 80 % of the pool:")
    story.result(client.call("scf.factoring", "draw", {"pool": pool, "amount": 40_000_001}, [who(f"{TIER1}/alice")]))
    ok("scf.factoring", "draw", {"pool": pool, "amount": 40_000_000}, f"{TIER1}/alice")
    steps["financed"] = balances("after tier 3's financing and tier 1's advance")

    lot = f"rice-{number}"
    story.say(
        f"The warehouse ({WAREHOUSE}) declares 20,000 bags of rice held for tier 1 and issues a receipt for 12,000."
    )
    ok(
        "scf.receipts",
        "declare",
        {"lot": lot, "owner": TIER1, "goods": "rice, 25 kg bags", "quantity": 20_000},
        f"{WAREHOUSE}/admin",
    )
    stock = {"warehouse": WAREHOUSE, "lot": lot}
    receipt = ok("scf.receipts", "issue", {**stock, "quantity": 12_000}, f"{WAREHOUSE}/admin", f"{TIER1}/alice")[
        "receipt"
    ]
    story.say("Tier 1 pledges the receipt to the bank; while pledged it cannot be moved or pledged again.")
    ok("scf.receipts", "pledge", {"receipt": receipt, "bank": BANK}, f"{TIER1}/alice", f"{BANK}/admin")
    console.print("    tier 1 tries to transfer the pledged receipt to tier 2:")
    story.result(client.call("scf.receipts", "transfer", {"receipt": receipt, "to": TIER2}, [who(f"{TIER1}/alice")]))
    r = client.call(
        "scf.receipts", "issue", {**stock, "quantity": 9_000}, [who(f"{WAREHOUSE}/admin"), who(f"{TIER1}/alice")]
    )
    console.print("    a second receipt for 9,000 bags, more than the 8,000 the lot still holds free:")
    story.result(r)

    tree = client.query("scf.vouchers", "tree", {"voucher": root})
    print_tree(console, root, tree, "today")
    summary: dict[str, Any] = {"root": root, "paid": paid, "tree": tree, "receipt": receipt, "pool": pool}
    if advance is None:
        console.print(f"    at maturity ({maturity}) the factory settles the root in one transaction.")
        summary["balances"] = steps
        return summary

    story.say(
        "Ninety-one days pass (this rehearsal node's clock moves forward). The factory's maturity list shows "
        "what it owes, and to whom:"
    )
    advance(91 * 86_400_000)
    client.sync_clock()
    due = client.query("scf.vouchers", "maturities", {"until": maturity})["roots"]
    for entry in due:
        holders = ", ".join(f"{cast.get(o, o)} {yuan(f)}" for o, f in sorted(entry["holders"].items()))
        console.print(f"    {short_id(entry['id'])} due {entry['maturity']}: {yuan(entry['outstanding'])} ({holders})")
    story.say("The factory settles the root: every current holder is paid exactly its face, in one transaction.")
    settled = ok("scf.vouchers", "settle", {"voucher": root}, f"{FACTORY}/admin")
    for p in settled["payments"]:
        console.print(f"    {short_id(p['voucher'])} -> {cast.get(p['holder'], p['holder'])}: {yuan(p['amount'])}")
    story.say("The pool collects the settled voucher: 400,000.00 repays the advance, 100,000.00 goes to tier 1.")
    swept = ok("scf.factoring", "sweep", {"pool": pool}, f"{TIER1}/alice")
    steps["settled"] = balances("after settlement")
    tree = client.query("scf.vouchers", "tree", {"voucher": root})
    print_tree(console, root, tree, "after settlement")
    summary.update(tree=tree, settled=settled, swept=swept, balances=steps)
    return summary


def rice_cooker(
    home: NodeHome,
    client: Client,
    who: Callable[[str], Any],
    story: Story,
    console: Console,
    advance: Callable[[int], None] | None,
    courier: Any,
) -> dict[str, Any]:
    """Consumer cover: a rice cooker bought with both covers, a price drop on day 5, a return picked up by the
    courier, both claims decided from the ledger's facts and paid by the insurer's adapter (docs/cover.md)."""
    import threading

    from liangcao.adapters.payout import Cursor, HttpLedger, PayoutAdapter, follow, wait_paid
    from liangcao.client.cover import CoverDesk, return_event
    from liangcao.payments import Engine

    console.print("\n[bold]Double 11 consumer cover[/]")
    n = len(client.query("consortium", "config", {})["orgs"])
    insurer, platform = make_org(f"org{n + 1}", "insurer", "Insurer"), make_org(f"org{n + 2}", "platform", "Platform")
    if (n + 1) // 2 + 1 > len(DEMO_ORG_TYPES):  # a majority needs admins whose keys this folder does not hold
        console.print("    (skipped: a majority of this consortium's admins is not in this network folder)")
        return {}
    story.say(f"An insurer ({insurer.org_id}) and a shopping platform ({platform.org_id}) join by a governance vote.")
    for k, org in enumerate((insurer, platform)):  # more than half of the organisations active at each vote
        admins = [who(f"org{i}/admin") for i in range(1, (n + k) // 2 + 2)]
        story.result(client.call("consortium", "add_org", org.org_args(), admins), f"{org.org_id} is a member")
    ins, shop = CoverDesk(client, insurer.signer("admin")), CoverDesk(client, platform.signer("admin"))
    story.say("The insurer pledges 1,000,000.00 of capital; publishes return-shipping (12.00) and 15-day price cover.")
    ins.pledge(100_000_000)
    rs_id, pp_id = f"rs-7d-{insurer.org_id}", f"pp-15d-{insurer.org_id}"
    ins.publish(rs_id, "return_shipping", indemnity_fen=1_200, window_days=7, base_fen=80, loading_bps=20_000)
    ins.publish(pp_id, "price_protection", indemnity_fen=50_000, window_days=15, base_fen=100, rate_bps=50)
    order, sku, home_address = (
        f"order-{client.head()['header']['height']}",
        "rice-cooker-3l",
        "urn:epc:id:sgln:0614141.00001.0",
    )
    rs, pp = shop.buy([rs_id, pp_id], order=order, shopper="shopper-1", sku=sku, price_paid=39_900,
                      address=home_address, device="phone-1")  # fmt: skip
    story.say(
        f"A shopper buys a rice cooker for 399.00 with both covers: premiums {yuan(rs['premium'])} and "
        f"{yuan(pp['premium'])}; {yuan(rs['exposure'] + pp['exposure'])} of the insurer's capital is reserved."
    )
    if advance is not None:
        advance(5 * 86_400_000)
        client.sync_clock()
    story.say("Day 5: a flash sale at 299.00 (excluded), then the regular price drops to 349.00.")
    shop.post_price(sku, 29_900, "flash_sale")
    shop.post_price(sku, 34_900)
    story.say(
        f"The shopper returns it: the courier ({courier.member_id}) picks it up at home; trace anchors the event."
    )
    when = dt.datetime.fromtimestamp(client.node_time_ms() / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    pickup = CoverDesk(client, courier).capture_return(return_event(order, f"{order}/rma-1", when, home_address))
    claims = {"price protection": shop.claim(pp["id"]), "return shipping": shop.claim(rs["id"], event=pickup)}
    for kind, claim in claims.items():
        console.print(f"    {kind}: {claim['status']} {yuan(claim['amount'])} by rule {claim['rule']['kind']}")
    story.say("The insurer's payout adapter follows the event stream, pays through the payments core, records back.")
    folder = home.root / "cover-adapter"
    folder.mkdir(exist_ok=True)
    engine, stop = Engine(folder / "payments"), threading.Event()
    adapter = PayoutAdapter(HttpLedger(client, insurer.signer("admin")), engine, insurer.org_id)

    def run() -> None:
        while not stop.is_set():
            follow(adapter, client, Cursor(folder / "cursor.json"), stop, live=False)
            stop.wait(0.1)

    thread = threading.Thread(target=run, name="cover-payouts", daemon=True)
    thread.start()
    try:
        paid = wait_paid(client, [rs["id"], pp["id"]], 30)
    finally:
        stop.set()
        thread.join(30)
        engine.close()
    views = [ins.policy(p["id"]) for p in (rs, pp)]
    table = Table(title="Cover paid from facts")
    for col in ("policy", "kind", "decided by", "paid", "transfer"):
        table.add_column(col, justify="right" if col == "paid" else "left")
    for v in views:
        fact = v["claim"]["facts"][0]
        table.add_row(short_id(v["policy"]["id"]), v["policy"]["kind"], fact.get("bizStep") or f"price {yuan(fact['price'])}",
                      yuan(v["claim"]["amount"]) if v["payout"]["paid"] else "not yet",
                      v["payout"]["transfer"][:12] + "…")  # fmt: skip
    console.print(table)
    console.print(f"    a policy in the explorer: {client.url}/explorer/cover#/{rs['id']}")
    return {
        "paid": paid,
        "policies": [v["policy"]["id"] for v in views],
        "amounts": [v["claim"]["amount"] for v in views],
    }


def midnight_checkout(root: Path, story: Story, console: Console) -> dict[str, Any]:
    """The consumer side at midnight (house plan §11), in this process beside the node: a shopper registers a
    phone's passkey, pays through the checkout gateway into escrow, is stepped up by the risk engine for a
    large payment and confirms it with the passkey, buys a rice cooker in 6 interest-free installments, a
    fraudster's payment is blocked, and confirmations settle the merchant less the platform's fee. Money lives
    only in the payments core (its own folder under ``root``); docs/checkout.md."""
    from liangcao.authn import RelyingParty, SoftAuthenticator
    from liangcao.checkout.codes import CheckoutError
    from liangcao.checkout.guards import GuardChain
    from liangcao.checkout.plugins import InstallmentsMethod, PasskeyStepUp, risk_guard
    from liangcao.checkout.service import Checkout
    from liangcao.credit import CreditService
    from liangcao.payments import Engine
    from liangcao.risk.engine import RiskConfig, RiskEngine

    console.print("\n[bold]Double 11 at the checkout: escrow, a fingerprint, the risk engine, installments[/]")
    root.mkdir(parents=True, exist_ok=True)
    run = f"{time.time_ns():x}"  # idempotency keys of this run (the demo may run again on the same folder)
    origin = "http://localhost:7800"
    rules: dict[str, Any] = {
        "thresholds": {"step_up": 0.99, "block": 0.999},
        "rules": [
            {"id": "stolen-card", "reason": "KNOWN_FRAUD_AMOUNT", "action": "block", "priority": 100,
             "when": [["amount_fen", "==", 66_600]]},
            {"id": "large", "reason": "LARGE_AMOUNT", "action": "step_up", "when": [["amount_fen", ">=", 300_000]]},
        ],
    }  # fmt: skip
    risk = RiskEngine(root / "risk", rules=rules, config=RiskConfig(learn_per_decide=0))
    with RelyingParty("localhost", origin, root / "authn") as rp, Engine(root / "payments") as core:
        credit = CreditService(core, root / "credit.sqlite")
        gateway = Checkout(
            root / "gateway",
            core,
            guards=GuardChain([risk_guard(risk)], PasskeyStepUp(rp)),
            methods=[InstallmentsMethod(credit, 6, "merchant")],
        )
        try:
            phone = SoftAuthenticator()
            opts = rp.registration_options("xiaoming", f"phone {run[-6:]}")  # a new phone each run
            rp.register("xiaoming", opts["ceremony_id"], phone.create(opts["publicKey"], origin))
            story.say(
                "Xiaoming registers his phone's passkey (ES256; the fingerprint never leaves the phone) and tops "
                "up his wallet with 8,000.00."
            )
            gateway.topup(f"{run}-topup", "xiaoming", 800_000)

            def order(key: str, buyer: str, amount: int) -> str:
                return str(gateway.create_order(f"{run}-{key}", buyer, "tmall-shop", amount).body["id"])

            case = order("case", "xiaoming", 3_990)
            r = gateway.pay(f"{run}-pay-case", case)
            story.say(
                f"At 00:00 he pays 39.90 for a phone case: the risk engine allows it "
                f"({r.body['decisions']['risk']['action']}, rules {r.body['decisions']['risk']['rules_version']}); "
                "the money is held in escrow until he confirms receipt."
            )
            laptop = order("laptop", "xiaoming", 599_900)
            try:
                gateway.pay(f"{run}-pay-laptop", laptop)
                raise AssertionError("a 5,999.00 payment was not stepped up")
            except CheckoutError as exc:
                challenge = exc.detail["challenge"]
                story.say(
                    f"A laptop for 5,999.00: the risk engine steps it up ({code_name(exc.code)}); the challenge "
                    f"commits to order {laptop[:12]}…, payee, amount and currency."
                )
            assertion = phone.get(challenge["publicKey"], origin)
            other = order("tv", "xiaoming", 350_000)
            try:
                gateway.pay(
                    f"{run}-pay-tv", other, step_up={"challenge_id": challenge["challenge_id"], "credential": assertion}
                )
                raise AssertionError("a confirmation of one payment paid another")
            except CheckoutError as exc:
                console.print(
                    f"    the same fingerprint offered for a 3,500.00 television: [yellow]{code_name(exc.code)}[/], "
                    "nothing moves"
                )
            try:
                gateway.pay(f"{run}-pay-laptop", laptop)
            except CheckoutError as exc:
                challenge = exc.detail["challenge"]
            assertion = phone.get(challenge["publicKey"], origin)
            r = gateway.pay(
                f"{run}-pay-laptop",
                laptop,
                step_up={"challenge_id": challenge["challenge_id"], "credential": assertion},
            )
            console.print(f"    he confirms with his fingerprint: [green]{r.body['state']}[/]")
            cooker = order("cooker", "xiaoming", 119_900)
            r = gateway.pay(f"{run}-pay-cooker", cooker, "installments-6")
            if r.status != 200:
                raise AssertionError(f"the installment payment was refused: {r.body}")
            story.say("A rice cooker for 1,199.00 in 6 installments, interest-free: the merchant pays the fee.")
            thief = order("stolen", "mallory", 66_600)
            gateway.topup(f"{run}-topup-m", "mallory", 100_000)
            try:
                gateway.pay(f"{run}-pay-stolen", thief)
            except CheckoutError as exc:
                story.say(
                    f"A stolen account pays 666.00: [yellow]{code_name(exc.code)}[/] ({exc.message}); nothing moves."
                )
            for oid, key in ((case, "case"), (laptop, "laptop"), (cooker, "cooker")):
                gateway.confirm(f"{run}-confirm-{key}", oid)
            refund = gateway.refund(f"{run}-refund-case", case, 1_000, "scratched")
            story.say(
                "Xiaoming confirms receipt of all three: each settles to the merchant less the 0.60 % fee, in one "
                f"linked chain; 10.00 of the phone case is refunded after settlement ({refund.body['state']})."
            )
            report = gateway.settlement_report("tmall-shop")
            plan = credit.statement("xiaoming").plans[-1]
            table = Table(title="Midnight at the checkout (payments core, integer fen)")
            table.add_column("")
            table.add_column("yuan", justify="right")
            wallet = gateway.wallet("xiaoming")
            table.add_row("xiaoming: wallet available", yuan(int(wallet["available"])))
            table.add_row("merchant: settled gross", yuan(int(report["gross"])))
            table.add_row("merchant: platform fee", yuan(int(report["fee"])))
            table.add_row("merchant: refunded after settlement", yuan(int(report["refunds_after_settlement"])))
            kept = int(report["gross"]) - int(report["fee"]) - int(report["refunds_after_settlement"])
            table.add_row("merchant: installment fees it pays (interest-free)", yuan(kept - int(report["balance"])))
            table.add_row("merchant: balance in the payments core", yuan(int(report["balance"])))
            table.add_row("installments: period 1 .. 6", " + ".join(yuan(p.principal + p.fee) for p in plan.periods))
            console.print(table)
            credit.deposit("xiaoming", plan.owed_fen, f"{run}-bank")
            credit.prepay(plan.plan_id, f"{run}-prepay")
            line = credit.line("xiaoming")
            story.say(
                f"He repays the plan early from his bank account ({yuan(plan.owed_fen)}): his credit line is whole "
                f"again, {yuan(line.available_fen)} of {yuan(line.line_fen)} available."
            )
            return {"settled": report, "wallet": wallet, "plan_owed": plan.owed_fen, "line": line.available_fen}
        finally:
            gateway.close()
            credit.close()
            risk.close()


def short_id(iid: str) -> str:
    """An instrument id for people: its letter, the first 12 of its 64 hex digits, and its part suffix."""
    return iid[:13] + "…" + iid[65:] if len(iid) >= 65 else iid


def print_tree(console: Console, root: str, tree: dict[str, Any], when: str) -> None:
    table = Table(title=f"Voucher {short_id(root)}: the split tree {when}")
    for col in ("voucher", "holder", "face", "status", "financed by"):
        table.add_column(col, justify="right" if col == "face" else "left")

    def walk(node: dict[str, Any], depth: int) -> None:
        table.add_row(
            "  " * depth + ("root" if node["id"] == root else node["id"][len(root) :]),
            node["holder"],
            yuan(node["face"]),
            node["status"],
            node["financed_by"] or "",
        )
        for c in node["children"]:
            walk(c, depth + 1)

    walk(tree, 0)
    console.print(table)


def _runtime() -> Any:
    from liangcao.apps.bundle import default_registry
    from liangcao.contracts.runtime import ContractRuntime

    return ContractRuntime(default_registry())


def run_demo(home_dir: Path, port: int, serve: bool, console: Console) -> dict[str, Any]:
    if not (home_dir / "node" / "node.json").exists():
        init_network(home_dir, len(DEMO_ORG_TYPES), port=free_port(port), org_types=list(DEMO_ORG_TYPES))
        console.print(f"Created a {len(DEMO_ORG_TYPES)}-organisation consortium in [bold]{home_dir}[/]")
    home = NodeHome.open(home_dir)
    home.config["port"] = free_port(int(home.config["port"]))
    node = home.node()
    # No custody: every party signs on its own side through the SDK (the node holds no member's key).
    server = Server(node, home.auth(), str(home.config["host"]), int(home.config["port"]))
    thread = server.start_in_thread()
    token = home.auth().create("org1/alice", days=7)
    console.print(f"Node for org1 serving the API at [bold]{home.url}[/] (OpenAPI: {home.url}/docs)\n")
    try:
        with Client(home.url, token) as client:
            summary = scenario(home, client, console, node.clock.advance)
        console.print(
            f"\nThe ledger is kept in {home.store_path}; check it any time with "
            f"[bold]liangcao audit --home {home_dir}[/]\nand the proof with "
            f"[bold]liangcao verify-proof {home_dir / 'proofs' / 'payment.json'}[/]."
        )
        if serve:
            console.print("\nServing until Ctrl-C. A read token for org1/alice:")
            console.print(token, soft_wrap=True)
            console.print(f"curl -H 'Authorization: Bearer {token}' {home.url}/v1/head", soft_wrap=True)
            console.print(f"The explorer: {home.url}/explorer?token={token}", soft_wrap=True)
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
