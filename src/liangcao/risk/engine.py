"""The risk engine: one decision per payment (features -> rules -> model), labels learned as they arrive.

Theory of operation
-------------------
``decide`` reads the payment's features from the windows and profiles (then adds the payment to them),
scores the features with the serving model version, applies the current rule set, and returns a
:class:`~liangcao.risk.types.Decision` naming both versions. The payment's model input waits in a bounded
``pending`` table for its label.

Labels arrive late and in any order: ``label(payment_id, fraud)`` (a chargeback, confirmed fraud, the
shopper's "it was me"). A payment with no fraud label ``label_maturity_ms`` after its decision (by the engine's
clock) is learned as good; a chargeback after that still teaches the model the payment was fraud. Labels
queue and are learned off the decision path: ``learn()`` (or ``tick()``) drains the queue, and ``decide``
learns at most ``learn_per_decide`` of them inline (0 in the benchmark, where idle time drains it) and
matures at most ``mature_per_decide`` payments: no decision waits for a burst (labels arriving in a batch,
a day of payments maturing at once after the clock jumped or a restart).

State survives restarts through ``snapshot()`` (windows, profiles, pending payments, the training model,
the drift detector), written whole or not at all and fsynced; rule sets and model versions are files in the
home folder. Calls are serialised by a lock: one engine may be shared by threads.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import operator
import os
import pickle
import re
import struct
import threading
import time
import zlib
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import msgspec

from liangcao.clock import Clock
from liangcao.risk import limits
from liangcao.risk.codes import RiskCode, RiskError, RiskFault
from liangcao.risk.features import HOUR_MS, MODEL_KEYS, FeatureState, model_input
from liangcao.risk.model import MODELS, Classifier, Models, VersionStore, fsync_dir, logistic, write_atomic
from liangcao.risk.rules import DEFAULT_RULES, RuleSet, RuleSetSpec, StepUpCap, canonical, load
from liangcao.risk.types import Decision, Payment, check_payment

SNAPSHOT_MAGIC = b"LIANGCAO-RISK-SNAPSHOT-2\n"  # 2: one array per window, model inputs packed
LABEL_SOURCES = ("confirmed", "chargeback", "it_was_me", "review")
# Whose word outranks whose: the shopper's "it was me" yields to an analyst's review, a confirmation of fraud
# or a chargeback (friendly fraud: the owner confirms, then disputes); those three do not overrule each other.
_LABEL_RANK = {"it_was_me": 1, "review": 2, "confirmed": 2, "chargeback": 2}


class ClockLike(Protocol):
    def now_ms(self) -> int: ...


class ManualClock:
    """A clock that moves only when told (tests, the synthetic world's replay)."""

    def __init__(self, start_ms: int = 0) -> None:
        self.ms = start_ms

    def now_ms(self) -> int:
        return self.ms

    def set(self, ms: int) -> None:
        self.ms = ms

    def advance(self, ms: int) -> None:
        self.ms += ms


class RiskConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The engine's tunables (limits of memory are in ``risk.limits``)."""

    label_maturity_ms: int = 6 * HOUR_MS  # no fraud label by then: learned as a good payment
    learn_per_decide: int = 2  # labels learned inline per decision (0: only learn()/tick() learn)
    tick_chunk: int = 32  # labels tick() learns per hold of the lock
    mature_per_decide: int = 16  # payments matured per decision at most (learn()/tick() mature all that are due)
    positive_weight: float = 1.0  # each fraud label counts this many times (above 1 inflates every score)
    # Payments that matured unlabelled are learned at this rate, each weighing 1/rate (importance weights):
    # most payments are good, and learning every one of them would cost as much as deciding them.
    negative_sample_rate: float = 0.25
    model_warmup_labels: int = 2000  # the model scores but does not act before this many good and 20 fraud labels
    publish_every: int = 1000  # labels between published model versions
    snapshot_every_ms: int = 5 * 60 * 1000  # tick() snapshots at most this often (engine clock)
    compare_window: int = 2000
    challenger_min_labels: int = 300
    challenger_min_positives: int = 10
    challenger_labels_max: int = 20_000
    promote_z: float = 2.33
    adwin_delta: float = 0.002
    learning_rate: float = 0.05
    pending_max: int = 200_000


class Pending(msgspec.Struct, gc=False):
    """A decided payment awaiting its label: the model input (compact) and what a label needs.

    ``gc=False`` and only atomic fields: hundreds of thousands wait at once, outside the collector's walks
    (the model input is packed in ``bytes``: an ``array`` is an object the collector tracks and walks).
    """

    x: bytes
    t: int
    shopper: str
    merchant: str
    decision_id: str
    action: str
    reasons: tuple[str, ...]
    score: float
    model_score: float
    rv: str
    mv: str
    state: int = 0  # 0 awaiting a label, 1 learned as good at maturity, 2 labelled
    label: bool = False  # the label, once state is 2
    rank: int = 0  # _LABEL_RANK of the label's source, once state is 2
    terms: bytes = b""  # a digest of the payment but its time: a retry must be the same payment
    marks: int = 0  # _REFUNDED | _CHARGED_BACK: each counts once in the merchant's rates, however often told


_REFUNDED = 1
_CHARGED_BACK = 2
_RULES_VERSION = re.compile(r"^r(\d{1,9})$")


class RiskEngine:
    """Decides payments and learns from their labels; see the module docstring."""

    def __init__(
        self,
        home: Path | str | None = None,
        *,
        clock: ClockLike | None = None,
        rules: str | bytes | dict[str, Any] | RuleSetSpec | None = None,
        model: str | Callable[[], Classifier] = "logistic",
        config: RiskConfig | None = None,
    ) -> None:
        self.home = Path(home) if home is not None else None
        self.clock: ClockLike = clock if clock is not None else Clock()
        self.config = config or RiskConfig()
        if not 0 < self.config.pending_max <= limits.pending_max:
            raise ValueError(f"pending_max must be within 1..{limits.pending_max}")
        if not 0 < self.config.negative_sample_rate <= 1:
            raise ValueError("negative_sample_rate must be within (0, 1]")
        self._sample_below = int(self.config.negative_sample_rate * 2**32)
        self._sample_weight = 1.0 / self.config.negative_sample_rate
        self._lock = threading.RLock()
        self._home_lock: Any = None
        self._snapshot_child: int | None = None
        if self.home is not None:
            self.home.mkdir(parents=True, exist_ok=True)
            (self.home / "rules").mkdir(exist_ok=True)
            # One engine per home folder: two would overwrite each other's versions and snapshots.
            self._home_lock = open(self.home / "LOCK", "a+")  # noqa: SIM115  # held until close()
            try:
                fcntl.flock(self._home_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._home_lock.close()
                raise RiskError(RiskCode.HOME_IN_USE, f"{self.home} is used by another risk engine") from None
        try:
            self._open(rules, model)
        except BaseException:
            if self._home_lock is not None:
                self._home_lock.close()
            raise

    def _open(
        self, rules: str | bytes | dict[str, Any] | RuleSetSpec | None, model: str | Callable[[], Classifier]
    ) -> None:
        self.state = FeatureState()
        # Ordered: the oldest is evicted in O(1) (a plain dict's front fills with dead slots: quadratic).
        self.pending: OrderedDict[str, Pending] = OrderedDict()
        self.maturing: deque[tuple[int, str]] = deque()
        self.queue: deque[tuple[bytes, bool, float]] = deque()
        self.counters = {
            "decided": 0,
            "allow": 0,
            "step_up": 0,
            "block": 0,
            "labels": 0,
            "pending_evicted": 0,
            "snapshots": 0,
            "snapshot_failures": 0,
        }
        self._last_snapshot_ms = self.clock.now_ms()
        self._rule_texts: dict[str, str] = {}
        self._rule_last = 0
        self.rules = self._start_rules(rules)
        self.cap = StepUpCap()
        if isinstance(model, str) and model not in MODELS:
            raise ValueError(f"unknown model {model!r}: one of {', '.join(MODELS)}")
        if model == "logistic":
            fresh = logistic(self.config.learning_rate)
        else:
            fresh = MODELS[model]() if isinstance(model, str) else model()
        store = VersionStore(self.home / "models" if self.home is not None else None)
        c = self.config
        self.models = Models(
            store,
            fresh,
            MODEL_KEYS,
            publish_every=c.publish_every,
            compare_window=c.compare_window,
            challenger_min_labels=c.challenger_min_labels,
            challenger_min_positives=c.challenger_min_positives,
            challenger_labels_max=c.challenger_labels_max,
            promote_z=c.promote_z,
            adwin_delta=c.adwin_delta,
        )
        if not self._load_snapshot():
            current = self._read_pointer("models")
            if current:
                self.models.rollback(current, self.clock.now_ms())
                self.models.events.clear()
            else:
                self.models.publish("initial", self.clock.now_ms())

    # ----------------------------------------------------------------------------------------------- decide

    def decide(self, p: Payment) -> Decision:
        """Allow, step up or block ``p``, with reasons and the versions that decided (RiskError if bad input)."""
        check_payment(p)
        with self._lock:
            now = self.clock.now_ms()
            if abs(p.time_ms - now) > limits.clock_skew_ms_max:
                raise RiskError(
                    RiskCode.CLOCK_SKEW,
                    f"time_ms {p.time_ms} is {p.time_ms - now} ms from the engine's clock; at most ±{limits.clock_skew_ms_max}",
                )
            terms = _terms(p)
            known = self.pending.get(p.payment_id)
            if known is not None:  # a retry: the same decision, and the payment is not counted twice
                if known.terms and known.terms != terms:
                    raise RiskError(
                        RiskCode.PAYMENT_ID_REUSED,
                        f"payment {p.payment_id!r} was decided with other terms: a new payment needs a new id",
                    )
                return _recorded(p.payment_id, known)
            f = self.state.observe(p, now)
            x = model_input(f)
            models = self.models
            model_score = models.score(x)
            rules = self.rules
            model_acts = (
                models.learned_fraud >= 20 and models.learned - models.learned_fraud >= self.config.model_warmup_labels
            )
            step_up_at = self.cap.threshold(rules.step_up_share_max)
            v = rules.evaluate(f, model_score, model_acts, step_up_at)
            self.cap.add(v.score, rules.step_up_share_max)
            d = Decision(
                decision_id=_decision_id(p.payment_id, now),
                payment_id=p.payment_id,
                action=v.action,
                reasons=v.reasons,
                score=v.score,
                model_score=model_score,
                rules_version=rules.version,
                model_version=self.models.serving_version,
                model_acts=model_acts,
                step_up_at=step_up_at,
                time_ms=now,
                shadow=v.shadow,
                shadow_action=v.shadow_action,
                features=f,
            )
            self._remember(p, d, x, now, terms)
            counters = self.counters
            counters["decided"] += 1
            counters[d.action] += 1
            if self.config.learn_per_decide:
                self._learn(now, self.config.learn_per_decide, self.config.mature_per_decide)
            return d

    def _remember(self, p: Payment, d: Decision, x: dict[str, float], now: int, terms: bytes) -> None:
        pending = self.pending
        if len(pending) >= self.config.pending_max:
            pending.popitem(last=False)
            self.counters["pending_evicted"] += 1
        pending[p.payment_id] = Pending(
            array("d", x.values()).tobytes(),
            now,
            p.shopper,
            p.merchant,
            d.decision_id,
            d.action,
            tuple(d.reasons),
            d.score,
            d.model_score,
            d.rules_version,
            d.model_version,
            terms=terms,
        )
        maturing = self.maturing
        if len(maturing) >= self.config.pending_max:
            # Both are in decision order: past pending_max the oldest waiting entry is of a payment evicted from
            # pending (nothing left to mature). Without this the queue grew by every decision for the whole
            # maturity: 108 million entries for 6 hours at 5,000/s.
            maturing.popleft()
        maturing.append((now + self.config.label_maturity_ms, p.payment_id))

    # ------------------------------------------------------------------------------------------------ labels

    def label(self, payment_id: str, fraud: bool, time_ms: int | None = None, *, source: str = "confirmed") -> None:
        """A label for a decided payment: fraud (confirmed, a chargeback) or not (``it_was_me``, a review).

        Learned later (``learn``/``tick``/inline). A fraud label after the payment matured as good still
        teaches it. Who may say what: ``it_was_me`` is the shopper's answer to a step-up, so only for a payment
        stepped up and only "not fraud" (a blocked payment is cleared by a ``review``, not by the one blocked);
        a fraud label from a review, a confirmation or a chargeback overrules an earlier ``it_was_me``
        (friendly fraud); any other second, different label is refused (LABEL_CONFLICT); the same one again is
        a no-op.
        """
        if type(fraud) is not bool:
            raise RiskError(RiskCode.BAD_LABEL, "fraud must be true or false")
        if source not in LABEL_SOURCES:
            raise RiskError(RiskCode.BAD_LABEL, f"source {source!r} is not one of {', '.join(LABEL_SOURCES)}")
        if source == "it_was_me" and fraud:
            raise RiskError(RiskCode.BAD_LABEL, "it_was_me says a payment was not fraud (fraud must be false)")
        if time_ms is not None and type(time_ms) is not int:
            raise RiskError(RiskCode.BAD_LABEL, "time_ms must be an integer (milliseconds)")
        with self._lock:
            # A time from the future would drag the merchant's windows ahead of the clock: never past now.
            now = self.clock.now_ms() if time_ms is None else min(time_ms, self.clock.now_ms())
            rec = self.pending.get(payment_id)
            if rec is None:
                raise RiskError(RiskCode.UNKNOWN_PAYMENT, f"payment {payment_id!r} is not awaiting a label here")
            if source == "it_was_me" and rec.action != "step_up":
                raise RiskError(
                    RiskCode.BAD_LABEL,
                    f"it_was_me answers a step-up; payment {payment_id!r} was {rec.action}ed (a review may clear it)"
                    if rec.action == "block"
                    else f"it_was_me answers a step-up; payment {payment_id!r} was allowed",
                )
            rank = _LABEL_RANK[source]
            if rec.state == 2 and rec.label != fraud and not (fraud and rank > rec.rank):
                said = "fraud" if rec.label else "not fraud"
                raise RiskError(RiskCode.LABEL_CONFLICT, f"payment {payment_id!r} is already labelled {said}")
            if source == "chargeback" and not rec.marks & _CHARGED_BACK:
                # Once per payment (and only once accepted): a chargeback told again must not inflate the rate.
                rec.marks |= _CHARGED_BACK
                self.state.chargeback(rec.merchant, now)
            if rec.state == 2 and rec.label == fraud:
                return  # the same label again
            if rec.state == 1 and not fraud:
                return  # already learned as good at maturity
            rec.state = 2
            rec.label = fraud
            rec.rank = rank
            self._enqueue(rec.x, fraud)
            self.counters["labels"] += 1

    def refund(self, payment_id: str, time_ms: int | None = None) -> None:
        """A refund or paid return claim for a decided payment: feeds the merchant's and shopper's refund rates
        (once per payment: a second refund of it is a no-op)."""
        if time_ms is not None and type(time_ms) is not int:
            raise RiskError(RiskCode.BAD_LABEL, "time_ms must be an integer (milliseconds)")
        with self._lock:
            rec = self.pending.get(payment_id)
            if rec is None:
                raise RiskError(RiskCode.UNKNOWN_PAYMENT, f"payment {payment_id!r} is not known here")
            if rec.marks & _REFUNDED:
                return  # told again (a retried event, or someone inflating a merchant's refund rate): once
            rec.marks |= _REFUNDED
            now = self.clock.now_ms()
            self.state.refund(rec.shopper, rec.merchant, now if time_ms is None else min(time_ms, now))

    def _enqueue(self, x: bytes, fraud: bool, weight: float = 1.0) -> None:
        if len(self.queue) >= limits.label_queue_max:
            # Never unbounded: learn the oldest now rather than drop it.
            ox, oy, ow = self.queue.popleft()
            self.models.learn(_unpacked(ox), oy, ow, self.clock.now_ms())
        self.queue.append((x, fraud, self.config.positive_weight if fraud else weight))

    def _mature(self, now: int, max_items: int | None = None) -> None:
        maturing = self.maturing
        pending = self.pending
        n = 0
        while maturing and maturing[0][0] <= now and (max_items is None or n < max_items):
            n += 1
            _, pid = maturing.popleft()
            rec = pending.get(pid)
            if rec is not None and rec.state == 0:
                rec.state = 1
                if zlib.crc32(pid.encode()) < self._sample_below:
                    self._enqueue(rec.x, False, self._sample_weight)

    def _learn(self, now: int, max_items: int | None, mature_max: int | None = None) -> int:
        self._mature(now, mature_max)
        queue = self.queue
        learn = self.models.learn
        n = 0
        while queue and (max_items is None or n < max_items):
            x, y, w = queue.popleft()
            learn(_unpacked(x), y, w, now)
            n += 1
        return n

    def learn(self, max_items: int | None = None) -> int:
        """Mature payments due by the clock and learn up to ``max_items`` queued labels; how many it learned."""
        with self._lock:
            # A bounded call also matures a bounded number (a burst of due payments spreads over calls).
            mature_max = None if max_items is None else max(self.config.mature_per_decide, 8 * max_items)
            return self._learn(self.clock.now_ms(), max_items, mature_max)

    def tick(self) -> None:
        """Housekeeping for a host's idle loop (or a thread beside the deciding ones): learn everything due;
        when ``snapshot_every_ms`` passed, snapshot in the background (a forked child writes it).

        The backlog is learned in chunks of ``tick_chunk`` with the lock released between them: a decision
        made meanwhile waits for one chunk (~1 ms), never for the whole backlog."""
        chunk = self.config.tick_chunk
        while True:
            with self._lock:
                now = self.clock.now_ms()
                if self._learn(now, chunk, 8 * chunk) < chunk and not (self.maturing and self.maturing[0][0] <= now):
                    break
            time.sleep(0)  # let a waiting decision take the lock (and the interpreter) first
        with self._lock:
            now = self.clock.now_ms()
            if self.home is not None and now - self._last_snapshot_ms >= self.config.snapshot_every_ms:
                self.snapshot(background=True)
            else:
                self._reap(block=False)

    # ------------------------------------------------------------------------------------------------- rules

    def _start_rules(self, rules: str | bytes | dict[str, Any] | RuleSetSpec | None) -> RuleSet:
        current = self._read_pointer("rules")
        if self.home is not None:
            for p in (self.home / "rules").glob("r*.json"):
                m = _RULES_VERSION.match(p.stem)
                if m:
                    self._rule_last = max(self._rule_last, int(m.group(1)))
        if current:
            self.rules = load(self._rule_text(current), current)
            if rules is None or canonical(rules) == self.rules.text:
                return self.rules
        self._install(rules if rules is not None else DEFAULT_RULES)
        return self.rules

    def reload_rules(self, source: str | bytes | dict[str, Any] | RuleSetSpec) -> str:
        """Install a new rule set (hot: the next decision uses it) and return its version.

        A rule set equal to the current one keeps its version. A bad one is refused with BAD_RULES and
        nothing changes.
        """
        with self._lock:
            if canonical(source) == self.rules.text:
                return self.rules.version
            return self._install(source)

    def _install(self, source: str | bytes | dict[str, Any] | RuleSetSpec) -> str:
        version = f"r{self._rule_last + 1}"
        ruleset = load(source, version)  # raises before anything is written
        if self.home is not None:
            folder = self.home / "rules"
            write_atomic(folder / f"{version}.json", ruleset.text.encode(), durable=True)
            write_atomic(self.home / "rules" / "CURRENT", version.encode(), durable=True)
        else:
            self._rule_texts[version] = ruleset.text
        self._rule_last += 1
        self.rules = ruleset
        return version

    def _rule_text(self, version: str) -> str:
        if not _RULES_VERSION.match(version):
            raise RiskError(RiskCode.UNKNOWN_RULES_VERSION, f"{version!r} is not a rules version (r1, r2, ...)")
        if self.home is None:
            text = self._rule_texts.get(version)
        else:
            path = self.home / "rules" / f"{version}.json"
            text = path.read_text() if path.exists() else None
        if text is None:
            raise RiskError(RiskCode.UNKNOWN_RULES_VERSION, f"rules version {version} is not kept here")
        return text

    def rules_text(self, version: str | None = None) -> str:
        """The canonical JSON of a rule-set version (the current one by default)."""
        with self._lock:
            return self.rules.text if version is None else self._rule_text(version)

    def _read_pointer(self, kind: str) -> str:
        if self.home is None:
            return ""
        path = self.home / kind / "CURRENT"
        return path.read_text().strip() if path.exists() else ""

    # ------------------------------------------------------------------------------------------------ models

    @property
    def model_version(self) -> str:
        return self.models.serving_version

    @property
    def rules_version(self) -> str:
        return self.rules.version

    def publish_model(self) -> str:
        """Publish the training model now (a new version scores the next decisions)."""
        with self._lock:
            version = self.models.publish("published by the operator", self.clock.now_ms())
            self._write_model_pointer()
            return version

    def rollback_model(self, version: str) -> None:
        """Serve (and go on learning from) a kept model version; UNKNOWN_MODEL_VERSION if it is not kept."""
        with self._lock:
            self.models.rollback(version, self.clock.now_ms())
            self._write_model_pointer()

    def model_versions(self) -> list[str]:
        with self._lock:
            return self.models.store.versions()

    def _write_model_pointer(self) -> None:
        if self.home is not None:
            write_atomic(self.home / "models" / "CURRENT", self.models.serving_version.encode(), durable=True)

    def reproduce(self, d: Decision) -> Decision:
        """The decision again, from its recorded features and the rule-set and model versions it names."""
        with self._lock:
            ruleset = (
                self.rules
                if d.rules_version == self.rules.version
                else load(self._rule_text(d.rules_version), d.rules_version)
            )
            score = self.models.scorer_of(d.model_version)
        model_score = score(model_input(d.features))
        v = ruleset.evaluate(d.features, model_score, d.model_acts, d.step_up_at)
        return Decision(
            decision_id=d.decision_id,
            payment_id=d.payment_id,
            action=v.action,
            reasons=v.reasons,
            score=v.score,
            model_score=model_score,
            rules_version=d.rules_version,
            model_version=d.model_version,
            model_acts=d.model_acts,
            step_up_at=d.step_up_at,
            time_ms=d.time_ms,
            shadow=v.shadow,
            shadow_action=v.shadow_action,
            features=d.features,
        )

    # --------------------------------------------------------------------------------------------- snapshots

    def snapshot(self, background: bool = False) -> Path | None:
        """Write the engine's state whole (or not at all) and fsync it; the next start resumes from it.

        ``background``: the state is written by a forked child (as Redis's BGSAVE does) while this process
        goes on deciding: the pause is the fork (copy-on-write pages), not the pickling of every window and
        pending payment (about a second for 60,000 pending payments). A background snapshot still running is
        not started twice; a foreground one waits for it.
        """
        if self.home is None:
            return None
        with self._lock:
            path = self.home / "snapshot.pkl"
            if background and self._reap(block=False) is None:
                return None  # the previous one is still being written
            self._reap(block=True)
            self._write_model_pointer()
            fsync_dir(self.home / "models")
            self._last_snapshot_ms = self.clock.now_ms()
            if background:
                pid = os.fork()
                if pid == 0:  # the child: write, and leave without running the parent's exit handlers
                    code = 1
                    try:
                        self._write_snapshot(path)
                        code = 0
                    finally:
                        os._exit(code)
                self._snapshot_child = pid
                return path
            self._write_snapshot(path)
            self.counters["snapshots"] += 1
            return path

    def _write_snapshot(self, path: Path) -> None:
        state = {
            "features": self.state,
            "pending": self.pending,
            "maturing": self.maturing,
            "queue": self.queue,
            "counters": self.counters,
            "cap": self.cap,
            "models": self.models.state(),
            "model_keys": MODEL_KEYS,
        }
        data = pickle.dumps(state, protocol=5)
        blob = SNAPSHOT_MAGIC + hashlib.sha256(data).hexdigest().encode() + b"\n" + data
        write_atomic(path, blob, durable=True)

    def _reap(self, block: bool) -> bool | None:
        """Collect a background snapshot's child: True/False for its success, None if it is still running."""
        pid = self._snapshot_child
        if pid is None:
            return True
        done, status = os.waitpid(pid, 0 if block else os.WNOHANG)
        if done == 0:
            return None
        self._snapshot_child = None
        ok = os.waitstatus_to_exitcode(status) == 0
        self.counters["snapshots" if ok else "snapshot_failures"] += 1
        return ok

    def _load_snapshot(self) -> bool:
        if self.home is None:
            return False
        path = self.home / "snapshot.pkl"
        if not path.exists():
            return False
        blob = path.read_bytes()
        if blob.startswith(b"LIANGCAO-RISK-SNAPSHOT-") and not blob.startswith(SNAPSHOT_MAGIC):
            raise RiskFault(RiskCode.SNAPSHOT_BAD, f"{path} was written by another release of the engine: move it away")
        head = len(SNAPSHOT_MAGIC)
        digest, data = blob[head : head + 64], blob[head + 65 :]
        if not blob.startswith(SNAPSHOT_MAGIC) or hashlib.sha256(data).hexdigest().encode() != digest:
            raise RiskFault(RiskCode.SNAPSHOT_BAD, f"{path} is damaged (its checksum does not match)")
        try:
            state = pickle.loads(data)
        except Exception as exc:
            raise RiskFault(RiskCode.SNAPSHOT_BAD, f"{path} does not load: {exc}") from None
        if state.get("model_keys") != MODEL_KEYS:
            raise RiskFault(RiskCode.SNAPSHOT_BAD, f"{path} was written for other model features: move it away")
        self.state = state["features"]
        self.pending = OrderedDict(state["pending"])
        self.maturing = state["maturing"]
        self.queue = state["queue"]
        self.counters = state["counters"]
        self.cap = state["cap"]
        self.models.restore(state["models"])
        current = self._read_pointer("models")
        if current and current != self.models.serving_version:
            self.models.serve(self.models.store.get(current), current)
        return True

    def close(self) -> None:
        """Snapshot (with a home folder) and release the home folder for another engine."""
        with self._lock:
            if self._home_lock is None:
                return
            self.snapshot()
            with contextlib.suppress(OSError):
                fcntl.flock(self._home_lock, fcntl.LOCK_UN)
            self._home_lock.close()
            self._home_lock = None

    def __enter__(self) -> RiskEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def status(self) -> dict[str, Any]:
        """Counters, table sizes and versions (for the CLI and the checkout's metrics)."""
        with self._lock:
            n, z = self.models.advantage()
            return {
                "rules_version": self.rules.version,
                "model_version": self.models.serving_version,
                "model_versions": len(self.models.store.versions()),
                "learned": self.models.learned,
                "challenger": self.models.challenger is not None,
                "challenger_compared": n if self.models.challenger is not None else 0,
                "challenger_z": round(z, 3) if self.models.challenger is not None else 0.0,
                "model_events": list(self.models.events),
                "pending": len(self.pending),
                "label_queue": len(self.queue),
                **self.counters,
                **self.state.sizes(),
            }


_unpack_x = struct.Struct(f"={len(MODEL_KEYS)}d").unpack


def _unpacked(x: bytes | array[float]) -> dict[str, float]:
    """A packed model input as the model's dict (an ``array`` from a snapshot of an earlier release too)."""
    return dict(zip(MODEL_KEYS, x if isinstance(x, array) else _unpack_x(x), strict=True))


_terms_json = msgspec.json.Encoder()
# Every field but the time (a retry comes later) and the id (the key it is stored under), in one C call.
_term_fields = operator.attrgetter(*(f for f in Payment.__struct_fields__ if f not in ("time_ms", "payment_id")))


def _terms(p: Payment) -> bytes:
    """A digest of everything about ``p`` but its time and id: 8 bytes of BLAKE2b (no crafted collisions)."""
    return hashlib.blake2b(_terms_json.encode(_term_fields(p)), digest_size=8).digest()


def _decision_id(payment_id: str, now: int) -> str:
    return "rd_" + hashlib.sha256(f"{payment_id}\x00{now}".encode()).hexdigest()[:20]


def _recorded(payment_id: str, rec: Pending) -> Decision:
    return Decision(
        decision_id=rec.decision_id,
        payment_id=payment_id,
        action=rec.action,
        reasons=list(rec.reasons),
        score=rec.score,
        model_score=rec.model_score,
        rules_version=rec.rv,
        model_version=rec.mv,
        time_ms=rec.t,
    )
