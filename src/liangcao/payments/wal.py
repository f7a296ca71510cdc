"""The payments write-ahead log: checksummed records in segment files, group commit, torn-tail recovery.

A record is one request batch exactly as it was applied (operation, engine timestamp, the events as JSON),
so replaying the log through the state machine rebuilds the state byte for byte. Layout, little-endian::

    magic u32 | crc32 u32 | length u32 | op u8 | format u8 | 2 zero bytes | seq u64 | timestamp u64 | payload

``crc32`` (zlib) covers everything after itself. ``format`` is ``FORMAT`` (2: TigerBeetle-parity rules);
records of format 1 (written before, with a zero there) are refused on replay: the rules they were
applied under are gone. Segments are ``wal-<first seq>.log``; after a snapshot at seq S is installed, the
segments holding only records up to S go.

On open, a damaged record at the very end of the newest segment is a write torn by a crash before its
fsync returned (so never acknowledged): it is cut off, after a copy of the cut bytes is kept beside the
segment (``<segment>.torn-at-<offset>``) and a warning names the place and the reason. Damage followed by
any valid record is not a torn tail, and the log refuses to open rather than drop acknowledged batches.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

from liangcao import limits
from liangcao.payments.errors import FormatTooOld, WalCorrupt

MAGIC = 0x4C57504C  # "LPWL": liangcao payments write-ahead log
FORMAT = 2
_PREFIX = struct.Struct("<II")
_REST = struct.Struct("<IBBxxQQ")
HEADER_BYTES = _PREFIX.size + _REST.size
_MAGIC_BYTES = struct.pack("<I", MAGIC)

OP_CREATE_ACCOUNTS = 1
OP_CREATE_TRANSFERS = 2
OP_PULSE = 3
OPS = (OP_CREATE_ACCOUNTS, OP_CREATE_TRANSFERS, OP_PULSE)

log = logging.getLogger("liangcao.payments")

__all__ = ["FORMAT", "HEADER_BYTES", "Record", "Wal", "WalCorrupt", "encode_record"]


def encode_record(seq: int, op: int, timestamp: int, payload: bytes) -> bytes:
    rest = _REST.pack(len(payload), op, FORMAT, seq, timestamp)
    crc = zlib.crc32(payload, zlib.crc32(rest))
    return _PREFIX.pack(MAGIC, crc) + rest + payload


class Record:
    __slots__ = ("end", "format", "offset", "op", "payload", "seq", "timestamp")

    def __init__(self, seq: int, op: int, fmt: int, timestamp: int, payload: bytes, offset: int, end: int) -> None:
        self.seq = seq
        self.op = op
        self.format = fmt
        self.timestamp = timestamp
        self.payload = payload
        self.offset = offset
        self.end = end


def _parse(buf: bytes | memoryview, offset: int) -> tuple[Record | None, str]:
    """The record at ``offset`` if it is whole and its checksum holds, else None and why not."""
    have = len(buf) - offset
    if have < HEADER_BYTES:
        return None, f"an incomplete header ({have} of {HEADER_BYTES} bytes)"
    magic, crc = _PREFIX.unpack_from(buf, offset)
    if magic != MAGIC:
        return None, f"no record magic (found {magic:#010x})"
    length, op, fmt, seq, ts = _REST.unpack_from(buf, offset + _PREFIX.size)
    end = offset + HEADER_BYTES + length
    if length > limits.pay_batch_bytes_max:
        return None, f"a length of {length} bytes, over pay_batch_bytes_max"
    if end > len(buf):
        return None, f"an incomplete payload ({len(buf) - offset - HEADER_BYTES} of {length} bytes)"
    rest = bytes(buf[offset + _PREFIX.size : offset + HEADER_BYTES])
    payload = bytes(buf[offset + HEADER_BYTES : end])
    if zlib.crc32(payload, zlib.crc32(rest)) != crc:
        return None, "a checksum mismatch"
    if op not in OPS or fmt not in (0, FORMAT):
        return None, f"an unknown operation {op} or format {fmt}"
    return Record(seq, op, fmt or 1, ts, payload, offset, end), ""


def _segment_seq(path: Path) -> int:
    return int(path.stem.split("-", 1)[1])


class Wal:
    """Appends records durably; one ``fdatasync`` per ``append`` call, however many records it carries."""

    def __init__(self, directory: Path, *, fsync: bool = True) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._fd: int | None = None
        self.path: Path | None = None
        self.bytes_written = 0
        self.syncs = 0
        self.write_s = 0.0  # time in write(2) and in fdatasync(2), for the benchmark's breakdown
        self.fsync_s = 0.0
        self.last_seq = 0  # the seq of the newest intact record found by replay

    def segments(self) -> list[Path]:
        return sorted(self.dir.glob("wal-*.log"), key=_segment_seq)

    def replay(self, after_seq: int) -> Iterator[Record]:
        """Every intact record with seq > ``after_seq``, oldest first; cuts a torn tail off the newest segment."""
        segments = self.segments()
        expected = None
        for k, path in enumerate(segments):
            last_segment = k == len(segments) - 1
            data = path.read_bytes()
            offset = 0
            while offset < len(data):
                rec, why = _parse(data, offset)
                if rec is None:
                    if not last_segment:
                        raise WalCorrupt(
                            f"{path}: damaged record at byte {offset} ({why}) in a sealed segment, whose records "
                            "were all acknowledged; restore the file from a backup or replica"
                        )
                    self._check_tail(path, data, offset, why)
                    self._cut(path, data, offset, why)
                    break
                if expected is not None and rec.seq != expected:
                    raise WalCorrupt(f"{path}: record at byte {offset} has seq {rec.seq}, expected {expected}")
                expected = rec.seq + 1
                if rec.seq > after_seq:
                    if rec.format != FORMAT:
                        raise FormatTooOld(
                            f"{path}: record seq {rec.seq} was written by log format {rec.format}, under the "
                            "rules before TigerBeetle parity; replaying it now could change results that were "
                            "acknowledged. Open the folder once with the liangcao that wrote it and take a snapshot "
                            "(Engine(path).snapshot()), then open it with this version"
                        )
                    yield rec
                self.last_seq = rec.seq
                offset = rec.end

    def _check_tail(self, path: Path, data: bytes, bad_at: int, why: str) -> None:
        # A crash tears only what was being written: the damaged record must be the last one. If any valid
        # record starts after it, the damage is not a torn tail and dropping it could drop acknowledged work.
        view = memoryview(data)
        at = data.find(_MAGIC_BYTES, bad_at + 1)
        while at != -1:
            if _parse(view, at)[0] is not None:
                raise WalCorrupt(
                    f"{path}: damaged record at byte {bad_at} ({why}) is followed by a valid record at byte {at}; "
                    "refusing to cut acknowledged batches (restore the file from a backup or replica)"
                )
            at = data.find(_MAGIC_BYTES, at + 1)

    def _cut(self, path: Path, data: bytes, offset: int, why: str) -> None:
        """Keep a copy of the torn tail beside the segment, say what is cut and why, then cut it."""
        copy = path.with_name(f"{path.name}.torn-at-{offset}")
        n = 1
        while copy.exists():
            n += 1
            copy = path.with_name(f"{path.name}.torn-at-{offset}.{n}")
        with open(copy, "wb") as f:
            f.write(data[offset:])
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(self.dir)
        log.warning(
            "%s: cut %d bytes at byte %d (%s): a write torn by a crash before its fsync returned, never "
            "acknowledged; the bytes are kept in %s",
            path,
            len(data) - offset,
            offset,
            why,
            copy.name,
        )
        with open(path, "r+b") as f:
            f.truncate(offset)
            f.flush()
            os.fsync(f.fileno())

    def open_for_append(self, next_seq: int) -> None:
        """Append to the newest segment, or start ``wal-<next_seq>.log`` if there is none."""
        segments = self.segments()
        path = segments[-1] if segments else self.dir / f"wal-{next_seq:016d}.log"
        self._open(path)

    def _open(self, path: Path) -> None:
        if self._fd is not None:
            os.close(self._fd)
        new = not path.exists()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.path = path
        if new:
            _fsync_dir(self.dir)

    def append(self, data: bytes) -> None:
        """Write one or more encoded records and make them durable before returning."""
        assert self._fd is not None, "open_for_append first"
        t0 = time.perf_counter()
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        t1 = time.perf_counter()
        if self.fsync:
            os.fdatasync(self._fd)
        self.write_s += t1 - t0
        self.fsync_s += time.perf_counter() - t1
        self.bytes_written += len(data)
        self.syncs += 1

    def start_segment(self, next_seq: int) -> None:
        """Continue in a new segment ``wal-<next_seq>.log`` (everything before it is already durable)."""
        self._open(self.dir / f"wal-{next_seq:016d}.log")

    def drop_segments_before(self, seq: int) -> list[Path]:
        """Delete the segments that start before ``seq`` (a snapshot at ``seq - 1`` covers them)."""
        gone = [p for p in self.segments() if _segment_seq(p) < seq and p != self.path]
        for path in gone:
            path.unlink()
        if gone:
            _fsync_dir(self.dir)
        return gone

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
