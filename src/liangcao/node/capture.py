"""EPCIS capture jobs: the node signs, dry-runs and submits ``trace.capture`` transactions for a member.

Theory of operation
-------------------
A capture makes the node *sign as the caller*, so it needs the member's key in the node's custody
(:class:`Custody`, off by default: ``Custody(None)`` holds no key and every capture is refused with
``FORBIDDEN``). The document is validated and hashed at once (``liangcao.trace.capture.prepare``: a
document that fails the schema is refused before any job exists); then a :class:`Job` runs in the
background and records its outcome, which the caller reads later. ``GS1-Capture-Error-Behaviour``:

- ``rollback`` (the default): the whole document is dry-run on the committed state first; if any event
  would be refused, nothing is submitted. A document that fits one transaction is also atomic on the
  ledger itself; a larger one is atomic up to a permission changed by a vote between the dry run and the
  commit, which the job then reports;
- ``proceed``: events that would be refused are left out, each reported in the job's errors; the rest
  are captured.

Captures use the compact layout (``liangcao.apps.trace.anchor``): each event is stored once, in its
transaction, and the node's own index (``liangcao.node.trace_index``) answers the queries.

Errors are EPCIS problems (RFC 7807 with an ``epcisException:`` type), since that is what capture clients
read; a job that fails for a reason of this node (not the document) reports ``ImplementationException``
and the node goes on.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import msgspec

from liangcao import limits
from liangcao.apps.trace.anchor import TraceCode
from liangcao.codes import Code
from liangcao.contracts.runtime import ContractRuntime
from liangcao.errors import LiangcaoError
from liangcao.ledger import executor
from liangcao.ledger import tx as txm
from liangcao.node.events import Hub
from liangcao.node.node import Node
from liangcao.trace import capture as cap
from liangcao.trace import query as tq


class NodeServices(Protocol):
    """What the capture jobs use of the node services that own them (``liangcao.node.services``): named here as
    a protocol, so the two modules do not import each other."""

    node: Node
    hub: Hub

    def runtime(self) -> ContractRuntime: ...

    def position(self, tx_id: str) -> tuple[int, int, int] | None: ...


JOB_TTL_MS = 10 * 60 * 1000  # capture transactions expire this long after signing
BEHAVIOURS = ("rollback", "proceed")


class Custody:
    """Member keys a node may sign with: those in ``home`` (a network folder), loaded when first used.
    ``Custody(None)``, the default everywhere, holds none: the node signs for no one."""

    def __init__(self, home: str | Path | None) -> None:
        self.home = Path(home) if home is not None else None
        self._signers: dict[str, txm.Signer] = {}
        self._lock = threading.Lock()

    def signer(self, member_id: str) -> txm.Signer | None:
        from liangcao.crypto.signer import load_signer
        from liangcao.node.home import member_dir, valid_member_id

        if self.home is None or not valid_member_id(member_id):  # a plain org/name: never a path of its own
            return None
        with self._lock:
            if member_id not in self._signers:
                folder = member_dir(self.home, member_id)
                if not (folder / "key.pem").exists():
                    return None
                self._signers[member_id] = load_signer(folder)
            return self._signers[member_id]


@dataclass
class Job:
    capture_id: str
    member: str
    behaviour: str
    events: int
    created_ms: int
    finished_ms: int | None = None
    running: bool = True
    success: bool | None = None
    captured: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    txs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "captureID": self.capture_id,
            "createdAt": tq.iso(self.created_ms),
            "finishedAt": tq.iso(self.finished_ms) if self.finished_ms is not None else None,
            "running": self.running,
            "success": self.success,
            "captureErrorBehaviour": self.behaviour,
            "errors": self.errors,
            "member": self.member,
            "eventCount": self.events,
            "captured": self.captured,
            "duplicates": self.duplicates,
            "txs": self.txs,
        }


def problem(title: str, detail: str, status: int, kind: str = "ValidationException") -> dict[str, Any]:
    """An EPCIS error (RFC 7807 problem details with an ``epcisException:`` type)."""
    return {"type": f"epcisException:{kind}", "title": title, "status": status, "detail": detail}


class Jobs:
    """The jobs a node remembers (at most ``capture_jobs_max``; the oldest finished ones go first)."""

    def __init__(self) -> None:
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.tasks: set[asyncio.Task[None]] = set()

    def add(self, job: Job) -> None:
        if len(self.jobs) >= limits.capture_jobs_max:
            done = next((k for k, j in self.jobs.items() if not j.running), None)
            if done is None:
                raise LiangcaoError(Code.MEMPOOL_FULL, "too many capture jobs running; try again shortly")
            del self.jobs[done]
        self.jobs[job.capture_id] = job

    def start(self, coro: Coroutine[Any, Any, None]) -> None:
        # The loop keeps only weak references to tasks: hold each until it is done.
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


class Captures:
    """Capture jobs of one node (the EPCIS capture interface's logic)."""

    def __init__(self, services: NodeServices, custody: Custody) -> None:
        self.services = services
        self.node = services.node
        self.custody = custody
        self.jobs = Jobs()

    # ---- starting a job -------------------------------------------------------------------------------
    @staticmethod
    def behaviour(text: str) -> str:
        """The capture error behaviour named by ``text`` (case and spaces ignored). Raises INVALID_ARGUMENT."""
        behaviour = text.strip().lower()
        if behaviour not in BEHAVIOURS:
            raise LiangcaoError(
                Code.INVALID_ARGUMENT, "GS1-Capture-Error-Behaviour must be rollback or proceed", behaviour
            )
        return behaviour

    def signer(self, member: str) -> txm.Signer:
        """The key the node holds for ``member``. Raises FORBIDDEN (custody off, or no key for the member):
        checked before the document is even read."""
        signer = self.custody.signer(member)
        if signer is None:
            raise LiangcaoError(
                Code.FORBIDDEN,
                (f"this node holds no signing key for {member}" if self.custody.home else "custody is off on this node")
                + ": capture with the SDK or 'liangcao trace capture', which sign on your side",
            )
        return signer

    async def start(self, member: str, behaviour: str, signer: txm.Signer, data: bytes, *, single: bool) -> Job:
        """Validate and hash ``data`` (raises on a bad document: no job), then run the job in the background."""
        prepared = await asyncio.to_thread(cap.prepare, data, single=single)
        job = Job(os.urandom(8).hex(), member, behaviour, len(prepared), self.node.clock.now_ms())
        self.jobs.add(job)
        self.jobs.start(self._run_job(job, prepared, signer))
        return job

    async def wait(self, job: Job, timeout_s: float) -> Job:
        """``job`` once it finished, or still running after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while job.running and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return job

    # ---- reading jobs ---------------------------------------------------------------------------------
    def of(self, member: str) -> list[Job]:
        """``member``'s jobs, newest first (a member never sees another's jobs)."""
        return [j for j in reversed(self.jobs.jobs.values()) if j.member == member]

    def get(self, member: str, capture_id: str) -> Job:
        job = self.jobs.jobs.get(capture_id)
        if job is None or job.member != member:
            raise LiangcaoError(Code.NOT_FOUND, f"no capture job {capture_id}")
        return job

    # ---- running a job --------------------------------------------------------------------------------
    def _dry_run(self, raws: list[bytes]) -> list[tuple[int, str, Any]]:
        """(code, message, result) of each transaction run in order on the committed state; nothing written."""
        reader = self.node.reader()
        head = reader.head()
        if head is None:
            raise LiangcaoError(Code.NOT_READY, "the node has no blocks yet")
        ids = [txm.parse(r).envelope_id for r in raws]
        ex = executor.execute(
            reader,
            self.services.runtime(),
            chain_id=head.chain_id,
            height=head.height + 1,
            time_ms=self.node.clock.now_ms(),
            prev_state_hash=head.state_hash,
            txs=raws,
            sig_ok=dict.fromkeys(ids, True),  # signed here, a moment ago, by a key the node holds
        )
        out = []
        for raw in ex.receipts:
            r = msgspec.json.decode(raw)
            out.append((int(r["code"]), str(r["message"]), r["result"]))
        return out

    async def _commit(self, txs: list[txm.Tx]) -> list[tuple[int, str, Any]]:
        """Submit and wait until every transaction is in a block; each one's (code, message, result)."""
        waits = []
        for t in txs:
            fut = self.services.hub.wait_for(t.tx_id, t.envelope_id)
            _, status = self.node.submit(t.raw)
            waits.append((t.tx_id, fut, status))
        out = []
        for tx_id, fut, _status in waits:
            pos = self.services.position(tx_id)
            if pos is None:
                pos = await asyncio.wait_for(fut, JOB_TTL_MS / 1000)
            height, idx, _ = pos
            receipt = msgspec.json.decode(self.node.reader().receipts(height)[idx])
            out.append((int(receipt["code"]), str(receipt["message"]), receipt["result"]))
        return out

    async def _run_job(self, job: Job, prepared: cap.Prepared, signer: txm.Signer) -> None:
        try:
            await self._run(job, prepared, signer)
        except Exception as exc:  # the job reports it; the node goes on
            job.success = False
            job.errors.append(problem("capture failed", f"{type(exc).__name__}: {exc}", 500, "ImplementationException"))
        finally:
            job.running = False
            job.finished_ms = self.node.clock.now_ms()

    async def _run(self, job: Job, prepared: cap.Prepared, signer: txm.Signer) -> None:
        node = self.node
        not_after = node.clock.now_ms() + JOB_TTL_MS
        packs = cap.pack(prepared)
        txs = cap.sign(prepared, packs, signer, node.chain_id, not_after, compact=True)
        outcomes = await asyncio.to_thread(self._dry_run, [t.raw for t in txs])
        failed = [(p, o) for p, o in zip(packs, outcomes, strict=True) if o[0] != 0]
        if failed:
            # Find the events at fault one by one, so that each error names its own event (rollback) and
            # proceed leaves out exactly those.
            singles = [i for p, _ in failed for i in p]
            alone = cap.sign(prepared, [[i] for i in singles], signer, node.chain_id, not_after, compact=True)
            verdicts = await asyncio.to_thread(self._dry_run, [t.raw for t in alone])
            bad = set()
            for i, (code, message, _) in zip(singles, verdicts, strict=True):
                if code != Code.OK:
                    bad.add(i)
                    job.errors.append(_refusal(prepared, [i], code, message))
            if not bad:  # refused together, accepted alone (a bound of the whole transaction): name the pack
                for pack, (code, message, _) in failed:
                    job.errors.append(_refusal(prepared, pack, code, message))
            if job.behaviour == "rollback" or not bad:
                job.success = False
                return
            keep = [i for p in packs for i in p if i not in bad]
            sub = cap.Prepared(
                [prepared.texts[i] for i in keep],
                [prepared.ids[i] for i in keep],
                [prepared.writes[i] for i in keep],
                prepared.context,
                prepared.ignore,
                prepared.masterdata,
            )
            prepared = sub
            packs = cap.pack(sub)
            txs = cap.sign(sub, packs, signer, node.chain_id, not_after, compact=True)
        job.txs = [t.tx_id for t in txs]
        results = await self._commit(txs)
        for pack, (code, message, result) in zip(packs, results, strict=True):
            if code != Code.OK:
                job.errors.append(_refusal(prepared, pack, code, message))
                continue
            for r in result:
                (job.captured if r["status"] == "captured" else job.duplicates).append(r["id"])
        job.success = not job.errors


def _refusal(prepared: cap.Prepared, pack: list[int], code: int, message: str) -> dict[str, Any]:
    ids = [prepared.ids[i] for i in pack]
    denied = code == TraceCode.NOT_PERMITTED  # the organisation may not record it: a security matter, not bad data
    kind = "SecurityException" if denied else "ValidationException"
    body = problem("event refused", f"{message} (code {code})", 403 if denied else 400, kind)
    body["eventIDs"] = ids
    return body
