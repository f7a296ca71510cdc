"""Canonical encoding: the one byte form of everything liangcao hashes or signs.

Theory of operation
-------------------
Hashes and signatures are only meaningful if every peer turns the same value into the same bytes. The
canonical form is JSON text with these rules (the full specification with test vectors is
``docs/encoding.md``):

* the data model is JSON without floats: ``null``, ``true``/``false``, integers, strings, arrays and
  objects with string keys. Floats are refused everywhere (money is integer fen), as are integers outside
  the signed 64-bit range, so every value survives a trip through any language unchanged;
* object keys are sorted by Unicode code point (which is the same as sorting their UTF-8 bytes);
* no insignificant white space; strings are UTF-8 with only ``"`` ``\\`` and control characters escaped;
* binary data is never a value of its own: hashes are lowercase hex, keys and signatures standard base64.

We use ``msgspec`` for the byte work (it sorts keys and escapes strings exactly as above, and is fast);
this module adds the checks that make the form canonical: the value model, the integer range, the depth
and the size bounds. Decoding accepts any JSON text (any key order or white space) and re-encoding gives
the canonical bytes, so "key order and whitespace never matter".
"""

from __future__ import annotations

import hashlib
import re
from itertools import accumulate
from typing import Any, TypeAlias

import msgspec

from liangcao import limits
from liangcao.codes import Code
from liangcao.errors import EncodingError

#: A value of the canonical data model.
Value: TypeAlias = bool | int | str | list["Value"] | dict[str, "Value"] | None

_ENCODER = msgspec.json.Encoder(order="sorted")
_INT_MIN = limits.int_min
_INT_MAX = limits.int_max
_DECODER = msgspec.json.Decoder()


def check_value(value: Any, depth_max: int = limits.value_depth_max) -> None:
    """Raise :class:`EncodingError` unless ``value`` is in the canonical data model.

    Why a walk of our own: msgspec encodes floats, tuples, bytes and large integers happily, and each would
    make two implementations disagree on bytes or on meaning. The walk is on every hot path (each write,
    event and transaction), so strings and in-range integers, by far the most common leaves, are checked
    inline without a call.
    """
    _check(value, 0, depth_max)


def _bad(item: Any) -> EncodingError:
    kind = type(item)
    if kind is float:
        return EncodingError(Code.FLOAT_NOT_ALLOWED, f"float {item!r} is not allowed: use integer minor units")
    if kind is int:
        return EncodingError(Code.INT_OUT_OF_RANGE, f"integer {item} is outside the signed 64-bit range")
    return EncodingError(Code.BAD_ENCODING, f"type {kind.__name__} is not in the canonical data model")


def _check(item: Any, depth: int, depth_max: int) -> None:
    kind = type(item)
    if kind is str or kind is bool or item is None:
        return
    if kind is int:
        if not _INT_MIN <= item <= _INT_MAX:
            raise _bad(item)
        return
    if depth >= depth_max:
        raise deep_error(depth_max)
    if kind is dict:
        for k, v in item.items():
            if type(k) is not str:
                raise EncodingError(Code.BAD_ENCODING, f"object key {k!r} is not a string")
            t = type(v)
            if t is str or (t is int and _INT_MIN <= v <= _INT_MAX):
                continue
            _check(v, depth + 1, depth_max)
        return
    if kind is list:
        for v in item:
            t = type(v)
            if t is str or (t is int and _INT_MIN <= v <= _INT_MAX):
                continue
            _check(v, depth + 1, depth_max)
        return
    raise _bad(item)


def canonical(value: Any, *, checked: bool = False) -> bytes:
    """The canonical bytes of ``value``. ``checked=True`` skips the model check for values built here."""
    if not checked:
        check_value(value)
    return _ENCODER.encode(value)


# A JSON string from its opening quote to the first unescaped closing quote, escapes skipped whole, or to the end
# of the text if it never closes. The possessive ``*+`` never backtracks: the scan is linear in the input, where
# a pattern that retries at every quote is quadratic (a 64 KB body of escaped quotes took 13 s). Written as
# runs between escapes ("unrolled"), not one character per alternation: the same strings (tests/test_encoding.py
# holds them equal), a third of the time (it runs on every capture's events at admission: about 6 us an event).
_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.S)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_depth(data: str | bytes) -> int:
    """The deepest nesting of arrays and objects in JSON text, counted without parsing or recursion.

    Exact for valid JSON. For text that is not JSON it is an upper bound of how deep any decoder gets
    before it finds the error (strings are recognised exactly as a decoder does on the part it accepts);
    a stray quote can only make the count larger, never smaller.
    """
    if isinstance(data, str):
        raw = data.encode("utf-8", "surrogatepass")
    elif isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
    else:
        raise TypeError(f"JSON text is str or bytes, not {type(data).__name__}")
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return max(accumulate(_STEP[b] for b in brackets), default=0)


def too_deep(data: bytes | str, depth_max: int = limits.value_depth_max) -> bool:
    """Whether JSON text nests arrays/objects deeper than ``depth_max``, judged on the text, before decoding.

    Why before: the decoders recurse, so a 3,000-deep array raises ``RecursionError`` at a depth that
    depends on the interpreter and the caller's stack, and the outcome would differ between peers. The
    common case (fewer brackets than the limit) costs two C-level counts.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if raw.count(b"[") + raw.count(b"{") <= depth_max:
        return False
    return json_depth(raw) > depth_max


def deep_error(depth_max: int = limits.value_depth_max) -> EncodingError:
    return EncodingError(Code.VALUE_TOO_DEEP, f"value nested deeper than value_depth_max={depth_max}")


def decode(data: bytes | str, size_max: int = limits.tx_bytes_max) -> Value:
    """Parse JSON text into a canonical-model value, refusing floats, deep nesting and oversize input."""
    if len(data) > size_max:
        raise EncodingError(Code.TOO_LARGE, f"input is {len(data)} bytes, more than the limit {size_max}")
    if too_deep(data):
        raise deep_error()
    try:
        value = _DECODER.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise EncodingError(Code.BAD_ENCODING, f"not valid JSON: {exc}") from exc
    except RecursionError as exc:  # cannot happen after the scan; kept so no input ever escapes as a crash
        raise deep_error() from exc
    check_value(value)
    result: Value = value
    return result


def recanonical(data: bytes | str, size_max: int = limits.tx_bytes_max) -> bytes:
    """Canonical bytes of arbitrary JSON text (key order and white space normalised)."""
    return canonical(decode(data, size_max), checked=True)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_value(value: Any) -> str:
    """Hex SHA-256 of the canonical bytes of ``value``."""
    return sha256_hex(canonical(value))


# Characters a name or key may not contain, as fixed ranges rather than ``str.isprintable()``: Python's answer
# follows the Unicode version of the interpreter (3.11 and 3.12 differ), and a rule that moves with the
# interpreter would let two honest peers record different outcomes for the same transaction. The table is
# ``isprintable()``'s answer on assigned characters, written out: refused are controls (Cc), format characters
# (Cf), separators other than the ASCII space (Zs, Zl, Zp), surrogates (Cs), private use (Co) and
# noncharacters. Everything else in planes 0-3 is allowed (letters, marks such as the variation selectors in
# "❤️", CJK up to Extension G), and so are the variation selectors of plane 14; the unassigned planes 4-13 are
# refused. A character assigned by a later Unicode version is therefore allowed on every interpreter alike.
_NOT_PRINTABLE = re.compile(
    "[\x00-\x1f\x7f-\xa0\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u1680\u180e"
    "\u2000-\u200f\u2028-\u202f\u205f-\u206f\u3000\ud800-\uf8ff\ufdd0-\ufdef\ufeff\ufff0-\ufffb"
    "\ufffe\uffff\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U0001fffe\U0001ffff\U0002fffe\U0002ffff\U0003fffe-\U000e00ff\U000e01f0-\U0010ffff]"
)


def printable(text: str) -> bool:
    """Whether ``text`` is non-empty and has only characters allowed in names and keys (see above).

    Version-independent by construction: a fixed table, no ``unicodedata``. The ASCII space is allowed, as before.
    """
    return bool(text) and _NOT_PRINTABLE.search(text) is None
