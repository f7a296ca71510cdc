"""``trace``: EPCIS 2.0 events anchored on the ledger under their CBV 2.0 event hash id.

A capture transaction carries up to ``trace_events_per_tx_max`` events, each as the JSON text it was
captured in (events hold decimals, which the ledger's own encoding refuses, so they travel as text), with
the document's ``@context`` and ``ignoreFields``. For each event the contract recomputes the hash id (a
client cannot anchor an event under a made-up id), checks the capturer's permission, and writes:

=====================================  ==========================================================
``trace/e/<hex>``                      the record: id, type, time, recording org and member, tx,
                                       height, the event text and its context
``trace/i/<id> <time13> <hex>``        identifier index (EPCs, parent, children, inputs, outputs,
                                       quantity classes), value = the role; ids in index form
``trace/l/<place> <time13> <hex>``     readPoint / bizLocation index, value = which
``trace/t/<time13> <hex>``             time index, value = the event type
``trace/d/<eventID>``                  a declared ``eventID`` other than the hash id -> hex (first wins)
=====================================  ==========================================================

A **compact** capture (``compact: true`` in the arguments, what the node's capture jobs and ``liangcao trace
bench`` send) writes only ``trace/e/<hex>`` as an :class:`EventRef` (the transaction, the event's place in
it, the height and the capturing member: about 60 bytes) and the ``trace/d/`` alias: the event text is in
the transaction already, and the ``i/``, ``l/`` and ``t/`` indexes, which no contract rule reads, are kept
by each node outside the state (``liangcao.node.trace_index``), derived from the committed blocks. The
state then holds each event once, not three times, and a capture costs one state write per event instead of
four or five. Transactions without the flag (every chain before it) execute as they always did, so replay
gives the same state hashes.

Every event text and the context are checked to nest no deeper than ``limits.trace_depth_max`` before they
are decoded (``TOO_DEEP``, 2102): decoding and hashing recurse once per level, and a limit counted in the
interpreter's frames would make the outcome depend on the caller's stack (the node, ``audit`` and ``node
rebuild`` run the contract at different depths), so the bound is this explicit one.

The same event captured again (same hash id) is recognised: it is reported as ``duplicate`` and changes
nothing. ``<time13>`` is the event time in ms, zero-padded, so each index lists an item's events in time
order.

Permissions are a ledger rule, per organisation type: a policy ``{own, steps}`` says whether the type may
record events about its own products (identifiers whose GS1 company prefix the consortium assigned to the
recording organisation; none may be another organisation's, except a transformation's inputs) and which business steps it may record about
anyone's goods (``*``: any event at all, for an organisation the consortium trusts with everything). Defaults are below; the consortium changes them by a governance vote (``set_policy``), and
assigns company prefixes the same way (``assign_prefix``).
"""

from __future__ import annotations

import contextlib
import pickle
import re
import threading
import time
from collections import OrderedDict
from decimal import Decimal
from enum import IntEnum
from typing import Annotated, Any

import msgspec

from liangcao import codes, encoding, limits
from liangcao.codes import Code
from liangcao.contracts.base import Args, Context, Contract, NoArgs, Record, Signer, query, transaction
from liangcao.contracts.consortium import governance_quorum
from liangcao.domain import ORG_TYPES, OrgId
from liangcao.trace.depth import TooDeep, check_json
from liangcao.trace.facts import INPUT, INPUT_QTY, BadEvent, Facts, facts, index_form
from liangcao.trace.hashing import HASH_VERSION, Hasher, hash_of_prehash

_decoder = msgspec.json.Decoder(float_hook=Decimal)
_encode = msgspec.json.Encoder(decimal_format="number").encode
MASTERDATA_BYTES_MAX = 16 * 1024  # the master data one capture transaction carries
MASTERDATA_ELEMENTS_MAX = 256
_HEX = re.compile(r"[0-9a-f]{64}", re.ASCII)

_TRANSPORT = ["shipping", "receiving", "loading", "unloading", "departing", "arriving", "transporting",
              "staging_outbound", "accepting"]  # fmt: skip
#: Who may record what, until the consortium votes otherwise (``set_policy``).
DEFAULT_POLICIES: dict[str, dict[str, Any]] = {
    "brand": {"own": True, "steps": []},
    "core_enterprise": {"own": True, "steps": []},
    "supplier": {"own": True, "steps": []},
    "logistics": {"own": False, "steps": _TRANSPORT},
    "carrier": {"own": False, "steps": _TRANSPORT},
    "shipper": {"own": False, "steps": ["shipping", "loading", "packing", "staging_outbound"]},
    "warehouse": {
        "own": False,
        "steps": [
            "receiving",
            "storing",
            "picking",
            "packing",
            "unpacking",
            "shipping",
            "staging_outbound",
            "stock_taking",
            "cycle_counting",
            "loading",
            "unloading",
            "holding",
            "accepting",
            "repackaging",
        ],
    },
    "customs": {
        "own": False,
        "steps": ["inspecting", "holding", "entering_exiting", "sampling", "accepting", "destroying"],
    },
    "regulator": {"own": False, "steps": ["inspecting", "sampling"]},
    "platform": {
        "own": False,
        "steps": [
            "receiving",
            "accepting",
            "storing",
            "stocking",
            "retail_selling",
            "dispensing",
            "shipping",
            "void_shipping",
        ],
    },
}
NO_POLICY: dict[str, Any] = {"own": False, "steps": []}


class RecordingPolicy(Record):
    """``trace/p/<org type>``: whether the type records events about its own products (``own``) and which
    business steps it records about anyone's goods (``steps``; ``*``: any event)."""

    own: bool
    steps: list[str]


class EventRecord(Record):
    """``trace/e/<hex>``: an anchored event, as captured, and who anchored it when."""

    id: str  # the CBV 2.0 hash id
    type: str
    time_ms: int
    org: str
    by: str
    tx: str
    height: int
    record_ms: int
    event: str  # the event's JSON text, as captured (decimals and all)
    context: str
    ignore: list[str]


#: Hex digits of the transaction id an :class:`EventRef` keeps: it names a transaction among the few hundred of
#: one block, where 64 bits tell them apart (and a reader that finds two checks which holds the event).
TX_REF_HEX = 16


class EventRef(Record):
    """``trace/e/<hex>`` of a compact capture: the event is the ``n``-th of the transaction committed at
    ``height`` whose id begins with ``tx``, anchored by member ``by``; its text and context are read from
    that transaction."""

    by: str
    height: int
    n: int
    tx: str


_DEFAULTS = {t: msgspec.convert(p, RecordingPolicy) for t, p in DEFAULT_POLICIES.items()}
_NONE = msgspec.convert(NO_POLICY, RecordingPolicy)


class TraceCode(IntEnum):
    BAD_EVENT = 2100  # the event cannot be anchored (type, time, identifiers, JSON)
    NOT_PERMITTED = 2101  # the recording organisation's type may not record this event
    TOO_DEEP = 2102  # an event or the context nests deeper than limits.trace_depth_max


codes.register(TraceCode, "trace")


Prefix = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{4,12}$")]
Step = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class CaptureArgs(Args):
    events: Annotated[list[str], msgspec.Meta(min_length=1, max_length=limits.trace_events_per_tx_max)]
    context: Annotated[str, msgspec.Meta(max_length=limits.trace_context_bytes_max)] = ""
    ignore: Annotated[list[Annotated[str, msgspec.Meta(max_length=200)]], msgspec.Meta(max_length=32)] = msgspec.field(
        default_factory=list
    )
    # The header's master data (``liangcao.trace.capture.master_data``): added later, so left out when empty
    # and the transactions (and state) of captures without it are what they were.
    masterdata: Annotated[str, msgspec.Meta(max_length=MASTERDATA_BYTES_MAX)] = ""
    # Added with the compact layout (module notes): absent (false) in every transaction before it.
    compact: bool = False


class MasterRecord(Record):
    """``trace/m/<index form>``: the master data of one vocabulary element, and the organisation that owns it
    (the first to record it; only that organisation may change it)."""

    id: str
    type: str
    org: str
    attributes: str  # JSON text (values may hold decimals)
    children: list[str]


class PolicyArgs(Args):
    org_type: str
    own: bool
    steps: Annotated[list[Step], msgspec.Meta(max_length=64)]


class OrgTypeArgs(Args):
    org_type: str


class PrefixArgs(Args):
    prefix: Prefix
    org: OrgId


class PrefixOnlyArgs(Args):
    prefix: Prefix


class EventArgs(Args):
    id: Annotated[str, msgspec.Meta(max_length=300)]


def ref_id(hx: str) -> str:
    """The hash id of the event anchored under ``trace/e/<hx>`` (every id the contract computes has this form)."""
    return f"ni:///sha-256;{hx}?ver={HASH_VERSION}"


#: Facts of event texts a compact capture executed, for this node's index to take instead of decoding the text
#: again (``liangcao.node.trace_index``). Never read by the contract, and keyed by the text, of which facts
#: are a pure function: a cache, whatever execution (a dry run, a block later abandoned) filled it.
FACTS_SEEN: OrderedDict[str, Facts] = OrderedDict()
#: The index takes (pops) each entry soon after its block commits, so this holds about the index's lag in events.
#: Past the bound the oldest go first, one at a time: clearing the whole cache when the index was a few blocks
#: behind (a loaded host, 50,000 events) made it decode every event again, so it fell further behind and never
#: found one again.
FACTS_SEEN_MAX = 150_000
#: Whether an index in this process may take the facts (false once the node's index follows from a process of
#: its own, ``liangcao.node.trace_index``: there the cache would only cost the commit thread time and memory).
FACTS_KEEP = True


def _remember(text: str, f: Facts) -> None:
    if len(FACTS_SEEN) >= FACTS_SEEN_MAX:
        # O(1) (a plain dict's first key is found by scanning past the deleted ones); the index thread pops
        # concurrently, so the cache may be empty by now
        with contextlib.suppress(KeyError):
            FACTS_SEEN.popitem(last=False)
    FACTS_SEEN[text] = f


# ---- the per-event work, done before the commit ------------------------------------------------------------
#: What :func:`event_outcome` finds for one event: (hash id, declared ``eventID`` if a string, facts).
Outcome = tuple[str, str | None, Facts]
#: An outcome as it crosses a process boundary: plain tuples pickle several times faster than a dataclass, and
#: tuples of strings only are untracked by the cyclic garbage collector once it has seen them (a list stays
#: tracked): thousands of outcomes wait in the node for their block, and each full collection walked them all.
Packed = tuple[str, str | None, str, int, str, str, str, tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]


def event_outcome(hasher: Hasher, text: str, what: str) -> Outcome:
    """The hash id, declared ``eventID`` and facts of one event text: a pure function of the text, the context
    and the ignored fields (``hasher``). Raises TooDeep, ``msgspec.DecodeError``, BadEvent or whatever a
    malformed value deep inside raises; the contract turns those into its outcomes."""
    check_json(text, what)  # before anything recursive reads it: see the module notes
    event = _decoder.decode(text)
    f = facts(event, limits.trace_ids_per_event_max)
    hash_id = hash_of_prehash(hasher.event(event, checked=True))  # check_json bounded the text
    declared = event.get("eventID")
    return hash_id, declared if isinstance(declared, str) else None, f


def precompute(context: str, ignore: list[str], texts: list[str]) -> list[Packed | None]:
    """:func:`event_outcome` of each event of one capture, for a worker process (``liangcao.node.node``
    runs it at admission, off the commit thread). ``None`` where the event (or the context) fails in any way:
    the contract then does the work itself and reports the failure as it always does, so an outcome handed
    over is never a refusal."""
    try:
        check_json(context, "the context")
        hasher = Hasher(_decoder.decode(context) if context else None, ignore)
    except Exception:
        return [None] * len(texts)
    out: list[Packed | None] = []
    for n, text in enumerate(texts):
        try:
            if len(text.encode()) > limits.trace_event_bytes_max:
                out.append(None)
                continue
            h, d, f = event_outcome(hasher, text, f"event {n}")
        except Exception:
            out.append(None)
            continue
        out.append((h, d, f.type, f.time_ms, f.action, f.biz_step, f.disposition, tuple(f.ids), tuple(f.places)))
    return out


def precompute_many(jobs: list[tuple[str, list[str], list[str]]]) -> list[bytes]:
    """:func:`precompute` of several captures ``(context, ignore, events)``, each pickled on its own: one round
    trip to a worker for a few transactions costs the node's interpreter less than one each, and each capture's
    outcomes stay bytes in the node until its execution unpickles them (:meth:`Precomputed.take`). Unpickled
    on arrival, thousands of outcomes waiting for their block were containers every young collection walked
    again and promoted, and full collections walked them all."""
    return [pickle.dumps(precompute(context, ignore, texts), protocol=5) for context, ignore, texts in jobs]


class Precomputed:
    """Outcomes of :func:`precompute` for transactions not yet executed, keyed by transaction id (bounded; the
    oldest go first). Only this node's own computation goes in, never a submitter's: the contract takes an
    entry only for the very inputs it was computed from (:meth:`take`), and every peer that has none does the
    same work itself, so the entries change how fast a capture executes, never what it does."""

    def __init__(self, txs_max: int = 4096, age_s_max: float = 120.0) -> None:
        self.txs_max = txs_max
        self.age_s_max = age_s_max  # an entry never taken (its transaction never executed) is dropped then
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, str, list[str], list[str], bytes | list[Packed | None]]] = (
            OrderedDict()
        )
        self.hits = 0  # events taken from an entry (tests read it)

    def put(
        self, tx_id: str, context: str, ignore: list[str], texts: list[str], packed: bytes | list[Packed | None]
    ) -> None:
        """Keep the outcomes of a capture: :func:`precompute`'s list, or as :func:`precompute_many` pickled it
        (from this node's own worker only: never bytes that came from anyone else)."""
        with self._lock:
            self._entries[tx_id] = (time.monotonic(), context, ignore, texts, packed)
            while len(self._entries) > self.txs_max:
                self._entries.popitem(last=False)

    def size(self) -> int:
        """Entries not yet taken (those older than ``age_s_max`` dropped first)."""
        with self._lock:
            old = time.monotonic() - self.age_s_max
            while self._entries and next(iter(self._entries.values()))[0] < old:
                self._entries.popitem(last=False)
            return len(self._entries)

    def take(self, tx_id: str, a: CaptureArgs) -> list[Outcome | None] | None:
        """The outcomes of a capture with exactly the arguments ``a`` (removed from the cache), or None."""
        with self._lock:
            entry = self._entries.pop(tx_id, None)
        if entry is None:
            return None
        _, context, ignore, texts, kept = entry
        packed: list[Packed | None] = pickle.loads(kept) if isinstance(kept, bytes) else kept  # our own worker's bytes
        if context != a.context or ignore != a.ignore or texts != a.events or len(packed) != len(a.events):
            return None
        out: list[Outcome | None] = []
        for p in packed:
            if p is None:
                out.append(None)
                continue
            h, d, kind, when, action, step, disp, ids, places = p
            f = Facts(kind, when, action, step, disp, list(ids), list(places))  # the fields in Packed's order
            out.append((h, d, f))
        self.hits += sum(1 for o in out if o is not None)
        return out

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


#: This process's outcomes computed ahead of execution (see :class:`Precomputed`).
PRECOMPUTED = Precomputed()


def index_entries(f: Facts, hx: str) -> list[tuple[str, str]]:
    """The time, identifier and place index entries of one event (keys under ``trace/``), in write order: what
    a capture without ``compact`` writes into state and what a node indexes for a compact one."""
    when = f"{f.time_ms:013d}"
    roles, places = index_roles(f)
    out = [(f"t/{when} {hx}", f.type)]
    out += [(f"i/{ident} {when} {hx}", role) for ident, role in roles.items()]
    out += [(f"l/{place} {when} {hx}", which) for place, which in places.items()]
    return out


def index_roles(f: Facts) -> tuple[dict[str, str], dict[str, str]]:
    """Each identifier of an event with the roles it plays (``"epc,child"``), and each place with what it is
    (``"readPoint,bizLocation"``), in the order first named: the identifier and place entries' values."""
    roles: dict[str, str] = {}
    for role, ident in f.ids:
        roles[ident] = f"{roles[ident]},{role}" if ident in roles else role
    places: dict[str, str] = {}
    for which, place in f.places:
        places[place] = f"{places[place]},{which}" if place in places else which
    return roles, places


def _key_digits(index_id: str) -> str:
    """The digits of a GS1 key where its company prefix begins (after an indicator or extension digit)."""
    parts = index_id.split("/")
    if len(parts) < 2 or not "0" <= parts[1][:1] <= "9":  # ASCII digits only: str.isdigit() moves with Unicode
        return ""
    ai, value = parts[0], parts[1]
    return value[1:] if ai in ("01", "00", "8003", "8006") else value


class Trace(Contract):
    name = "trace"

    # ---- rules ------------------------------------------------------------------------------------------
    def _policy(self, ctx: Context, org_type: str) -> RecordingPolicy:
        stored = ctx.load(RecordingPolicy, f"p/{org_type}")
        return stored if stored is not None else _DEFAULTS.get(org_type, _NONE)

    def _owner(self, ctx: Context, index_id: str, cache: dict[str, str]) -> str:
        """The organisation the consortium assigned this key's company prefix to ("" if none)."""
        digits = _key_digits(index_id)
        # the answer depends on the first 12 digits alone: a capture's items mostly share them (one product's
        # serials), so the walk over the prefixes below is done once per product, not once per item
        memo = "#" + digits[:12]
        found = cache.get(memo)
        if found is not None:
            return found
        found = ""
        for n in range(4, min(12, len(digits)) + 1):
            prefix = digits[:n]
            if prefix not in cache:
                cache[prefix] = str(ctx.get(f"cp/{prefix}") or "")
            if cache[prefix]:
                found = cache[prefix]
                break
        cache[memo] = found
        return found

    def _permit(
        self, ctx: Context, signer: Signer, policy: RecordingPolicy, f: Facts, owners_of: dict[str, str]
    ) -> None:
        org, org_type = signer.org, signer.org_type
        if "*" in policy.steps or (f.biz_step and f.biz_step in policy.steps):
            return
        if policy.own:
            # what the event is about: a transformation's inputs are consumed goods, whoever made them
            subject = [i for r, i in f.ids if r not in (INPUT, INPUT_QTY)]
            owners = {self._owner(ctx, i, owners_of) for i in subject}
            others = owners - {org, ""}
            if org in owners and not others:
                return
            if others:
                ctx.fail(
                    TraceCode.NOT_PERMITTED,
                    f"{org} may not record events about goods of {', '.join(sorted(others))}",
                )
        step = f.biz_step or "(none)"
        ctx.fail(
            TraceCode.NOT_PERMITTED,
            f"a {org_type} organisation may not record a {f.type} with bizStep {step}"
            + (" about goods whose company prefix is not assigned to it" if policy.own else ""),
        )

    # ---- capture ----------------------------------------------------------------------------------------
    @transaction
    def capture(self, ctx: Context, a: CaptureArgs) -> list[dict[str, str]]:
        """Anchor events; each result is ``{id, status}`` with status ``captured`` or ``duplicate``."""
        signer = ctx.require_party()  # a person of any organisation; what it may record is the policy's
        try:
            check_json(a.context, "the context")  # before anything recursive reads it: see the module notes
            context = _decoder.decode(a.context) if a.context else None
        except TooDeep as exc:
            ctx.fail(TraceCode.TOO_DEEP, str(exc))
        except msgspec.DecodeError as exc:
            ctx.fail(TraceCode.BAD_EVENT, f"context is not JSON: {exc}")
        hasher = Hasher(context, a.ignore)
        if a.masterdata:
            self._master_data(ctx, signer, a.masterdata)
        policy = self._policy(ctx, signer.org_type)
        owners_of: dict[str, str] = {}
        results: list[dict[str, str]] = []
        captured: set[str] = set()
        # This node may have done the per-event work already, off the commit thread (``precompute``): the same
        # pure function of these very arguments, so taking it changes nothing but the time.
        ahead = PRECOMPUTED.take(ctx.tx_id, a) if not ctx.caller else None
        # Which of the events known ahead are anchored already, in one read (a store read per event handed
        # the interpreter lock to the API threads and queued for it again, a fifth of the commit thread's time)
        asked = {f"e/{done[0][len('ni:///sha-256;') :][:64]}" for done in ahead or () if done is not None}
        anchored = ctx.present(sorted(asked)) if asked else set()
        for n, text in enumerate(a.events):
            if len(text.encode()) > limits.trace_event_bytes_max:
                ctx.fail(TraceCode.BAD_EVENT, f"event {n} is larger than trace_event_bytes_max")
            done = ahead[n] if ahead is not None else None
            if done is not None:
                hash_id, declared, f = done
            else:
                try:
                    hash_id, declared, f = event_outcome(hasher, text, f"event {n}")
                except TooDeep as exc:
                    ctx.fail(TraceCode.TOO_DEEP, str(exc))
                except (msgspec.DecodeError, BadEvent) as exc:
                    ctx.fail(TraceCode.BAD_EVENT, f"event {n}: {exc}")
                except (RecursionError, MemoryError):
                    # Never a business outcome: it depends on the caller's stack or the machine, not the event.
                    raise
                except Exception as exc:  # a malformed value deep inside (a list where a string belongs, ...)
                    ctx.fail(TraceCode.BAD_EVENT, f"event {n} is malformed: {type(exc).__name__}")
            hx = hash_id[len("ni:///sha-256;") : len("ni:///sha-256;") + 64]
            key = f"e/{hx}"
            if (key in anchored if key in asked else ctx.exists(key)) or hx in captured:
                results.append({"id": hash_id, "status": "duplicate"})
                continue
            self._permit(ctx, signer, policy, f, owners_of)
            result = {"id": hash_id, "status": "captured"}
            if declared and declared != hash_id:
                if len(declared) > 200 or not encoding.printable(declared):
                    ctx.fail(TraceCode.BAD_EVENT, f"event {n}: eventID is longer than 200 characters")
                # Producers copy eventIDs (GS1's own examples share some): the first event keeps the alias,
                # a later one is anchored all the same, known by its hash id, and the result says so.
                if ctx.get(f"d/{declared}") is None:
                    ctx.put(f"d/{declared}", hx)
                else:
                    result["eventID_taken"] = declared
            captured.add(hx)
            results.append(result)
            if a.compact:
                ctx.save(f"e/{hx}", EventRef(by=signer.member_id, height=ctx.height, n=n, tx=ctx.tx_id[:TX_REF_HEX]))
                if FACTS_KEEP:
                    _remember(text, f)
                continue
            record = EventRecord(
                id=hash_id,
                type=f.type,
                time_ms=f.time_ms,
                org=signer.org,
                by=signer.member_id,
                tx=ctx.tx_id,
                height=ctx.height,
                record_ms=ctx.time_ms,
                event=text,
                context=a.context,
                ignore=a.ignore,
            )
            ctx.save(f"e/{hx}", record)
            for key, value in index_entries(f, hx):
                ctx.put(key, value)
        ctx.emit("captured", {"org": signer.org, "ids": [r["id"] for r in results if r["status"] == "captured"]})
        return results

    def _master_data(self, ctx: Context, signer: Signer, text: str) -> None:
        """Record the vocabulary elements a capture document's header carries (``WD_``, ``HASATTR_`` and
        ``EQ_ATTR_`` queries read them): each owned by the organisation that first recorded it."""
        try:
            check_json(text, "the master data")
            elements = _decoder.decode(text)
        except TooDeep as exc:
            ctx.fail(TraceCode.TOO_DEEP, str(exc))
        except msgspec.DecodeError as exc:
            ctx.fail(TraceCode.BAD_EVENT, f"master data is not JSON: {exc}")
        if not isinstance(elements, list) or len(elements) > MASTERDATA_ELEMENTS_MAX:
            ctx.fail(TraceCode.BAD_EVENT, f"master data is a list of at most {MASTERDATA_ELEMENTS_MAX} elements")
        for n, element in enumerate(elements):
            ident = element.get("id") if isinstance(element, dict) else None
            children = element.get("children") if isinstance(element, dict) else None
            if not (isinstance(ident, str) and ident and isinstance(children, list)) or not all(
                isinstance(c, str) and len(c) <= 500 for c in children
            ):
                ctx.fail(TraceCode.BAD_EVENT, f"master data element {n} needs an id and a list of children")
            key = f"m/{index_form(ident)}"
            before = ctx.load(MasterRecord, key)
            if before is not None and before.org != signer.org:
                ctx.fail(TraceCode.NOT_PERMITTED, f"the master data of {ident} belongs to {before.org}")
            attributes = element.get("attributes")
            ctx.save(key, MasterRecord(id=ident, type=str(element.get("type") or ""), org=signer.org,
                                       attributes=_encode(attributes if isinstance(attributes, dict) else {}).decode(),
                                       children=children))  # fmt: skip

    # ---- governance -------------------------------------------------------------------------------------
    @transaction
    def set_policy(self, ctx: Context, a: PolicyArgs) -> None:
        """Who of an organisation type may record what (a governance vote)."""
        governance_quorum(ctx)
        if a.org_type not in ORG_TYPES:
            ctx.fail(Code.INVALID_ARGUMENT, f"unknown organisation type {a.org_type!r}")
        ctx.save(f"p/{a.org_type}", RecordingPolicy(own=a.own, steps=sorted(set(a.steps))))
        ctx.emit("policy", {"org_type": a.org_type, "own": a.own, "steps": sorted(set(a.steps))})

    @transaction
    def assign_prefix(self, ctx: Context, a: PrefixArgs) -> None:
        """A GS1 company prefix belongs to an organisation (a governance vote; one owner per prefix)."""
        config = governance_quorum(ctx)
        if a.org not in config.active_orgs:
            ctx.fail(Code.NOT_FOUND, f"{a.org} is not an active organisation")
        owner = ctx.get(f"cp/{a.prefix}")
        if owner is not None and owner != a.org:
            ctx.fail(Code.ALREADY_EXISTS, f"company prefix {a.prefix} belongs to {owner}")
        for n in range(4, len(a.prefix)):  # a prefix may not nest inside another organisation's
            other = ctx.get(f"cp/{a.prefix[:n]}")
            if other is not None and other != a.org:
                ctx.fail(Code.ALREADY_EXISTS, f"company prefix {a.prefix[:n]} of {other} covers {a.prefix}")
        ctx.put(f"cp/{a.prefix}", a.org)

    @transaction
    def revoke_prefix(self, ctx: Context, a: PrefixOnlyArgs) -> None:
        governance_quorum(ctx)
        ctx.must_get(f"cp/{a.prefix}", f"company prefix {a.prefix} is not assigned")
        ctx.delete(f"cp/{a.prefix}")

    # ---- reads ------------------------------------------------------------------------------------------
    @query
    def policy(self, ctx: Context, a: OrgTypeArgs) -> dict[str, Any]:
        return {"org_type": a.org_type, **self._policy(ctx, a.org_type).to_value()}

    @query
    def policies(self, ctx: Context, a: NoArgs) -> dict[str, RecordingPolicy]:
        return {t: self._policy(ctx, t) for t in ORG_TYPES}

    @query
    def prefixes(self, ctx: Context, a: NoArgs) -> dict[str, str]:
        return {k[3:]: str(v) for k, v in ctx.range("cp/")}

    def _record(self, ctx: Context, hx: str) -> EventRecord | EventRef | None:
        raw = ctx.get(f"e/{hx}")
        if not isinstance(raw, dict):
            return None
        if "n" in raw:
            return msgspec.convert(raw, EventRef)
        return msgspec.convert(raw, EventRecord)

    @query
    def event(self, ctx: Context, a: EventArgs) -> EventRecord | EventRef:
        """An anchored event's record by hash id (or declared eventID); for a compact capture the reference to
        its transaction (the node's query interface shows the event itself)."""
        record: EventRecord | EventRef | None = None
        if a.id.startswith("ni:///sha-256;") and _HEX.fullmatch(hx := a.id[len("ni:///sha-256;") :][:64]):
            record = self._record(ctx, hx)
            if isinstance(record, EventRecord) and record.id != a.id:  # another generator's id, declared
                record = None
            if isinstance(record, EventRef) and a.id != ref_id(hx):
                record = None
        if record is None:
            declared = ctx.get(f"d/{a.id}")
            record = self._record(ctx, declared) if isinstance(declared, str) and declared else None
        if record is None:
            ctx.fail(Code.NOT_FOUND, f"no event {a.id}")
        return record
