"""The checkout core: orders, escrow, confirmation, auto-confirmation and refunds over the payments core.

Theory of operation. Every mutating operation runs in three steps, and each step is safe to repeat:

1. **Intent** (one SQLite transaction): the idempotency key is looked up (a finished key answers its
   stored first answer; the same key with another request is refused), the order's state is checked
   against the state machine (``states.ALLOWED``), the chain of transfers is built with ids derived from
   the order id, the step and its attempt number, and the order is marked busy with the key, the intent and
   the chain stored beside it. Nothing has moved yet; a refusal here writes nothing.
2. **Money**: the chain goes to the payments core through the :class:`~liangcao.checkout.money.Batcher`.
3. **Outcome** (one SQLite transaction): the order's new state and the answer are stored under the key;
   the answer is returned.

A crash (or a failed payments core) between 1 and 3 leaves the key open. :meth:`Checkout.recover` (at
start, and every sweep) and a retry of the same key both send the stored chain again: the core answers
``exists`` for what it already applied, so the money moves once, and the answer is then stored. So a
payment acknowledged to a client is never lost, and a retried one is never charged twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from liangcao import codes
from liangcao.checkout import limits, money, states
from liangcao.checkout.codes import CheckoutCode, CheckoutError
from liangcao.checkout.guards import GuardChain, PayAttempt, PaymentMethod, WalletMethod
from liangcao.checkout.states import OrderState, PaymentState, RefundKind, RefundState
from liangcao.checkout.store import Store
from liangcao.errors import Fault, InvariantViolation, LiangcaoError
from liangcao.payments.types import Account, CreateTransferResult, Transfer

log = logging.getLogger(__name__)

_PARTY = re.compile(r"[a-z0-9_-]+")
_CHAIN = msgspec.json.Decoder(list[Transfer])
_R = CreateTransferResult
_SHORT = {int(_R.EXCEEDS_CREDITS), int(_R.DEBIT_ACCOUNT_NOT_FOUND)}


@dataclass(slots=True)
class Pending:
    """An operation whose intent is stored and whose money has not moved yet (see ``Checkout.finish``)."""

    key: str
    op: str
    order_id: str
    intent: dict[str, Any]
    chain: list[Transfer]


@dataclass(slots=True)
class Confirming:
    """A pay request past its guards whose passkey answer is still to be verified (``begin_pay(...,
    confirm_async=True)``): await ``guards.confirm_async(attempt, records)``, then ``then()`` goes on with
    the payment (a Reply or a Pending, as ``begin_pay``)."""

    attempt: PayAttempt
    records: dict[str, Any]
    then: Callable[[], Reply | Pending]


@dataclass(slots=True)
class Reply:
    """An answer: its HTTP status and JSON body; ``replayed`` when it is the stored first answer of a key."""

    status: int
    body: dict[str, Any]
    replayed: bool = False


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def check_amount(value: Any, what: str = "amount") -> int:
    """Fen as an int in 1..amount_fen_max; floats, strings and bools are refused (AMOUNT_NOT_INTEGER)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckoutError(
            CheckoutCode.AMOUNT_NOT_INTEGER, f"{what} must be an integer number of fen, not {type(value).__name__}"
        )
    if not 0 < value <= limits.amount_fen_max:
        raise CheckoutError(
            CheckoutCode.AMOUNT_INVALID, f"{what} {value} is outside 1..{limits.amount_fen_max} fen (amount_fen_max)"
        )
    return value


def check_party(value: str, what: str) -> str:
    if not (0 < len(value) <= limits.party_id_chars_max and _PARTY.fullmatch(value)):
        raise CheckoutError(
            CheckoutCode.BAD_PARTY_ID,
            f"{what} must be 1..{limits.party_id_chars_max} characters of a-z 0-9 _ - (party_id_chars_max)",
        )
    return value


#: Idempotency keys the gateway makes for itself (the auto-confirm sweep's ``auto:<order>:<attempt>``):
#: refused from clients, or a client could take the key of a sweep to come and stall it.
RESERVED_KEY_PREFIX = "auto:"


def check_key(key: str | None) -> str:
    if not key:
        raise CheckoutError(CheckoutCode.IDEMPOTENCY_KEY_MISSING, "every mutating request needs an Idempotency-Key")
    if len(key) > limits.idempotency_key_chars_max or not key.isascii() or not key.isprintable():
        raise CheckoutError(
            CheckoutCode.BAD_REQUEST,
            f"Idempotency-Key must be 1..{limits.idempotency_key_chars_max} printable ASCII characters",
        )
    if key.startswith(RESERVED_KEY_PREFIX):
        raise CheckoutError(
            CheckoutCode.BAD_REQUEST, f"Idempotency-Key may not start with {RESERVED_KEY_PREFIX!r} (the gateway's own)"
        )
    return key


def check_note(value: str, what: str = "note") -> str:
    if len(value) > limits.note_chars_max:
        raise CheckoutError(CheckoutCode.BAD_REQUEST, f"{what} is over note_chars_max={limits.note_chars_max}")
    return value


def _fingerprint(op: str, params: dict[str, Any]) -> bytes:
    return hashlib.sha256(json.dumps([op, params], sort_keys=True, separators=(",", ":")).encode()).digest()


def _error_reply(code: CheckoutCode, message: str) -> Reply:
    e = CheckoutError(code, message)
    return Reply(e.status, e.body())


class Checkout:
    """The gateway's core over a payments backend (``Engine`` or ``PostgresBackend``); thread-safe.

    ``clock_ms`` is the gateway's clock (auto-confirmation); ``fee_bps`` the platform's fee;
    ``auto_confirm_s`` the window after payment in which the buyer may confirm or ask for a refund."""

    def __init__(
        self,
        home: Path,
        backend: Any,
        *,
        clock_ms: Callable[[], int] = _wall_ms,
        fee_bps: int = 60,
        auto_confirm_s: int = 10 * 24 * 3600,
        guards: GuardChain | None = None,
        methods: Sequence[PaymentMethod] = (),
        sync_full: bool = False,
    ) -> None:
        if not 0 <= fee_bps <= limits.fee_bps_max:
            raise CheckoutError(CheckoutCode.BAD_REQUEST, f"fee_bps must be 0..{limits.fee_bps_max} (fee_bps_max)")
        if not 1 <= auto_confirm_s <= limits.auto_confirm_s_max:
            raise CheckoutError(
                CheckoutCode.BAD_REQUEST, f"auto_confirm_s must be 1..{limits.auto_confirm_s_max} (auto_confirm_s_max)"
            )
        self.home = Path(home)
        self.backend = backend
        self.clock_ms = clock_ms
        self.fee_bps = fee_bps
        self.auto_confirm_ms = auto_confirm_s * 1000
        self.guards = guards or GuardChain()
        self.methods: dict[str, PaymentMethod] = {"wallet": WalletMethod()}
        for m in methods:
            self.methods[m.name] = m
        self.store = Store(self.home / "checkout.sqlite", sync_full=sync_full)
        self.batcher = money.Batcher(backend)
        self._live: set[str] = set()
        self._live_lock = threading.Lock()
        self._accounts_lock = threading.Lock()
        self._known: set[int] = {int(r["account_id"]) for r in self.store.read("SELECT account_id FROM parties")}
        self.counts: dict[str, int] = {}
        self._ensure_accounts(money.PLATFORM_ACCOUNTS)
        self.recover()

    def close(self) -> None:
        self.batcher.close()
        self.store.close()

    # ----------------------------------------------------------------------------- accounts

    def _ensure_accounts(self, accounts: list[Account]) -> None:
        """Create payments-core accounts not yet known (``exists`` counts as created)."""
        missing = [a for a in accounts if a.id not in self._known]
        if not missing:
            return
        with self._accounts_lock:
            missing = [a for a in missing if a.id not in self._known]
            if not missing:
                return
            try:
                results = self.backend.create_accounts(missing)
            except (LiangcaoError, Fault, OSError) as exc:
                raise CheckoutError(CheckoutCode.BACKEND_UNAVAILABLE, f"payments core: {exc}") from None
            for a, r in zip(missing, results, strict=True):
                if r not in (0, 22):  # ok, exists
                    raise InvariantViolation(1, f"account {a.id} refused by the payments core: {r}")
            with self.store.tx() as db:
                db.executemany("INSERT OR IGNORE INTO parties VALUES (?)", [(str(a.id),) for a in missing])
            self._known.update(a.id for a in missing)

    def _party_accounts(self, buyer: str, merchant: str) -> None:
        self._ensure_accounts([money.account(money.Kind.BUYER, buyer), money.account(money.Kind.MERCHANT, merchant)])

    # --------------------------------------------------------------------------- idempotency

    def _existing(self, key: str, fp: bytes) -> Reply | None:
        """The stored answer of ``key`` (or the open operation driven to its end); None for a new key."""
        row = self.store.one("SELECT * FROM idem WHERE key = ?", (key,))
        if row is None:
            return None
        if bytes(row["fingerprint"]) != fp:
            raise CheckoutError(
                CheckoutCode.IDEMPOTENCY_KEY_REUSED,
                f"Idempotency-Key {key!r} already answered another request ({row['op']}); use a new key",
            )
        if row["status"]:
            return Reply(int(row["status"]), json.loads(row["body"]), replayed=True)
        return self._redrive(row)

    def _claim(self, key: str) -> None:
        with self._live_lock:
            if key in self._live:
                raise CheckoutError(CheckoutCode.REQUEST_IN_PROGRESS, f"request {key!r} is still running: retry")
            self._live.add(key)

    def _release(self, key: str) -> None:
        with self._live_lock:
            self._live.discard(key)

    def _redrive(self, row: Any) -> Reply:
        self._claim(row["key"])
        try:
            chain = _CHAIN.decode(row["chain"])
            intent = json.loads(row["intent"])
            return self._money_and_outcome(row["key"], row["op"], row["order_id"], intent, chain)
        finally:
            self._release(row["key"])

    def recover(self) -> int:
        """Finish every operation left open (a crash, or a payments core that failed): same chain, same ids;
        then tell methods of the settlements they have not heard of."""
        done = 0
        self.after_settlements()
        for row in self.store.read("SELECT * FROM idem WHERE status = 0"):
            try:
                self._redrive(row)
                done += 1
            except CheckoutError as exc:
                if exc.code != CheckoutCode.REQUEST_IN_PROGRESS:  # a failed core, a method not plugged in
                    log.warning("recover %s: %s", row["key"], exc.message)
                # REQUEST_IN_PROGRESS: a live request is driving it
        return done

    def _run(
        self,
        key: str,
        op: str,
        params: dict[str, Any],
        prepare: Callable[[Any], tuple[str, dict[str, Any], list[Transfer]]],
    ) -> Reply | Pending:
        """Step 1 (module docstring) of one operation under ``key``: a stored answer, or the money to move."""
        fp = _fingerprint(op, params)
        found = self._existing(key, fp)
        if found is not None:
            return found
        self._claim(key)
        try:
            with self.store.tx() as db:
                if db.execute("SELECT 1 FROM idem WHERE key = ?", (key,)).fetchone():
                    raise CheckoutError(CheckoutCode.REQUEST_IN_PROGRESS, f"request {key!r} is still running: retry")
                order_id, intent, chain = prepare(db)
                db.execute(
                    "INSERT INTO idem (key, fingerprint, op, order_id, intent, chain, created_ms) VALUES (?,?,?,?,?,?,?)",
                    (key, fp, op, order_id, json.dumps(intent), msgspec.json.encode(chain), self.clock_ms()),
                )
                if order_id and op != "create":
                    db.execute("UPDATE orders SET busy = ? WHERE id = ?", (key, order_id))
        except BaseException:
            self._release(key)
            raise
        return Pending(key, op, order_id, intent, chain)

    def finish(self, started: Reply | Pending) -> Reply:
        """Steps 2 and 3 of an operation begun by a ``begin_*`` method, waiting in this thread."""
        if isinstance(started, Reply):
            return started
        try:
            return self._money_and_outcome(started.key, started.op, started.order_id, started.intent, started.chain)
        finally:
            self._release(started.key)

    async def finish_async(self, started: Reply | Pending) -> Reply:
        """Steps 2 and 3 on an event loop: the loop waits for the batch without holding a thread."""
        if isinstance(started, Reply):
            return started
        import asyncio

        try:
            if started.intent.get("via"):
                from starlette.concurrency import run_in_threadpool

                await run_in_threadpool(self._method_step, started.order_id, started.intent, started.key)
                return self._outcome(started.key, started.op, started.order_id, started.intent, [])
            try:
                results = await asyncio.wrap_future(self.batcher.submit(started.chain)) if started.chain else []
            except (LiangcaoError, Fault, OSError, RuntimeError) as exc:
                raise CheckoutError(
                    CheckoutCode.BACKEND_UNAVAILABLE, f"payments core failed ({exc}); retry with the same key"
                ) from None
            if started.op in ("confirm", "auto_confirm") and any(
                hasattr(m, "after_settle") for m in self.methods.values()
            ):
                # A settlement may tell a method (its own store, fsynced): not on the event loop.
                from starlette.concurrency import run_in_threadpool

                return await run_in_threadpool(
                    self._outcome, started.key, started.op, started.order_id, started.intent, results
                )
            return self._outcome(started.key, started.op, started.order_id, started.intent, results)
        finally:
            self._release(started.key)

    def _method_step(self, order_id: str, intent: dict[str, Any], key: str) -> None:
        """The money step done by a payment method (a refund after settlement of an installment order):
        ``intent["error"]`` says why when the method refused; a fault propagates (the key stays open)."""
        row = self.store.one("SELECT * FROM orders WHERE id = ?", (order_id,))
        assert row is not None
        method: Any = self.methods.get(intent["via"])
        if method is None:  # restarted without it: the refund stays open until it is plugged in again
            raise CheckoutError(
                CheckoutCode.METHOD_UNAVAILABLE,
                f"order {order_id}: its refund goes through {intent['via']!r}, which is not plugged in now",
            )
        try:
            method.refund_after_settle(dict(row), intent["amount"], key)
        except LiangcaoError as exc:
            intent["error"] = f"{codes.name_of(exc.code)}: {exc.message}"

    def _money_and_outcome(
        self, key: str, op: str, order_id: str, intent: dict[str, Any], chain: list[Transfer]
    ) -> Reply:
        if intent.get("via"):
            self._method_step(order_id, intent, key)
            return self._outcome(key, op, order_id, intent, [])
        try:
            results = self.batcher.send(chain) if chain else []
        except (LiangcaoError, Fault, OSError, RuntimeError) as exc:
            raise CheckoutError(
                CheckoutCode.BACKEND_UNAVAILABLE, f"payments core failed ({exc}); retry with the same key"
            ) from None
        return self._outcome(key, op, order_id, intent, results)

    def _outcome(self, key: str, op: str, order_id: str, intent: dict[str, Any], results: list[int]) -> Reply:
        ok, cause = money.outcome(results) if results else (not intent.get("error"), 0)
        with self.store.tx() as db:
            done = db.execute("SELECT status, body FROM idem WHERE key = ?", (key,)).fetchone()
            if done is not None and done["status"]:  # finished by another driver (a retry, the sweeper) meanwhile
                return Reply(int(done["status"]), json.loads(done["body"]), replayed=True)
            reply = _FINISH[op](self, db, order_id, intent, ok, cause)
            if order_id and op != "create":
                state = db.execute("SELECT state FROM orders WHERE id = ?", (order_id,)).fetchone()[0]
                if state not in states.RESULTS[op]:
                    raise InvariantViolation(1, f"{op} left order {order_id} in state {state}")
                db.execute("UPDATE orders SET busy = '' WHERE id = ? AND busy = ?", (order_id, key))
            db.execute(
                "UPDATE idem SET status = ?, body = ? WHERE key = ?", (reply.status, json.dumps(reply.body), key)
            )
        self.counts[f"{op}_{reply.status}"] = self.counts.get(f"{op}_{reply.status}", 0) + 1
        if op in ("confirm", "auto_confirm") and reply.status == 200 and order_id:
            self.after_settlements([order_id])
        return reply

    def after_settlements(self, order_ids: Sequence[str] | None = None) -> int:
        """Tell each settled order's method (installments: open the plan) until it has been told; how many.

        Called after each settlement and by every sweep: a method that failed (its store, a fault) is told
        again later, so its record follows the money even across a crash."""
        if order_ids is None:
            rows = self.store.read(
                "SELECT * FROM orders WHERE plan_state = 1 LIMIT ?", (limits.auto_confirm_sweep_max,)
            )
        else:
            rows = [
                r
                for i in order_ids
                for r in self.store.read("SELECT * FROM orders WHERE id = ? AND plan_state = 1", (i,))
            ]
        told = 0
        for row in rows:
            method: Any = self.methods.get(row["method"])
            if method is None or not hasattr(method, "after_settle"):
                continue
            try:
                method.after_settle(dict(row), int(row["funding_id"]))
            except (LiangcaoError, Fault, OSError) as exc:
                log.warning("order %s: %s did not record the settlement yet: %s", row["id"], row["method"], exc)
                continue
            with self.store.tx() as db:
                db.execute("UPDATE orders SET plan_state = 2 WHERE id = ?", (row["id"],))
            told += 1
        return told

    # ------------------------------------------------------------------------------- orders

    def _order(self, db: Any, order_id: str, op: str) -> Any:
        row = db.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
        if row is None:
            raise CheckoutError(CheckoutCode.ORDER_NOT_FOUND, f"no order {order_id!r}")
        if row["busy"]:
            raise CheckoutError(
                CheckoutCode.REQUEST_IN_PROGRESS, f"order {order_id} is busy with request {row['busy']!r}: retry"
            )
        states.check(op, row["state"], order_id)
        return row

    def begin_create_order(
        self, key: str | None, buyer: str, merchant: str, amount: Any, currency: str = "CNY", note: str = ""
    ) -> Reply | Pending:
        """A new order (``CREATED``); nothing moves until it is paid."""
        key = check_key(key)
        check_party(buyer, "buyer")
        check_party(merchant, "merchant")
        check_amount(amount)
        check_note(note)
        if currency not in money.CURRENCIES:
            raise CheckoutError(CheckoutCode.UNSUPPORTED_CURRENCY, f"currency {currency!r}: only CNY is settled here")
        params = {"buyer": buyer, "merchant": merchant, "amount": amount, "currency": currency, "note": note}
        found = self._existing(key, _fingerprint("create", params))
        if found is not None:
            return found
        self._party_accounts(buyer, merchant)

        def prepare(db: Any) -> tuple[str, dict[str, Any], list[Transfer]]:
            order_id = f"{merchant}.{secrets.token_hex(8)}"
            db.execute(
                "INSERT INTO orders (id, buyer, merchant, amount, currency, note, state, created_ms) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (order_id, buyer, merchant, amount, currency, note, int(OrderState.CREATED), self.clock_ms()),
            )
            return order_id, {}, []

        return self._run(key, "create", params, prepare)

    def _finish_create(self, db: Any, order_id: str, intent: dict[str, Any], ok: bool, cause: int) -> Reply:
        return Reply(201, self._order_json(db, order_id))

    def begin_pay(
        self,
        key: str | None,
        order_id: str,
        method: str = "wallet",
        step_up: dict[str, Any] | None = None,
        client: dict[str, str] | None = None,
        confirm_async: bool = False,
    ) -> Reply | Pending | Confirming:
        """Pay into escrow: a pending transfer from the method's account to escrow, after the guards.

        ``confirm_async`` (the gateway on its event loop): a step-up answer that must be verified is not
        verified here (no thread waits for the relying party's batch); a :class:`Confirming` is returned
        instead, to await ``guards.confirm_async`` and then call its ``then``."""
        key = check_key(key)
        params = {"order": order_id, "method": method}  # the step-up assertion is not part of the request's identity
        found = self._existing(key, _fingerprint("pay", params))
        if found is not None:
            return found
        row = self.store.one("SELECT * FROM orders WHERE id = ?", (order_id,))
        if row is None:
            raise CheckoutError(CheckoutCode.ORDER_NOT_FOUND, f"no order {order_id!r}")
        states.check("pay", row["state"], order_id)
        chosen = self.methods.get(method)
        if chosen is None:
            raise CheckoutError(
                CheckoutCode.METHOD_UNAVAILABLE, f"payment method {method!r} is not offered ({', '.join(self.methods)})"
            )
        attempt = PayAttempt(
            order_id, row["buyer"], row["merchant"], row["amount"], row["currency"], method, step_up, client or {}
        )
        if confirm_async and self.guards.awaits_step_up:
            records, confirm = self.guards.check(attempt)
            if confirm:  # the gateway awaits the passkey verdict on its loop, then calls ``then``
                return Confirming(
                    attempt, records, lambda: self._pay_guarded(key, order_id, params, chosen, attempt, records)
                )
        else:
            records = self.guards.run(attempt)
        return self._pay_guarded(key, order_id, params, chosen, attempt, records)

    def _pay_guarded(
        self,
        key: str,
        order_id: str,
        params: dict[str, Any],
        chosen: PaymentMethod,
        attempt: PayAttempt,
        records: dict[str, Any],
    ) -> Reply | Pending:
        """The rest of :meth:`begin_pay` once the guards (and any step-up) let the payment through."""
        source = chosen.source(attempt)
        method = attempt.method

        def prepare(db: Any) -> tuple[str, dict[str, Any], list[Transfer]]:
            o = self._order(db, order_id, "pay")
            n = o["pay_attempt"] + 1
            chain = money.hold(order_id, source, o["amount"], n)
            db.execute(
                "UPDATE orders SET pay_attempt = ?, method = ?, source_account = ?, hold_id = ?, risk = ? WHERE id = ?",
                (n, method, str(source), str(chain[0].id), json.dumps(records) if records else "", order_id),
            )
            return order_id, {"attempt": n}, chain

        return self._run(key, "pay", params, prepare)

    def _finish_pay(self, db: Any, order_id: str, intent: dict[str, Any], ok: bool, cause: int) -> Reply:
        if ok:
            now = self.clock_ms()
            db.execute(
                "UPDATE orders SET state = ?, pay_state = ?, held = amount, paid_ms = ?, auto_confirm_ms = ? "
                "WHERE id = ?",
                (int(OrderState.PAID), int(PaymentState.HELD), now, now + self.auto_confirm_ms, order_id),
            )
            return Reply(200, self._order_json(db, order_id))
        db.execute("UPDATE orders SET pay_state = ? WHERE id = ?", (int(PaymentState.FAILED), order_id))
        if cause in _SHORT:
            return _error_reply(CheckoutCode.INSUFFICIENT_FUNDS, f"order {order_id}: the buyer's funds do not cover it")
        return _error_reply(
            CheckoutCode.PAYMENT_DECLINED, f"order {order_id}: payments core answered {codes_name(cause)}"
        )

    def begin_confirm(self, key: str | None, order_id: str) -> Reply | Pending:
        """The buyer confirms receipt: the hold is settled to the merchant less the fee (one linked chain)."""
        key = check_key(key)
        return self._run(key, "confirm", {"order": order_id}, lambda db: self._prepare_settle(db, order_id, "confirm"))

    def _prepare_settle(self, db: Any, order_id: str, op: str) -> tuple[str, dict[str, Any], list[Transfer]]:
        o = self._order(db, order_id, op)
        n = o["settle_attempt"] + 1
        held = o["held"]
        fee = money.fee_of(held, self.fee_bps)
        merchant = money.account_id(money.Kind.MERCHANT, o["merchant"])
        pending = o["pay_state"] == PaymentState.HELD
        chain = money.settle(order_id, int(o["hold_id"]), pending, held, merchant, fee, n)
        db.execute("UPDATE orders SET settle_attempt = ? WHERE id = ?", (n, order_id))
        funding = str(chain[0].id) if pending else o["funding_id"]
        return order_id, {"n": n, "fee": fee, "held": held, "funding": funding}, chain

    def _finish_settle(self, db: Any, order_id: str, intent: dict[str, Any], ok: bool, cause: int) -> Reply:
        if ok:
            method = db.execute("SELECT method FROM orders WHERE id = ?", (order_id,)).fetchone()[0]
            # A method not plugged in now (a restart without it) is told later: its plan must not be lost.
            chosen = self.methods.get(method)
            plan = 1 if chosen is None or hasattr(chosen, "after_settle") else 0
            db.execute(
                "UPDATE orders SET state = ?, pay_state = ?, fee = ?, settled = ?, held = 0, settled_ms = ?, "
                "funding_id = ?, plan_state = ? WHERE id = ? AND state = ?",
                (
                    int(OrderState.SETTLED),
                    int(PaymentState.SETTLED),
                    intent["fee"],
                    intent["held"],
                    self.clock_ms(),
                    intent.get("funding", ""),
                    plan,
                    order_id,
                    int(OrderState.PAID),
                ),
            )
            return Reply(200, self._order_json(db, order_id))
        return _error_reply(
            CheckoutCode.PAYMENT_DECLINED, f"order {order_id}: settlement refused ({codes_name(cause)})"
        )

    def begin_refund(self, key: str | None, order_id: str, amount: Any, reason: str = "") -> Reply | Pending:
        """Refund ``amount`` fen: from the hold or escrow before settlement, from the merchant after it."""
        key = check_key(key)
        check_amount(amount)
        check_note(reason, "reason")
        params = {"order": order_id, "amount": amount, "reason": reason}

        def prepare(db: Any) -> tuple[str, dict[str, Any], list[Transfer]]:
            o = self._order(db, order_id, "refund")
            if o["refunded"] + amount > o["amount"]:
                raise CheckoutError(
                    CheckoutCode.REFUND_EXCEEDS_PAID,
                    f"order {order_id}: refunding {amount} would make {o['refunded'] + amount} of {o['amount']} paid",
                    {"paid": o["amount"], "refunded": o["refunded"]},
                )
            if o["method"] not in self.methods:
                # Its records (a credit plan) would not follow, and the money would go to the wallet: a
                # purchase on credit cashed out.
                raise CheckoutError(
                    CheckoutCode.METHOD_UNAVAILABLE,
                    f"order {order_id} was paid with {o['method']!r}, which is not plugged in now: refund it later",
                )
            if o["refunds"] >= limits.refunds_per_order_max:
                raise CheckoutError(
                    CheckoutCode.TOO_MANY_REFUNDS,
                    f"order {order_id}: refunds_per_order_max={limits.refunds_per_order_max}",
                )
            if o["pay_state"] == PaymentState.ESCROWED and hasattr(self.methods.get(o["method"]), "after_settle"):
                # The method records the plan from the hold's one post; a second refund before settlement
                # would leave less to settle than that post funded.
                raise CheckoutError(
                    CheckoutCode.ORDER_NOT_REFUNDABLE,
                    f"order {order_id}: {o['method']} takes one partial refund before settlement; refund after it",
                )
            seq = o["refunds"] + 1
            buyer = money.account_id(money.Kind.BUYER, o["buyer"])
            after = o["state"] == OrderState.SETTLED
            via = ""
            if after and hasattr(self.methods.get(o["method"]), "refund_after_settle"):
                # The method's own records move this refund (installments: the plan shrinks, the line returns).
                chain, kind, via = [], int(RefundKind.REVERSE), o["method"]
            elif after:
                merchant = money.account_id(money.Kind.MERCHANT, o["merchant"])
                chain, kind = money.refund_after(order_id, merchant, buyer, amount, seq), int(RefundKind.REVERSE)
            else:
                pending = o["pay_state"] == PaymentState.HELD
                source = int(o["source_account"]) if o["source_account"] else buyer
                chain, kind = money.refund_before(order_id, int(o["hold_id"]), pending, o["held"], source, amount, seq)
            db.execute(
                "INSERT INTO refunds (order_id, seq, amount, kind, state, after_settlement, reason, created_ms) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (order_id, seq, amount, kind, int(RefundState.REQUESTED), int(after), reason, self.clock_ms()),
            )
            db.execute("UPDATE orders SET refunds = ? WHERE id = ?", (seq, order_id))
            intent = {
                "seq": seq,
                "amount": amount,
                "kind": kind,
                "after": after,
                "post": str(chain[0].id) if chain else "",
            }
            if via:
                intent["via"] = via
            return order_id, intent, chain

        return self._run(key, "refund", params, prepare)

    def _finish_refund(self, db: Any, order_id: str, intent: dict[str, Any], ok: bool, cause: int) -> Reply:
        seq, amount, kind = intent["seq"], intent["amount"], intent["kind"]
        if not ok:
            db.execute(
                "UPDATE refunds SET state = ? WHERE order_id = ? AND seq = ?", (int(RefundState.FAILED), order_id, seq)
            )
            if intent.get("error"):  # the method refused it (its own code and words)
                code = (
                    CheckoutCode.MERCHANT_FUNDS_SHORT if "FUNDS" in intent["error"] else CheckoutCode.PAYMENT_DECLINED
                )
                return _error_reply(code, f"order {order_id}: refund refused: {intent['error']}")
            if intent["after"] and cause in _SHORT | {int(_R.EXCEEDS_CREDITS)}:
                return _error_reply(
                    CheckoutCode.MERCHANT_FUNDS_SHORT, f"order {order_id}: the merchant's balance cannot cover {amount}"
                )
            return _error_reply(
                CheckoutCode.PAYMENT_DECLINED, f"order {order_id}: refund refused ({codes_name(cause)})"
            )
        db.execute(
            "UPDATE refunds SET state = ? WHERE order_id = ? AND seq = ?", (int(RefundState.SUCCEEDED), order_id, seq)
        )
        o = db.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
        refunded = o["refunded"] + amount
        held = o["held"] if intent["after"] else o["held"] - amount
        pay_state = o["pay_state"]
        if kind == RefundKind.VOID:
            pay_state = int(PaymentState.VOIDED)
        elif kind == RefundKind.PARTIAL_POST:
            pay_state = int(PaymentState.ESCROWED)
            db.execute("UPDATE orders SET funding_id = ? WHERE id = ?", (intent["post"], order_id))
        state = int(OrderState.REFUNDED) if refunded == o["amount"] else o["state"]
        db.execute(
            "UPDATE orders SET refunded = ?, held = ?, pay_state = ?, state = ? WHERE id = ?",
            (refunded, held, pay_state, state, order_id),
        )
        return Reply(200, self._order_json(db, order_id))

    def begin_cancel(self, key: str | None, order_id: str) -> Reply | Pending:
        """Close an unpaid order."""
        key = check_key(key)

        def prepare(db: Any) -> tuple[str, dict[str, Any], list[Transfer]]:
            self._order(db, order_id, "cancel")
            return order_id, {}, []

        return self._run(key, "cancel", {"order": order_id}, prepare)

    def _finish_cancel(self, db: Any, order_id: str, intent: dict[str, Any], ok: bool, cause: int) -> Reply:
        db.execute("UPDATE orders SET state = ? WHERE id = ?", (int(OrderState.CANCELLED), order_id))
        return Reply(200, self._order_json(db, order_id))

    def begin_topup(self, key: str | None, buyer: str, amount: Any) -> Reply | Pending:
        """Money into a buyer's wallet from outside (a bank top-up), once per key."""
        key = check_key(key)
        check_party(buyer, "buyer")
        check_amount(amount)
        params = {"buyer": buyer, "amount": amount}
        found = self._existing(key, _fingerprint("topup", params))
        if found is not None:
            return found
        acct = money.account(money.Kind.BUYER, buyer)
        self._ensure_accounts([acct])
        chain = money.topup(key, acct.id, amount)
        return self._run(key, "topup", params, lambda db: ("", {"buyer": buyer, "amount": amount}, chain))

    def _finish_topup(self, db: Any, order_id: str, intent: dict[str, Any], ok: bool, cause: int) -> Reply:
        if not ok:
            return _error_reply(CheckoutCode.PAYMENT_DECLINED, f"top-up refused ({codes_name(cause)})")
        return Reply(200, {"buyer": intent["buyer"], "amount": intent["amount"]})

    # ------------------------------------------------------------------ the same, waiting in this thread

    def create_order(
        self, key: str | None, buyer: str, merchant: str, amount: Any, currency: str = "CNY", note: str = ""
    ) -> Reply:
        """A new order (``CREATED``); nothing moves until it is paid."""
        return self.finish(self.begin_create_order(key, buyer, merchant, amount, currency, note))

    def pay(
        self,
        key: str | None,
        order_id: str,
        method: str = "wallet",
        step_up: dict[str, Any] | None = None,
        client: dict[str, str] | None = None,
    ) -> Reply:
        """Pay into escrow (see :meth:`begin_pay`)."""
        started = self.begin_pay(key, order_id, method, step_up, client)
        assert not isinstance(started, Confirming)  # only with confirm_async
        return self.finish(started)

    def confirm(self, key: str | None, order_id: str) -> Reply:
        """Confirm receipt: settle to the merchant less the fee (see :meth:`begin_confirm`)."""
        return self.finish(self.begin_confirm(key, order_id))

    def refund(self, key: str | None, order_id: str, amount: Any, reason: str = "") -> Reply:
        """Refund ``amount`` fen (see :meth:`begin_refund`)."""
        return self.finish(self.begin_refund(key, order_id, amount, reason))

    def cancel(self, key: str | None, order_id: str) -> Reply:
        """Close an unpaid order."""
        return self.finish(self.begin_cancel(key, order_id))

    def topup(self, key: str | None, buyer: str, amount: Any) -> Reply:
        """Money into a buyer's wallet from outside, once per key."""
        return self.finish(self.begin_topup(key, buyer, amount))

    # ------------------------------------------------------------------------ auto-confirm

    def auto_confirm_due(self, now_ms: int | None = None) -> int:
        """Settle every paid order whose window has ended (at most ``auto_confirm_sweep_max``); how many.

        The sweep sends all their chains to the batcher at once, so thousands settle in a few batches."""
        now = self.clock_ms() if now_ms is None else now_ms
        rows = self.store.read(
            "SELECT id, settle_attempt FROM orders WHERE state = ? AND auto_confirm_ms <= ? AND busy = '' LIMIT ?",
            (int(OrderState.PAID), now, limits.auto_confirm_sweep_max),
        )
        started: list[tuple[str, str, dict[str, Any], Future[list[int]]]] = []
        for row in rows:
            key = f"{RESERVED_KEY_PREFIX}{row['id']}:{row['settle_attempt'] + 1}"
            try:
                self._claim(key)
            except CheckoutError:
                continue
            try:
                with self.store.tx() as db:
                    order_id, intent, chain = self._prepare_settle(db, row["id"], "auto_confirm")
                    db.execute(
                        "INSERT INTO idem (key, fingerprint, op, order_id, intent, chain, created_ms) "
                        "VALUES (?,?,?,?,?,?,?)",
                        (
                            key,
                            _fingerprint("auto_confirm", {"order": order_id}),
                            "auto_confirm",
                            order_id,
                            json.dumps(intent),
                            msgspec.json.encode(chain),
                            now,
                        ),
                    )
                    db.execute("UPDATE orders SET busy = ? WHERE id = ?", (key, order_id))
            except CheckoutError:  # confirmed, refunded or busy since the select: nothing to do
                self._release(key)
                continue
            except sqlite3.IntegrityError as exc:  # a key taken before keys were checked: skip, do not stall all
                log.warning("auto-confirm %s: key %s: %s", row["id"], key, exc)
                self._release(key)
                continue
            started.append((key, order_id, intent, self.batcher.submit(chain)))
        settled = 0
        for key, order_id, intent, fut in started:
            try:
                reply = self._outcome(key, "auto_confirm", order_id, intent, fut.result())
                settled += reply.status == 200
            except (LiangcaoError, Fault, OSError, RuntimeError) as exc:
                log.warning("auto-confirm %s: %s (finished by the next sweep)", order_id, exc)
            finally:
                self._release(key)
        return settled

    # ------------------------------------------------------------------------------ queries

    def _order_json(self, db: Any, order_id: str, refunds: bool = False) -> dict[str, Any]:
        o = db.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
        out = {
            "id": o["id"],
            "buyer": o["buyer"],
            "merchant": o["merchant"],
            "amount": o["amount"],
            "currency": o["currency"],
            "note": o["note"],
            "state": OrderState(o["state"]).name.lower(),
            "payment": PaymentState(o["pay_state"]).name.lower(),
            "method": o["method"],
            "held": o["held"],
            "refunded": o["refunded"],
            "fee": o["fee"],
            "settled": o["settled"],
            "created_ms": o["created_ms"],
            "paid_ms": o["paid_ms"],
            "auto_confirm_ms": o["auto_confirm_ms"],
            "settled_ms": o["settled_ms"],
        }
        if o["risk"]:
            out["decisions"] = json.loads(o["risk"])
        if refunds:
            rows = db.execute("SELECT * FROM refunds WHERE order_id = ? ORDER BY seq", (order_id,)).fetchall()
            out["refunds"] = [
                {
                    "seq": r["seq"],
                    "amount": r["amount"],
                    "kind": RefundKind(r["kind"]).name.lower(),
                    "state": RefundState(r["state"]).name.lower(),
                    "after_settlement": bool(r["after_settlement"]),
                    "reason": r["reason"],
                }
                for r in rows
            ]
        return out

    def get_order(self, order_id: str) -> dict[str, Any]:
        """The order with its refunds; ``ORDER_NOT_FOUND`` if there is none."""
        with self.store.tx() as db:
            if db.execute("SELECT 1 FROM orders WHERE id = ?", (order_id,)).fetchone() is None:
                raise CheckoutError(CheckoutCode.ORDER_NOT_FOUND, f"no order {order_id!r}")
            return self._order_json(db, order_id, refunds=True)

    def merchant_orders(self, merchant: str, limit: int = 50) -> list[dict[str, Any]]:
        """A merchant's newest orders (at most ``report_orders_max``)."""
        check_party(merchant, "merchant")
        limit = max(0, min(limit, limits.report_orders_max))
        with self.store.tx() as db:
            ids = [
                r[0]
                for r in db.execute(
                    "SELECT id FROM orders WHERE merchant = ? ORDER BY created_ms DESC LIMIT ?", (merchant, limit)
                )
            ]
            return [self._order_json(db, i) for i in ids]

    def settlement_report(self, merchant: str, from_ms: int = 0, to_ms: int = 0) -> dict[str, Any]:
        """What was settled to ``merchant`` in [from_ms, to_ms) (0: unbounded): gross, fee, net, refunds after
        settlement, and the merchant's balance in the payments core (which the figures must explain)."""
        check_party(merchant, "merchant")
        for name, v in (("from_ms", from_ms), ("to_ms", to_ms)):
            if not 0 <= v <= limits.time_ms_max:
                raise CheckoutError(CheckoutCode.BAD_REQUEST, f"{name} must be 0..{limits.time_ms_max} (time_ms_max)")
        to = to_ms or (1 << 62)
        row = self.store.one(
            "SELECT COUNT(*) AS n, COALESCE(SUM(settled), 0) AS gross, COALESCE(SUM(fee), 0) AS fee FROM orders "
            "WHERE merchant = ? AND settled_ms > 0 AND settled_ms >= ? AND settled_ms < ?",
            (merchant, from_ms, to),
        )
        refunds = self.store.one(
            "SELECT COALESCE(SUM(r.amount), 0) AS total FROM refunds r JOIN orders o ON o.id = r.order_id "
            "WHERE o.merchant = ? AND r.after_settlement = 1 AND r.state = ? AND o.settled_ms >= ? AND o.settled_ms < ?",
            (merchant, int(RefundState.SUCCEEDED), from_ms, to),
        )
        assert row is not None and refunds is not None
        found = self.backend.lookup_accounts([money.account_id(money.Kind.MERCHANT, merchant)])
        balance = found[0].credits_posted - found[0].debits_posted if found else 0
        return {
            "merchant": merchant,
            "from_ms": from_ms,
            "to_ms": to_ms,
            "orders": row["n"],
            "gross": row["gross"],
            "fee": row["fee"],
            "net": row["gross"] - row["fee"],
            "refunds_after_settlement": refunds["total"],
            "balance": balance,
        }

    def wallet(self, buyer: str) -> dict[str, Any]:
        """A buyer's balance in the payments core: available and held (pending)."""
        check_party(buyer, "buyer")
        found = self.backend.lookup_accounts([money.account_id(money.Kind.BUYER, buyer)])
        if not found:
            return {"buyer": buyer, "available": 0, "held": 0}
        a = found[0]
        return {
            "buyer": buyer,
            "available": a.credits_posted - a.debits_posted - a.debits_pending,
            "held": a.debits_pending,
        }


def codes_name(cause: int) -> str:
    try:
        return CreateTransferResult(cause).name.lower()
    except ValueError:
        return codes.name_of(cause)


_FINISH: dict[str, Callable[[Checkout, Any, str, dict[str, Any], bool, int], Reply]] = {
    "create": Checkout._finish_create,
    "pay": Checkout._finish_pay,
    "confirm": Checkout._finish_settle,
    "auto_confirm": Checkout._finish_settle,
    "refund": Checkout._finish_refund,
    "cancel": Checkout._finish_cancel,
    "topup": Checkout._finish_topup,
}
