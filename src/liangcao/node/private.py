"""A node's private data: the private store, transient data, endorsement, dissemination and recovery.

Theory of operation
-------------------
Shared state holds only commitments (:mod:`liangcao.contracts.private`). This module keeps the values, on
peers whose organisation is a member of the record, and nowhere else:

* **Private store**: ``<store>.private.sqlite`` beside the node's store (SQLite, WAL, ``synchronous=FULL``):
  ``(contract, collection, key, hash) -> value, salt, height, tx, retain_blocks``. A row is written only after
  value and salt were checked against the committed hash. Retention: ``retain_blocks`` after its height the
  value and salt are overwritten with NULL (the hash and the row stay: the record existed).
* **Transient data**: the submitter hands value and salt to its node beside the transaction (``hand``, or
  ``endorse``, which also signs); the node holds them in memory (at most ``transient_max``, for
  ``transient_ms_max``) until the commitment commits, then moves them into the store. A node whose
  organisation is not among the members refuses to hold them, so it never has the cleartext.
* **Commit**: a listener on the node's committed blocks reads the ``private.committed`` events; a member peer
  stores what it holds and notes what it lacks. Members run the collection's ``check`` again when a value
  reaches them and raise an alarm (``alarms``) if it fails: an endorsement that should not have been given.
* **Dissemination and recovery** (consortium peers): NATS core request/reply on ``lc.<chain>.pvt.<org>``,
  never JetStream, so nothing is persisted on any server. A member that lacks a value (just committed, late,
  or its private store lost) asks the other member organisations' peers; the request is signed by its peer
  certificate and carries an ephemeral X25519 key; the answer is encrypted end to end (X25519, HKDF-SHA256,
  AES-256-GCM) and signed by the answering peer, so neither a NATS server of a third organisation nor anyone
  subscribed to the subject sees the cleartext. What arrives is checked against the committed hash before it
  is stored. Missing values are retried with a backoff, and a full scan of the commitments in state runs at
  start (:meth:`PrivateData.recover`).

A solo node needs none of the dissemination: the submitter's node is the only peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from liangcao import encoding
from liangcao.codes import Code
from liangcao.contracts import config as cfgmod
from liangcao.contracts import private as pv
from liangcao.crypto import identity, keys
from liangcao.errors import LiangcaoError
from liangcao.ledger import block as blk
from liangcao.node.node import Committed, Node

log = logging.getLogger("liangcao.private")

#: private values handed to a node and not yet committed, at most
transient_max = 10_000
#: how long a handed value waits for its commitment
transient_ms_max = 10 * 60_000
#: missing values chased at once, and how long a fetch waits for an answer
missing_max = 100_000
fetch_timeout_s = 2.0
fetch_retry_ms_max = 30_000
#: alarms kept (a member's check failing on a committed, endorsed value)
alarms_max = 1000
#: values asked for in one request; request and answer bytes at most (an answer stops adding values beyond
#: answer_plain_bytes_max, the rest are asked for again; NATS carries 1 MiB by default)
fetch_items_max = 256
request_bytes_max = 128 * 1024
answer_plain_bytes_max = 512 * 1024
answer_bytes_max = 1024 * 1024

DOMAIN_REQUEST = b"liangcao/pvt-request/v1\n"
DOMAIN_ANSWER = b"liangcao/pvt-answer/v1\n"


def private_path(store_path: Path) -> Path:
    """The private store beside a node's store: ``ledger.sqlite`` -> ``ledger.private.sqlite``."""
    return store_path.with_name(store_path.stem + ".private.sqlite")


def pvt_subject(chain_id: str, org: str) -> str:
    from liangcao.ordering.jetstream import token

    return f"lc.{token(chain_id)}.pvt.{token(org)}"


# ---- the private store -----------------------------------------------------------------------------------
_SCHEMA = """
CREATE TABLE IF NOT EXISTS pvt (
    contract TEXT NOT NULL, collection TEXT NOT NULL, key TEXT NOT NULL, hash TEXT NOT NULL,
    value BLOB, salt BLOB, height INTEGER NOT NULL, tx TEXT NOT NULL, retain_blocks INTEGER NOT NULL,
    PRIMARY KEY (contract, collection, key, hash)
);
CREATE INDEX IF NOT EXISTS pvt_purge ON pvt (retain_blocks, height) WHERE value IS NOT NULL;
"""


@dataclass(frozen=True, slots=True)
class Row:
    contract: str
    collection: str
    key: str
    hash: str
    value: Any  # None once purged
    salt: bytes | None
    height: int
    tx: str
    retain_blocks: int

    @property
    def purged(self) -> bool:
        return self.salt is None


class PrivateStore:
    """Value and salt of the private writes this peer's organisation is a member of (thread-safe)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            # purged values are overwritten on disk, not merely unlinked (see ``purge``)
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def put(self, record: dict[str, Any], contract: str, value: Any, salt: bytes) -> bool:
        """Store value and salt for a committed ``record``, if they open its hash (else False, nothing kept)."""
        return self.put_many([(contract, record, value, salt)])[0]

    def put_many(self, items: list[tuple[str, dict[str, Any], Any, bytes]]) -> list[bool]:
        """:meth:`put` for many ``(contract, record, value, salt)`` in one durable transaction (one sync)."""
        ok = [pv.matches(record["hash"], salt, value) for _, record, value, salt in items]
        rows = [
            (contract, r["collection"], r["key"], r["hash"], encoding.canonical(value), salt, r["height"], r["tx"],
             r["retain_blocks"])
            for (contract, r, value, salt), good in zip(items, ok, strict=True) if good
        ]  # fmt: skip
        if rows:
            with self._lock:
                # a row already here is never overwritten: a purged value stays purged
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany("INSERT OR IGNORE INTO pvt VALUES (?,?,?,?,?,?,?,?,?)", rows)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        return ok

    def get(self, contract: str, collection: str, key: str, hash_hex: str) -> Row | None:
        with self._lock:
            row = self._db.execute(
                "SELECT contract, collection, key, hash, value, salt, height, tx, retain_blocks FROM pvt "
                "WHERE contract=? AND collection=? AND key=? AND hash=?",
                (contract, collection, key, hash_hex),
            ).fetchone()
        if row is None:
            return None
        value = None if row[4] is None else msgspec.json.decode(row[4])
        return Row(row[0], row[1], row[2], row[3], value, row[5], row[6], row[7], row[8])

    def holds(self, contract: str, record: dict[str, Any]) -> bool:
        """Whether the row of ``record`` is here (with its value, or purged as its retention says)."""
        return self.get(contract, record["collection"], record["key"], record["hash"]) is not None

    def rows(self) -> list[Row]:
        """Every row (for audit; a private store holds what one organisation is party to)."""
        with self._lock:
            keys_ = self._db.execute("SELECT contract, collection, key, hash FROM pvt ORDER BY 1, 2, 3, 4").fetchall()
        return [r for k in keys_ if (r := self.get(*k)) is not None]

    def purge(self, head: int) -> int:
        """Drop value and salt of rows whose retention ended at ``head``; the hash stays. How many."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE pvt SET value=NULL, salt=NULL WHERE value IS NOT NULL AND retain_blocks > 0 "
                "AND height + retain_blocks <= ?",
                (head,),
            )
            if cur.rowcount:  # the old pages also leave the write-ahead log
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return cur.rowcount

    def count(self) -> tuple[int, int]:
        """(rows, rows with their value)."""
        with self._lock:
            row = self._db.execute("SELECT COUNT(*), COUNT(value) FROM pvt").fetchone()
        return int(row[0]), int(row[1])


# ---- end-to-end encryption of an answer ------------------------------------------------------------------
def _raw_pub(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _aead_key(shared: bytes, context: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=None, info=b"liangcao/pvt/v1" + context).derive(shared)


def seal_for(epk: bytes, plaintext: bytes, context: bytes) -> dict[str, str]:
    eph = X25519PrivateKey.generate()
    key = _aead_key(eph.exchange(X25519PublicKey.from_public_bytes(epk)), context)
    nonce = os.urandom(12)
    return {
        "epk": keys.b64(_raw_pub(eph)),
        "nonce": keys.b64(nonce),
        "ct": keys.b64(AESGCM(key).encrypt(nonce, plaintext, context)),
    }


def open_sealed(mine: X25519PrivateKey, box: dict[str, Any], context: bytes) -> bytes:
    key = _aead_key(mine.exchange(X25519PublicKey.from_public_bytes(keys.unb64(box["epk"]))), context)
    return AESGCM(key).decrypt(keys.unb64(box["nonce"]), keys.unb64(box["ct"]), context)


# ---- the service -----------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Held:
    contract: str
    collection: str
    key: str
    value: Any
    salt: bytes
    until_ms: int


class PrivateData:
    """A node's private data (see the module docstring). Made once per node by :func:`private_of`."""

    def __init__(self, node: Node, path: Path | None = None) -> None:
        self.node = node
        self.chain_id = node.chain_id
        self.org = identity.parse_certificate(node.peer.cert).org
        self.store = PrivateStore(path or private_path(node.store_path))
        self._transient: OrderedDict[str, _Held] = OrderedDict()
        self._lock = threading.Lock()
        #: commitments this member lacks: hash -> (contract, record, next try ms, wait ms)
        self._missing: dict[str, tuple[str, dict[str, Any], int, int]] = {}
        self.alarms: list[dict[str, Any]] = []
        self.received = 0  # values received from other peers and stored
        self.refused = 0  # answers or hand-overs that did not open their commitment
        self._certs = identity.CertCache()
        self._stop = threading.Event()
        self._commit_lock = threading.Lock()
        self._closed = False
        self._wake = threading.Event()
        self._sub: Any = None
        self._thread: threading.Thread | None = None
        node.listeners.append(self._on_commit)
        link = node.link
        # a JetStream link (its NATS connection and loop); None for a solo node or the simulator's log
        self._nats: Any = link if link is not None and getattr(link, "nc", None) is not None else None
        if self._nats is not None:
            self._subscribe()
            self._thread = threading.Thread(target=self._fetch_loop, name="liangcao-private", daemon=True)
            self._thread.start()
        self.recover()

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.node.listeners.remove(self._on_commit)
        with self._commit_lock:  # a block being handled by the commit thread finishes first
            self._closed = True
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._sub is not None and self._nats is not None:
            with contextlib.suppress(Exception):
                self._nats._call(self._sub.unsubscribe(), 5)
        self.store.close()

    # ---- collections ------------------------------------------------------------------------------------
    def collection(self, contract: str, name: str) -> pv.Collection:
        c = self.node.runtime.registry.get(contract)
        found = pv.collections_of(c).get(name) if c is not None else None
        if found is None:
            raise LiangcaoError(pv.PrivacyCode.UNKNOWN_COLLECTION, f"{contract} declares no collection {name!r}")
        return found

    def commitment(self, contract: str, collection: str, key: str) -> dict[str, Any] | None:
        raw = self.node.reader().get(pv.state_key(contract, collection, key))
        return None if raw is None else dict(msgspec.json.decode(raw))

    # ---- hand-over (the submitter's data, beside its transaction) ----------------------------------------
    def hand(
        self, contract: str, collection: str, key: str, value: Any, salt: bytes, members: list[str]
    ) -> dict[str, Any]:
        """Hold ``value`` (with ``salt``) until its commitment commits. Refused unless this node's organisation
        is a member (``members``: the record's organisations as the transaction will name them; a fixed
        collection's own members). Returns the hash."""
        coll = self.collection(contract, collection)
        named = set(coll.members or members)
        if self.org not in named and not (coll.regulator_reads and self._is_regulator()):
            raise LiangcaoError(
                pv.PrivacyCode.NOT_MEMBER,
                f"organisation {self.org} is not a member of {contract}/{collection}/{key}: this node holds no value of it",
            )
        h = pv.commitment_hash(salt, value)
        committed = self.commitment(contract, collection, key)
        if committed is not None and self.org not in committed["members"] and committed["hash"] == h:
            # the members the caller named are not the committed record's: the record decides
            raise LiangcaoError(pv.PrivacyCode.NOT_MEMBER, f"organisation {self.org} is not a member of the record")
        if committed is not None and committed["hash"] == h:  # handed after the commit: store it now
            self._store(contract, committed, value, salt)
            return {"hash": h, "stored": True}
        if committed is not None and self.store.holds(contract, committed):
            raise LiangcaoError(
                pv.PrivacyCode.HASH_MISMATCH,
                f"{contract}/{collection}/{key} is committed with another hash: this value or salt is not it",
            )
        with self._lock:
            if len(self._transient) >= transient_max:
                self._expire()
                if len(self._transient) >= transient_max:
                    raise LiangcaoError(pv.PrivacyCode.TRANSIENT_FULL, f"transient_max={transient_max} values wait")
            self._transient[h] = _Held(contract, collection, key, value, salt, _now_ms() + transient_ms_max)
        return {"hash": h, "stored": False}

    def _is_regulator(self) -> bool:
        org = cfgmod.load(self.node.reader(), self._certs).orgs.get(self.org)
        return org is not None and org.type == "regulator"

    def _expire(self) -> None:
        now = _now_ms()
        for h in [h for h, held in self._transient.items() if held.until_ms < now]:
            del self._transient[h]

    # ---- endorsement -----------------------------------------------------------------------------------
    def endorse(
        self, contract: str, method: str, args: dict[str, Any], value: Any, salt: bytes, members: list[str]
    ) -> dict[str, Any]:
        """Run the collection's check on the private value as a member and sign the transaction's public
        arguments with this node's peer key; the value is held as transient data for the commit."""
        _, m = self.node.runtime.registry.method(contract, method, "transaction")
        try:
            typed = msgspec.convert(args, m.args_type, strict=True)
        except msgspec.ValidationError as exc:
            raise LiangcaoError(Code.INVALID_ARGUMENT, f"{contract}.{method}: {exc}") from exc
        ref = getattr(typed, "private", None)
        if not isinstance(ref, pv.PrivateRef):
            raise LiangcaoError(pv.PrivacyCode.BAD_PRIVATE_DATA, f"{contract}.{method} writes no private data")
        coll = self.collection(contract, ref.collection)
        public = msgspec.to_builtins(typed)
        if not pv.matches(ref.hash, salt, value):
            raise LiangcaoError(pv.PrivacyCode.HASH_MISMATCH, "value and salt do not hash to args.private.hash")
        if coll.check is not None:
            why = coll.check(value, public)
            if why:
                raise LiangcaoError(pv.PrivacyCode.CHECK_FAILED, f"{contract}/{ref.collection}: {why}")
        self.hand(contract, ref.collection, ref.key, value, salt, members)
        digest = pv.endorsement_digest(self.chain_id, contract, method, public)
        return pv.endorse(self.node.peer.key, self.node.peer.cert, digest)

    # ---- commit ------------------------------------------------------------------------------------------
    def _on_commit(self, info: Committed) -> None:  # the commit thread
        with self._commit_lock:
            if not self._closed:
                self._commit(info)

    def _commit(self, info: Committed) -> None:
        held: list[tuple[str, dict[str, Any], Any, bytes]] = []
        for code, events in zip(info.codes, info.events, strict=True):
            if code != Code.OK:
                continue
            for ev in events:
                if ev.get("name") == pv.EVENT and isinstance(ev.get("data"), dict):
                    item = self._committed(str(ev["contract"]), ev["data"], info.header.height)
                    if item is not None:
                        held.append(item)
        if held:  # the block's values in one transaction of the private store
            self._store_many(held)
        if self.store.purge(info.header.height):
            log.info("private values purged at height %s", info.header.height)

    def _committed(
        self, contract: str, record: dict[str, Any], head: int
    ) -> tuple[str, dict[str, Any], Any, bytes] | None:
        """What this peer stores of a committed record: the value it holds, or None (and noted as missing)."""
        if self.org not in record.get("members", ()):
            with self._lock:
                self._transient.pop(str(record.get("hash")), None)  # never kept by a non-member
            return None
        with self._lock:
            held = self._transient.pop(record["hash"], None)
        if held is not None and (held.contract, held.collection, held.key) == (
            contract, record["collection"], record["key"]
        ):  # fmt: skip
            return contract, record, held.value, held.salt
        if not self._expired(record, head) and not self.store.holds(contract, record):
            self._want(contract, record)
        return None

    @staticmethod
    def _expired(record: dict[str, Any], head: int) -> bool:
        retain = int(record["retain_blocks"])
        return retain > 0 and int(record["height"]) + retain <= head

    def _store(self, contract: str, record: dict[str, Any], value: Any, salt: bytes) -> bool:
        return self._store_many([(contract, record, value, salt)])[0]

    def _store_many(self, items: list[tuple[str, dict[str, Any], Any, bytes]]) -> list[bool]:
        """Store values that open their committed hashes (the others are refused and counted); re-run checks."""
        ok = self.store.put_many(items)
        self.refused += ok.count(False)
        with self._lock:
            for (_, record, _, _), good in zip(items, ok, strict=True):
                if good:
                    self._missing.pop(record["hash"], None)
        for (contract, record, value, _), good in zip(items, ok, strict=True):
            coll = pv.collections_of(self.node.runtime.registry.get(contract)).get(record["collection"])
            if good and coll is not None and coll.check is not None:
                self._recheck(contract, record, coll, value)
        return ok

    def _recheck(self, contract: str, record: dict[str, Any], coll: pv.Collection, value: Any) -> None:
        """A member re-runs the check on what was committed: failing means an endorser signed a wrong value."""
        try:
            tx = self._tx(record["tx"])
            why = coll.check(value, tx.args) if coll.check is not None and tx is not None else ""
        except Exception as exc:  # an alarm, never a crash of the commit thread
            why = f"check raised {type(exc).__name__}"
        if why:
            alarm = {"contract": contract, "collection": record["collection"], "key": record["key"],
                     "hash": record["hash"], "tx": record["tx"], "why": why}  # fmt: skip
            log.error("PRIVACY ALARM: committed private value fails its check: %s", alarm)
            with self._lock:
                if len(self.alarms) < alarms_max:
                    self.alarms.append(alarm)

    def _tx(self, tx_id: str) -> Any:
        from liangcao.ledger import tx as txm

        store = self.node.reader()
        pos = store.tx_position(tx_id)
        if pos is None:
            return None
        return txm.parse(store.block_txs(pos[0])[pos[1]])

    def _want(self, contract: str, record: dict[str, Any]) -> None:
        with self._lock:
            if len(self._missing) < missing_max:
                self._missing.setdefault(record["hash"], (contract, record, 0, 200))
        self._wake.set()

    def recover(self) -> int:
        """Scan every commitment in state; note those this member lacks (a lost store, a late peer). How many."""
        head = self.node.head.height
        store = self.node.reader()
        n = 0
        for name in self.node.runtime.registry.names():
            if not pv.collections_of(self.node.runtime.registry.get(name)):
                continue
            for _, raw in store.range(f"{name}/{pv.PVT}/"):
                record = dict(msgspec.json.decode(raw))
                if self.org not in record["members"] or self._expired(record, head):
                    continue
                if self.store.holds(name, record):
                    continue
                with self._lock:
                    held = self._transient.pop(record["hash"], None)
                if held is not None and self._store(name, record, held.value, held.salt):
                    continue
                self._want(name, record)
                n += 1
        return n

    def audit(self) -> list[str]:
        """Check the private store against the shared state: every value opens its hash, and every row is a
        commitment in state naming this organisation. What is wrong (empty: clean)."""
        findings: list[str] = []
        for row in self.store.rows():
            where = f"{row.contract}/{row.collection}/{row.key}"
            record = self.commitment(row.contract, row.collection, row.key)
            if record is None or self.org not in record["members"]:
                findings.append(f"{where}: no commitment in state naming {self.org}")
            elif record["hash"] != row.hash and record["tx"] == row.tx:
                findings.append(f"{where}: the committed hash is another")
            if row.salt is not None and not pv.matches(row.hash, row.salt, row.value):
                findings.append(f"{where}: value and salt do not open hash {row.hash[:16]}")
        return findings

    def missing(self) -> int:
        with self._lock:
            return len(self._missing)

    # ---- reads -------------------------------------------------------------------------------------------
    def read(self, member: str, contract: str, collection: str, key: str) -> dict[str, Any]:
        """What ``member`` (``org/name``) may see: members value and salt, everyone the commitment."""
        record = self.commitment(contract, collection, key)
        if record is None:
            raise LiangcaoError(pv.PrivacyCode.NO_COMMITMENT, f"no private record {contract}/{collection}/{key}")
        org = member.split("/", 1)[0]
        out: dict[str, Any] = {"contract": contract, **record, "exists": True, "member": org in record["members"]}
        if not out["member"]:
            out["value"] = None  # a non-member sees the hash, the members and that a value exists
            return out
        row = self.store.get(contract, collection, key, record["hash"])
        if row is None or row.purged:
            out.update(value=None, available=False, purged=row is not None)
            return out
        out.update(value=row.value, salt=row.salt.hex() if row.salt else None, available=True)
        return out

    def disclosure(self, member: str, contract: str, collection: str, key: str) -> dict[str, Any]:
        """A member's proof of one private value for an outsider (``liangcao verify-proof`` checks it)."""
        got = self.read(member, contract, collection, key)
        if not got["member"]:
            raise LiangcaoError(pv.PrivacyCode.NOT_MEMBER, f"{member} is not a member of {contract}/{collection}/{key}")
        if not got.get("available"):
            raise LiangcaoError(
                pv.PrivacyCode.NOT_AVAILABLE, "this node does not hold the value (purged or not yet here)"
            )
        store = self.node.reader()
        pos = store.tx_position(got["tx"])
        header = store.header(pos[0]) if pos is not None else None
        if pos is None or header is None:
            raise LiangcaoError(Code.NOT_FOUND, f"transaction {got['tx']} is not in this node's blocks")
        height, idx = pos
        return {
            "kind": "private_disclosure",
            "contract": contract,
            "collection": collection,
            "key": key,
            "value": got["value"],
            "salt": got["salt"],
            "hash": got["hash"],
            "tx_proof": blk.proof_dict(store.block_txs(height), idx, header, "tx"),
            "receipt_proof": blk.proof_dict(store.receipts(height), idx, header, "receipt"),
        }

    def status(self) -> dict[str, Any]:
        rows, values = self.store.count()
        with self._lock:
            transient, missing, alarms = len(self._transient), len(self._missing), len(self.alarms)
        return {"org": self.org, "rows": rows, "values": values, "transient": transient, "missing": missing,
                "alarms": alarms, "received": self.received, "refused": self.refused}  # fmt: skip

    # ---- peer to peer: serving ---------------------------------------------------------------------------
    def _subscribe(self) -> None:
        link = self._nats
        assert link is not None

        async def sub() -> Any:
            return await link.nc.subscribe(pvt_subject(self.chain_id, self.org), queue="pvt", cb=self._serve)

        self._sub = link._call(sub(), 10)

    async def _serve(self, msg: Any) -> None:  # the link's loop
        try:
            answer = await asyncio.get_running_loop().run_in_executor(None, self._answer, bytes(msg.data))
        except Exception:
            log.exception("private data request failed")
            answer = encoding.canonical({"error": "internal"})
        if msg.reply:
            with contextlib.suppress(Exception):
                await msg.respond(answer)

    def _peer_org(self, cert_b64: str, time_ms: int | None = None) -> tuple[str | None, Any]:
        try:
            info = self._certs.parse(keys.unb64(cert_b64))
        except (identity.CertificateError, ValueError):
            return None, None
        config = cfgmod.load(self.node.reader(), self._certs)
        return config.member_org(info, self._certs, role="peer", time_ms=time_ms), info

    def _answer(self, data: bytes) -> bytes:
        """Answer a signed request for private values, sealed for the requester (an executor thread). Each item
        is answered only if the requester's organisation is a member of its committed record."""

        def refuse(why: str) -> bytes:
            return encoding.canonical({"error": why})

        if len(data) > request_bytes_max:
            return refuse("too large")
        try:
            req: Any = encoding.decode(data, request_bytes_max)
            body, sig = req["body"], keys.unb64(req["sig"])
            items, epk = body["items"], keys.unb64(body["epk"])
            if not isinstance(items, list) or len(items) > fetch_items_max:
                return refuse(f"1 to fetch_items_max={fetch_items_max} items")
        except (LiangcaoError, KeyError, TypeError, ValueError):
            return refuse("malformed request")
        org, info = self._peer_org(str(body.get("cert", "")), _now_ms())
        digest = hashlib.sha256(encoding.canonical(body)).digest()
        if org is None or not keys.verify(info.public_key, DOMAIN_REQUEST, digest, sig):
            return refuse("not signed by a current peer of an active organisation")
        if body.get("chain_id") != self.chain_id or abs(_now_ms() - int(body.get("ts", 0))) > 5 * 60_000:
            return refuse("another chain, or a stale request")
        out: list[Any] = []
        size = 0
        for item in items:
            got = self._item(org, item) if size <= answer_plain_bytes_max else None
            if got is not None:
                size += len(encoding.canonical(got))
            out.append(got)
        box = seal_for(epk, encoding.canonical({"items": out}), digest)
        signed = hashlib.sha256(digest + encoding.canonical(box)).digest()
        return encoding.canonical({
            "box": box, "cert": keys.b64(self.node.peer.cert),
            "sig": keys.b64(keys.sign(self.node.peer.key, DOMAIN_ANSWER, signed)),
        })  # fmt: skip

    def _item(self, org: str, item: Any) -> dict[str, Any] | None:
        """One asked-for value, if ``org`` is a member of its committed record and this store holds it."""
        try:
            contract, collection, key, h = (str(item[k]) for k in ("contract", "collection", "key", "hash"))
        except (KeyError, TypeError):
            return None
        record = self.commitment(contract, collection, key)
        if record is None or record["hash"] != h:
            return None
        if org not in record["members"]:
            log.warning("private data asked for by %s, not a member of %s/%s/%s", org, contract, collection, key)
            return None
        row = self.store.get(contract, collection, key, h)
        if row is None or row.purged or row.salt is None:
            return None
        return {"value": row.value, "salt": row.salt.hex()}

    # ---- peer to peer: asking ----------------------------------------------------------------------------
    def _fetch_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.2)
            self._wake.clear()
            now = _now_ms()
            with self._lock:
                due = [(e[0], e[1]) for e in self._missing.values() if e[2] <= now][: 4 * fetch_items_max]
            if not due:
                continue
            try:
                self.fetch_many(due)
            except Exception:
                log.exception("fetching private data failed")
            with self._lock:  # what is still missing is asked for again later, less often
                for _, record in due:
                    e = self._missing.get(record["hash"])
                    if e is not None:
                        self._missing[record["hash"]] = (
                            e[0],
                            e[1],
                            _now_ms() + e[3],
                            min(2 * e[3], fetch_retry_ms_max),
                        )

    def fetch(self, contract: str, record: dict[str, Any]) -> bool:
        """Ask the other member organisations' peers for one value; whether it arrived and opened its hash."""
        return self.fetch_many([(contract, record)]) == 1

    def fetch_many(self, wants: list[tuple[str, dict[str, Any]]]) -> int:
        """Ask the other member organisations' peers for these values (one request per organisation and
        fetch_items_max items); store what opens its hash. How many were stored."""
        if self._nats is None:
            return 0
        left = {record["hash"]: (contract, record) for contract, record in wants}
        stored = 0
        for org in sorted({o for _, r in wants for o in r["members"] if o != self.org}):
            ask = [(c, r) for c, r in left.values() if org in r["members"]]
            for i in range(0, len(ask), fetch_items_max):
                got = self._ask(org, ask[i : i + fetch_items_max])
                ok = self._store_many(got) if got else []
                for (_, record, _, _), good in zip(got, ok, strict=True):
                    if good:
                        left.pop(record["hash"], None)
                        stored += 1
                self.received += ok.count(True)
        return stored

    def _ask(self, org: str, items: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any], Any, bytes]]:
        """One signed request to ``org``'s peers; the (contract, record, value, salt) its sealed answer held."""
        link = self._nats
        mine = X25519PrivateKey.generate()
        body = {"chain_id": self.chain_id, "epk": keys.b64(_raw_pub(mine)), "cert": keys.b64(self.node.peer.cert),
                "ts": _now_ms(), "items": [{"contract": c, "collection": r["collection"], "key": r["key"],
                                            "hash": r["hash"]} for c, r in items]}  # fmt: skip
        digest = hashlib.sha256(encoding.canonical(body)).digest()
        sig = keys.b64(keys.sign(self.node.peer.key, DOMAIN_REQUEST, digest))
        req = encoding.canonical({"body": body, "sig": sig})

        async def request() -> bytes:
            msg = await link.nc.request(pvt_subject(self.chain_id, org), req, timeout=fetch_timeout_s)
            return bytes(msg.data)

        try:
            raw = link._call(request(), fetch_timeout_s + 2)
            ans: Any = encoding.decode(raw, answer_bytes_max)
            if "error" in ans:
                log.debug("private data from %s: %s", org, ans["error"])
                return []
            who, info = self._peer_org(ans["cert"])
            signed = hashlib.sha256(digest + encoding.canonical(ans["box"])).digest()
            if who != org or not keys.verify(info.public_key, DOMAIN_ANSWER, signed, keys.unb64(ans["sig"])):
                return []
            plain: Any = encoding.decode(open_sealed(mine, ans["box"], digest), answer_bytes_max)
            out = []
            for (contract, record), got in zip(items, plain["items"], strict=True):
                if isinstance(got, dict):
                    out.append((contract, record, got["value"], bytes.fromhex(str(got["salt"]))))
            return out
        except Exception as exc:  # no responder, a timeout, a malformed answer: the next member, or a retry
            log.debug("private data from %s: %r", org, exc)
            return []


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


_SERVICES: weakref.WeakKeyDictionary[Node, PrivateData] = weakref.WeakKeyDictionary()
_SERVICES_LOCK = threading.Lock()


def private_of(node: Node) -> PrivateData:
    """The node's private data service, made (and attached to its commits) on first use."""
    with _SERVICES_LOCK:
        found = _SERVICES.get(node)
        if found is None:
            found = PrivateData(node)
            _SERVICES[node] = found
        return found


def close_private(node: Node) -> None:
    """Stop the node's private data service, if it has one (before the node stops)."""
    with _SERVICES_LOCK:
        found = _SERVICES.pop(node, None)
    if found is not None:
        found.close()
