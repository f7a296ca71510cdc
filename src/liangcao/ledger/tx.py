"""Transactions: the signed envelope, its id, and its parsing.

Wire form (canonical JSON, ``docs/encoding.md``)::

    {"body": {"chain_id": str, "contract": str, "method": str, "args": {...},
              "nonce": str, "not_after": int (ms since the epoch)},
     "signatures": [{"cert": base64 DER, "sig": base64 Ed25519}]}

``tx_id = hex(SHA-256(canonical(body)))``; each signature is over ``"liangcao/tx/v1\\n" || tx_id`` (the 32
raw bytes). Parsing checks the shape and every bound but not the signatures: those need the consortium
configuration and are the executor's job (or the node's, in parallel, before ordering).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from liangcao import encoding, limits
from liangcao.codes import Code
from liangcao.crypto import keys
from liangcao.crypto.signer import Signature as Signature  # re-exported: txm.Signature, txm.Signer
from liangcao.crypto.signer import Signer as Signer
from liangcao.errors import EncodingError, TxRejected

_BODY_FIELDS = frozenset({"chain_id", "contract", "method", "args", "nonce", "not_after"})
#: ``actor``: the member id of the acting party, in the signed body. Optional (and omitted by the SDK) when
#: one party signs; a transaction with several signers names its actor, because the order of signatures is
#: not covered by the tx id and must never decide who acts.
_OPTIONAL_FIELDS = frozenset({"actor"})
_ENVELOPE_FIELDS = frozenset({"body", "signatures"})


@dataclass(frozen=True, slots=True)
class Tx:
    """A parsed transaction. ``raw`` is its canonical envelope: the bytes that go into blocks."""

    raw: bytes
    tx_id: str
    chain_id: str
    contract: str
    method: str
    args: dict[str, Any]
    nonce: str
    not_after: int
    signatures: tuple[Signature, ...]
    #: hex SHA-256 of ``raw``. Several envelopes can share one ``tx_id`` (the same body with other
    #: signatures, genuine or forged): every verdict on signatures belongs to the envelope, never the id.
    envelope_id: str = ""
    #: the acting party's member id, from the signed body ("" if the body names none)
    actor: str = ""

    @property
    def id_bytes(self) -> bytes:
        return bytes.fromhex(self.tx_id)


def _name(value: Any, what: str, chars_max: int) -> str:
    if type(value) is not str or not value or len(value) > chars_max or not encoding.printable(value):
        raise TxRejected(Code.MALFORMED_TX, f"{what} must be a printable string of 1 to {chars_max} characters")
    return value


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def body_id(body: dict[str, Any]) -> str:
    return encoding.sha256_hex(encoding.canonical(body))


def parse_value(value: Any) -> Tx:
    """Check and parse an already decoded envelope (see :func:`parse`)."""
    if type(value) is not dict or set(value) != _ENVELOPE_FIELDS:
        raise TxRejected(Code.MALFORMED_TX, "a transaction is an object with exactly 'body' and 'signatures'")
    body = value["body"]
    if type(body) is not dict or not _BODY_FIELDS <= set(body) <= _BODY_FIELDS | _OPTIONAL_FIELDS:
        missing = sorted(_BODY_FIELDS - set(body)) if type(body) is dict else sorted(_BODY_FIELDS)
        extra = sorted(set(body) - _BODY_FIELDS - _OPTIONAL_FIELDS) if type(body) is dict else []
        raise TxRejected(
            Code.MALFORMED_TX,
            f"body must have exactly the fields {sorted(_BODY_FIELDS)}",
            {"missing": missing, "unexpected": extra},
        )
    chain_id = _name(body["chain_id"], "chain_id", limits.contract_name_chars_max)
    contract = _name(body["contract"], "contract", limits.contract_name_chars_max)
    method = _name(body["method"], "method", limits.method_name_chars_max)
    nonce = _name(body["nonce"], "nonce", limits.nonce_chars_max)
    actor = _name(body["actor"], "actor", limits.member_id_chars_max) if "actor" in body else ""
    not_after = body["not_after"]
    if type(not_after) is not int or not_after < 0:
        raise TxRejected(Code.MALFORMED_TX, "not_after must be a non-negative integer (ms since the epoch)")
    args = body["args"]
    if type(args) is not dict:
        raise TxRejected(Code.MALFORMED_TX, "args must be an object")
    if _depth(args) > limits.args_depth_max:
        raise TxRejected(Code.VALUE_TOO_DEEP, f"args nest deeper than args_depth_max={limits.args_depth_max}")
    sigs = value["signatures"]
    if type(sigs) is not list:
        raise TxRejected(Code.MALFORMED_TX, "signatures must be a list")
    if len(sigs) > limits.signatures_max:
        raise TxRejected(
            Code.TOO_MANY_SIGNATURES,
            f"{len(sigs)} signatures, more than signatures_max={limits.signatures_max}",
        )
    parsed: list[Signature] = []
    for i, s in enumerate(sigs):
        if type(s) is not dict or set(s) != {"cert", "sig"} or type(s["cert"]) is not str or type(s["sig"]) is not str:
            raise TxRejected(Code.MALFORMED_TX, f"signature {i} must be an object with string 'cert' and 'sig'")
        try:
            parsed.append(Signature(keys.unb64(s["cert"]), keys.unb64(s["sig"])))
        except ValueError as exc:
            raise TxRejected(Code.MALFORMED_TX, f"signature {i}: {exc}") from exc
    raw = encoding.canonical(value, checked=True)
    return Tx(
        raw=raw,
        tx_id=encoding.sha256_hex(encoding.canonical(body, checked=True)),
        chain_id=chain_id,
        contract=contract,
        method=method,
        # The contract sees args in canonical key order, never in the order a client happened to send:
        # a contract that iterates an object must record the same receipt on every peer.
        args=_canonical_order(args),
        nonce=nonce,
        not_after=not_after,
        signatures=tuple(parsed),
        envelope_id=encoding.sha256_hex(raw),
        actor=actor,
    )


def _canonical_order(value: Any) -> Any:
    if type(value) is dict:
        return {k: _canonical_order(value[k]) for k in sorted(value)}
    if type(value) is list:
        return [_canonical_order(v) for v in value]
    return value


def parse(data: bytes | str) -> Tx:
    """Parse transaction bytes (any JSON form). Raises :class:`TxRejected` or :class:`EncodingError`."""
    if len(data) > limits.tx_bytes_max:
        raise TxRejected(
            Code.TOO_LARGE, f"transaction is {len(data)} bytes, more than tx_bytes_max={limits.tx_bytes_max}"
        )
    try:
        value = encoding.decode(data, limits.tx_bytes_max)
    except EncodingError as exc:
        raise TxRejected(exc.code, exc.message) from exc
    return parse_value(value)


def build(
    chain_id: str,
    contract: str,
    method: str,
    args: dict[str, Any],
    signers: Sequence[Signer],
    *,
    not_after: int,
    nonce: str | None = None,
    actor: str | None = None,
) -> Tx:
    """Build and sign a transaction with every signer in ``signers`` (each signs the same ``tx_id``).

    With several signers the body names the acting party: ``actor``, by default the first signer."""
    body: dict[str, Any] = {
        "chain_id": chain_id,
        "contract": contract,
        "method": method,
        "args": args,
        "nonce": nonce if nonce is not None else os.urandom(12).hex(),
        "not_after": not_after,
    }
    if actor is None and len(signers) > 1:
        actor = signers[0].member_id
    if actor:
        body["actor"] = actor
    encoding.check_value(body)
    tx_id = body_id(body)
    sigs = [s.sign_tx_id(tx_id) for s in signers]
    envelope = {
        "body": body,
        "signatures": [{"cert": keys.b64(s.cert), "sig": keys.b64(s.sig)} for s in sigs],
    }
    return parse_value(envelope)
