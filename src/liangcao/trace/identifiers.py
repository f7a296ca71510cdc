"""EPC URIs and GS1 Digital Link URIs, normalised to the constrained canonical Digital Link form.

The CBV 2.0 event hash (``hashing.py``) compares identifiers in one form whatever form an event used:
``urn:epc:id:sgtin:4012345.011111.9876`` and ``https://example.com/gtin/04012345111118/21/9876?x=1`` both
become ``https://id.gs1.org/01/04012345111118/21/9876``. Written here rather than taken from a library
because no maintained Python package converts EPC URNs to Digital Link (GS1 TDS 2.0 section 6 and GS1
Digital Link URI Syntax 1.2 section 4.11 are the specification).
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote, urlsplit

from liangcao.trace.memo import text_cache

DL_ROOT = "https://id.gs1.org"

# Alphanumeric short names allowed in Digital Link paths, mapped to their application identifiers.
SHORT_NAMES = {
    "gtin": "01",
    "sscc": "00",
    "gln": "414",
    "party": "417",
    "ser": "21",
    "lot": "10",
    "cpv": "22",
    "gdti": "253",
    "gcn": "255",
    "ginc": "401",
    "gsin": "402",
    "grai": "8003",
    "giai": "8004",
    "itip": "8006",
    "cpid": "8010",
    "cpsn": "8011",
    "gsrnp": "8017",
    "gsrn": "8018",
    "glnx": "254",
}

# The most fine-grained qualifier kept for each primary key, in order of preference (CBV 2.0 hash rule 18).
QUALIFIERS = {"01": ("21", "235", "10"), "414": ("254",), "8006": ("21", "10"), "8010": ("8011",)}
PRIMARY = {"00", "01", "253", "255", "401", "402", "414", "417", "8003", "8004", "8006", "8010", "8017", "8018"}


def check_digit(digits: str) -> str:
    """GS1 mod-10 check digit: weights 3, 1, 3, ... from the rightmost digit."""
    rev = digits[::-1]
    total = 3 * sum(map(int, rev[0::2])) + sum(map(int, rev[1::2]))
    return str((10 - total % 10) % 10)


def _escape(component: str) -> str:
    """An EPC URN component (itself %-escaped) in Digital Link's percent-encoding."""
    return quote(unquote(component), safe="'")


def epc_urn_to_dl(urn: str) -> str | None:
    """The canonical Digital Link URI of an EPC pure identity, class or pattern URN; None if not one."""
    m = re.fullmatch(r"urn:epc:(id|class|idpat):([a-z]+):(.*)", urn)
    if m is None:
        return None
    kind, scheme, body = m.groups()
    parts = body.split(".")

    def gtin(cp: str, ind_ref: str) -> str:
        base = ind_ref[:1] + cp + ind_ref[1:]
        return base + check_digit(base)

    def key(cp: str, ref: str) -> str:
        return cp + ref + check_digit(cp + ref)

    try:
        if kind == "idpat":  # a pattern names its class: the key without the serial part
            if scheme in ("sgtin", "upui"):
                return f"{DL_ROOT}/01/{gtin(parts[0], parts[1])}"
            if scheme == "itip":
                return f"{DL_ROOT}/8006/{gtin(parts[0], parts[1])}{parts[2]}{parts[3]}"
            if scheme == "grai":
                return f"{DL_ROOT}/8003/0{key(parts[0], parts[1])}"
            if scheme == "gdti":
                return f"{DL_ROOT}/253/{key(parts[0], parts[1])}"
            if scheme == "sgcn":
                return f"{DL_ROOT}/255/{key(parts[0], parts[1])}"
            if scheme == "cpi":
                return f"{DL_ROOT}/8010/{parts[0]}{_escape(parts[1])}"
            return None
        if kind == "class":
            if scheme == "lgtin":
                return f"{DL_ROOT}/01/{gtin(parts[0], parts[1])}/10/{_escape('.'.join(parts[2:]))}"
            return None
        if scheme == "sgtin":
            return f"{DL_ROOT}/01/{gtin(parts[0], parts[1])}/21/{_escape('.'.join(parts[2:]))}"
        if scheme == "sscc":
            ref = parts[1]
            return f"{DL_ROOT}/00/{key(ref[:1] + parts[0], ref[1:])}"
        if scheme == "sgln":
            gln = key(parts[0], parts[1])
            ext = ".".join(parts[2:])
            return f"{DL_ROOT}/414/{gln}" + (f"/254/{_escape(ext)}" if ext and ext != "0" else "")
        if scheme == "pgln":
            return f"{DL_ROOT}/417/{key(parts[0], parts[1])}"
        if scheme == "grai":
            return f"{DL_ROOT}/8003/0{key(parts[0], parts[1])}{_escape('.'.join(parts[2:]))}"
        if scheme == "giai":
            return f"{DL_ROOT}/8004/{parts[0]}{_escape('.'.join(parts[1:]))}"
        if scheme == "gsrn":
            return f"{DL_ROOT}/8018/{key(parts[0], parts[1])}"
        if scheme == "gsrnp":
            return f"{DL_ROOT}/8017/{key(parts[0], parts[1])}"
        if scheme == "gdti":
            return f"{DL_ROOT}/253/{key(parts[0], parts[1])}{_escape('.'.join(parts[2:]))}"
        if scheme == "sgcn":
            return f"{DL_ROOT}/255/{key(parts[0], parts[1])}{_escape('.'.join(parts[2:]))}"
        if scheme == "cpi":
            return f"{DL_ROOT}/8010/{parts[0]}{_escape(parts[1])}/8011/{_escape('.'.join(parts[2:]))}"
        if scheme == "ginc":
            return f"{DL_ROOT}/401/{parts[0]}{_escape('.'.join(parts[1:]))}"
        if scheme == "gsin":
            return f"{DL_ROOT}/402/{key(parts[0], parts[1])}"
        if scheme == "itip":
            return f"{DL_ROOT}/8006/{gtin(parts[0], parts[1])}{parts[2]}{parts[3]}/21/{_escape('.'.join(parts[4:]))}"
        if scheme == "upui":
            return f"{DL_ROOT}/01/{gtin(parts[0], parts[1])}/235/{_escape('.'.join(parts[2:]))}"
    except IndexError:
        return None
    return None


def constrain_dl(uri: str) -> str | None:
    """A GS1 Digital Link URI on id.gs1.org, without query, keeping only its finest identification level."""
    split = urlsplit(uri)
    if split.scheme not in ("http", "https") or not split.path:
        return None
    segments = split.path.strip("/").split("/")
    # Find the first primary key; anything before it is a custom path prefix of the resolver.
    for start in range(len(segments) - 1):
        ai = SHORT_NAMES.get(segments[start], segments[start])
        if ai in PRIMARY:
            break
    else:
        return None
    pairs: dict[str, str] = {}
    rest = segments[start:]
    if len(rest) % 2:
        return None
    for i in range(0, len(rest), 2):
        pairs.setdefault(SHORT_NAMES.get(rest[i], rest[i]), rest[i + 1])
    primary = SHORT_NAMES.get(rest[0], rest[0])
    out = f"{DL_ROOT}/{primary}/{pairs[primary]}"
    for q in QUALIFIERS.get(primary, ()):
        if q in pairs:
            out += f"/{q}/{pairs[q]}"
            break
    return out


@text_cache(maxsize=1 << 16)
def normalise_identifier(value: str) -> str | None:
    """The constrained canonical Digital Link of an EPC URN or a Digital Link URI; None for anything else.

    Cached: the same identifiers recur across the events of a capture (a case is packed, shipped and
    received), and the result depends on the text alone.
    """
    if value.startswith("urn:epc:"):
        return epc_urn_to_dl(value)
    if value.startswith(("http://", "https://")):
        return constrain_dl(value)
    return None
