"""The synthetic world through the engine, prequentially (decide, then learn from labels as they arrive).

``run`` plays a :class:`~liangcao.risk.world.World`'s events in time order on a manual clock. Each payment is
decided by the online engine; at the shift (the first midnight) a copy of the serving model is frozen, and
from then on every payment is also scored by that frozen copy (same features, same rules), the engine the
online one is measured against. A shopper asked to confirm ("step up") answers a minute later: an honest one
confirms ("it was me", a label), a fraudster cannot (confirmed fraud).

With ``rate`` the payments are paced open-loop in real time (payment *i* is due at ``start + i / rate``,
latency is measured from when it was due, so falling behind shows as latency: no coordinated omission), and
labels are learned in the idle time between payments: the benchmark. Beside that latency it measures, inside
the process, what the host's load cannot inflate as much: the time of ``decide`` alone (wall clock and the
thread's CPU time), the process's CPU time per payment (learning included) and the collector's pauses.
Without ``rate`` the replay learns after every event, as fast as it can.
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import heapq
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from liangcao.risk.codes import RiskError
from liangcao.risk.engine import ManualClock, RiskConfig, RiskEngine
from liangcao.risk.features import MODEL_KEYS, model_input
from liangcao.risk.model import scorer
from liangcao.risk.rules import RuleSet, StepUpCap
from liangcao.risk.world import HOUR_MS, MINUTE_MS, Event, World

#: The false-positive rate at which recall is read.
FPR = 0.01
BUCKET_MS = 2 * HOUR_MS
_pack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder(dict[str, float | str]).decode
#: Idle learning starts a label only with at least this much time before the next payment is due (the start;
#: then the running average of what a label has cost).
IDLE_LEARN_GAP_S = 0.00005
#: Idle learning starts a label when the gap to the next due time is at least this share of a label's recent
#: cost: an overrun (at most part of one label, ~100 us) is caught up over the next payments' slack, while
#: waiting for a whole label's worth of gap left the queue 1,300 labels behind after the shift.
LABEL_COST_SHARE = 0.5
#: Past this many queued labels the paced loop learns one after every payment (no idle time left for long):
#: a burst of labels (after the shift: ~500 beyond what idle time learns) waits in the queue instead.
LABEL_BACKLOG_MAX = 2000
#: The paced loop learns one label after every LEARN_EVERY-th decision whatever the idle time.
LEARN_EVERY = 4


def replay_config() -> RiskConfig:
    # The world's day is 30,000 payments: a payment nobody complained about for 3 hours is taken as good.
    return RiskConfig(label_maturity_ms=3 * HOUR_MS, learn_per_decide=0, publish_every=500, snapshot_every_ms=10**12)


@dataclass
class Replay:
    """Per payment: time, truth, pattern, online and frozen model scores and actions; latencies if paced."""

    shift_ms: int
    start_ms: int
    t: list[int] = field(default_factory=list)
    fraud: list[bool] = field(default_factory=list)
    pattern: list[str] = field(default_factory=list)
    online: list[float] = field(default_factory=list)
    frozen: list[float] = field(default_factory=list)
    online_action: list[str] = field(default_factory=list)
    frozen_action: list[str] = field(default_factory=list)
    latency_us: list[int] = field(default_factory=list)  # from when each payment was due (paced runs)
    service_us: list[int] = field(default_factory=list)  # decide() alone, wall clock (paced runs)
    decide_cpu_ns: list[int] = field(default_factory=list)  # decide() alone, this thread's CPU time (paced runs)
    cpu_s: float = 0.0  # the process's CPU time over the run but waiting for the schedule (learning included)
    gc_pauses_ms: list[float] = field(default_factory=list)  # the cyclic collector's pauses during the run
    wall_s: float = 0.0
    status: dict[str, Any] = field(default_factory=dict)


def recall_at_fpr(scores: list[float], fraud: list[bool], fpr: float = FPR) -> float:
    """Share of fraud scored strictly above the threshold that lets through ``1 - fpr`` of the good."""
    good = sorted((s for s, f in zip(scores, fraud, strict=True) if not f), reverse=True)
    bad = [s for s, f in zip(scores, fraud, strict=True) if f]
    if not good or not bad:
        return float("nan")
    threshold = good[min(int(len(good) * fpr), len(good) - 1)]
    return sum(1 for s in bad if s > threshold) / len(bad)


def run(
    world: World, *, rate: float | None = None, home: Path | None = None, config: RiskConfig | None = None
) -> Replay:
    """Play ``world`` through a fresh engine (see the module docstring)."""
    events = world.events
    clock = ManualClock(events[0].time_ms)
    engine = RiskEngine(home, clock=clock, config=config or replay_config())
    out = Replay(shift_ms=world.shift_ms, start_ms=events[0].time_ms)
    feedback: list[tuple[int, int, str, bool]] = []  # (time, seq, payment id, fraud): step-up answers
    frozen: Callable[[dict[str, float]], float] | None = None
    frozen_cap = StepUpCap()
    later: list[bytes] = []  # the features of the payments the frozen model scores (after the shift, in order)
    later_rules: list[tuple[int, RuleSet | None]] = [(0, None)]  # (index in later, the rule set from there)
    paced = rate is not None
    interval = 1.0 / rate if rate else 0.0
    perf = time.perf_counter
    cpu_now = time.thread_time_ns
    n_pay = 0
    waiting_ns = 0
    label_cost = IDLE_LEARN_GAP_S
    gc_started = [0.0]

    def on_gc(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started[0] = perf()
        else:
            out.gc_pauses_ms.append((perf() - gc_started[0]) * 1000)

    gc.callbacks.append(on_gc)
    cpu_began = time.process_time()
    began = perf()
    try:
        for e in events:
            while feedback and feedback[0][0] <= e.time_ms:
                t, _, pid, fraud = heapq.heappop(feedback)
                clock.set(max(clock.ms, t))
                _label(engine, pid, fraud, "it_was_me" if not fraud else "review")
            clock.set(max(clock.ms, e.time_ms))
            if frozen is None and e.time_ms >= world.shift_ms:
                # The harness's own act, not the engine's work on a payment: it brings learning up to date
                # and copies the model to freeze it (~0.1 s). The schedule pauses meanwhile, as a load
                # generator that stops to take a picture would: that pause is not the engine's latency.
                paused = perf()
                engine.learn()
                engine.publish_model()
                frozen = scorer(pickle.loads(pickle.dumps(engine.models.serving)), MODEL_KEYS)
                frozen_cap = pickle.loads(pickle.dumps(engine.cap))  # the same cap state at the shift
                began += perf() - paused
            if e.kind == "pay" and e.payment is not None:
                p = e.payment
                if paced:
                    due = began + n_pay * interval
                    # Idle: learn one label at a time while the payment is not about to be due (a label costs
                    # ~30 us, ~100 us with a challenger beside the champion; a publication 1-5 ms): the time
                    # left is looked at before each label, so learning never starts right on the deadline.
                    idle_began = cpu_now()
                    learning_ns = 0
                    while (gap := due - perf()) > 0:
                        if gap >= LABEL_COST_SHARE * label_cost:
                            w0 = perf()
                            l0 = cpu_now()
                            learned = engine.learn(1)
                            learning_ns += cpu_now() - l0
                            if learned:
                                # What a label costs now (a challenger doubles it): a running average, so
                                # that the next one starts only if it is likely to end before the deadline.
                                # A publication (1-5 ms) is clipped: it is rare, and must not stop idle learning.
                                label_cost += (min(perf() - w0, 0.75 * interval) - label_cost) / 16
                                continue
                            gap = due - perf()
                        if gap > 0.0005:
                            time.sleep(gap - 0.0003)
                    c0 = cpu_now()
                    waiting_ns += c0 - idle_began - learning_ns  # spinning or asleep for the schedule: not work
                    t0 = perf()
                    d = engine.decide(p)
                    t1 = perf()
                    out.decide_cpu_ns.append(cpu_now() - c0)
                    out.service_us.append(int((t1 - t0) * 1e6))
                    out.latency_us.append(int((t1 - due) * 1e6))
                    # Learning is mostly off the decision path: labels wait in the engine's queue for idle
                    # time. After the decision has returned, the loop learns one label only every
                    # LEARN_EVERY payments (learning keeps going on a host with no idle time: labels come at
                    # about a third of a label per payment), or after every payment once the backlog passes
                    # LABEL_BACKLOG_MAX. After the shift labels come in bursts (step-up answers, maturing
                    # sale traffic; ~100 us each with a challenger beside the champion) and learning one after
                    # every payment, as before, pushed the loop past 200 us a payment for 0.5 s: the tail.
                    if n_pay % LEARN_EVERY == 0 or len(engine.queue) > LABEL_BACKLOG_MAX:
                        engine.learn(1)
                else:
                    d = engine.decide(p)
                n_pay += 1
                _record(out, e, d.model_score, d.action)
                if frozen is not None:
                    # The comparison engine is the harness's, not the engine's work: scored after the run, in the
                    # same order (it never learns, so its scores and step-up cap come out the same). The
                    # features are kept as msgpack bytes (floats exact), not as 30,000 dicts and tuples: every
                    # container kept alive counts toward the collector's thresholds (more and longer passes,
                    # 70-140 ms seen); the rule set is noted only when it changes.
                    if engine.rules is not later_rules[-1][1]:
                        later_rules.append((len(later), engine.rules))
                    later.append(_pack(d.features))
                if d.action == "step_up":
                    heapq.heappush(feedback, (clock.ms + MINUTE_MS, n_pay, p.payment_id, e.fraud))
            elif e.kind == "label":
                _label(engine, e.payment_id, e.fraud, e.source)
            elif e.kind == "refund":
                with contextlib.suppress(RiskError):
                    engine.refund(e.payment_id)
            if not paced:
                engine.learn()
        out.wall_s = perf() - began
        out.cpu_s = time.process_time() - cpu_began - waiting_ns / 1e9
        engine.learn()
        out.status = engine.status()
        if frozen is not None:
            _score_frozen(out, later, later_rules, frozen, frozen_cap)
    finally:
        gc.callbacks.remove(on_gc)
        engine.close()
    return out


def _label(engine: RiskEngine, pid: str, fraud: bool, source: str) -> None:
    # Forgotten, or already labelled otherwise (a fraudster's failed step-up, then the chargeback): skipped.
    with contextlib.suppress(RiskError):
        engine.label(pid, fraud, source=source)


def _record(out: Replay, e: Event, score: float, action: str) -> None:
    out.t.append(e.time_ms)
    out.fraud.append(e.fraud)
    out.pattern.append(e.pattern)
    out.online.append(score)
    out.online_action.append(action)
    # Until the shift the frozen engine is the online one; after it, _score_frozen overwrites these.
    out.frozen.append(score)
    out.frozen_action.append(action)


def _score_frozen(
    out: Replay,
    later: list[bytes],
    later_rules: list[tuple[int, RuleSet | None]],
    frozen: Callable[[dict[str, float]], float],
    frozen_cap: StepUpCap,
) -> None:
    """The frozen engine's scores and actions for the last ``len(later)`` payments, in decision order."""
    first = len(out.t) - len(later)
    starts = dict(later_rules)
    rules: RuleSet | None = None
    for j, packed in enumerate(later):
        features = _unpack(packed)
        rules = starts.get(j, rules)
        assert rules is not None  # later_rules notes the rule set at the first payment kept
        fs = frozen(model_input(features))
        out.frozen[first + j] = fs
        # The frozen engine has its own step-up cap, over its own scores.
        v = rules.evaluate(features, fs, True, frozen_cap.threshold(rules.step_up_share_max))
        frozen_cap.add(v.score, rules.step_up_share_max)
        out.frozen_action[first + j] = v.action


def series(r: Replay, bucket_ms: int = BUCKET_MS) -> dict[str, list[float]]:
    """Per time bucket: hours since the start, recall at 1 % FPR and share of good stepped up, both engines."""
    out: dict[str, list[float]] = {
        k: [] for k in ("hours", "recall_online", "recall_frozen", "stepup_online", "stepup_frozen")
    }
    start = r.start_ms
    end = r.t[-1]
    lo = 0
    edge = start + bucket_ms
    while lo < len(r.t) and edge <= end + bucket_ms:
        hi = bisect.bisect_left(r.t, edge, lo)
        if hi > lo:
            fr = r.fraud[lo:hi]
            out["hours"].append((edge - start - bucket_ms / 2) / HOUR_MS)
            out["recall_online"].append(recall_at_fpr(r.online[lo:hi], fr))
            out["recall_frozen"].append(recall_at_fpr(r.frozen[lo:hi], fr))
            goods = [i for i in range(lo, hi) if not r.fraud[i]]
            out["stepup_online"].append(sum(r.online_action[i] != "allow" for i in goods) / max(1, len(goods)))
            out["stepup_frozen"].append(sum(r.frozen_action[i] != "allow" for i in goods) / max(1, len(goods)))
        lo = hi
        edge += bucket_ms
    return out


def summary(r: Replay, window: int = 4000, step: int = 250) -> dict[str, Any]:
    """The figures the benchmark reports (recall after the shift, events to recover, good stepped up)."""
    k = bisect.bisect_left(r.t, r.shift_ms)
    after = slice(k, len(r.t))
    before = slice(max(0, k - window), k)
    base = recall_at_fpr(r.online[before], r.fraud[before])
    recover: int | None = None
    for end in range(k + step, len(r.t) + 1, step):
        lo = max(k, end - window)
        if recall_at_fpr(r.online[lo:end], r.fraud[lo:end]) >= 0.9 * base and end - lo >= window // 2:
            recover = end - k
            break
    goods_after = [i for i in range(k, len(r.t)) if not r.fraud[i]]
    return {
        "payments": len(r.t),
        "fraud": sum(r.fraud),
        "recall_online_before_shift": round(base, 4),
        "recall_online_after_shift": round(recall_at_fpr(r.online[after], r.fraud[after]), 4),
        "recall_frozen_after_shift": round(recall_at_fpr(r.frozen[after], r.fraud[after]), 4),
        "events_to_recover": recover,
        "good_stepped_up_online_after_shift": round(
            sum(r.online_action[i] != "allow" for i in goods_after) / max(1, len(goods_after)), 4
        ),
        "good_stepped_up_frozen_after_shift": round(
            sum(r.frozen_action[i] != "allow" for i in goods_after) / max(1, len(goods_after)), 4
        ),
        "model_events": [ev["event"] for ev in r.status.get("model_events", [])],
    }


def draw(r: Replay, path: Path) -> Path:
    """Recall at 1 % FPR and share of good payments stepped up over time, online against frozen: a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = series(r)
    shift_h = (r.shift_ms - r.start_ms) / HOUR_MS
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    top.plot(s["hours"], s["recall_online"], "o-", label="online (learns from late labels)", color="tab:blue")
    top.plot(s["hours"], s["recall_frozen"], "s--", label="frozen after day 1", color="tab:red")
    top.set_ylabel("recall at 1 % FPR")
    top.set_ylim(-0.02, 1.02)
    bottom.plot(s["hours"], [100 * v for v in s["stepup_online"]], "o-", label="online", color="tab:blue")
    bottom.plot(s["hours"], [100 * v for v in s["stepup_frozen"]], "s--", label="frozen after day 1", color="tab:red")
    bottom.set_ylabel("good payments stepped up or blocked (%)")
    bottom.set_xlabel("hours since the start of the world (2-hour buckets)")
    for ax in (top, bottom):
        ax.axvline(shift_h, color="grey", linestyle=":")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    top.text(shift_h + 0.3, 0.05, "midnight: sale traffic, new fraud", fontsize=8, color="grey")
    fig.suptitle("liangcao risk replay: prequential, seeded synthetic world")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
