"""Snapshot files: the whole state at one log sequence number, every byte covered by a checksum.

A snapshot ``snapshot-<seq, 16 digits>.snap`` is one header line and a JSON body (JSON, not msgpack: u128 values do not fit msgpack integers)::

    LPSNAP 2 <seq, 16 digits> <body length> <crc32, 8 hex digits>\\n<body>

The CRC-32 covers the header up to and including the space before it, and the whole body. The header has
one canonical spelling, which the reader rebuilds from the values it parsed and compares byte for byte,
so a change to any byte of the file (a digit of the sequence number, a space, the checksum itself) is
found. The sequence number in the file name must equal the header's. Anything that does not agree makes
``read`` raise ``SnapshotCorrupt``: after a snapshot is installed the log segments it covers are deleted,
so a snapshot that cannot be trusted cannot be replaced by guessing, and the engine stops instead.

A snapshot is written to ``snapshot-<seq>-<writer>.tmp``, fsynced, and renamed; leftover ``.tmp`` files (a crash
while writing) are deleted on open. Snapshots of format 1 (``snapshot-<seq>.json``, a JSON body whose
checksum did not cover the header) are still read, checked as far as they can be (name against header,
checksum of the body), and converted: the closed flag moves to TigerBeetle's bit, failures that are no
longer remembered are dropped.
"""

from __future__ import annotations

import os
import re
import zlib
from pathlib import Path

import msgspec

from liangcao.payments.errors import SnapshotCorrupt
from liangcao.payments.machine import Machine, Snapshot
from liangcao.payments.types import TRANSIENT_TRANSFER_FAILURES, Account, AccountBalance, Transfer

FORMAT = 2
SUFFIX = ".snap"
_HEADER = re.compile(rb"LPSNAP (\d+) (\d{16}) (0|[1-9]\d{0,15}) ([0-9a-f]{8})\n")
_HEADER_BYTES_MAX = 64
_decode_v2 = msgspec.json.Decoder(Snapshot)


def name_for(seq: int) -> str:
    return f"snapshot-{seq:016d}{SUFFIX}"


def tmp_name_for(seq: int, tag: str) -> str:
    # The writer's tag (its engine's pid) in the name: two writers never share a temporary file.
    return f"snapshot-{seq:016d}-{tag}.tmp"


def _header_prefix(seq: int, length: int) -> bytes:
    return b"LPSNAP %d %016d %d " % (FORMAT, seq, length)


def encode(seq: int, snapshot: Snapshot) -> bytes:
    """The file's bytes: header and body."""
    body = msgspec.json.encode(snapshot)
    prefix = _header_prefix(seq, len(body))
    crc = zlib.crc32(body, zlib.crc32(prefix))
    return prefix + b"%08x\n" % crc + body


def write(directory: Path, seq: int, snapshot: Snapshot, *, tag: str) -> Path:
    """Write and fsync ``snapshot-<seq>-<tag>.tmp``; the caller renames it into place once the log allows."""
    tmp = directory / tmp_name_for(seq, tag)
    data = encode(seq, snapshot)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def install(directory: Path, seq: int, *, tag: str) -> Path:
    """Rename the written ``.tmp`` into place and make the rename durable."""
    final = directory / name_for(seq)
    os.replace(directory / tmp_name_for(seq, tag), final)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return final


def file_seq(path: Path) -> int:
    try:
        return int(path.name.split("-", 1)[1].split(".", 1)[0])
    except (IndexError, ValueError):
        raise SnapshotCorrupt(f"{path}: not a snapshot file name (snapshot-<16 digits>{SUFFIX})") from None


def snapshots(directory: Path) -> list[Path]:
    """Snapshot files of either format, oldest first."""
    found = list(directory.glob(f"snapshot-*{SUFFIX}")) + list(directory.glob("snapshot-*.json"))
    return sorted(found, key=file_seq)


def read(path: Path) -> tuple[int, Machine]:
    """The sequence number a snapshot covers and the state it holds; ``SnapshotCorrupt`` if any byte,
    the header or the file name disagree."""
    if path.suffix == ".json":
        return _read_v1(path)
    data = path.read_bytes()
    end = data.find(b"\n", 0, _HEADER_BYTES_MAX)
    m = _HEADER.fullmatch(data[: end + 1]) if end >= 0 else None
    if m is None:
        raise _corrupt(path, "its header is not 'LPSNAP <format> <seq> <length> <crc32>'")
    fmt, seq, length, crc = int(m[1]), int(m[2]), int(m[3]), int(m[4], 16)
    if fmt != FORMAT:
        raise _corrupt(path, f"its header names format {fmt}, this version reads {FORMAT}")
    body = data[end + 1 :]
    prefix = _header_prefix(seq, length)
    if prefix + b"%08x\n" % crc != data[: end + 1]:
        raise _corrupt(path, "its header is not in the one spelling the writer uses")
    if zlib.crc32(body, zlib.crc32(prefix)) != crc:
        raise _corrupt(path, "its checksum does not match its header and body")
    if length != len(body):
        raise _corrupt(path, f"its header says {length} body bytes, the file holds {len(body)}")
    if seq != file_seq(path):
        raise _corrupt(path, f"its header covers seq {seq} but its name says {file_seq(path)}")
    try:
        state = _decode_v2.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise _corrupt(path, f"its body does not decode ({exc})") from None
    machine = Machine.from_snapshot(state)
    return seq, machine


def _corrupt(path: Path, what: str) -> SnapshotCorrupt:
    return SnapshotCorrupt(
        f"{path}: damaged snapshot: {what}. The log segments it covers were deleted when it was installed, so "
        "the engine will not open on a guess: restore the file from a backup or replica"
    )


# ------------------------------------------------------------------------------------------- format 1


class _SnapshotV1(msgspec.Struct, array_like=True, gc=False):
    last_timestamp: int
    accounts: list[Account]
    transfers: list[Transfer]
    requests: list[Transfer]
    status: list[tuple[int, int]]
    expiries: list[tuple[int, int, int]]
    failed_transfers: list[tuple[int, Transfer]]
    failed_accounts: list[tuple[int, Account]]
    history: list[tuple[int, list[AccountBalance]]]


_V1_CLOSED = 1 << 4
_V2_CLOSED = 1 << 5


def _read_v1(path: Path) -> tuple[int, Machine]:
    data = path.read_bytes()
    head, _, body = data.partition(b"\n")
    try:
        seq, crc = (int(x) for x in head.split())
    except ValueError:
        raise _corrupt(path, "its format-1 header is not '<seq> <crc32>'") from None
    if zlib.crc32(body) != crc:
        raise _corrupt(path, "its checksum does not match its body")
    if seq != file_seq(path):
        raise _corrupt(path, f"its header covers seq {seq} but its name says {file_seq(path)}")
    try:
        old = msgspec.json.decode(body, type=_SnapshotV1)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise _corrupt(path, f"its body does not decode ({exc})") from None
    accounts = sorted(old.accounts, key=lambda a: a.timestamp)
    for a in accounts:
        if a.flags & _V1_CLOSED:
            a.flags = (a.flags & ~_V1_CLOSED) | _V2_CLOSED
    state = Snapshot(
        last_timestamp=old.last_timestamp,
        accounts=accounts,
        transfers=sorted(old.transfers, key=lambda t: t.timestamp),
        status=old.status,
        expiries=old.expiries,
        failed=sorted(t.id for code, t in old.failed_transfers if code in TRANSIENT_TRANSFER_FAILURES),
        history=old.history,
    )
    return seq, Machine.from_snapshot(state)
