"""The payments write-ahead log: checksummed records in segment files, group commit, torn-tail recovery.

A record is one request batch exactly as it was applied (operation, engine timestamp, the events as JSON),
so replaying the log through the state machine rebuilds the state byte for byte. Layout, little-endian::

    magic u32 | crc32 u32 | length u32 | op u8 | 3 zero bytes | seq u64 | timestamp u64 | payload (length)

``crc32`` (zlib) covers everything after itself. Segments are ``wal-<first seq>.log``; a snapshot at seq S
lets segments wholly at or below S go. On open, a damaged record at the very end of the newest segment is a
write torn by a crash before its fsync returned (so never acknowledged): it is cut off. Damage followed by
any valid record is not a torn tail, and the log refuses to open rather than drop acknowledged batches.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

from liangcao import limits

MAGIC = 0x4C57504C  # "LPWL": liangcao payments write-ahead log
_PREFIX = struct.Struct("<II")
_REST = struct.Struct("<IBxxxQQ")
HEADER_BYTES = _PREFIX.size + _REST.size
_MAGIC_BYTES = struct.pack("<I", MAGIC)

OP_CREATE_ACCOUNTS = 1
OP_CREATE_TRANSFERS = 2
OP_PULSE = 3
OPS = (OP_CREATE_ACCOUNTS, OP_CREATE_TRANSFERS, OP_PULSE)


class WalCorrupt(Exception):
    """The log is damaged somewhere other than its unacknowledged tail: stop, do not guess."""


def encode_record(seq: int, op: int, timestamp: int, payload: bytes) -> bytes:
    rest = _REST.pack(len(payload), op, seq, timestamp)
    crc = zlib.crc32(payload, zlib.crc32(rest))
    return _PREFIX.pack(MAGIC, crc) + rest + payload


class Record:
    __slots__ = ("end", "offset", "op", "payload", "seq", "timestamp")

    def __init__(self, seq: int, op: int, timestamp: int, payload: bytes, offset: int, end: int) -> None:
        self.seq = seq
        self.op = op
        self.timestamp = timestamp
        self.payload = payload
        self.offset = offset
        self.end = end


def _parse(buf: bytes | memoryview, offset: int) -> Record | None:
    """The record at ``offset`` if it is whole and its checksum holds, else None."""
    if offset + HEADER_BYTES > len(buf):
        return None
    magic, crc = _PREFIX.unpack_from(buf, offset)
    if magic != MAGIC:
        return None
    length, op, seq, ts = _REST.unpack_from(buf, offset + _PREFIX.size)
    if length > limits.pay_batch_bytes_max or op not in OPS:
        return None
    end = offset + HEADER_BYTES + length
    if end > len(buf):
        return None
    rest = bytes(buf[offset + _PREFIX.size : offset + HEADER_BYTES])
    payload = bytes(buf[offset + HEADER_BYTES : end])
    if zlib.crc32(payload, zlib.crc32(rest)) != crc:
        return None
    return Record(seq, op, ts, payload, offset, end)


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
                rec = _parse(data, offset)
                if rec is None or (expected is not None and rec.seq != expected):
                    if rec is not None:
                        raise WalCorrupt(f"{path.name}: record at byte {offset} has seq {rec.seq}, expected {expected}")
                    if not last_segment:
                        raise WalCorrupt(f"{path.name}: damaged record at byte {offset} in a sealed segment")
                    self._check_tail(path, data, offset)
                    self._truncate(path, offset)
                    break
                expected = rec.seq + 1
                if rec.seq > after_seq:
                    yield rec
                offset = rec.end

    def _check_tail(self, path: Path, data: bytes, bad_at: int) -> None:
        # A crash tears only what was being written: the damaged record must be the last one. If any valid
        # record starts after it, the damage is not a torn tail and dropping it could drop acknowledged work.
        view = memoryview(data)
        at = data.find(_MAGIC_BYTES, bad_at + 1)
        while at != -1:
            if _parse(view, at) is not None:
                raise WalCorrupt(
                    f"{path.name}: damaged record at byte {bad_at} is followed by a valid record at byte {at}; "
                    "refusing to cut acknowledged batches (restore the file or its replica)"
                )
            at = data.find(_MAGIC_BYTES, at + 1)

    def _truncate(self, path: Path, size: int) -> None:
        with open(path, "r+b") as f:
            f.truncate(size)
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
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        if self.fsync:
            os.fdatasync(self._fd)
        self.bytes_written += len(data)
        self.syncs += 1

    def rotate(self, next_seq: int, keep_after_seq: int) -> None:
        """Start a new segment at ``next_seq`` and delete segments holding only records <= ``keep_after_seq``."""
        self._open(self.dir / f"wal-{next_seq:016d}.log")
        segments = self.segments()
        for k, path in enumerate(segments[:-1]):
            following = _segment_seq(segments[k + 1])
            if following - 1 <= keep_after_seq:
                path.unlink()
        _fsync_dir(self.dir)

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
