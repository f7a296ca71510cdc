"""The EPCIS 2.0 REST binding of a node (``/epcis/v2``), and the traceability reads under ``/v1/trace``.

Capture (``POST /epcis/v2/capture``) validates the document at once (a document that fails the schema is
refused with 400, each problem naming the event and the field), then answers ``202`` with a capture job
(``Location: /epcis/v2/capture/{captureID}``) that signs, dry-runs and submits the ``trace.capture``
transactions and records the outcome. ``GS1-Capture-Error-Behaviour``:

- ``rollback`` (the default): the whole document is dry-run on the committed state first; if any event
  would be refused, nothing is submitted. A document that fits one transaction is also atomic on the
  ledger itself; a larger one is atomic up to a permission changed by a vote between the dry run and the
  commit, which the job then reports;
- ``proceed``: events that would be refused are left out, each reported in the job's errors; the rest
  are captured.

Capture through these endpoints makes the node *sign as the caller*, so it needs two things, both off by
default: the node must have been started with custody (``node start --custody`` or ``"custody": true`` in
``node.json``: it may then use member keys from its home folder, as an organisation's own node would hold
for its staff), and the bearer token must carry the ``write`` scope (``liangcao token create --scope
write``); a read token is refused with 403 ``INSUFFICIENT_SCOPE`` and nothing is signed. Without custody
(the default) the node holds no member's key and refuses with 403 ``FORBIDDEN``: members capture with the
SDK (``Client.capture``) or ``liangcao trace capture``, which sign on their side and submit the signed
``trace.capture`` transactions to ``POST /v1/txs``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import msgspec
from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from liangcao import limits
from liangcao.codes import Code
from liangcao.errors import LiangcaoError
from liangcao.ledger import executor
from liangcao.ledger import tx as txm
from liangcao.node.node import Node
from liangcao.trace import capture as cap
from liangcao.trace import query as tq
from liangcao.trace.provenance import provenance

_json = msgspec.json.Encoder(decimal_format="number")
HEADERS = {"GS1-EPCIS-Version": "2.0.0", "GS1-CBV-Version": "2.0.0", "GS1-EPCIS-Min": "2.0.0", "GS1-EPCIS-Max": "2.0.0"}
CAPTURE_HEADERS = {
    **HEADERS,
    "GS1-EPCIS-Capture-Limit": str(limits.capture_events_max),
    "GS1-EPCIS-Capture-File-Size-Limit": str(limits.capture_document_bytes_max),
}
JOB_TTL_MS = 10 * 60 * 1000  # capture transactions expire this long after signing


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """JSON with decimals as numbers (an event's 0.1 stays 0.1, never a binary float)."""
    return Response(_json.encode(body), status_code=status, media_type="application/json", headers=headers)


class Custody:
    """Member keys a node may sign with: those in ``home`` (a network folder), loaded when first used.
    ``Custody(None)``, the default everywhere, holds none: the node signs for no one."""

    def __init__(self, home: str | Path | None) -> None:
        self.home = Path(home) if home is not None else None
        self._signers: dict[str, txm.Signer] = {}
        self._lock = threading.Lock()

    def signer(self, member_id: str) -> txm.Signer | None:
        from liangcao.node.home import load_signer, member_dir, valid_member_id

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
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


def mount(
    app: FastAPI,
    node: Node,
    *,
    reader_member: Callable[..., str],
    writer_member: Callable[..., str],
    runtime: Callable[[], Any],
    read_body: Callable[[Request, int], Coroutine[Any, Any, bytes]],
    wait_for: Callable[[str], asyncio.Future[tuple[int, int, int]]],
    lookup: Callable[[str], tuple[int, int, int] | None],
    custody: Custody,
    errors: dict[int | str, dict[str, Any]],
) -> Jobs:
    """Add the EPCIS and trace routes to ``app``."""
    jobs = Jobs()
    app.state.capture_jobs = jobs

    def dry_run(raws: list[bytes]) -> list[tuple[int, str, Any]]:
        """(code, message, result) of each transaction run in order on the committed state; nothing written."""
        reader = node.reader()
        head = reader.head()
        if head is None:
            raise LiangcaoError(Code.NOT_READY, "the node has no blocks yet")
        ids = [txm.parse(r).envelope_id for r in raws]
        ex = executor.execute(
            reader,
            runtime(),
            chain_id=head.chain_id,
            height=head.height + 1,
            time_ms=node.clock.now_ms(),
            prev_state_hash=head.state_hash,
            txs=raws,
            sig_ok=dict.fromkeys(ids, True),  # signed here, a moment ago, by a key the node holds
        )
        out = []
        for raw in ex.receipts:
            r = msgspec.json.decode(raw)
            out.append((int(r["code"]), str(r["message"]), r["result"]))
        return out

    async def commit(txs: list[txm.Tx]) -> list[tuple[int, str, Any]]:
        """Submit and wait until every transaction is in a block; each one's (code, message, result)."""
        waits = []
        for t in txs:
            fut = wait_for(t.tx_id)
            _, status = node.submit(t.raw)
            waits.append((t.tx_id, fut, status))
        out = []
        for tx_id, fut, _status in waits:
            pos = lookup(tx_id)
            if pos is None:
                pos = await asyncio.wait_for(fut, JOB_TTL_MS / 1000)
            height, idx, _ = pos
            receipt = msgspec.json.decode(node.reader().receipts(height)[idx])
            out.append((int(receipt["code"]), str(receipt["message"]), receipt["result"]))
        return out

    async def run_job(job: Job, prepared: cap.Prepared, signer: txm.Signer) -> None:
        try:
            await _run_job(job, prepared, signer)
        except Exception as exc:  # the job reports it; the node goes on
            job.success = False
            job.errors.append(problem("capture failed", f"{type(exc).__name__}: {exc}", 500, "ImplementationException"))
        finally:
            job.running = False
            job.finished_ms = node.clock.now_ms()

    async def _run_job(job: Job, prepared: cap.Prepared, signer: txm.Signer) -> None:
        not_after = node.clock.now_ms() + JOB_TTL_MS
        packs = cap.pack(prepared)
        txs = cap.sign(prepared, packs, signer, node.chain_id, not_after)
        outcomes = await run_in_threadpool(dry_run, [t.raw for t in txs])
        failed = [(p, o) for p, o in zip(packs, outcomes, strict=True) if o[0] != 0]
        if failed and job.behaviour == "rollback":
            for pack, (code, message, _) in failed:
                job.errors.append(_refusal(prepared, pack, code, message))
            job.success = False
            return
        if failed:  # proceed: find the refused events one by one and leave them out
            singles = [i for p, _ in failed for i in p]
            alone = cap.sign(prepared, [[i] for i in singles], signer, node.chain_id, not_after)
            verdicts = await run_in_threadpool(dry_run, [t.raw for t in alone])
            bad = set()
            for i, (code, message, _) in zip(singles, verdicts, strict=True):
                if code != 0:
                    bad.add(i)
                    job.errors.append(_refusal(prepared, [i], code, message))
            keep = [i for p in packs for i in p if i not in bad]
            sub = cap.Prepared(
                [prepared.texts[i] for i in keep],
                [prepared.ids[i] for i in keep],
                [prepared.writes[i] for i in keep],
                prepared.context,
                prepared.ignore,
            )
            prepared = sub
            packs = cap.pack(sub)
            txs = cap.sign(sub, packs, signer, node.chain_id, not_after)
        job.txs = [t.tx_id for t in txs]
        results = await commit(txs)
        for pack, (code, message, result) in zip(packs, results, strict=True):
            if code != 0:
                job.errors.append(_refusal(prepared, pack, code, message))
                continue
            for r in result:
                (job.captured if r["status"] == "captured" else job.duplicates).append(r["id"])
        job.success = not job.errors

    def _refusal(prepared: cap.Prepared, pack: list[int], code: int, message: str) -> dict[str, Any]:
        ids = [prepared.ids[i] for i in pack]
        kind = "SecurityException" if code == 2101 else "ValidationException"
        body = problem("event refused", f"{message} (code {code})", 403 if code == 2101 else 400, kind)
        body["eventIDs"] = ids
        return body

    async def start_capture(request: Request, member: str, single: bool) -> Job:
        behaviour = request.headers.get("GS1-Capture-Error-Behaviour", "rollback").strip().lower()
        if behaviour not in ("rollback", "proceed"):
            raise LiangcaoError(
                Code.INVALID_ARGUMENT, "GS1-Capture-Error-Behaviour must be rollback or proceed", behaviour
            )
        signer = custody.signer(member)
        if signer is None:
            raise LiangcaoError(
                Code.FORBIDDEN,
                (f"this node holds no signing key for {member}" if custody.home else "custody is off on this node")
                + ": capture with the SDK or 'liangcao trace capture', which sign on your side",
            )
        data = await read_body(request, limits.capture_document_bytes_max)
        prepared = await run_in_threadpool(cap.prepare, data, single=single)
        job = Job(os.urandom(8).hex(), member, behaviour, len(prepared), node.clock.now_ms())
        jobs.add(job)
        jobs.start(run_job(job, prepared, signer))
        return job

    # ---- EPCIS 2.0 ------------------------------------------------------------------------------------
    @app.post(
        "/epcis/v2/capture", status_code=202, responses=errors, tags=["epcis"], summary="Capture an EPCIS 2.0 document"
    )
    async def capture_document(request: Request, member: str = Depends(writer_member)) -> Response:
        job = await start_capture(request, member, single=False)
        headers = {**CAPTURE_HEADERS, "Location": f"/epcis/v2/capture/{job.capture_id}"}
        return json_response(job.to_dict(), 202, headers)

    @app.get("/epcis/v2/capture", responses=errors, tags=["epcis"], summary="Capture jobs, newest first")
    def list_jobs(member: str = Depends(reader_member)) -> Response:
        mine = [j.to_dict() for j in reversed(jobs.jobs.values()) if j.member == member]
        return json_response(mine[: limits.query_per_page_max], headers=CAPTURE_HEADERS)

    @app.get(
        "/epcis/v2/capture/{capture_id}", responses=errors, tags=["epcis"], summary="One capture job and its outcome"
    )
    def get_job(capture_id: str, member: str = Depends(reader_member)) -> Response:
        job = jobs.jobs.get(capture_id)
        if job is None or job.member != member:
            raise LiangcaoError(Code.NOT_FOUND, f"no capture job {capture_id}")
        return json_response(job.to_dict(), headers=CAPTURE_HEADERS)

    @app.post(
        "/epcis/v2/events",
        status_code=201,
        responses=errors,
        tags=["epcis"],
        summary="Capture one event (waits for commit)",
    )
    async def capture_event(request: Request, member: str = Depends(writer_member)) -> Response:
        job = await start_capture(request, member, single=True)
        deadline = time.monotonic() + limits.wait_ms_max / 1000
        while job.running and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        location = f"/epcis/v2/capture/{job.capture_id}"
        if job.running:
            return json_response(job.to_dict(), 202, {**HEADERS, "Location": location})
        if not job.success:
            status = int(job.errors[0]["status"]) if job.errors else 500
            return json_response(job.errors[0] if job.errors else job.to_dict(), status, HEADERS)
        event_id = (job.captured or job.duplicates)[0]
        location = f"/epcis/v2/events/{quote(event_id, safe='')}"
        return json_response(job.to_dict(), 201, {**HEADERS, "Location": location})

    @app.get("/epcis/v2/events", responses=errors, tags=["epcis"], summary="Query events (EPCIS query parameters)")
    def query_events(request: Request, member: str = Depends(reader_member)) -> Response:
        q = tq.parse(list(request.query_params.multi_items()))
        page = tq.run(node.reader(), q)
        headers = dict(HEADERS)
        if page.next_token is not None:
            params = [(k, v) for k, v in request.query_params.multi_items() if k != "nextPageToken"]
            params.append(("nextPageToken", page.next_token))
            headers["Link"] = f'</epcis/v2/events?{urlencode(params)}>; rel="next"'
        return json_response(tq.query_document(page.records, node.clock.now_ms()), headers=headers)

    @app.get("/epcis/v2/events/{event_id:path}", responses=errors, tags=["epcis"], summary="One event by its id")
    def get_event(event_id: str, member: str = Depends(reader_member)) -> Response:
        page = tq.run(node.reader(), tq.parse([("EQ_eventID", event_id)]))
        if not page.records:
            raise LiangcaoError(Code.NOT_FOUND, f"no event {event_id}")
        return json_response(tq.event_out(page.records[0]), headers=HEADERS)

    @app.get("/epcis/v2/eventTypes", responses=errors, tags=["epcis"], summary="The event types this repository holds")
    def event_types(member: str = Depends(reader_member)) -> Response:
        from liangcao.trace.facts import EVENT_TYPES

        return json_response({"eventTypes": list(EVENT_TYPES)}, headers=HEADERS)

    for path in ("/epcis/v2/capture", "/epcis/v2/events"):

        @app.options(path, include_in_schema=False)
        def options() -> Response:
            """The REST binding's discovery: methods, versions and capture limits."""
            return Response(status_code=204, headers={**CAPTURE_HEADERS, "Allow": "GET, POST, OPTIONS"})

    # ---- provenance -------------------------------------------------------------------------------------
    @app.get(
        "/v1/trace/provenance", responses=errors, tags=["trace"], summary="An item's history through packing and making"
    )
    def get_provenance(id: str, member: str = Depends(reader_member)) -> Response:
        return json_response(_provenance(id))

    def _provenance(ident: str) -> dict[str, Any]:
        if not ident or len(ident) > 500:
            raise LiangcaoError(Code.INVALID_ARGUMENT, "id must be an EPC URI or a GS1 Digital Link URI")
        return provenance(node.reader(), ident)

    app.state.trace_provenance = _provenance
    return jobs
