"""An outsider attacks each signed-in caller's own rate at the checkout gateway (the ``caller`` rule's hot
limit: ``classifier(identity, gate)`` and ``default_rules`` in ``checkout/http.py``, ``Gate.enter_hot``,
the refusal answered by ``FlowMiddleware`` and the gateway's own server).

Finding fixed (the test failed first):

* ``GET /v1/flow``, open to anyone (the operator reads it in the middle of a surge), listed the busiest
  signed-in callers by name (``"hottest": {"shopper:<party id>": tokens}``): an outsider without any
  session learnt which shoppers were signed in and how busy they were;
* and it sorted every caller's bucket under the gate's lock to find them: with the 100,000 callers the
  default rules track, one anonymous read held the lock about 270 ms (every admission waited).
  The status of a rule checked through ``Gate.enter_hot`` (callers) now counts its values, never names or
  reads them.

Properties held (pinned here, they must stay so): every session of one subject draws on one bucket, and a
flood keeps its own bucket the most recently used (it is never the one forgotten); the same subject in
another role, a subject that is a prefix of the flooder's, and the operator keep their own rates; HEAD and
GET draw on the same bucket; the open pages, liveness and the flow endpoints never draw on it (the operator
can still read and change the rules while a caller floods); a rule set without the ``caller`` rule limits
no caller, one with the smallest or largest rate a rule may hold answers 429 with a whole-second
``Retry-After`` that covers the wait, or never refuses; whatever the ``Authorization`` header holds,
classification raises nothing but ``Refused``; the refusals are counted in ``/v1/flow`` and its metrics.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from checkout_identity import operator, shopper
from liangcao.checkout.http import (
    CALLER_RESOURCE,
    caller_burst,
    classifier,
    create_app,
    default_rules,
    operator_token,
)
from liangcao.checkout.identity import Identity, session_key
from liangcao.checkout.service import Checkout
from liangcao.flow import Gate, Priority, Refused, Rules
from liangcao.flow.errors import retry_after_ms_max
from liangcao.flow.rules import HotRule, burst_max, rate_per_s_max, rate_per_s_min
from liangcao.payments import Engine

Classified = tuple[str, Priority, "str | None"] | str


def _scope(method: str, path: str, token: str | None) -> dict[str, Any]:
    headers = [] if token is None else [(b"authorization", f"Bearer {token}".encode("latin-1"))]
    return {"type": "http", "method": method, "path": path, "headers": headers}


def _outcome(classify: Callable[[dict[str, Any]], Any], scope: dict[str, Any]) -> Classified:
    try:
        return classify(scope)  # type: ignore[no-any-return]
    except Refused as exc:
        assert exc.resource == CALLER_RESOURCE and exc.http_status == 429 and exc.retry_after_ms >= 1
        return "refused"


def _rules_with_caller(hot: HotRule | None, keep: bool = True) -> Rules:
    rules = default_rules()
    rules.resources = [r for r in rules.resources if r.name != CALLER_RESOURCE or keep]
    for r in rules.resources:
        if r.name == CALLER_RESOURCE:
            r.hot = hot
    return rules


class Fixed:
    """A gate over an injected clock that stands still unless moved, and the gateway's classifier on it."""

    def __init__(self, home: Path, rules: Rules | None = None) -> None:
        self.now = 1000.0
        self.key = session_key(home)
        self.gate = Gate(rules or default_rules(), clock=lambda: self.now)
        self.classify = classifier(Identity(self.key, operator_token(home)), self.gate)

    def token(self, role: str, subject: str, ttl_s: int = 600) -> str:
        return self.key.issue(role, subject, ttl_s)[0]

    def __call__(self, method: str, path: str, token: str | None) -> Classified:
        return _outcome(self.classify, _scope(method, path, token))


def test_every_session_of_one_subject_draws_on_one_bucket_and_nobody_else_shares_it(tmp_path: Path) -> None:
    """mallory holds fifty sessions (each issued apart, each a different token) and spreads her flood over
    them, over HEAD and GET and over orders of every merchant: she still gets one burst. Her own merchant
    account of the same name, the shopper ``mallor`` (her subject's prefix), ``mallory_`` and the operator
    keep their own rates; the pages, liveness and the flow endpoints never draw on her bucket."""
    f = Fixed(tmp_path)
    sessions = [f.token("shopper", "mallory", ttl_s=600 + i) for i in range(50)]
    assert len(set(sessions)) == 50
    one = Fixed(tmp_path / "one")  # the same flood from one session: the pattern to match
    alone = one.token("shopper", "mallory")
    got, baseline = [], []
    for i in range(caller_burst + 100):
        method, path = ("GET", "HEAD")[i % 2], f"/v1/orders/shop{i % 7}.00000001"
        got.append(f(method, path, sessions[i % 50]))
        baseline.append(one(method, path, alone))
    # a query's share (0.75) of the burst passes, and the rest is refused, as from one session
    passed = math.floor((caller_burst - 1) * 0.75) + 1
    assert got == baseline and "refused" not in got[:passed] and got[passed:] == ["refused"] * (len(got) - passed)
    for other in (f.token("merchant", "mallory"), f.token("shopper", "mallor"), f.token("shopper", "mallory_")):
        assert all(f("GET", "/v1/orders/shop.00000001", other) != "refused" for _ in range(100))
    op = operator_token(tmp_path)
    assert all(f("POST", "/v1/wallets/ann/topup", op) == ("topup", Priority.CONFIRM, None) for _ in range(1000))
    # what is left open or unguarded is never refused for her, though her bucket is empty
    for method, path in [("GET", "/checkout/shop.00000001"), ("HEAD", "/checkout/shop.00000001"),
                         ("GET", "/authn/"), ("GET", "/v1/health"), ("GET", "/v1/flow"),
                         ("PUT", "/v1/flow/rules")]:  # fmt: skip
        assert f(method, path, sessions[0]) != "refused", path
    assert f("GET", "/v1/orders/shop.00000001", sessions[7]) == "refused"


def test_a_flood_keeps_its_own_bucket_the_most_recent_one(tmp_path: Path) -> None:
    """The gate forgets the least recently seen caller first (a forgotten one comes back with a full bucket).
    With room for three callers, mallory's flood interleaved with a crowd of other callers never gets her a
    fresh bucket: each of her requests makes hers the most recent, so the crowd's are the ones forgotten."""
    f = Fixed(tmp_path, _rules_with_caller(HotRule(rate_per_s=1.0, burst=5, hot_values_max=3)))
    mallory = f.token("shopper", "mallory")
    crowd = [f.token("shopper", f"c{i}") for i in range(40)]
    got = []
    for i in range(200):
        got.append(f("POST", "/v1/orders/shop.00000001/pay", mallory))
        f("GET", "/v1/orders/shop.00000001", crowd[i % 40])
    assert got.count("refused") == 195
    assert f.gate.status()["resources"][CALLER_RESOURCE]["hot"]["evicted"] >= 190


@pytest.mark.parametrize(
    "hot",
    [
        None,
        HotRule(rate_per_s=rate_per_s_min, burst=1),
        HotRule(rate_per_s=rate_per_s_max, burst=burst_max, hot_values_max=1),
        HotRule(rate_per_s=rate_per_s_min, burst=1, overrides={"shopper:vip": rate_per_s_max}),
    ],
)
def test_absurd_caller_rules_refuse_with_an_honest_wait_or_not_at_all(tmp_path: Path, hot: HotRule | None) -> None:
    """``PUT /v1/flow/rules`` may leave the ``caller`` rule out, or give it the smallest or largest rate any
    rule may hold: classification still raises nothing but ``Refused``, whose whole-second ``Retry-After``
    covers the wait; a caller's override is theirs alone."""
    for keep in (True, False):
        f = Fixed(tmp_path, _rules_with_caller(hot, keep))
        who = f.token("shopper", "mallory")
        vip = f.token("shopper", "vip")
        first: Refused | None = None
        for _ in range(300):
            try:
                f.classify(_scope("POST", "/v1/orders/shop.00000001/pay", who))
            except Refused as exc:
                first = first or exc
        assert all(f("POST", "/v1/orders/shop.00000001/pay", vip) != "refused" for _ in range(300)) or (
            hot is not None and keep and "shopper:vip" not in hot.overrides
        )
        if hot is None or not keep or hot.rate_per_s == rate_per_s_max:
            assert first is None
            continue
        assert first is not None and first.http_status == 429
        # a token every 1/rate seconds (the bucket of depth 1 is empty): the wait, or the longest one announced
        wait_ms = min(retry_after_ms_max, math.ceil(1000 / hot.rate_per_s))
        assert first.retry_after_ms == wait_ms and first.retry_after_s * 1000 >= first.retry_after_ms
        f.now += 1 / hot.rate_per_s  # waiting out the rate is enough
        assert f("POST", "/v1/orders/shop.00000001/pay", who) != "refused"


def test_whatever_the_authorization_header_holds_only_refused_escapes(tmp_path: Path) -> None:
    """Spellings of a token that are not the caller's (another case, padding, a second scheme, bytes that
    are not ASCII, a token far over the length limit, a forged MAC over mallory's claims): each is either
    unauthenticated (never mallory's bucket) or mallory herself; nothing raises but ``Refused``."""
    f = Fixed(tmp_path)
    good = f.token("shopper", "mallory")
    head, claims, mac = good.split(".")
    spellings = [good, good.upper(), f"{good} ", f"{good}=", f"{head}.{claims}.{mac[:-2]}AA", f"{head}.{claims}",
                 "x" * 100_000, "lc1." + "\u00ff" * 50, f"{good}, Basic eA==", ""]  # fmt: skip
    for _ in range(caller_burst):
        assert f("POST", "/v1/orders/shop.00000001/pay", good) != "refused"
    for s in spellings:
        scope = _scope("POST", "/v1/orders/shop.00000001/pay", None)
        scope["headers"] = [(b"authorization", f"Bearer {s}".encode("latin-1"))]
        got = _outcome(f.classify, scope)
        assert got in ("refused", ("unauthenticated", Priority.REPORT, None)), (s[:40], got)
        assert (got == "refused") == (s == good), s[:40]


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[Any, Checkout]]:
    engine = Engine(tmp_path / "pay", fsync=False)
    co = Checkout(tmp_path / "co", engine)
    rules = _rules_with_caller(HotRule(rate_per_s=1.0, burst=3))
    try:
        yield create_app(co, Gate(rules), auto_confirm_every_s=0), co
    finally:
        co.close()
        engine.close()


def _calls(app: Any, calls: list[tuple[str, str, dict[str, str]]]) -> list[httpx.Response]:
    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            return [await c.request(m, p, headers=h) for m, p, h in calls]

    return asyncio.run(go())


def test_anyone_reading_the_flow_status_learns_no_signed_in_caller(app: tuple[Any, Checkout]) -> None:
    """Before: ``GET /v1/flow`` without any session answered ``"hottest": {"shopper:ann-the-buyer": 1.0}``.
    Now how many callers are tracked is shown, and nobody's name; the refusals are counted in the status and in the metrics, and answered 429 with the wait."""
    a, co = app
    ann = shopper(co.home, "ann-the-buyer")
    got = _calls(a, [("GET", "/v1/wallets/ann-the-buyer", ann)] * 5 + [("GET", "/v1/flow", {}),
                 ("GET", "/v1/flow/metrics", {}), ("GET", "/v1/flow", operator(co.home))])  # fmt: skip
    # a query's share (0.75) of a burst of 3: two pass
    assert [r.status_code for r in got[:5]] == [200] * 2 + [429] * 3
    refused = got[2]
    body = refused.json()
    assert body["name"] == "HOT_PARAMETER_LIMITED" and body["detail"]["resource"] == CALLER_RESOURCE
    assert refused.headers["retry-after"] == "1" and 1 <= int(refused.headers["x-retry-after-ms"]) <= 1000
    status, metrics = got[5], got[6]
    assert status.status_code == 200 and "ann-the-buyer" not in status.text, status.json()["resources"][CALLER_RESOURCE]
    caller = status.json()["resources"][CALLER_RESOURCE]
    assert caller["refused"] == 3 and caller["hot"]["values"] == 1 and "hottest" not in caller["hot"]
    assert "ann-the-buyer" not in metrics.text
    assert 'resource="caller"' in metrics.text and "hot_parameter_limited" in metrics.text
    # the merchants of the other hot rules are shown as before (they are what an override is set for)
    assert "ann-the-buyer" not in got[7].text


# ---- the surge's compiled load generators in the real-time class (surge._c_worker, _realtime_class) ----------

_SURGE_PARENT = """
import multiprocessing as mp, sys, time
from collections import defaultdict
from pathlib import Path
from liangcao.checkout.surge import Phase, WorkerPlan, _worker
port, exe = int(sys.argv[1]), Path(sys.argv[2])
auth = defaultdict(lambda: "lc1.x.y")
plan = WorkerPlan(port=port, index=0, workers=1, phases=[Phase("10x", 120.0, 1.0, 1.0)], base_per_s=50.0,
                  start_wall=time.time(), timeout_s=60.0, seed=1, pay_orders=[f"shop.{i}" for i in range(500)],
                  confirm_orders=[], query_orders=["shop.1"], connections=4, loadgen=exe, auth=auth)
ctx = mp.get_context("fork")  # as surge.run starts its workers
p = ctx.Process(target=_worker, args=(plan, ctx.Queue()), daemon=True)
p.start()
print(p.pid, flush=True)
time.sleep(600)
"""


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return out


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet is dead: it holds no CPU and no socket)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_killed_surge_leaves_no_real_time_generator_and_none_spins(tmp_path: Path) -> None:
    """The surge's parent is SIGKILLed in the middle of a run whose gateway accepts connections and never
    answers (a gateway wedged at midnight): its worker dies with it, and the compiled generator, in the
    real-time class where the kernel lets it be, dies with the worker; while it ran it slept in
    ``epoll_wait`` (a real-time process spinning would take a core from everything else)."""
    import signal
    import socket
    import subprocess
    import sys
    import time

    from liangcao.checkout.surge import loadgen_binary

    exe = loadgen_binary(tmp_path)
    if exe is None:
        pytest.skip("no C compiler: the Python generator drives the surge")
    wedged = socket.socket()
    wedged.bind(("127.0.0.1", 0))
    wedged.listen(64)  # connections complete in the backlog; nothing is ever read or answered
    parent = subprocess.Popen([sys.executable, "-c", _SURGE_PARENT, str(wedged.getsockname()[1]), str(exe)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    gen: list[int] = []
    try:
        assert parent.stdout is not None
        worker = int(parent.stdout.readline())
        deadline = time.monotonic() + 60
        while not gen and time.monotonic() < deadline:
            gen = [c for c in _children(worker) if Path(f"/proc/{c}/exe").resolve() == exe.resolve()]
            time.sleep(0.05)
        assert gen, "the generator did not start"
        policy = os.sched_getscheduler(gen[0]) & ~getattr(os, "SCHED_RESET_ON_FORK", 0)
        assert policy in (os.SCHED_FIFO, os.SCHED_OTHER)
        before, t0 = _cpu_s(gen[0]), time.monotonic()
        time.sleep(1.0)
        used = (_cpu_s(gen[0]) - before) / (time.monotonic() - t0)
        assert used < 0.3, f"the generator used {used:.0%} of a core waiting for answers (class {policy})"
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while (_alive(worker) or _alive(gen[0])) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(worker) and not _alive(gen[0])
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid in gen:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        if parent.stdout is not None:
            parent.stdout.close()
        wedged.close()


def test_reading_the_flow_status_costs_nothing_per_signed_in_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    """``GET /v1/flow`` is open to anyone and unguarded, and the gate's status is built under the gate's lock
    (every admission waits for it). It sorted every caller's bucket by its level to show the emptiest: with
    the 100,000 callers the default rules track, one anonymous read held the lock about 270 ms on the loaded
    CI machine, so a flood of reads stalled every payment. The callers' rule now shows counts only: no
    caller's bucket is looked at."""
    from liangcao.flow.bucket import TokenBucket

    gate = Gate(default_rules())
    for i in range(20_000):
        gate.enter_hot(CALLER_RESOURCE, f"shopper:s{i}", Priority.PAY)
    looked = [0]
    real = TokenBucket.tokens

    def counted(self: TokenBucket, now: float) -> float:
        looked[0] += 1
        return real(self, now)

    monkeypatch.setattr(TokenBucket, "tokens", counted)
    hot = gate.status()["resources"][CALLER_RESOURCE]["hot"]
    assert hot["values"] == 20_000 and hot["evicted"] == 0
    assert looked[0] < 100, f"{looked[0]} buckets looked at to read the status"
