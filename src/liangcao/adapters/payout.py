"""The insurer's payout adapter: ledger events in, payments-core transfers out, each exactly once.

Theory of operation
-------------------
The ``cover`` contract emits ``policy_bought`` (a premium to collect) and ``claim_approved`` (an indemnity to
pay). For each one of its insurer's, the adapter

1. reads the policy on the ledger: if the payment is already recorded there, it is done (a replay);
2. creates the transfer in the payments core under the id the contract derives from the policy
   (``liangcao.apps.cover.rules.transfer_id``): the payments core answers ``EXISTS`` for a transfer it already
   holds with the same fields, so paying again after a crash is a no-op, never a second payment;
3. records the transfer on the ledger (``cover.record_payout`` / ``record_premium``), which the contract
   accepts once (``ALREADY_PAID`` after that, which is success here);
4. remembers the stream position (``Last-Event-ID``) in its folder, only after 3.

A ``kill -9`` between any two steps leaves a state the next run completes: before 2 nothing happened; after
2 the transfer exists and 2 is a no-op; after 3 the ledger says paid and 1 skips. The cursor only saves work:
on start the adapter also settles whatever the ledger still lists as due (``cover.due``). The payments core is
the embedded ``liangcao.payments.Engine`` in the adapter's folder (durable before it answers).

Accounts (ledger 156, CNY fen): the insurer's, the platform's clearing account (premiums are collected from
it: the shopper paid the premium at checkout) and one per shopper (indemnities are paid to it); an account an
operator opened first with a limit is used as it is. A transfer whose id exists with other fields, or any
other refusal, is a fault for that obligation: the adapter settles every other one due, then stops loudly
(``AdapterFault``; the process logs one line and exits 3). A refusal that spends the id in the payments core
(``exceeds_credits``: the insurer is short of funds) is passed over on a later run to the next derived id
(``transfer_ids``), so a funded insurer pays it then, once. The adapter pays only its own insurer's
obligations (read from the ledger, whatever the event says), retries a record the node did not confirm in
time, and reports a payout that was new in its core but already recorded paid (a second adapter on another
core paid it) as a fault, never as success.

Run it: ``python -m liangcao.adapters.payout --home NET --as org1/admin --engine DIR`` (or
``liangcao cover payout-adapter ...``); ``--once`` settles what is due and exits.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from liangcao.apps.cover.rules import CoverCode, account_id, transfer_attempts_max, transfer_ids
from liangcao.codes import Code
from liangcao.errors import Fault
from liangcao.payments import Account, CreateAccountResult, CreateTransferResult, Engine, Transfer

log = logging.getLogger("liangcao.adapters.payout")

LEDGER_CNY = 156  # ISO 4217 numeric code of the currency: one payments-core ledger per currency
ACCOUNT_CODE = 3100  # cover accounts
PAYOUT_CODE = 3101  # transfer codes: an indemnity paid...
PREMIUM_CODE = 3102  # ...and a premium collected
reconnect_wait_ms_max = 5_000  # the longest pause before following the stream again after an error
due_rounds_max = 1_000  # pages of ``cover.due`` settled at start (each at most cover's page_max entries)


class AdapterFault(Fault):
    """The payments core or the ledger answered what exactly-once rules out: stop and let an operator look."""


class _SpentId(AdapterFault):
    """The payments core refused this transfer id for good earlier (``id_already_failed``)."""


class PaymentsPort(Protocol):
    """What the adapter needs of the payments core: the embedded ``Engine``, or :class:`HttpPayments`."""

    def create_accounts(self, accounts: list[Account]) -> list[int]: ...

    def create_transfers(self, transfers: list[Transfer]) -> list[int]: ...


class LedgerPort(Protocol):
    """What the adapter needs of a node: run a query, submit a transaction and wait for its receipt."""

    def query(self, contract: str, method: str, args: dict[str, Any]) -> Any: ...

    def submit(self, contract: str, method: str, args: dict[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Obligation:
    """One payment the ledger asks for: an indemnity or a premium of a policy."""

    purpose: str  # payout | premium
    policy: str


def insurer_account(org: str) -> int:
    return account_id(f"insurer:{org}")


def clearing_account(platform: str) -> int:
    return account_id(f"platform:{platform}")


def shopper_account(platform: str, shopper: str) -> int:
    return account_id(f"shopper:{platform}:{shopper}")


class PayoutAdapter:
    """Settles one insurer's cover obligations through ``engine``; see the module notes."""

    def __init__(self, ledger: LedgerPort, engine: PaymentsPort, insurer: str) -> None:
        self.ledger = ledger
        self.engine = engine
        self.insurer = insurer
        self.paid = 0  # transfers this adapter created (not EXISTS): what it did itself
        self.replayed = 0  # obligations found already settled, in the payments core or on the ledger

    # ---- one obligation ---------------------------------------------------------------------------------
    def obligation(self, event: dict[str, Any]) -> Obligation | None:
        """The obligation a ``cover`` event creates for this insurer, or None."""
        data = event.get("data") or {}
        if event.get("contract") != "cover" or data.get("insurer") != self.insurer:
            return None
        if event.get("name") == "claim_approved":
            return Obligation("payout", str(data["policy"]))
        if event.get("name") == "policy_bought":
            return Obligation("premium", str(data["policy"]))
        return None

    def settle(self, ob: Obligation) -> str:
        """Pay ``ob`` and record it; ``paid``, ``exists`` (paid before, recorded now) or ``recorded`` (nothing to do)."""
        view = self.ledger.query("cover", "policy", {"policy": ob.policy})
        pol = view["policy"]
        if pol["insurer"] != self.insurer:  # the ledger decides whose obligation it is, not the event
            log.warning(
                "%s of %s is %s's, not %s's: not paid here", ob.purpose, ob.policy, pol["insurer"], self.insurer
            )
            return "recorded"
        if ob.purpose == "payout":
            claim = view["claim"]
            if claim is None or claim["status"] in ("held", "rejected"):
                return "recorded"  # nothing owed (yet): a held claim emits claim_approved when approved
            if claim["status"] == "paid":
                self.replayed += 1
                return "recorded"
            debit, credit = insurer_account(pol["insurer"]), shopper_account(pol["platform"], pol["shopper"])
            amount, code, method = int(claim["amount"]), PAYOUT_CODE, "record_payout"
        else:
            if pol["premium_transfer"]:
                self.replayed += 1
                return "recorded"
            debit, credit = clearing_account(pol["platform"]), insurer_account(pol["insurer"])
            amount, code, method = int(pol["premium"]), PREMIUM_CODE, "record_premium"
        try:
            outcome, tid = self._pay(ob, debit, credit, amount, code)
        except AdapterFault as exc:
            raise AdapterFault(exc.code, f"{ob.purpose} of {ob.policy}: {exc.message}") from None
        receipt = self.ledger.submit("cover", method, {"policy": ob.policy, "transfer": tid})
        if receipt["code"] == CoverCode.ALREADY_PAID and outcome == "paid":
            # This core had no such transfer, yet the ledger says it is paid: another adapter paid it through
            # another payments core (a second adapter on a fresh folder). That is a payment made twice.
            raise AdapterFault(
                Code.INTERNAL,
                f"{ob.purpose} of {ob.policy} paid twice: transfer {tid} was new here but the ledger records it "
                "paid by another payments core; reverse one and run a single adapter per insurer",
            )
        if receipt["code"] not in (Code.OK, CoverCode.ALREADY_PAID):
            raise AdapterFault(
                Code.INTERNAL, f"the ledger refused {method} of {ob.policy}: {receipt['code']} {receipt['message']}"
            )
        return outcome

    def _pay(self, ob: Obligation, debit: int, credit: int, amount: int, code: int) -> tuple[str, str]:
        """Create the obligation's transfer under the first of its derived ids the core has not refused for
        good; ``(outcome, id)``. An id is passed over only on ``id_already_failed``: the core never applied it
        and never will, so the ids tried before the one that holds were never payments (exactly once)."""
        for tid in transfer_ids(ob.purpose, ob.policy):
            try:
                return self._transfer(int(tid, 16), debit, credit, amount, code), tid
            except _SpentId:
                log.warning("transfer %s of %s was refused for good earlier: trying the next derived id", tid, ob)
        raise AdapterFault(Code.INTERNAL, f"every derived transfer id ({transfer_attempts_max}) was refused for good")

    def _transfer(self, tid: int, debit: int, credit: int, amount: int, code: int) -> str:
        accounts = [Account(id=a, ledger=LEDGER_CNY, code=ACCOUNT_CODE) for a in sorted({debit, credit})]
        for result in self.engine.create_accounts(accounts):
            # An operator may open the insurer's (or the platform's) account with a limit (debits must not exceed
            # credits): the same account with other flags is the account, and the limit is the core's to enforce.
            if result not in (
                CreateAccountResult.OK,
                CreateAccountResult.EXISTS,
                CreateAccountResult.EXISTS_WITH_DIFFERENT_FLAGS,
            ):
                raise AdapterFault(Code.INTERNAL, f"the payments core refused a cover account: {result!r}")
        t = Transfer(
            id=tid, debit_account_id=debit, credit_account_id=credit, amount=amount, ledger=LEDGER_CNY, code=code
        )
        (result,) = self.engine.create_transfers([t])
        if result == CreateTransferResult.OK:
            self.paid += 1
            return "paid"
        if result == CreateTransferResult.EXISTS:
            self.replayed += 1
            return "exists"
        if result == CreateTransferResult.ID_ALREADY_FAILED:
            raise _SpentId(Code.INTERNAL, f"transfer {tid:032x} was refused for good")
        name = CreateTransferResult(result).name if result in CreateTransferResult._value2member_map_ else str(result)
        raise AdapterFault(Code.INTERNAL, f"transfer {tid:032x} refused by the payments core: {name.lower()}")

    # ---- many -----------------------------------------------------------------------------------------------
    def settle_due(self) -> int:
        """Settle everything the ledger lists as due for this insurer; how many obligations were settled."""
        n = 0
        refused: dict[Obligation, AdapterFault] = {}
        for _ in range(due_rounds_max):
            due = self.ledger.query("cover", "due", {"insurer": self.insurer})
            todo = [Obligation("premium", d["policy"]) for d in due["premiums"]]
            todo += [Obligation("payout", d["policy"]) for d in due["payouts"]]
            todo = [ob for ob in todo if ob not in refused]
            if not todo:
                break
            for ob in todo:
                try:
                    self.settle(ob)
                except AdapterFault as exc:
                    # Stop loudly, but after the others: one refused obligation must not starve every shopper.
                    log.error("%s", exc.message)
                    refused[ob] = exc
                    continue
                n += 1
        if refused:
            first = next(iter(refused.values()))
            raise AdapterFault(first.code, f"{len(refused)} obligation(s) refused, left due: {first.message}")
        return n

    def handle(self, event: dict[str, Any]) -> str | None:
        """Settle the obligation ``event`` creates, if it is one of this insurer's."""
        ob = self.obligation(event)
        return None if ob is None else self.settle(ob)


# ---- over HTTP: the payments service, the SDK, a cursor file, the process -----------------------------------
class HttpPayments:
    """:class:`PaymentsPort` over the payments service (``liangcao pay serve``): the same transfers under the
    same ids, so exactly-once holds the same way (``EXISTS`` for a transfer the service already holds).
    ``token``: the bearer token the service asks for (its ``operator.token`` or a ``service`` session from
    ``liangcao pay token``); default ``LIANGCAO_PAY_TOKEN`` from the environment."""

    def __init__(self, url: str = "", *, token: str | None = None, http: Any = None) -> None:
        import httpx

        token = token if token is not None else os.environ.get("LIANGCAO_PAY_TOKEN")
        headers = {"Authorization": f"Bearer {token.strip()}"} if token else {}
        self.http = http if http is not None else httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=30.0)

    def _post(self, path: str, events: list[Any]) -> list[int]:
        import msgspec

        body = msgspec.json.encode([msgspec.structs.asdict(e) for e in events])
        r = self.http.post(path, content=body, headers={"Content-Type": "application/json"})
        if r.status_code != 200:
            # refused whole (bad input, or admission control said wait): nothing applied, try again later
            raise OSError(f"payments service answered {r.status_code} to {path}: {r.text[:200]}")
        return [int(c) for c in r.json()["results"]]

    def create_accounts(self, accounts: list[Account]) -> list[int]:
        return self._post("/v1/accounts", accounts)

    def create_transfers(self, transfers: list[Transfer]) -> list[int]:
        return self._post("/v1/transfers", transfers)

    def close(self) -> None:
        self.http.close()


class HttpLedger:
    """:class:`LedgerPort` over the node's HTTP API, signing with the insurer member's own key."""

    def __init__(self, client: Any, signer: Any) -> None:
        self.client = client
        self.signer = signer

    def query(self, contract: str, method: str, args: dict[str, Any]) -> Any:
        return self.client.query(contract, method, args)

    def submit(self, contract: str, method: str, args: dict[str, Any]) -> dict[str, Any]:
        result = self.client.submit(self.client.build(contract, method, args, [self.signer]), wait=True)
        if result["status"] != "committed":
            # Not an exactly-once breach: the transaction may still commit. ``follow`` tries again, and then the
            # ledger says paid, or the payments core says EXISTS and the record is sent again (ALREADY_PAID).
            raise Fault(Code.NOT_READY, f"{contract}.{method} was not committed in time")
        return dict(result["receipt"])


class Cursor:
    """The last stream id handled, in a file written atomically (rename after fsync)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> str | None:
        try:
            return json.loads(self.path.read_text())["last_event_id"] or None
        except (FileNotFoundError, ValueError, KeyError):
            return None

    def save(self, last: str) -> None:
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w") as f:
            json.dump({"last_event_id": last}, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)


def follow(adapter: PayoutAdapter, client: Any, cursor: Cursor, stop: threading.Event, *, live: bool = True) -> int:
    """Settle what is due, then each new ``cover`` event from the stream (resuming after the cursor) until
    ``stop`` is set; with ``live`` False, return once the stream has nothing more. How many were settled."""
    n, caught_up, wait_ms = 0, False, 100
    while not stop.is_set():
        try:
            if not caught_up:  # what is due first: the stream position saves work, the ledger is the truth
                n += adapter.settle_due()
                caught_up = True
            for ev in _events(client, cursor.load(), live):
                if stop.is_set():
                    return n
                if ev.get("type") == "end":
                    break
                if adapter.handle(ev) is not None:
                    n += 1
                if ev.get("id"):
                    cursor.save(str(ev["id"]))
                wait_ms = 100
            if not live:
                return n
        except (OSError, Fault) as exc:
            if isinstance(exc, AdapterFault):
                raise
            log.warning("event stream interrupted (%s); following again in %d ms", exc, wait_ms)
        except Exception as exc:  # the SDK's errors (ClientError, httpx) end this stream, not the adapter
            log.warning("event stream ended (%s: %s); following again in %d ms", type(exc).__name__, exc, wait_ms)
        stop.wait(wait_ms / 1000)
        wait_ms = min(2 * wait_ms, reconnect_wait_ms_max)
    return n


def _events(client: Any, last: str | None, live: bool) -> Iterator[dict[str, Any]]:
    return client.events(0, contract="cover", follow=live, last_event_id=last)  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    """``python -m liangcao.adapters.payout --home NET --as ORG/MEMBER --engine DIR [--url URL] [--once]``."""
    import argparse

    from liangcao.client import Client
    from liangcao.crypto.signer import load_signer
    from liangcao.node.home import NodeHome, member_dir, valid_member_id

    p = argparse.ArgumentParser(prog="liangcao.adapters.payout", description="the insurer's cover payout adapter")
    p.add_argument("--home", required=True, type=Path, help="the network folder")
    p.add_argument("--as", dest="member", required=True, help="the insurer's member that signs, e.g. org1/admin")
    p.add_argument("--engine", required=True, type=Path, help="the adapter's folder (payments core and cursor)")
    p.add_argument("--payments-url", default=None, help="pay through this payments service, not the embedded core")
    p.add_argument(
        "--payments-token-file",
        type=Path,
        default=None,
        help="a file holding the payments service's token (default: LIANGCAO_PAY_TOKEN)",
    )
    p.add_argument("--url", default=None, help="node URL (default from node.json)")
    p.add_argument("--once", action="store_true", help="settle what is due and what the stream holds, then exit")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s payout %(message)s")
    if not valid_member_id(a.member):
        p.error(f"--as {a.member!r} is not ORG/MEMBER")
    home = NodeHome.open(a.home)
    signer = load_signer(member_dir(home.root, a.member))
    insurer = a.member.partition("/")[0]
    a.engine.mkdir(parents=True, exist_ok=True)
    try:
        token = a.payments_token_file.read_text().strip() if a.payments_token_file else None
    except OSError as exc:
        p.error(f"--payments-token-file: {exc}")
    engine: Engine | HttpPayments = (
        HttpPayments(a.payments_url, token=token) if a.payments_url else Engine(a.engine / "payments")
    )
    stop = threading.Event()
    try:
        with Client(a.url or home.url, home.auth().create(a.member, 30)) as client:
            adapter = PayoutAdapter(HttpLedger(client, signer), engine, insurer)
            n = follow(adapter, client, Cursor(a.engine / "cursor.json"), stop, live=not a.once)
            log.info("settled %d obligations (%d paid here, %d found settled)", n, adapter.paid, adapter.replayed)
    except KeyboardInterrupt:
        pass
    except AdapterFault as exc:  # loud, for an operator, in one line: what was refused and why
        log.error("payout adapter stopped: %s", exc.message)
        return 3
    finally:
        engine.close()
    return 0


def wait_paid(client: Any, policies: list[str], timeout_s: float = 30.0) -> bool:
    """Whether every policy's claim is recorded paid on the ledger within ``timeout_s`` (demos and tests)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        views = [client.query("cover", "policy", {"policy": p}) for p in policies]
        if all(v["claim"] is not None and v["claim"]["status"] == "paid" for v in views):
            return True
        time.sleep(0.1)
    return False


if __name__ == "__main__":
    raise SystemExit(main())
