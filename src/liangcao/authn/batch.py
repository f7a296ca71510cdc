"""The gateway's step-up path: concurrent answers gathered into ``verify_payments`` micro-batches.

A checkout gateway confirms one payment per request, many at once. On its event loop a request awaits
:meth:`PaymentBatcher.verify_async` (``submit_async``: an asyncio future, no thread parked; every future of a
durable write is resolved with ONE ``loop.call_soon_threadsafe``, see :func:`_resolve`); a caller on a
thread hands its answer to :meth:`PaymentBatcher.verify` and sleeps. One judging thread takes every answer waiting (up to
``batch_answers_max``), judges them in arrival order exactly as :meth:`RelyingParty.verify_payments` does,
and passes the verdicts to one recording thread, which writes them durably (the verdicts of every batch
judged meanwhile in one write, one fsync) and only then wakes each caller with its own Confirmation or
AuthnError. While one batch is being made durable the next is judged, so the signature checks (which hold
the GIL) and the fsync (which does not) overlap.

With a signature worker (``RelyingParty(verify_workers=1)``, the default; ``liangcao.authn.verifier``) the
judging thread does the cheap checks of a batch (``_check_many``), hands its signatures to the worker
process in one round trip and, while the worker verifies them on the other core, checks the next batch;
then it applies the first batch's signature verdicts, counters and clone alarms in arrival order
(``_finish_many``). A device revoked by an earlier answer (even one whose verdict was still with the worker
when this answer was checked) refuses this one as ``REVOKED_CREDENTIAL``, as in one process. A worker that
dies fails the batches it held with a ``VerifierFault`` (nothing recorded, the claims released) and a new
one is started. ``verify_workers=0`` judges each batch in this process (``_judge_many``), with the same
verdicts (``tests/test_authn_verifier.py``).

The pattern is the checkout's ``money.Batcher`` (a queue, one thread taking all that waits, futures per
caller, a bound on batches in flight); this one lives beside the relying party because the relying party
must own it: one judging thread per relying party is what keeps a device's answers in the order they
arrived (its sign counter), and the relying party's ``close`` stops it. The authn benchmark measures this
path (``liangcao.authn.bench``).

Guarantees, each tested (``tests/test_authn_batch.py``):

* every caller gets its own verdict; a refused answer does not fail the others of its batch;
* one device's answers are judged in arrival order (one judging thread);
* an answer replayed in the same batch (or while the first is being recorded) is refused ``REPLAYED``;
* a caller is answered only once its verdict is durable; a store fault reaches every caller of the write
  as a ``StoreError`` and consumes nothing (each answer may be sent again);
* a malformed request is refused on the caller's thread (or loop) and never joins the queue;
* on an event loop (``tests/test_authn_async.py``): the same verdicts as on threads; one wake-up of the loop
  per durable write; a batch's fault rejects every future of it; a cancelled awaiting task leaves its batch
  judged and recorded (its verdict is dropped); a closed loop's verdicts are dropped, the batcher goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

from liangcao.authn import codes as lim
from liangcao.authn.codes import AuthnError
from liangcao.authn.store import Op, Store
from liangcao.authn.verifier import Job, Verifier, VerifierFault
from liangcao.codes import Code
from liangcao.errors import StoreError

#: a ``liangcao.authn.rp.Confirmation`` (named loosely: the relying party imports this module, not the reverse)
Confirmation = Any


class Judge(Protocol):
    """What the batcher needs of a ``RelyingParty`` (its payment answer's reading, judging and recording)."""

    _store: Store
    verify_workers: int

    @staticmethod
    def _payment_in(
        shopper: str, challenge_id: str, credential_json: object, terms: tuple[str, str, int, str]
    ) -> Any: ...

    def _judge_many(
        self, items: Sequence[tuple[str, str, Any, tuple[str, str, int, str]]]
    ) -> tuple[list[Any], list[Op], list[str]]: ...

    def _check_many(
        self, items: Sequence[tuple[str, str, Any, tuple[str, str, int, str]]]
    ) -> tuple[list[Any], list[str]]: ...

    def _finish_many(self, checks: Sequence[Any], verdicts: Sequence[bool]) -> tuple[list[Any], list[Op]]: ...

    @staticmethod
    def _signature_jobs(checks: Sequence[Any]) -> list[Job]: ...

    def _forget(self, assertions: Sequence[Any]) -> None: ...

    def _release(self, claims: Sequence[str]) -> None: ...


class _Slot:
    """One caller waiting: its read answer, then its verdict (or the fault of its batch).

    The callers answered together are woken one after the other, not all at once (``wait``): the recording
    thread sets every verdict, links the slots (``next``) and releases the first; each caller, once awake,
    releases the next. Released together, a dozen threads wake at once and queue for the GIL, each waking
    and sleeping again until its turn (measured: 5 to 8 µs of CPU more per caller than the chain). ``next``
    is set only with the verdicts, so a caller never wakes another before that one's verdict is durable."""

    __slots__ = (
        "assertion", "challenge_id", "error", "future", "loop", "next", "shopper", "signal", "terms", "verdict",
    )  # fmt: skip

    def __init__(
        self,
        shopper: str,
        challenge_id: str,
        assertion: Any,
        terms: tuple[str, str, int, str],
        future: asyncio.Future[Confirmation] | None = None,
    ) -> None:
        self.shopper = shopper
        self.challenge_id = challenge_id
        self.assertion = assertion
        self.terms = terms
        self.verdict: Confirmation | AuthnError | None = None
        self.error: BaseException | None = None
        self.next: _Slot | None = None  # the caller this one wakes, once the verdicts are set
        # an awaiting caller (``submit_async``): its future, resolved on its own loop, no thread parked
        self.future = future
        self.loop: asyncio.AbstractEventLoop | None = future.get_loop() if future is not None else None
        if future is None:
            # a bare lock as a one-shot signal (one futex; a Future's condition costs several lock objects)
            self.signal = threading.Lock()
            self.signal.acquire()

    def wait(self, timeout: float = -1) -> bool:
        """Sleep until this slot's verdict (or fault) is set, then wake the next caller of the chain (also if
        this wait is interrupted once the verdicts are set: the others must not sleep for ever). False if
        ``timeout`` seconds passed first (a test's bound; the gateway waits without one)."""
        woken = False
        try:
            woken = self.signal.acquire(timeout=timeout)
        finally:
            nxt = self.next
            if nxt is not None:
                nxt.signal.release()
        return woken


class _Flight:
    """A batch checked and handed to the signature worker, waiting for its verdicts."""

    __slots__ = ("checks", "claims", "signatures", "slots")

    def __init__(self, slots: list[_Slot], checks: list[Any], claims: list[str], signatures: int) -> None:
        self.slots = slots
        self.checks = checks
        self.claims = claims
        self.signatures = signatures


class _Judged:
    __slots__ = ("claims", "ops", "results", "slots")

    def __init__(
        self, slots: list[_Slot], results: list[Confirmation | AuthnError], ops: list[Op], claims: list[str]
    ) -> None:
        self.slots = slots
        self.results = results
        self.ops = ops
        self.claims = claims


_STOP = None  # put on a queue: the thread reading it stops
#: the callers of a durable write are woken one after another (``_Slot.wait``); False: all at once, as
#: before issue 19's second pass. Measured both ways only on a loaded host (docs/authn.md): ahead in 5 of
#: 6 pairs at load 6-7, in 3 of 6 at load 10-11 (each hop may wait for the scheduler); the quiet-host A/B
#: decides, and this switch is what it flips
WAKE_IN_CHAIN = True
#: answers arriving together (an event loop's callers, answered all at once, ask again all at once) are
#: split in two batches when the signature worker is idle and at least twice this many wait: the worker
#: starts on the first half while the second is checked, and the halves are recorded and answered apart,
#: so the pipeline (check, verify, record, answer) keeps overlapping instead of running in lock step.
#: 0: never split (the batch is everything waiting, as before)
SPLIT_MIN = 8
#: while the worker verifies, how often the judging thread looks for new answers to check meanwhile
_POLL_S = 0.0002


class PaymentBatcher:
    """Micro-batches of step-up answers for one ``RelyingParty`` (get it with ``rp.payment_batcher()``).

    Its two threads start with the first answer and stop with ``close`` (the relying party's ``close``
    calls it): answers queued by then are judged and recorded first. The hand-offs are ``queue.SimpleQueue``
    (C: a caller's ``put`` and the threads' blocking ``get`` take no Python-level lock or condition), as
    every answer crosses two of them and this path runs once per confirmed payment."""

    def __init__(
        self,
        rp: Judge,
        *,
        batch_max: int = 64,
        in_flight_max: int = lim.batches_in_flight_max,
    ) -> None:
        if not 1 <= batch_max <= lim.batch_answers_max:
            raise ValueError(f"batch_max must be 1..{lim.batch_answers_max} (batch_answers_max)")
        if not 1 <= in_flight_max <= lim.batches_in_flight_max:
            raise ValueError(f"in_flight_max must be 1..{lim.batches_in_flight_max} (batches_in_flight_max)")
        self.rp = rp
        self.batch_max = batch_max
        self._answers: queue.SimpleQueue[_Slot | None] = queue.SimpleQueue()
        self._judged: queue.SimpleQueue[_Judged | None] = queue.SimpleQueue()
        # judged batches not yet durable hold their ceremonies' claims: a batch is judged only with a token
        self._tokens: queue.SimpleQueue[bool] = queue.SimpleQueue()
        for _ in range(in_flight_max):
            self._tokens.put(True)
        self._lock = threading.Lock()
        self._closed = False
        self._threads: list[threading.Thread] = []
        self.batches = 0  # batches judged, answers judged, the largest batch, durable writes
        self.answers = 0
        self.largest = 0
        self.writes = 0
        self.faults = 0  # batches failed (their callers got the fault)
        self.verifier: Verifier | None = None  # the signature worker's handle, once the judging thread runs

    # ---- callers --------------------------------------------------------------------------------------------
    def verify(
        self, shopper: str, challenge_id: str, credential_json: object, order_id: str, payee: str, amount_fen: int,
        currency: str,
    ) -> Confirmation:  # fmt: skip
        """``rp.verify_payment`` with these arguments, judged in a batch: the Confirmation once it is durable,
        or the AuthnError refusing it; a ``StoreError`` if its batch could not be recorded."""
        slot = self.submit(shopper, challenge_id, credential_json, order_id, payee, amount_fen, currency)
        slot.wait()
        if slot.error is not None:
            raise slot.error
        if isinstance(slot.verdict, AuthnError):
            raise slot.verdict
        assert slot.verdict is not None
        return slot.verdict

    def verify_answer(self, answer: Any) -> Confirmation:
        """:meth:`verify` for a ``liangcao.authn.PaymentAnswer``."""
        return self.verify(
            answer.shopper, answer.challenge_id, answer.credential_json, answer.order_id, answer.payee,
            answer.amount_fen, answer.currency,
        )  # fmt: skip

    def submit(
        self, shopper: str, challenge_id: str, credential_json: object, order_id: str, payee: str, amount_fen: int,
        currency: str,
    ) -> _Slot:  # fmt: skip
        """Queue an answer (read and bounded here, on the caller's thread: a malformed one is refused at
        once); the slot's ``wait`` returns when its verdict is durable (and must be called: it wakes the
        next caller of its batch)."""
        terms = (order_id, payee, amount_fen, currency)
        slot = _Slot(shopper, challenge_id, self.rp._payment_in(shopper, challenge_id, credential_json, terms), terms)
        self._queue(slot)
        return slot

    def _queue(self, slot: _Slot) -> None:
        if not self._threads:
            self.start()
        with self._lock:  # never behind the stop: a slot queued after it would wait for ever
            if self._closed:
                raise StoreError(Code.NOT_READY, "the relying party is closed")
            self._answers.put(slot)

    # ---- callers on an event loop ---------------------------------------------------------------------------
    def submit_async(
        self, shopper: str, challenge_id: str, credential_json: object, order_id: str, payee: str, amount_fen: int,
        currency: str,
    ) -> asyncio.Future[Confirmation]:  # fmt: skip
        """Queue an answer from a coroutine on the running loop (read and bounded here: a malformed one is
        refused at once, never queued); the future gets the Confirmation once it is durable, or the
        AuthnError refusing it, or the fault of its batch (``StoreError``, ``VerifierFault``).

        No thread is parked for it: when a durable write is done, the recording thread resolves every
        future of that write on this loop with ONE ``loop.call_soon_threadsafe`` (one wake-up of the loop per
        batch, not per caller). Cancelling the future (or the task awaiting it) does not take the answer
        back: it is judged and recorded with its batch, its verdict is only not delivered. If the loop is
        closed before the verdict, the verdict is dropped and the batcher goes on."""
        loop = asyncio.get_running_loop()
        terms = (order_id, payee, amount_fen, currency)
        assertion = self.rp._payment_in(shopper, challenge_id, credential_json, terms)
        future: asyncio.Future[Confirmation] = loop.create_future()
        self._queue(_Slot(shopper, challenge_id, assertion, terms, future))
        return future

    async def verify_async(
        self, shopper: str, challenge_id: str, credential_json: object, order_id: str, payee: str, amount_fen: int,
        currency: str,
    ) -> Confirmation:  # fmt: skip
        """:meth:`verify` for a coroutine: awaits the durable verdict on the running loop (``submit_async``);
        raises the AuthnError refusing the answer, or its batch's fault."""
        return await self.submit_async(shopper, challenge_id, credential_json, order_id, payee, amount_fen, currency)

    async def verify_answer_async(self, answer: Any) -> Confirmation:
        """:meth:`verify_async` for a ``liangcao.authn.PaymentAnswer``."""
        return await self.submit_async(
            answer.shopper, answer.challenge_id, answer.credential_json, answer.order_id, answer.payee,
            answer.amount_fen, answer.currency,
        )  # fmt: skip

    def start(self) -> None:
        """Start the judging and recording threads (and the signature worker) now; else the first answer
        does. A gateway calls it at startup so that its first payment does not wait for the worker."""
        with self._lock:
            if self._threads or self._closed:
                return
            threads = [
                threading.Thread(target=self._judge_loop, name="authn-judge", daemon=True),
                threading.Thread(target=self._record_loop, name="authn-record", daemon=True),
            ]
            for t in threads:
                t.start()
            self._threads = threads

    # ---- the judging thread ---------------------------------------------------------------------------------
    def _take(self, block: bool = True, split: bool = False) -> list[_Slot] | None:
        """Every answer waiting, up to ``batch_max`` (blocks for the first, unless ``block`` is false: then
        perhaps none); None once closed and drained. ``split``: at most half of them if at least
        2 x ``SPLIT_MIN`` wait (the rest is checked while the worker verifies these)."""
        if not block and self._answers.empty():
            return []
        first = self._answers.get()
        if first is _STOP:
            return None
        batch = [first]
        q = self._answers
        most = self.batch_max
        if split and SPLIT_MIN and (waiting := q.qsize() + 1) >= 2 * SPLIT_MIN:
            most = min(most, (waiting + 1) // 2)
        while len(batch) < most and not q.empty():
            nxt = q.get()
            if nxt is _STOP:
                q.put(_STOP)  # after this batch
                break
            batch.append(nxt)
        return batch

    def _judge_loop(self) -> None:
        if self.rp.verify_workers:
            self._judge_pipelined()
            return
        try:
            while (batch := self._take()) is not None:
                self._tokens.get()
                self._count(batch)
                try:
                    results, ops, claims = self.rp._judge_many(
                        [(s.shopper, s.challenge_id, s.assertion, s.terms) for s in batch]
                    )
                except BaseException as exc:  # a store fault while reading: every answer of the batch gets it
                    self._tokens.put(True)
                    self._answer(batch, None, exc)
                    continue
                self._judged.put(_Judged(batch, results, ops, claims))
        finally:
            self._judged.put(_STOP)

    def _count(self, batch: list[_Slot]) -> None:
        self.batches += 1
        self.answers += len(batch)
        self.largest = max(self.largest, len(batch))

    def _judge_pipelined(self) -> None:
        """The judging thread with a signature worker: batch N's signatures are verified in the worker while
        batch N+1 is read and checked here; then N's counters and verdicts are applied here, in order. At most
        two batches are with the worker (``pipeline_batches_max``)."""
        verifier = self.verifier = Verifier()
        flight: deque[_Flight] = deque()
        try:
            with contextlib.suppress(VerifierFault):  # if it does not come up, the first batch tries again
                verifier.start()  # now, not with the first payment (its imports take a few hundred ms)
            while (batch := self._next(flight, verifier)) is not None:
                if not batch:  # the oldest batch's verdicts are ready (or must be waited for now)
                    self._finish(flight, verifier)
                    continue
                self._tokens.get()
                self._count(batch)
                try:
                    checks, claims = self.rp._check_many(
                        [(s.shopper, s.challenge_id, s.assertion, s.terms) for s in batch]
                    )
                except BaseException as exc:  # a store fault while reading: every answer of the batch gets it
                    self._tokens.put(True)
                    self._answer(batch, None, exc)
                    continue
                jobs = self.rp._signature_jobs(checks)
                flight.append(_Flight(batch, checks, claims, len(jobs)))
                if jobs:
                    try:
                        verifier.send(jobs)
                    except VerifierFault as exc:  # what the worker held is lost with it
                        self._fail(flight, exc)
                        continue
            while flight:
                self._finish(flight, verifier)
        finally:
            if flight:  # an unexpected error on this thread: nobody is left waiting
                self._fail(flight, VerifierFault(Code.NOT_READY, "the judging thread stopped"))
            verifier.close()
            self._judged.put(_STOP)

    def _next(self, flight: deque[_Flight], verifier: Verifier) -> list[_Slot] | None:
        """What the judging thread does next: a batch to check (answers wait and the worker can take one more
        batch), [] to finish the oldest batch with the worker (its verdicts are ready, or there is nothing
        else to do), None once closed and drained. While the worker verifies, answers that arrive are
        checked (the queue is looked at every ``_POLL_S`` while waiting for the worker's pipe)."""
        if not flight:  # the worker is idle: give it half of what waits now, check the rest meanwhile
            return self._take(split=True)
        if flight[0].signatures == 0 or len(flight) >= lim.pipeline_batches_max:
            return []
        deadline = time.monotonic() + verifier.wait_s
        while self._answers.empty():
            if verifier.ready(_POLL_S) or time.monotonic() > deadline:
                return []
        return self._take(block=False)

    def _finish(self, flight: deque[_Flight], verifier: Verifier) -> None:
        f = flight.popleft()
        try:
            verdicts = verifier.receive() if f.signatures else []
            if len(verdicts) != f.signatures:
                verifier.reset()
                raise VerifierFault(
                    Code.NOT_READY, f"the signature worker answered {len(verdicts)} verdicts for {f.signatures}"
                )
        except VerifierFault as exc:  # the batches after it were with the same worker
            flight.appendleft(f)
            self._fail(flight, exc)
            return
        try:
            results, ops = self.rp._finish_many(f.checks, verdicts)
        except BaseException as exc:
            self._fail(deque([f]), exc)
            return
        self._judged.put(_Judged(f.slots, results, ops, f.claims))

    def _fail(self, flight: deque[_Flight], exc: BaseException) -> None:
        """Batches that will not be judged: their callers get ``exc``; nothing of them is recorded, their
        ceremonies are free to be answered again (no counter moved: that happens only in ``_finish_many``)."""
        while flight:
            f = flight.popleft()
            self.rp._release(f.claims)
            self._tokens.put(True)
            self.faults += 1
            self._answer(f.slots, None, exc)

    # ---- the recording thread -------------------------------------------------------------------------------
    def _record_loop(self) -> None:
        q = self._judged
        stop = False
        while not stop:
            first = q.get()
            if first is _STOP:
                return
            taken = [first]
            while not q.empty():  # every batch judged meanwhile: one durable write for all
                nxt = q.get()
                if nxt is _STOP:
                    stop = True
                    break
                taken.append(nxt)
            error: BaseException | None = None
            try:
                ops = [op for j in taken for op in j.ops]
                if ops:
                    self.rp._store.write(ops)
                    self.writes += 1
            except BaseException as exc:  # nothing of these batches is recorded: their answers stay open
                error = exc
                self.rp._forget([s.assertion for j in taken for s in j.slots])
            finally:
                self.rp._release([c for j in taken for c in j.claims])
            for j in taken:
                self._tokens.put(True)
                self._set(j.slots, j.results, error)
            self._wake([s for j in taken for s in j.slots])

    @classmethod
    def _answer(
        cls, slots: list[_Slot], results: list[Confirmation | AuthnError] | None, error: BaseException | None
    ) -> None:
        cls._set(slots, results, error)
        cls._wake(slots)

    @staticmethod
    def _set(slots: list[_Slot], results: list[Confirmation | AuthnError] | None, error: BaseException | None) -> None:
        if error is not None or results is None:
            for s in slots:
                s.error = error
            return
        for s, verdict in zip(slots, results, strict=True):
            s.verdict = verdict

    @staticmethod
    def _wake(slots: list[_Slot]) -> None:
        """Wake the callers of ``slots`` (their verdicts set): the threads one after the other
        (``_Slot.wait``), or all at once if ``WAKE_IN_CHAIN`` is off; the awaiting callers with one
        ``call_soon_threadsafe`` per event loop (:func:`_resolve` runs there and resolves them all)."""
        if not slots:
            return
        parked: list[_Slot] = []
        loops: dict[asyncio.AbstractEventLoop, list[_Slot]] = {}
        for s in slots:
            if s.loop is None:
                parked.append(s)
            elif (mine := loops.get(s.loop)) is None:
                loops[s.loop] = [s]
            else:
                mine.append(s)
        for loop, theirs in loops.items():
            # a closed loop has no task left to answer: its verdicts are dropped (they are durable already)
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, theirs)
        if not parked:
            return
        if not WAKE_IN_CHAIN:
            for s in parked:
                s.signal.release()
            return
        for a, b in itertools.pairwise(parked):
            a.next = b
        parked[0].signal.release()

    def close(self) -> None:
        """Judge and record what is queued, then stop the threads; a second call returns at once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = self._threads
            self._answers.put(_STOP)
        for t in threads:
            t.join(timeout=30)

    def worker_cpu_s(self) -> float:
        """CPU seconds of the signature worker processes so far (0 without one)."""
        return self.verifier.cpu_s() if self.verifier is not None else 0.0

    def stats(self) -> dict[str, Any]:
        v = self.verifier
        return {
            "batches": self.batches, "answers": self.answers, "largest": self.largest, "writes": self.writes,
            "faults": self.faults, "workers_started": v.starts if v is not None else 0,
        }  # fmt: skip


def _resolve(slots: list[_Slot]) -> None:
    """On an awaiting caller's loop: every future of a durable write gets its verdict (or its batch's fault);
    a future already cancelled (its task gave up) is skipped."""
    for s in slots:
        f = s.future
        if f is None or f.done():
            continue
        if s.error is not None:
            f.set_exception(s.error)
        elif isinstance(s.verdict, AuthnError):
            f.set_exception(s.verdict)
        else:
            f.set_result(s.verdict)
