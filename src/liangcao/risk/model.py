"""The online model: a serving champion, its training copy, drift detection, a challenger, versions.

Theory of operation
-------------------
Decisions are scored by the *serving* model, an immutable copy published from the *training* model every
``publish_every`` labels (and on a promotion or a rollback). Each published copy is a numbered version
(``m1``, ``m2``, ...) pickled in the home folder, so a decision names the exact parameters that scored it and
can be reproduced later, and an operator can roll back to any kept version.

Every label is first scored by the training model (prequential: test, then train). Its error |y - p| feeds
ADWIN; when ADWIN detects a change *upwards* (the error grew: the fraud changed), a challenger is started: a
fresh model of the same kind (``clone()``), warmed on the labelled examples since the change (ADWIN's
window) and then learning
every new label beside the champion. Both are scored on each new label before learning from it; the paired
differences of their log losses over the last ``compare_window`` labels decide: when the mean difference
favours the challenger by ``promote_z`` standard errors (a paired z-test) it becomes the champion and is
published at once. A challenger that has not won after ``challenger_labels_max`` labels is dropped.
"""

from __future__ import annotations

import math
import operator
import os
import pickle
import re
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

# River (and the scipy it pulls in) is imported where a model is made or read, not with this module: the CLI
# imports every service's module at start-up, and River alone took ~0.8 s of each process's 1.2 s start (a CLI
# call, a node, a benchmark's worker) that never scores a payment.
from liangcao.risk import limits
from liangcao.risk.codes import RiskCode, RiskError, RiskFault


class Classifier(Protocol):
    """What the engine needs of a River classifier (a pipeline of scaler and model is one)."""

    def predict_proba_one(self, x: dict[str, float]) -> dict[bool, float]: ...
    def learn_one(self, x: dict[str, float], y: bool, *, w: float = 1.0) -> None: ...
    def clone(self) -> Classifier: ...


def _adwin(delta: float) -> Any:
    from river import drift

    # River's drift detectors are untyped; the engine uses update(), drift_detected and estimation.
    return drift.ADWIN(delta=delta)  # type: ignore[no-untyped-call]


def logistic(learning_rate: float = 0.05, l2: float = 1e-4) -> Classifier:
    """Feature scaling then logistic regression by SGD: ~10 us to score, ~30 us to learn one example."""
    from river import linear_model, optim, preprocessing

    model: Classifier = preprocessing.StandardScaler() | linear_model.LogisticRegression(
        optimizer=optim.SGD(learning_rate), l2=l2
    )
    return model


def forest(seed: int = 7) -> Classifier:
    """An adaptive random forest (slower: for comparison; the default is :func:`logistic`)."""
    from river import forest as rf
    from river import preprocessing

    model: Classifier = preprocessing.StandardScaler() | rf.ARFClassifier(n_models=5, seed=seed)
    return model


MODELS: dict[str, Callable[[], Classifier]] = {"logistic": logistic, "forest": forest}


def write_atomic(path: Path, data: bytes, durable: bool) -> None:
    """Write ``path`` whole or not at all (temp file and rename); ``durable`` also fsyncs file and folder."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_VERSION = re.compile(r"^m(\d{1,9})$")


class VersionStore:
    """Published model versions: pickles in ``home/models`` (or in memory without a home), oldest pruned."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.memory: dict[str, bytes] = {}
        self.kept: deque[str] = deque()  # oldest first; kept in memory so that publishing never lists the folder
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            found = [p.stem for p in folder.glob("m*.pkl") if _VERSION.match(p.stem)]
            self.kept.extend(sorted(found, key=lambda v: int(v[1:])))
        self.last = int(self.kept[-1][1:]) if self.kept else 0

    def versions(self) -> list[str]:
        return list(self.kept)

    def put(self, data: bytes, keep: str | None = None) -> str:
        """Store a pickled model as the next version (``keep``: a version pruning must spare)."""
        self.last += 1
        version = f"m{self.last}"
        if self.folder is None:
            self.memory[version] = data
        else:
            # Not fsynced here (this may run between decisions): the next snapshot fsyncs the folder.
            write_atomic(self.folder / f"{version}.pkl", data, durable=False)
            write_atomic(self.folder / "CURRENT", version.encode(), durable=False)
        self.kept.append(version)
        self._prune(keep)
        return version

    def _prune(self, keep: str | None) -> None:
        spared: list[str] = []
        while len(self.kept) + len(spared) > limits.model_versions_max and len(self.kept) > 1:
            v = self.kept.popleft()
            if v == keep:
                spared.append(v)
                continue
            if self.folder is None:
                del self.memory[v]
            else:
                (self.folder / f"{v}.pkl").unlink(missing_ok=True)
        self.kept.extendleft(spared)

    def get(self, version: str) -> Classifier:
        if not _VERSION.match(version):
            raise RiskError(RiskCode.UNKNOWN_MODEL_VERSION, f"{version!r} is not a model version (m1, m2, ...)")
        if self.folder is None:
            data = self.memory.get(version)
        else:
            path = self.folder / f"{version}.pkl"
            data = path.read_bytes() if path.exists() else None
        if data is None:
            raise RiskError(RiskCode.UNKNOWN_MODEL_VERSION, f"model version {version} is not kept (or never was)")
        try:
            model: Classifier = pickle.loads(data)
        except Exception as exc:  # a damaged file in our own folder: this machine's fault, not the caller's
            raise RiskFault(RiskCode.SNAPSHOT_BAD, f"model version {version} does not load: {exc}") from None
        return model


def scorer(model: Classifier, keys: tuple[str, ...]) -> Callable[[dict[str, float]], float]:
    """A function scoring a model input whose keys are ``keys`` in order, for a model that will not change.

    A published scaler-and-logistic pipeline is one linear form: sigmoid(c + sum(a_k x_k)) with
    a_k = w_k / std_k and c = b - sum(a_k mean_k), folded once at publication (a few microseconds per
    payment instead of River's two dict passes). Any other model is asked through River.
    """
    from river import linear_model, preprocessing

    steps = list(getattr(model, "steps", {}).values())
    if (
        len(steps) == 2
        and isinstance(steps[0], preprocessing.StandardScaler)
        and isinstance(steps[1], linear_model.LogisticRegression)
        and steps[0].with_std
        and steps[0].window_size is None
    ):
        scaler, lr = steps
        weights = lr.weights
        coefs = []
        c = float(lr.intercept)
        for k in keys:
            v = scaler.vars.get(k, 0.0)
            a = weights.get(k, 0.0) / v**0.5 if v else 0.0
            coefs.append(a)
            c -= a * scaler.means.get(k, 0.0)
        coef = tuple(coefs)
        mul = operator.mul

        def linear(x: dict[str, float]) -> float:
            z = c + sum(map(mul, coef, x.values()))
            if z < -30:  # exp overflow guard, as in River's sigmoid
                return 1e-13
            if z != z:  # NaN: a model whose weights broke never decides a payment (0: the rules do)
                return 0.0
            return 1.0 / (1.0 + math.exp(-z))

        return linear

    def through_river(x: dict[str, float]) -> float:
        p: float = model.predict_proba_one(x).get(True, 0.0)
        return p if math.isfinite(p) else 0.0

    return through_river


def _sgd_rate(model: Classifier) -> Any:
    """The SGD optimizer of a logistic pipeline's last step (None for other models)."""
    from river import optim

    steps = list(getattr(model, "steps", {}).values())
    last = steps[-1] if steps else model
    opt = getattr(last, "optimizer", None)
    if isinstance(opt, optim.SGD) and isinstance(opt.lr, optim.schedulers.Constant):
        return opt
    return None


def _scale_rate(model: Classifier, factor: float) -> bool:
    from river import optim

    opt = _sgd_rate(model)
    if opt is None:
        return False
    opt.lr = optim.schedulers.Constant(opt.lr.learning_rate * factor)
    return True


def _log_loss(y: bool, p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return -math.log(p if y else 1 - p)


class Models:
    """Champion (serving + training), challenger, drift detector and the version store."""

    def __init__(
        self,
        store: VersionStore,
        fresh: Classifier,
        keys: tuple[str, ...],
        *,
        publish_every: int = 1000,
        compare_window: int = 2000,
        challenger_min_labels: int = 300,
        challenger_min_positives: int = 10,
        challenger_labels_max: int = 20_000,
        promote_z: float = 2.33,
        adwin_delta: float = 0.002,
        warm_max: int = 2000,
        challenger_rate_boost: float = 4.0,
    ) -> None:
        if not 0 < compare_window <= limits.compare_window_max:
            raise ValueError(f"compare_window must be within 1..{limits.compare_window_max}")
        self.store = store
        self.publish_every = publish_every
        self.compare_window = compare_window
        self.challenger_min_labels = challenger_min_labels
        self.challenger_min_positives = challenger_min_positives
        self.challenger_labels_max = challenger_labels_max
        self.promote_z = promote_z
        self.adwin_delta = adwin_delta
        self.challenger_rate_boost = challenger_rate_boost
        self.train = fresh
        self.challenger: Classifier | None = None
        self.adwin = _adwin(adwin_delta)
        self.learned = 0
        self.learned_fraud = 0
        self.since_publish = 0
        self.challenger_learned = 0
        self.diffs: deque[tuple[float, bool]] = deque()
        self.diff_sum = 0.0
        self.diff_sq = 0.0
        self.diff_pos = 0
        self.recent: deque[tuple[dict[str, float], bool, float]] = deque(maxlen=warm_max)
        self.warm: deque[tuple[dict[str, float], bool, float]] = deque()
        self.events: deque[dict[str, Any]] = deque(maxlen=1000)  # drift, challenger, promotion, rollback
        self.keys = keys
        self.serving_version = ""
        self.serve(pickle.loads(pickle.dumps(fresh, protocol=5)), "")

    def serve(self, model: Classifier, version: str) -> None:
        self.serving = model
        self.serving_version = version
        self.score = scorer(model, self.keys)

    def scorer_of(self, version: str) -> Callable[[dict[str, float]], float]:
        """The scoring function of a kept version (the serving one's without loading)."""
        if version == self.serving_version:
            return self.score
        return scorer(self.store.get(version), self.keys)

    # Snapshots carry the training side; the serving side is the version named.
    def state(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k not in ("store", "serving", "score")}

    def restore(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            setattr(self, k, v)
        self.serve(self.store.get(self.serving_version), self.serving_version)

    def publish(self, reason: str, now: int) -> str:
        data = pickle.dumps(self.train, protocol=5)  # one pickle: the version's bytes and the serving copy
        self.serve(pickle.loads(data), self.store.put(data, keep=self.serving_version))
        self.since_publish = 0
        if reason != "periodic":
            self.events.append(
                {"event": reason, "version": self.serving_version, "at_ms": now, "learned": self.learned}
            )
        return self.serving_version

    def learn(self, x: dict[str, float], y: bool, w: float, now: int) -> None:
        """Learn one label (prequentially: the error and the comparison use the prediction made before)."""
        p = self.train.predict_proba_one(x).get(True, 0.0)
        before = self.adwin.estimation
        self.adwin.update(abs(float(y) - p))
        if self.adwin.drift_detected and self.adwin.estimation > before and self.challenger is None:
            self._start_challenger(now)
        ch = self.challenger
        if ch is not None:
            for _ in range(4):  # warm the challenger on recent examples, a few per label (no long pause)
                if not self.warm:
                    break
                wx, wy, ww = self.warm.popleft()
                ch.learn_one(wx, wy, w=ww)
            q = ch.predict_proba_one(x).get(True, 0.0)
            self._compare(_log_loss(y, p) - _log_loss(y, q), y)
            ch.learn_one(x, y, w=w)
            self.challenger_learned += 1
        self.train.learn_one(x, y, w=w)
        self.recent.append((x, y, w))
        self.learned += 1
        self.learned_fraud += y
        self.since_publish += 1
        if ch is not None:
            self._judge(now)
        if self.since_publish >= self.publish_every:
            self.publish("periodic", now)

    def _start_challenger(self, now: int) -> None:
        copy: Classifier = pickle.loads(pickle.dumps(self.train, protocol=5))
        if _scale_rate(copy, self.challenger_rate_boost):
            # An SGD model: the challenger is the champion learning faster (it forgets the old regime sooner).
            self.challenger = copy
            self.warm = deque()
        else:
            # Any other model: a fresh one, warmed on what ADWIN kept (the labels since the change).
            self.challenger = self.train.clone()
            since = min(int(self.adwin.width), len(self.recent))
            self.warm = deque(list(self.recent)[len(self.recent) - since :])
        self.challenger_learned = 0
        self.diffs.clear()
        self.diff_sum = self.diff_sq = 0.0
        self.diff_pos = 0
        self.events.append({"event": "drift: challenger started", "at_ms": now, "learned": self.learned})

    def _compare(self, d: float, y: bool) -> None:
        self.diffs.append((d, y))
        self.diff_sum += d
        self.diff_sq += d * d
        self.diff_pos += y
        if len(self.diffs) > self.compare_window:
            old, oy = self.diffs.popleft()
            self.diff_sum -= old
            self.diff_sq -= old * old
            self.diff_pos -= oy

    def advantage(self) -> tuple[int, float]:
        """(labels compared, z of the challenger's mean log-loss advantage over the champion)."""
        n = len(self.diffs)
        if n < 2:
            return n, 0.0
        mean = self.diff_sum / n
        var = max(self.diff_sq / n - mean * mean, 1e-12) * n / (n - 1)
        return n, mean / math.sqrt(var / n)

    def _judge(self, now: int) -> None:
        n, z = self.advantage()
        if n >= self.challenger_min_labels and self.diff_pos >= self.challenger_min_positives and z >= self.promote_z:
            self.train = self.challenger  # type: ignore[assignment]
            _scale_rate(self.train, 1 / self.challenger_rate_boost)  # back to the champion's pace
            self.challenger = None
            self.adwin = _adwin(self.adwin_delta)
            self.publish(f"challenger promoted (z={z:.2f} over {n} labels)", now)
        elif self.challenger_learned >= self.challenger_labels_max:
            self.challenger = None
            self.events.append({"event": f"challenger dropped (z={z:.2f})", "at_ms": now, "learned": self.learned})

    def rollback(self, version: str, now: int) -> None:
        model = self.store.get(version)
        self.serve(model, version)
        self.train = pickle.loads(pickle.dumps(model, protocol=5))
        self.challenger = None
        self.adwin = _adwin(self.adwin_delta)
        self.since_publish = 0
        self.events.append({"event": "rollback", "version": version, "at_ms": now, "learned": self.learned})
