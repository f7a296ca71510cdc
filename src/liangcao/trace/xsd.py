"""Validation of EPCIS 2.0 XML documents against GS1's XSD (``EPCglobal-epcis-2_0.xsd`` and its imports).

The XSD files are GS1's; like the JSON schema they are read from a directory, not copied into liangcao:
``LIANGCAO_EPCIS_XSD_DIR`` if set, else ``shared/fixtures/epcis/gs1-xsd`` beside the checkout. The bytes are
parsed by ``defusedxml`` first (``liangcao.trace.xml``: DTDs and entities are refused before this runs), and
``xmlschema`` is told to refuse them again (``defuse="always"``) and never to fetch anything.

A bare event (``POST /events`` with an XML ``ObjectEvent``) has no global element in the XSD: it is checked
wrapped in the ``EPCISDocument`` it would be captured in.
"""

from __future__ import annotations

import io
import os
import re
from functools import cache
from pathlib import Path
from typing import Any

import xmlschema

DOCUMENT_XSD = "EPCglobal-epcis-2_0.xsd"
QUERY_XSD = "EPCglobal-epcis-query-2_0.xsd"
errors_max = 5
_PROLOG = re.compile(rb"^\s*(<\?xml[^>]*\?>)?", re.ASCII)


def xsd_dir() -> Path:
    env = os.environ.get("LIANGCAO_EPCIS_XSD_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[4] / "shared" / "fixtures" / "epcis" / "gs1-xsd"


@cache
def _schema(path: str) -> Any:
    if not Path(path).exists():
        raise FileNotFoundError(f"no {Path(path).name} in {Path(path).parent} (set LIANGCAO_EPCIS_XSD_DIR)")
    return xmlschema.XMLSchema(path, defuse="always", allow="local")


def wrap_event(data: bytes) -> bytes:
    """A bare event's XML inside the EPCISDocument it would be captured in."""
    body = _PROLOG.sub(b"", data.lstrip(b"\xef\xbb\xbf"), count=1)
    return (
        b'<epcis:EPCISDocument xmlns:epcis="urn:epcglobal:epcis:xsd:2" schemaVersion="2.0" '
        b'creationDate="1970-01-01T00:00:00Z"><EPCISBody><EventList>' + body + b"</EventList></EPCISBody>"
        b"</epcis:EPCISDocument>"
    )


def problems(data: bytes, *, query: bool = False, directory: Path | None = None) -> list[str]:
    """Every XSD violation of an EPCIS (query) document (empty when valid), the first few, each one line."""
    schema = _schema(str((directory or xsd_dir()) / (QUERY_XSD if query else DOCUMENT_XSD)))
    out = []
    for error in schema.iter_errors(io.BytesIO(data)):
        reason = (error.reason or str(error)).splitlines()[0]
        where = error.path or ""
        out.append(f"{where}: {reason}" if where else reason)
        if len(out) >= errors_max:
            break
    return out
