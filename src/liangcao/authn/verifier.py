"""The signature checks of the gateway's step-up batches, in a worker process of their own (the second core).

``cryptography`` holds the GIL while it verifies an ECDSA signature (measured: two threads verifying at once
use no more CPU per second than one), so in one process the ES256 checks and the relying party's Python
work take turns on one core while the machine has more. The payment batcher (``liangcao.authn.batch``)
therefore does the cheap checks of a batch on its judging thread and hands the batch's signatures to ONE
worker process in one round trip: (credential id, COSE public key, alg, signature, signed data) per answer;
the worker answers one bool per signature. While the worker verifies batch N, the judging thread reads
and checks batch N+1; the counters, clone alarms and confirmations are applied afterwards on the judging
thread, in arrival order, exactly as in one process.

The worker runs ``liangcao.authn.verifier.main``: it imports this module only (py_webauthn's
``verify_signature``, as the relying party uses it), keeps the decoded public keys per credential id
(``worker_keys_max``), and reads length-prefixed msgpack frames from its stdin. It exits when its stdin
reaches EOF (the owner closed it, or died: the kernel closes the pipe) and, on Linux, gets SIGTERM when
the thread that started it ends (``liangcao.procs.die_with_parent``, armed by the worker itself: no Python
code runs between fork and exec in the owner's many-threaded process). A worker that dies or stops
answering (``verify_wait_ms_max``) fails the batches it held with a ``Fault`` (nothing of them is
recorded: each answer may be sent again) and is replaced by a new one for the next batch.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time
from collections import OrderedDict
from collections.abc import Callable

import msgspec

from liangcao.codes import Code
from liangcao.errors import Fault
from liangcao.procs import die_with_parent

#: decoded public keys the worker keeps (as the relying party's own ``key_cache_max``)
worker_keys_max = 100_000
#: signatures in one request to the worker (one batch of the batcher; the batcher's batches are smaller)
worker_batch_max = 1_024
#: bytes of one frame either way (a batch of 1,024 assertions with 32 KB credentials would not fit: the
#: signed data is authenticatorData + a hash, a few hundred bytes)
worker_frame_bytes_max = 16 * 1024 * 1024
#: how long the judging thread waits for the worker's verdicts on one batch before declaring it dead
verify_wait_ms_max = 10_000
#: worker processes per relying party: one (a second would break nothing but buys nothing on two cores)
verify_workers_max = 1

#: one signature to check: credential id, COSE public key, COSE alg, signature, signed data
Job = tuple[bytes, bytes, int, bytes, bytes]

_LEN = 4
#: bytes one read of the worker's pipe asks for (a batch's verdicts are a few hundred bytes)
_READ_BYTES = 65_536


class VerifierFault(Fault):
    """The verifier worker died, stopped answering or answered nonsense: its batches are not judged."""


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes:
    parts: list[bytes] = []
    while n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("the verifier worker did not answer in time")
        chunk = os.read(fd, n)
        if not chunk:
            raise EOFError("the verifier worker's pipe closed")
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def _write_all(fd: int, data: bytes, deadline: float | None = None) -> None:
    """Write all of ``data``; with a deadline the fd is non-blocking and a worker that stops reading (its
    pipe full) is a TimeoutError, not a judging thread stuck for ever."""
    view = memoryview(data)
    while view:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [fd], [], left)[1]:
                raise TimeoutError("the verifier worker stopped reading")
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            continue


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(_LEN, "big") + payload


def _read_frame(fd: int, deadline: float | None) -> bytes:
    size = int.from_bytes(_read_exact(fd, _LEN, deadline), "big")
    if size > worker_frame_bytes_max:
        raise ValueError(f"a frame of {size} bytes: over worker_frame_bytes_max={worker_frame_bytes_max}")
    return _read_exact(fd, size, deadline)


class Verifier:
    """The owner's handle on its worker process: ``send`` a batch's signatures, ``receive`` their verdicts
    (in the order sent; two batches may be outstanding), ``close``. Used by one thread (the batcher's
    judging thread); ``cpu_s`` may be read from any."""

    def __init__(self, wait_ms: int = verify_wait_ms_max) -> None:
        if not 1 <= wait_ms <= verify_wait_ms_max:
            raise ValueError(f"wait_ms must be 1..{verify_wait_ms_max} (verify_wait_ms_max)")
        self.wait_s = wait_ms / 1000
        self._proc: subprocess.Popen[bytes] | None = None
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder(tuple[list[bool], int]).decode
        # bytes read from the worker's pipe and not yet taken as a frame: one read takes what is there (often a
        # whole frame, sometimes two), not a header and then a body, each behind a select
        self._buf = bytearray()
        self._cpu_ns = 0  # the live worker's own process CPU, as it last reported it
        self._cpu_dead_ns = 0  # of the workers before it
        self.starts = 0  # workers started (a crash makes a new one)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def cpu_s(self) -> float:
        """CPU seconds the worker processes used (each reports its own ``process_time`` with every answer)."""
        return (self._cpu_dead_ns + self._cpu_ns) / 1e9

    def _start(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-c", f"from liangcao.authn.verifier import main; main({os.getpid()})"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # no preexec_fn: Python code between fork and exec in a process full of threads can deadlock on
            # a lock some other thread held; the worker arms its parent-death signal itself (main)
            close_fds=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        os.set_blocking(proc.stdin.fileno(), False)  # writes wait with a deadline (send)
        os.set_blocking(proc.stdout.fileno(), False)  # reads too (_next_frame)
        self._proc = proc
        self.starts += 1
        self.receive()  # its greeting, once its imports are done: it is alive, and its start-up CPU is counted
        return proc

    def start(self) -> None:
        """Start the worker now (else the first ``send`` does) and wait for its greeting: its imports take a
        few hundred ms of CPU. VerifierFault if it does not come up."""
        if self._proc is None:
            self._start()

    def send(self, jobs: list[Job]) -> None:
        """Hand a batch's signatures to the worker (started now if there is none); VerifierFault if it is gone."""
        if len(jobs) > worker_batch_max:
            raise ValueError(f"{len(jobs)} signatures: at most worker_batch_max={worker_batch_max} at once")
        proc = self._proc or self._start()
        assert proc.stdin is not None
        try:
            _write_all(proc.stdin.fileno(), _frame(self._encode(jobs)), time.monotonic() + self.wait_s)
        except OSError as exc:
            self.reset()
            raise VerifierFault(Code.NOT_READY, f"the signature worker is gone: {exc}") from None

    def ready(self, timeout: float) -> bool:
        """Whether the worker's next answer can be read now (waiting up to ``timeout`` s); True without a
        worker (``receive`` then says why)."""
        proc = self._proc
        if proc is None or proc.stdout is None:
            return True
        try:
            if self._whole() is not None:  # read with the one before it
                return True
        except ValueError:  # nonsense: receive says so
            return True
        return bool(select.select([proc.stdout.fileno()], [], [], timeout)[0])

    def _whole(self) -> int | None:
        """The size of the frame at the head of the buffer if all of it is there, else None."""
        buf = self._buf
        if len(buf) < _LEN:
            return None
        size = int.from_bytes(buf[:_LEN], "big")
        if size > worker_frame_bytes_max:
            raise ValueError(f"a frame of {size} bytes: over worker_frame_bytes_max={worker_frame_bytes_max}")
        return size if len(buf) >= _LEN + size else None

    def _next_frame(self, fd: int, deadline: float) -> bytes:
        """The next whole frame from the worker (what one read brought beyond it stays in the buffer)."""
        while (size := self._whole()) is None:
            try:  # the fd is non-blocking: read first (the caller usually saw it ready), select only if empty
                chunk = os.read(fd, _READ_BYTES)
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    raise TimeoutError("the verifier worker did not answer in time") from None
                continue
            if not chunk:
                raise EOFError("the verifier worker's pipe closed")
            self._buf += chunk
        frame = bytes(self._buf[_LEN : _LEN + size])
        del self._buf[: _LEN + size]
        return frame

    def receive(self) -> list[bool]:
        """The verdicts of the oldest batch sent, one per signature; VerifierFault (and the worker is
        stopped: the next ``send`` starts another) if it died, answered nothing within ``wait_ms`` or
        answered nonsense."""
        proc = self._proc
        if proc is None:
            raise VerifierFault(Code.NOT_READY, "the signature worker is gone")
        assert proc.stdout is not None
        try:
            verdicts, cpu_ns = self._decode(self._next_frame(proc.stdout.fileno(), time.monotonic() + self.wait_s))
        except (OSError, EOFError, TimeoutError, ValueError, msgspec.DecodeError) as exc:
            self.reset()
            raise VerifierFault(Code.NOT_READY, f"the signature worker failed: {exc}") from None
        self._cpu_ns = cpu_ns
        return verdicts

    def reset(self) -> None:
        """Stop the worker (if any); the next ``send`` starts a new one."""
        proc, self._proc = self._proc, None
        self._buf.clear()  # a part of the dead worker's answer is not the start of the next one's
        if proc is None:
            return
        self._cpu_dead_ns += self._cpu_ns
        self._cpu_ns = 0
        for f in (proc.stdin, proc.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        try:
            proc.wait(timeout=2)  # EOF on its stdin: it leaves by itself
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    close = reset


# ---- the worker process ----------------------------------------------------------------------------------------
def serve(fd_in: int, fd_out: int) -> None:
    """The worker's loop: a frame of jobs in, a frame of verdicts (and this process's CPU so far) out; returns
    at EOF.

    A key is decoded once per credential and kept with the check it needs: ``cryptography``'s ``verify``
    bound to the key and, for ECDSA, the hash object of its COSE algorithm (made once), which is what
    py_webauthn's ``verify_signature`` calls after working both out again for every signature. Other key
    types (RSA: not accepted at registration, but a key is judged by its type, not trusted) go through
    ``verify_signature`` itself."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from webauthn.helpers import decode_credential_public_key, decoded_public_key_to_cryptography, verify_signature
    from webauthn.helpers.algorithms import get_ec2_sig_alg
    from webauthn.helpers.cose import COSEAlgorithmIdentifier
    from webauthn.helpers.exceptions import WebAuthnException

    decode = msgspec.msgpack.Decoder(list[tuple[bytes, bytes, int, bytes, bytes]]).decode
    encode = msgspec.msgpack.Encoder().encode
    keys: OrderedDict[bytes, tuple[bytes, int, Callable[[bytes, bytes], None]]] = OrderedDict()
    algs = {int(a): a for a in COSEAlgorithmIdentifier}

    def check_for(cose: bytes, alg: int) -> Callable[[bytes, bytes], None]:
        public = decoded_public_key_to_cryptography(decode_credential_public_key(cose))
        signature_alg = algs[alg]
        if isinstance(public, EllipticCurvePublicKey):
            ecdsa = get_ec2_sig_alg(signature_alg)  # UnsupportedAlgorithm (a WebAuthnException) if not ECDSA
            verify = public.verify
            return lambda signature, data: verify(signature, data, ecdsa)
        if isinstance(public, Ed25519PublicKey):
            return public.verify

        def other(signature: bytes, data: bytes) -> None:
            verify_signature(public_key=public, signature_alg=signature_alg, signature=signature, data=data)

        return other

    _write_all(fd_out, _frame(encode(([], time.process_time_ns()))))  # ready
    while True:
        try:
            jobs = decode(_read_frame(fd_in, None))
        except EOFError:
            return
        out: list[bool] = []
        for raw_id, cose, alg, signature, data in jobs:
            try:
                known = keys.get(raw_id)
                if known is not None and known[0] == cose and known[1] == alg:
                    keys.move_to_end(raw_id)
                    check = known[2]
                else:
                    check = check_for(cose, alg)
                    keys[raw_id] = (cose, alg, check)
                    while len(keys) > worker_keys_max:
                        keys.popitem(last=False)
                check(signature, data)
                out.append(True)
            except (InvalidSignature, WebAuthnException, ValueError, KeyError, TypeError):
                out.append(False)
        _write_all(fd_out, _frame(encode((out, time.process_time_ns()))))


def main(owner: int) -> None:
    """The worker process's entry point (stdin: requests, stdout: answers). ``owner``: the pid of the process
    that started it; the worker gets SIGTERM when the thread that started it ends (Linux), and leaves at
    once if the owner is already gone (it died before the signal was armed)."""
    die_with_parent()()
    if os.getppid() != owner:
        return
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):
        serve(sys.stdin.buffer.fileno(), sys.stdout.buffer.fileno())
