"""What the interfaces ask of a node, as calls: reads, queries, submissions, finality, attestations, health.

Theory of operation
-------------------
The HTTP API (``liangcao.api``) is one router per noun, and each router only translates HTTP to a call
here and the answer (or a :class:`~liangcao.errors.LiangcaoError`) back; everything that is not HTTP lives
below it, in these services, so that another interface gets the same answers and a new feature adds a
method instead of growing a closure.

Threads: read methods run on the caller's thread with that thread's read-only store connection
(``Node.reader``) and contract runtime (:meth:`NodeServices.runtime`): API threads never share the commit
thread's. ``async`` methods run on the event loop, which owns the :class:`~liangcao.node.events.Hub` that
commit notifications arrive through. Errors are ``LiangcaoError`` with a stable code: ``NOT_READY`` before
the first block, ``NOT_FOUND``, ``FORBIDDEN``; the interface maps each code to its status once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator, Callable
from typing import Any

import msgspec

from liangcao import __version__, encoding
from liangcao.codes import Code
from liangcao.contracts import config as cfgmod
from liangcao.contracts.runtime import ContractRuntime
from liangcao.crypto import identity, keys
from liangcao.errors import LiangcaoError
from liangcao.ledger import block as blk
from liangcao.ledger import tx as txm
from liangcao.ledger.chain import tx_with_proofs
from liangcao.ledger.store import Store
from liangcao.node import proofs
from liangcao.node.capture import Captures, Custody
from liangcao.node.events import Hub, StreamItem, open_stream
from liangcao.node.node import Node
from liangcao.node.trace_index import TraceIndex, TraceView
from liangcao.trace import query as tq
from liangcao.trace.provenance import provenance

log = logging.getLogger("liangcao.api")  # the name fork alarms from posted attestations were always logged under


# ---- who signed, and finality ----------------------------------------------------------------------------
def signer_of(cert_b64: str) -> dict[str, str]:
    """Who a certificate names: member id, organisation, role, organisation type, fingerprint."""
    try:
        info = identity.parse_certificate(keys.unb64(cert_b64))
    except (ValueError, identity.CertificateError):
        return {"member": "?", "org": "?", "role": "?", "org_type": "?", "fingerprint": ""}
    return {"member": info.member_id, "org": info.org, "role": info.role, "org_type": info.org_type,
            "fingerprint": info.fingerprint}  # fmt: skip


def finality(store: Store, certs: identity.CertCache, info: dict[str, Any], *, forked: bool = False) -> dict[str, Any]:
    """The transaction's signers (organisation, role) and its block's finality (attesting organisations).

    While the node has a fork alarm it reports nothing as final: a peer disagreeing on the state means the
    attestations no longer say what they should."""
    signers = [signer_of(s["cert"]) for s in info["tx"].get("signatures") or []]
    config = cfgmod.load(store, certs)
    attested = set()
    for raw in store.attestations(info["height"]):
        att = msgspec.json.decode(raw)
        # Only attestations by a current peer of an active organisation count; a row that names an
        # organisation under any other certificate says nothing.
        org = config.attesting_org(att, certs) if att.get("block_hash") == info["block_hash"] else None
        if org is not None:
            attested.add(org)
    quorum = config.quorum_size("finality")
    return {
        "signers": signers,
        "finality": {
            "attested_by": sorted(attested),
            "quorum": quorum,
            "final": len(attested) >= quorum and not forked,
            "fork_alarm": forked,
        },
    }


def unknown(tx_id: str) -> dict[str, Any]:
    """The answer for a transaction whose ordering the service did not confirm in time: never a refusal."""
    return {
        "tx_id": tx_id,
        "status": "unknown",
        "code": int(Code.OUTCOME_UNKNOWN),
        "message": f"the ordering service did not confirm in time; the transaction may still be committed: look it "
        f"up (GET /v1/txs/{tx_id}) or submit the same signed transaction again (it is committed at most once)",
    }


def readable_by(record: dict[str, Any], org: str) -> bool:
    """Whether ``org`` may see this dangerous-goods declaration version: a party holding a wrap of its key."""
    return org in (record["shipper"], record["carrier"]) or org in (record.get("keys") or {})


class NodeServices:
    """The services of one node (see the module docstring). ``custody``: member keys the node may sign
    EPCIS captures with (``Custody(None)``, the default, holds none)."""

    def __init__(self, node: Node, custody: Custody | None = None) -> None:
        self.node = node
        self.hub = Hub()
        node.listeners.append(self.hub.on_block)
        self.captures = Captures(self, custody or Custody(None))
        self._local = threading.local()
        self.trace_index = TraceIndex(node.store_path.with_name("trace-index.sqlite"), node.store_path)
        node.listeners.append(self.trace_index.wake)

    def runtime(self) -> ContractRuntime:
        """A contract runtime for the calling thread (its caches are never shared across threads)."""
        rt: ContractRuntime | None = getattr(self._local, "runtime", None)
        if rt is None:
            from liangcao.apps.bundle import default_registry

            rt = self._local.runtime = ContractRuntime(default_registry())
        return rt

    # ---- the chain ------------------------------------------------------------------------------------
    def head(self) -> blk.Header:
        """The committed head. Raises NOT_READY before the first block."""
        head = self.node.reader().head()
        if head is None:
            raise LiangcaoError(Code.NOT_READY, "no blocks yet")
        return head

    def head_header(self) -> dict[str, Any]:
        head = self.head()
        return {"header": head.to_dict(), "block_hash": head.hash}

    def headers(self, before: int | None, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` headers below height ``before`` (default: from the head), newest first."""
        store = self.node.reader()
        top = store.height() if before is None else min(before - 1, store.height())
        headers = []
        for h in range(top, max(-1, top - limit), -1):
            header = store.header(h)
            if header is not None:
                headers.append({"header": header.to_dict(), "block_hash": header.hash})
        return headers

    def header(self, height: int) -> dict[str, Any]:
        header = self.node.reader().header(height)
        if header is None:
            raise LiangcaoError(Code.NOT_FOUND, f"no block at height {height}")
        return {"header": header.to_dict(), "block_hash": header.hash}

    def block(self, height: int) -> dict[str, Any]:
        """A whole block: header, seal, transactions and their ids, receipts, attestations with their signers."""
        store = self.node.reader()
        block = store.block(height)
        if block is None:
            raise LiangcaoError(Code.NOT_FOUND, f"no block at height {height}")
        atts: list[Any] = [encoding.decode(a) for a in store.attestations(height)]
        txs: list[Any] = [encoding.decode(r) for r in store.block_txs(height)]
        return {
            **block.to_dict(),
            "block_hash": block.hash,
            "tx_ids": [txm.body_id(t["body"]) for t in txs],
            "receipts": [encoding.decode(r) for r in store.receipts(height)],
            "attestations": [{**a, **signer_of(a["cert"])} for a in atts],
        }

    def tx(self, tx_id: str) -> dict[str, Any]:
        """A committed transaction with its receipt, header, proofs, signers and finality."""
        store = self.node.reader()
        info = tx_with_proofs(store, tx_id)
        if info is None:
            pending = self.node.is_pending(tx_id)
            raise LiangcaoError(Code.NOT_FOUND, f"transaction {tx_id} is {'pending' if pending else 'unknown'}")
        # Finality counts only attestations Config.attesting_org accepts (see finality()).
        return {**info, **finality(store, self.node.runtime.certs, info, forked=bool(self.node.fork_alarms))}

    # ---- state and queries ----------------------------------------------------------------------------
    def state(self, prefix: str, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` state entries under ``prefix``, in key order."""
        entries: list[dict[str, Any]] = []
        for key, value in self.node.reader().range(prefix):
            if len(entries) >= limit:
                break
            entries.append({"key": key, "value": encoding.decode(value)})
        return entries

    def value(self, key: str, history: int) -> dict[str, Any]:
        """One state value and its last ``history`` writes."""
        store = self.node.reader()
        value = store.get(key)
        if value is None:
            raise LiangcaoError(Code.NOT_FOUND, f"no state at key {key!r}")
        out: dict[str, Any] = {"key": key, "value": encoding.decode(value)}
        if history:
            out["history"] = [
                {"height": h, "index": i, "value": None if v is None else encoding.decode(v)}
                for h, i, v in store.key_history(key, history)
            ]
        return out

    def query(self, contract: str, method: str, args: dict[str, Any]) -> Any:
        """A contract's ``@query`` run against the committed head (its height and time)."""
        store = self.node.reader()
        head = store.head()
        if head is None:
            raise LiangcaoError(Code.NOT_READY, "no blocks yet")
        return self.runtime().query(store, contract, method, args, height=head.height, time_ms=head.time_ms)

    # ---- submissions ----------------------------------------------------------------------------------
    def position(self, tx_id: str) -> tuple[int, int, int] | None:
        """(height, index, code) of a committed transaction, or None."""
        pos = self.node.position(tx_id)
        if pos is not None:
            return pos
        found = self.node.reader().tx_position(tx_id)
        if found is None:
            return None
        rc = self.node.reader().receipts(found[0])
        receipt: Any = encoding.decode(rc[found[1]]) if found[1] < len(rc) else {"code": -1}
        return found[0], found[1], int(receipt["code"])

    def committed(self, tx_id: str, pos: tuple[int, int, int]) -> dict[str, Any]:
        height, idx, code = pos
        receipts = self.node.reader().receipts(height)
        receipt = encoding.decode(receipts[idx]) if idx < len(receipts) else None
        return {"tx_id": tx_id, "status": "committed", "height": height, "index": idx, "code": code, "receipt": receipt}

    async def submit(self, raw: bytes, *, wait: bool, timeout_s: float) -> dict[str, Any]:
        """Admit one signed transaction (raises on refusal); with ``wait``, until it commits or ``timeout_s``.

        Returns ``{tx_id, status: "pending"}`` or the committed position and receipt (``status:
        "committed"``). A transaction that was already committed answers with its position at once."""
        # Off the event loop: admission verifies signatures and, in a consortium, waits for the ordering
        # service's acknowledgement; neither may stall every other request.
        tx, status = await asyncio.to_thread(self.node.submit, raw)
        if status == "unknown" and not wait:
            return unknown(tx.tx_id)
        if status == "committed" or wait:
            pos = self.position(tx.tx_id) if status == "committed" else None
            if pos is None:
                fut = self.hub.wait_for(tx.tx_id, tx.envelope_id)
                pos = self.position(tx.tx_id)  # committed between submit and wait_for?
                if pos is None:
                    try:
                        pos = await asyncio.wait_for(fut, timeout_s)
                    except TimeoutError:
                        return unknown(tx.tx_id) if status == "unknown" else {"tx_id": tx.tx_id, "status": "pending"}
            return self.committed(tx.tx_id, pos)
        return {"tx_id": tx.tx_id, "status": "pending"}

    def submit_batch(self, items: list[Any]) -> list[dict[str, Any]]:
        """Admit many transactions (decoded JSON objects); one result per item, in order. Blocks: admission
        may wait on the ordering service (JetStream acknowledgements), so call it off the event loop."""
        full = self.node.mempool_full()
        if full:  # nothing would be taken: refuse the batch before encoding it again (a resend costs little)
            return [{"status": "rejected", "code": int(Code.MEMPOOL_FULL), "message": full} for _ in items]
        results: list[dict[str, Any] | None] = []
        datas: list[bytes] = []
        for item in items:
            try:
                datas.append(msgspec.json.encode(item))
                results.append(None)
            except (TypeError, ValueError) as exc:
                results.append({"status": "rejected", "code": int(Code.BAD_ENCODING), "message": str(exc)})
        admitted = iter(self.node.submit_many(datas))
        out: list[dict[str, Any]] = []
        for r in results:
            if r is not None:
                out.append(r)
                continue
            outcome = next(admitted)
            if isinstance(outcome, LiangcaoError):
                out.append({"status": "rejected", "code": outcome.code, "message": outcome.message})
            elif outcome[1] == "unknown":
                out.append(unknown(outcome[0].tx_id))
            else:
                out.append({"tx_id": outcome[0].tx_id, "status": outcome[1]})
        return out

    # ---- attestations ---------------------------------------------------------------------------------
    def attestations(self, height: int) -> list[Any]:
        return [encoding.decode(a) for a in self.node.reader().attestations(height)]

    def accept_attestation(self, att: Any) -> dict[str, Any]:
        """Keep ``att`` (another organisation's peer attesting one of our blocks, ``liangcao.witness``) with
        the block it attests; the attesting member and organisation.

        An embedded node only ever attests its own blocks; peers that follow it post theirs here. One is kept
        only if it counts under the consortium's one rule (``Config.attesting_org``: the signature verifies
        and the certificate is a current, unrevoked peer's of an active organisation) and it attests exactly
        this node's block and state hash at that height. A counted attestation of a *different* block or
        state is a fork alarm, raised as the consortium link raises it.

        Raises LiangcaoError: WRONG_CHAIN, UNKNOWN_CERTIFICATE (not a counted peer), NOT_FOUND (no such block
        yet), BAD_BLOCK (another block or state: a fork alarm)."""
        node = self.node
        if not isinstance(att, dict) or att.get("chain_id") != node.chain_id:
            raise LiangcaoError(Code.WRONG_CHAIN, f"the attestation is not for chain {node.chain_id}")
        store = node.reader()
        certs = identity.CertCache()  # API threads never share the commit thread's caches
        org = cfgmod.load(store, certs).attesting_org(att, certs)
        if org is None:
            raise LiangcaoError(
                Code.UNKNOWN_CERTIFICATE,
                "the attestation is not signed by a current peer of an active organisation",
            )
        member = blk.check_attestation(att)
        height = int(att["height"])
        ours = store.header(height)
        if ours is None:
            raise LiangcaoError(Code.NOT_FOUND, f"no block at height {height} yet")
        if att["block_hash"] != ours.hash or att["state_hash"] != ours.state_hash:
            node.note_fork(height, member, att, ours)
            raise LiangcaoError(Code.BAD_BLOCK, f"{member} attests another block or state at height {height}")
        # The writer store serialises writes under its lock, beside the commit thread's blocks.
        node.ledger.store.add_attestation(height, member, encoding.canonical(att))
        return {"height": height, "member": member, "org": org}

    # ---- events ---------------------------------------------------------------------------------------
    def stream(
        self,
        *,
        start: int,
        skip_upto: tuple[int, int, int] | None,
        contract: str | None,
        name: str | None,
        blocks: bool,
        follow: bool,
        token_void: Callable[[], str | None],
        token_exp_ms: int,
    ) -> AsyncGenerator[StreamItem, None]:
        """Committed events and blocks from ``start``, then live (``liangcao.node.events.open_stream``)."""
        return open_stream(
            self.node,
            self.hub,
            start=start,
            skip_upto=skip_upto,
            contract=contract,
            name=name,
            blocks=blocks,
            follow=follow,
            token_void=token_void,
            token_exp_ms=token_exp_ms,
        )

    # ---- operations -----------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """Liveness, the head and the truth about this node: ``status`` is ``failed`` (the commit stopped),
        ``fork`` (a peer attests another state), ``degraded`` (``problems`` says why: the ordering service
        unreachable, lagging behind the stream or the network, blocks not final for too long, a clock alarm)
        or ``ok``. Fork alarms are summarised (bounded); ``fork_alarms`` lists at most the first few."""
        node = self.node
        head = self.head()
        cond = node.condition()
        summary = node.fork_alarm_summary()
        return {
            "status": cond["status"],
            "problems": cond["problems"],
            "chain_id": head.chain_id,
            "height": head.height,
            "block_hash": head.hash,
            "mempool": node.pending_count(),
            "version": __version__,
            "time_ms": self.now_ms(),
            "ordering": "solo" if node.solo else "jetstream",
            "ordering_status": cond.get("ordering_status"),
            "lag": cond.get("lag"),
            "finality": cond.get("finality_status"),
            "fork_alarms": summary["sample"],
            "fork_alarm_summary": summary,
            "poison_messages": node.poison_messages,
            "clock_alarm": node.clock_alarm,
        }

    def fork_alarms(self) -> dict[str, Any]:
        """Every fork alarm kept (at most ``fork_alarms_max``), and how many were raised since start."""
        node = self.node
        return {"alarms": list(node.fork_alarms), "raised": node.fork_alarms_seen}

    def clear_fork_alarms(self, member: str) -> dict[str, Any]:
        """Clear the fork alarms once the operator resolved the fork (docs/operations.md). Only for a write
        token of a member of this node's own organisation: FORBIDDEN otherwise."""
        org = self.node.peer.member_id.partition("/")[0]
        if member.partition("/")[0] != org:
            raise LiangcaoError(Code.FORBIDDEN, f"only {org}'s operators clear this node's fork alarms")
        cleared = self.node.clear_fork_alarms()
        log.warning("fork alarms cleared by %s: %s", member, cleared)
        return {"cleared": cleared}

    def now_ms(self) -> int:
        """The node's clock (what clients compute ``not_after`` from, and EPCIS documents are stamped with)."""
        return self.node.clock.now_ms()

    def gauges(self) -> tuple[int, int]:
        """(transactions in the mempool, fork alarms): what metrics sample when scraped."""
        return self.node.pending_count(), len(self.node.fork_alarms)

    def condition(self) -> dict[str, Any]:
        """What health knows beyond the head (``Node.condition``): what the consortium gauges sample."""
        return self.node.condition()

    # ---- traceability ---------------------------------------------------------------------------------
    def trace_view(self) -> TraceView:
        """The committed state with this node's EPCIS index (``liangcao.node.trace_index``), for the calling
        thread; the index's follower starts with the first read."""
        self.trace_index.follow(
            lambda: Store(self.node.store_path, readonly=True), alive=lambda: not getattr(self.node, "_stopping", False)
        )
        return TraceView(self.node.reader(), self.trace_index)

    def provenance(self, ident: str) -> dict[str, Any]:
        """An item's history through packing and making."""
        if not ident or len(ident) > 500:
            raise LiangcaoError(Code.INVALID_ARGUMENT, "id must be an EPC URI or a GS1 Digital Link URI")
        return provenance(self.trace_view(), ident)

    def events(self, params: list[tuple[str, str]]) -> tq.Page:
        """One page of EPCIS events matching the query parameters."""
        return tq.run(self.trace_view(), tq.parse(params))

    def event(self, event_id: str) -> dict[str, Any]:
        """One EPCIS event by its id, as the query interface shows it."""
        page = tq.run(self.trace_view(), tq.parse([("EQ_eventID", event_id)]))
        if not page.records:
            raise LiangcaoError(Code.NOT_FOUND, f"no event {event_id}")
        return tq.event_out(page.records[0])

    def bundle(self, identifier: str) -> dict[str, Any]:
        """The public verification bundle of an item (``liangcao.node.proofs``)."""
        return proofs.bundle_from(self.trace_view(), self.node.chain_id, identifier)  # type: ignore[arg-type]

    def trust_params(self) -> dict[str, str]:
        """The trust anchors a link to the verify page carries (``liangcao.node.proofs.trust_params``)."""
        return proofs.trust_params(self.node.reader())

    # ---- dangerous-goods declarations -----------------------------------------------------------------
    def declaration(self, member: str, decl_id: str, version: int) -> dict[str, Any]:
        """A declaration version's sealed envelope, for a member of an organisation party to it (0: latest).

        The content is sealed for the parties anyway; this adds the rule a user expects from the node
        itself: anyone else gets FORBIDDEN, not ciphertext."""
        record: dict[str, Any] = self.query("dg", "declaration", {"id": decl_id, "version": version})
        org = member.partition("/")[0]
        if not readable_by(record, org):
            who = "terminals after the carrier approves" if org not in record["terminals"] else "you after approval"
            raise LiangcaoError(
                Code.FORBIDDEN, f"{org} is not party to version {record['version']} of {decl_id} (readable by {who})"
            )
        return record

    def declaration_versions(self, member: str, decl_id: str) -> Any:
        """A declaration's versions (no content), for members of its shipper, carrier and terminals."""
        latest = self.query("dg", "declaration", {"id": decl_id})
        org = member.partition("/")[0]
        if org not in (latest["shipper"], latest["carrier"], *latest["terminals"]):
            raise LiangcaoError(Code.FORBIDDEN, f"{org} is not party to {decl_id}")
        return self.query("dg", "versions", {"id": decl_id})
