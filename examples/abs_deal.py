"""A small receivable ABS from the SCF story's receivables, on a real node: ``python examples/abs_deal.py``.

The brand's factory and a retailer owe their suppliers vouchers (``scf.vouchers``); a factoring company buys
them from the suppliers and securitises them through an SPV (``abs.deal``). The story goes through the
offering, the first purchase, a revolving purchase paid from collections, two payment dates and a trigger
(the retailer's receivable defaults; the cumulative default rate passes its level: early amortisation).
``docs/abs.md`` walks through the same numbers.

A node for the consortium runs in this process with its API on a free loopback port; every party signs on
its own side through the SDK, and the node's clock is moved forward (a rehearsal node) so that a half-year
deal runs in seconds. The ledger is SQLite on disk in ``--home`` (a temporary folder by default).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from liangcao.api.server import Server
from liangcao.client import Client, ClientError
from liangcao.codes import Code
from liangcao.crypto.signer import load_signer
from liangcao.node.home import NodeHome, init_network, member_dir
from liangcao.procs import free_port

ORG_TYPES = [
    "core_enterprise",  # org1: the brand's factory (an obligor)
    "supplier",  # org2: tier-1 supplier
    "supplier",  # org3: tier-2 supplier
    "bank",  # org4: the custodian; its settlement token is the deal's cash
    "regulator",  # org5
    "factor",  # org6: the factoring company: originator and servicer
    "spv",  # org7: the manager's plan
    "rating_agency",  # org8
    "investor",  # org9
    "investor",  # org10
    "core_enterprise",  # org11: a retailer (the other obligor)
]
FACTORY, TIER1, TIER2, BANK, REGULATOR, FACTOR, SPV, AGENCY, INV1, INV2, RETAILER = (f"org{i}" for i in range(1, 12))
DAY_MS = 86_400_000
Y = 100  # fen in a yuan: the story's amounts are written in yuan


def yuan(fen: int) -> str:
    return f"{'-' if fen < 0 else ''}{abs(fen) // 100:,}.{abs(fen) % 100:02d}"


class Deal:
    """The story's parties acting through the SDK."""

    def __init__(self, home: NodeHome, client: Client, console: Console, advance: Callable[[int], None]) -> None:
        self.home, self.client, self.console, self.advance_ms = home, client, console, advance
        self.step = 0
        self.deal = ""
        self.invoices = 0

    def say(self, text: str) -> None:
        self.step += 1
        self.console.print(f"[bold cyan]{self.step:2d}.[/] {text}")

    def run(self, contract: str, method: str, args: dict[str, Any], *orgs: str) -> dict[str, Any]:
        signers = [load_signer(member_dir(self.home.root, f"{org}/admin")) for org in orgs]
        answer = self.client.submit(self.client.build(contract, method, args, signers), wait=True)
        return dict(answer["receipt"])

    def ok(self, contract: str, method: str, args: dict[str, Any], *orgs: str) -> Any:
        receipt = self.run(contract, method, args, *orgs)
        if receipt["code"] != Code.OK:
            raise ClientError(400, receipt["code"], receipt["message"])
        return receipt["result"]

    def q(self, method: str, **args: Any) -> Any:
        return self.client.query("abs.deal", method, {"deal": self.deal, **args})

    def balance(self, org: str) -> int:
        return int(self.client.query("scf.tokens", "balance", {"bank": BANK, "org": org})["balance"])

    def today(self) -> dt.date:
        # the contracts' day: whole days of the orderer's clock since 1970-01-01 (UTC)
        return dt.date(1970, 1, 1) + dt.timedelta(days=self.client.node_time_ms() // DAY_MS)

    def date(self, days: int) -> str:
        return (self.today() + dt.timedelta(days=days)).isoformat()

    def voucher(self, obligor: str, supplier: str, face: int, days: int) -> str:
        """``obligor`` owes ``supplier`` a voucher; the factoring company buys it at par less 1 %."""
        self.invoices += 1
        number = f"ABS{self.invoices:04d}"
        inv = self.ok(
            "scf.invoices",
            "register",
            {
                "code": "3100",
                "number": number,
                "seller": supplier,
                "buyer": obligor,
                "amount": face,
                "date": self.date(0),
                "doc_hash": hashlib.sha256(number.encode()).hexdigest(),
            },
            supplier,
        )["key"]
        args = {"to": supplier, "face": face, "maturity": self.date(days), "invoices": [inv], "settlement_bank": BANK}
        vid = str(self.ok("scf.vouchers", "issue", args, obligor)["voucher"])
        self.ok("scf.vouchers", "accept", {"voucher": vid}, supplier)
        self.ok("scf.vouchers", "offer", {"voucher": vid, "to": FACTOR}, supplier)
        self.ok("scf.vouchers", "accept", {"voucher": vid}, FACTOR)
        self.ok("scf.tokens", "transfer", {"bank": BANK, "to": supplier, "amount": face * 99 // 100}, FACTOR)
        return vid

    def days(self, n: int) -> None:
        """``n`` days pass; the servicer reports every ten days (and on the last), the contract evaluates."""
        while n > 0:
            step = min(10, n)
            self.advance_ms(step * DAY_MS)
            self.client.sync_clock()  # transactions expire by the node's clock, which just moved
            n -= step
            fig = self.q("deal")["figures"]
            report = {"performing": fig["performing"], "delinquent": fig["delinquent"], "defaulted": fig["defaulted"]}
            receipt = self.run("abs.deal", "report", {"deal": self.deal, **report}, FACTOR)
            for event in receipt["events"]:
                if event["name"] in ("trigger", "defaulted", "revolving_ended"):
                    self.console.print(f"    [bold red]event[/] {event['name']}: {event['data']}")
                    self.events.append(event)

    def waterfall(self, receipt: dict[str, Any]) -> None:
        table = Table(title=f"payment date {receipt['number']} ({receipt['date']}, {receipt['status']})")
        for col in ("step", "due", "paid", "short", "payees"):
            table.add_column(col, justify="left" if col in ("step", "payees") else "right")
        for s in receipt["steps"]:
            due = "-" if s["due"] is None else yuan(s["due"])
            payees = ", ".join(f"{org} {yuan(fen)}" for org, fen in s.get("payees", {}).items())
            payees = "(kept to buy receivables)" if s["step"] == "purchases" else payees or "-"
            table.add_row(s["step"], due, yuan(s["paid"]), yuan(s.get("short", 0)), payees)
        self.console.print(table)
        self.console.print(
            f"    available {yuan(receipt['available'])} = paid out {yuan(receipt['paid_out'])}"
            f" + retained for purchases {yuan(receipt['retained'])}"
        )

    def story(self) -> dict[str, Any]:
        self.events: list[dict[str, Any]] = []
        self.say(f"The custodian ({BANK}) issues settlement tokens to the obligors, the factor and the investors.")
        for org, amount in (
            (FACTORY, 5_000_000 * Y),
            (RETAILER, 5_000_000 * Y),
            (FACTOR, 3_000_000 * Y),
            (INV1, 2_000_000 * Y),
        ):
            self.ok("scf.tokens", "issue", {"to": org, "amount": amount}, BANK)
        self.ok("scf.tokens", "issue", {"to": INV2, "amount": 2_000_000 * Y}, BANK)
        start = {org: self.balance(org) for org in (FACTORY, RETAILER, FACTOR, INV1, INV2, SPV, BANK, REGULATOR)}

        self.say("The factory and the retailer owe their suppliers vouchers; the factoring company buys three.")
        v1 = self.voucher(FACTORY, TIER1, 300_000 * Y, 60)
        v2 = self.voucher(RETAILER, TIER2, 250_000 * Y, 100)
        v4 = self.voucher(FACTORY, TIER1, 400_000 * Y, 150)

        self.say("The SPV and the factoring company open the deal: 1,000,000 yuan of notes in three tranches.")
        terms = {
            "spv": SPV,
            "originator": FACTOR,
            "servicer": FACTOR,
            "custodian": BANK,
            "tranches": [
                {
                    "name": "senior",
                    "face": 700_000 * Y,
                    "coupon_bps": 400,
                    "day_count": "act365",
                    "legal_maturity": self.date(400),
                },
                {
                    "name": "mezzanine",
                    "face": 200_000 * Y,
                    "coupon_bps": 700,
                    "day_count": "act360",
                    "legal_maturity": self.date(400),
                },
                {
                    "name": "subordinated",
                    "face": 100_000 * Y,
                    "coupon_bps": 0,
                    "day_count": "act365",
                    "legal_maturity": self.date(400),
                },
            ],
            "fees": [
                {"payee": BANK, "what": "custody", "amount": 500 * Y},
                {"payee": REGULATOR, "what": "tax", "amount": 300 * Y},
            ],
            "payment_dates": [self.date(90), self.date(180), self.date(270)],
            "revolving_end": self.date(150),
            "due_within_days": 30,
            "obligor_limit_bps": 7_000,
            "discount_bps": 500,
            "required_bps": 6_000,
            "breach_days": 30,
            "default_days": 30,
            "default_rate_max_bps": 1_000,
            "servicer_grace_days": 15,
        }
        self.deal = str(self.ok("abs.deal", "open", terms, SPV, FACTOR)["deal"])
        self.console.print(f"    deal {self.deal}")

        self.say("The manager KYCs the investors; they subscribe (senior, mezzanine), the factor keeps the residual.")
        for org in (INV1, INV2, FACTOR):
            self.ok("abs.deal", "kyc", {"deal": self.deal, "org": org}, SPV)
        refused = self.run("abs.deal", "subscribe", {"deal": self.deal, "tranche": "senior", "amount": 1}, TIER1)
        self.console.print(f"    a supplier that was not KYC'd is refused: {refused['code']} {refused['message']}")
        for org, tranche, amount in (
            (INV1, "senior", 400_000 * Y),
            (INV2, "senior", 300_000 * Y),
            (INV2, "mezzanine", 200_000 * Y),
            (FACTOR, "subordinated", 100_000 * Y),
        ):
            self.ok("abs.deal", "subscribe", {"deal": self.deal, "tranche": tranche, "amount": amount}, org)
        self.ok("abs.deal", "launch", {"deal": self.deal}, SPV)
        self.ok("abs.deal", "rate", {"deal": self.deal, "tranche": "senior", "rating": "AAA"}, AGENCY)
        self.ok("abs.deal", "rate", {"deal": self.deal, "tranche": "mezzanine", "rating": "AA"}, AGENCY)

        self.say("The factor offers its three vouchers; the SPV buys them: title and price in one transaction.")
        soon = self.voucher(FACTORY, TIER1, 50_000 * Y, 20)
        refused = self.run("abs.deal", "offer", {"deal": self.deal, "vouchers": [soon]}, FACTOR)
        self.console.print(f"    a voucher due in 20 days is not eligible: {refused['code']} {refused['message']}")
        self.ok("abs.deal", "offer", {"deal": self.deal, "vouchers": [v1, v2, v4]}, FACTOR)
        bought = self.ok("abs.deal", "purchase", {"deal": self.deal, "vouchers": [v1, v2, v4]}, SPV)
        self.console.print(f"    face {yuan(bought['face'])}, price {yuan(bought['price'])} paid to the factor")

        self.say("Sixty days: the factory pays its first voucher to the SPV; the collection is swept.")
        self.days(60)
        self.ok("scf.vouchers", "settle", {"voucher": v1}, FACTORY)
        self.ok("abs.deal", "collect", {"deal": self.deal}, FACTOR)

        self.say("Payment date 1 (day 90, revolving): fees, interest, then cash kept to buy receivables.")
        self.days(30)
        first = self.ok("abs.deal", "distribute", {"deal": self.deal}, SPV)
        self.waterfall(first)

        self.say("The revolving purchase: the collections buy a new voucher from the factory.")
        v3 = self.voucher(FACTORY, TIER2, 300_000 * Y, 110)
        self.ok("abs.deal", "offer", {"deal": self.deal, "vouchers": [v3]}, FACTOR)
        revolving = self.ok("abs.deal", "purchase", {"deal": self.deal, "vouchers": [v3]}, SPV)
        self.console.print(f"    face {yuan(revolving['face'])}, price {yuan(revolving['price'])}")
        self.ok(
            "abs.deal", "transfer", {"deal": self.deal, "tranche": "senior", "to": INV2, "amount": 100_000 * Y}, INV1
        )

        self.say("The retailer does not pay its voucher (due day 100). Thirty days later it is a default.")
        self.days(60)
        self.say("The factory pays its voucher due on day 150; payment date 2 (day 180) amortises the notes.")
        self.ok("scf.vouchers", "settle", {"voucher": v4}, FACTORY)
        self.ok("abs.deal", "collect", {"deal": self.deal}, FACTOR)
        self.days(30)
        second = self.ok("abs.deal", "distribute", {"deal": self.deal}, SPV)
        self.waterfall(second)

        report = self.q("investor_report")
        table = Table(title="tranche balances after payment date 2")
        for col in ("tranche", "face", "outstanding", "interest paid", "principal paid", "ratings"):
            table.add_column(col, justify="left" if col in ("tranche", "ratings") else "right")
        for t in report["tranches"]:
            ratings = ", ".join(r["rating"] for r in t["ratings"]) or "-"
            table.add_row(
                t["name"],
                yuan(t["face"]),
                yuan(t["outstanding"]),
                yuan(t["interest_paid"]),
                yuan(t["principal_paid"]),
                ratings,
            )
        self.console.print(table)
        end = {org: self.balance(org) for org in start}
        return {
            "deal": self.deal,
            "first": first,
            "second": second,
            "revolving": revolving,
            "events": self.events,
            "report": report,
            "start": start,
            "end": end,
        }


def run(
    home_dir: Path, console: Console, inspect: Callable[[str, str, dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """The whole story on a node serving ``home_dir``; ``inspect(url, token, summary)`` runs before it stops."""
    if not (home_dir / "node" / "node.json").exists():
        init_network(home_dir, len(ORG_TYPES), port=free_port(0), org_types=ORG_TYPES, chain_id="abs-demo")
    home = NodeHome.open(home_dir)
    home.config["port"] = free_port(int(home.config["port"]))
    node = home.node()
    server = Server(node, home.auth(), str(home.config["host"]), int(home.config["port"]))
    thread = server.start_in_thread()
    token = home.auth().create(f"{INV1}/admin", days=1)
    try:
        with Client(home.url, token) as client:
            summary = Deal(home, client, console, node.clock.advance).story()
            console.print(f"\nThe explorer view: {home.url}/explorer/abs?token=<a read token>#/{summary['deal']}")
            if inspect is not None:
                inspect(home.url, token, summary)
        return summary
    finally:
        server.stop_thread(thread)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="the network folder (default: a new temporary folder)")
    ns = parser.parse_args()
    console = Console()
    if ns.home is not None:
        run(ns.home, console)
        return
    with tempfile.TemporaryDirectory() as tmp:
        run(Path(tmp) / "net", console)


if __name__ == "__main__":
    main()
