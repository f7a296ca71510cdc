"""Canonical encoding: the vectors of docs/encoding.md, the refusals, and round-trip properties."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liangcao import encoding, limits
from liangcao.codes import Code
from liangcao.errors import EncodingError

# (value, canonical text, sha256 hex) - the same table is in docs/encoding.md.
VECTORS: list[tuple[Any, bytes, str]] = [
    ({}, b"{}", "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"),
    ({"b": 1, "a": [True, None, -7]}, b'{"a":[true,null,-7],"b":1}', ""),
    ({"amount_fen": 100000000, "currency": "CNY"}, b'{"amount_fen":100000000,"currency":"CNY"}', ""),
    ({"名": "粮草", "a": '\u0001"\\/\t'}, '{"a":"\\u0001\\"\\\\/\\t","名":"粮草"}'.encode(), ""),
    ({"z": {"y": [], "x": {}}, "": 0}, b'{"":0,"z":{"x":{},"y":[]}}', ""),
    ([2**63 - 1, -(2**63)], b"[9223372036854775807,-9223372036854775808]", ""),
    ({"\ue000": 1, "\U0001f600": 2}, '{"\ue000":1,"\U0001f600":2}'.encode(), ""),
]


@pytest.mark.parametrize(("value", "text", "digest"), VECTORS)
def test_vectors(value: Any, text: bytes, digest: str) -> None:
    assert encoding.canonical(value) == text
    if digest:
        assert encoding.sha256_hex(text) == digest
    assert encoding.recanonical(text) == text


def test_docs_vectors_match() -> None:
    """Every vector in docs/encoding.md is produced by the code (the doc cannot drift)."""
    from pathlib import Path

    doc = (Path(__file__).parent.parent / "docs" / "encoding.md").read_text()
    rows = [line for line in doc.splitlines() if line.startswith("| `") and "sha256" not in line]
    assert len(rows) >= 6
    for row in rows:
        cells = [c.strip().strip("`") for c in row.strip("|").split("|")]
        source, canonical_text, digest = cells[0], cells[1], cells[2]
        assert encoding.recanonical(source.encode()).decode() == canonical_text, row
        assert encoding.sha256_hex(canonical_text.encode()) == digest, row


def test_whitespace_and_key_order_do_not_matter() -> None:
    a = b'{ "b" : [1, 2], "a" : {"d": null, "c": "x"} }'
    b = b'{"a":{"c":"x","d":null},"b":[1,2]}'
    assert encoding.recanonical(a) == encoding.recanonical(b) == b


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (b'{"amount": 1.5}', Code.FLOAT_NOT_ALLOWED),
        (b'{"amount": 1e3}', Code.FLOAT_NOT_ALLOWED),
        (b'{"amount": 1.0}', Code.FLOAT_NOT_ALLOWED),
        (b'{"n": 9223372036854775808}', Code.INT_OUT_OF_RANGE),
        (b'{"a": ', Code.BAD_ENCODING),
        (b"\xff\xfe", Code.BAD_ENCODING),
        (b"[" * 40 + b"]" * 40, Code.VALUE_TOO_DEEP),
    ],
)
def test_refusals(text: bytes, code: Code) -> None:
    with pytest.raises(EncodingError) as info:
        encoding.decode(text)
    assert info.value.code == code
    assert info.value.message


def test_size_limit() -> None:
    with pytest.raises(EncodingError) as info:
        encoding.decode(b'"' + b"x" * limits.tx_bytes_max + b'"')
    assert info.value.code == Code.TOO_LARGE


@pytest.mark.parametrize("value", [1.5, (1, 2), b"x", {1: 2}, {"a": {3.0}}])
def test_python_values_outside_the_model(value: Any) -> None:
    with pytest.raises(EncodingError):
        encoding.canonical(value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=limits.int_min, max_value=limits.int_max) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


@given(json_values)
def test_round_trip_and_determinism(value: Any) -> None:
    data = encoding.canonical(value)
    assert encoding.decode(data) == value
    assert encoding.canonical(encoding.decode(data)) == data
    # Any other JSON rendering of the same value, keys shuffled and spaced out, gives the same bytes.
    loose = json.dumps(_shuffled(value, random.Random(len(data))), indent=2, ensure_ascii=True)
    assert encoding.recanonical(loose) == data


def _shuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rng) for v in value]
    return value


_ONE_CHAR_AT_A_TIME = re.compile(rb'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.S)


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=60) | st.lists(st.sampled_from([b'"', b"\\", b"a", b"\n", b"[", b"}", b"\xff"])).map(b"".join)
)
def test_the_unrolled_string_pattern_finds_what_the_plain_one_does(raw: bytes) -> None:
    """``json_depth`` skips strings with a pattern written as runs between escapes (three times faster): it
    must remove exactly what the textbook one-character-at-a-time pattern removes, on any bytes at all
    (unterminated strings, a trailing backslash, newlines, invalid UTF-8)."""
    assert encoding._STRING.sub(b"", raw) == _ONE_CHAR_AT_A_TIME.sub(b"", raw)
    assert [m.span() for m in encoding._STRING.finditer(raw)] == [m.span() for m in _ONE_CHAR_AT_A_TIME.finditer(raw)]
