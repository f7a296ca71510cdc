"""Port TigerBeetle's state-machine test tables to Python data: ``tests/tigerbeetle_tables.py``.

TigerBeetle's ``src/state_machine_tests.zig`` checks its state machine with tables: each ``check(...)``
block is a list of rows (create an account, create a transfer, set balances, let time pass, look things
up, commit a batch) with the expected outcome in the row. This script reads those blocks from a
TigerBeetle checkout (a git directory and a commit) and writes the rows as plain Python data, one dict
per row with TigerBeetle's field names, so ``test_payments_tigerbeetle.py`` can replay them against this
engine. Only the tables' data is carried over; none of TigerBeetle's code is.

The row grammar follows TigerBeetle's table parser (``src/testing/table.zig``): columns are separated by
spaces; ``_`` takes the column's default; a leading letter on an integer is a label (``A1`` is 1);
``-n`` in an unsigned column is the type's maximum minus ``n``; ``// ...`` ends a row.

    python tests/tigerbeetle_tables_port.py --git /path/to/tigerbeetle/.git --commit <sha>
"""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path
from typing import Any

# A column: (name, kind, default). kind: ("u", bits) / ("i", bits) / ("enum", names) / ("opt", kind) /
# ("struct", columns) / ("union", {variant: kind}) / ("bool",). default: _REQUIRED, or the default value.
_REQUIRED = object()
Column = tuple[str, Any, Any]


def U(bits: int) -> tuple[str, int]:
    return ("u", bits)


def flag(tag: str) -> tuple[str, Any]:
    return ("opt", ("enum", (tag,)))


_BALANCE = (U(128), 0)
_LOOKUP_DATA: list[Column] = [
    ("debits_pending", U(128), _REQUIRED),
    ("debits_posted", U(128), _REQUIRED),
    ("credits_pending", U(128), _REQUIRED),
    ("credits_posted", U(128), _REQUIRED),
    ("flag_closed", flag("CLSD"), None),
]
_ACCOUNT_FILTER: list[Column] = [
    ("account_id", U(128), _REQUIRED),
    ("user_data_128", ("opt", U(128)), None),
    ("user_data_64", ("opt", U(64)), None),
    ("user_data_32", ("opt", U(32)), None),
    ("code", ("opt", U(16)), None),
    ("timestamp_min_transfer_id", ("opt", U(128)), None),
    ("timestamp_max_transfer_id", ("opt", U(128)), None),
    ("limit", U(32), _REQUIRED),
    ("flags_debits", flag("DR"), None),
    ("flags_credits", flag("CR"), None),
    ("flags_reversed", flag("REV"), None),
]
_QUERY_FILTER: list[Column] = [
    ("user_data_128", U(128), _REQUIRED),
    ("user_data_64", U(64), _REQUIRED),
    ("user_data_32", U(32), _REQUIRED),
    ("ledger", U(32), _REQUIRED),
    ("code", U(16), _REQUIRED),
    ("timestamp_min_transfer_id", ("opt", U(128)), None),
    ("timestamp_max_transfer_id", ("opt", U(128)), None),
    ("limit", U(32), _REQUIRED),
    ("flags_reversed", flag("REV"), None),
]
_CHANGE_BALANCE: list[Column] = [
    ("account_id", U(128), _REQUIRED),
    ("debits_pending", U(128), _REQUIRED),
    ("debits_posted", U(128), _REQUIRED),
    ("credits_pending", U(128), _REQUIRED),
    ("credits_posted", U(128), _REQUIRED),
    ("closed", flag("CLSD"), None),
]
_OPERATIONS = (
    "create_accounts",
    "create_transfers",
    "lookup_accounts",
    "lookup_transfers",
    "get_account_transfers",
    "get_account_balances",
    "query_accounts",
    "query_transfers",
    "get_change_events",
)

ACTIONS: dict[str, Any] = {
    "setup": ("struct", [(n, U(128), _REQUIRED) for n in ("account", *(c[0] for c in _LOOKUP_DATA[:4]))]),
    "tick": ("struct", [("value", ("i", 64), _REQUIRED), ("unit", ("enum", ("nanoseconds", "seconds")), _REQUIRED)]),
    "commit": ("enum", _OPERATIONS),
    "account": (
        "struct",
        [
            ("id", U(128), _REQUIRED),
            ("debits_pending", U(128), 0),
            ("debits_posted", U(128), 0),
            ("credits_pending", U(128), 0),
            ("credits_posted", U(128), 0),
            ("user_data_128", U(128), 0),
            ("user_data_64", U(64), 0),
            ("user_data_32", U(32), 0),
            ("reserved", U(1), 0),
            ("ledger", U(32), _REQUIRED),
            ("code", U(16), _REQUIRED),
            ("flags_linked", flag("LNK"), None),
            ("flags_debits_must_not_exceed_credits", flag("D<C"), None),
            ("flags_credits_must_not_exceed_debits", flag("C<D"), None),
            ("flags_history", flag("HIST"), None),
            ("flags_imported", flag("IMP"), None),
            ("flags_closed", flag("CLSD"), None),
            ("flags_padding", U(10), 0),
            ("timestamp", U(64), 0),
            ("status", ("word",), _REQUIRED),
        ],
    ),
    "transfer": (
        "struct",
        [
            ("id", U(128), _REQUIRED),
            ("debit_account_id", U(128), _REQUIRED),
            ("credit_account_id", U(128), _REQUIRED),
            ("amount", U(128), 0),
            ("pending_id", U(128), 0),
            ("user_data_128", U(128), 0),
            ("user_data_64", U(64), 0),
            ("user_data_32", U(32), 0),
            ("timeout", U(32), 0),
            ("ledger", U(32), _REQUIRED),
            ("code", U(16), _REQUIRED),
            ("flags_linked", flag("LNK"), None),
            ("flags_pending", flag("PEN"), None),
            ("flags_post_pending_transfer", flag("POS"), None),
            ("flags_void_pending_transfer", flag("VOI"), None),
            ("flags_balancing_debit", flag("BDR"), None),
            ("flags_balancing_credit", flag("BCR"), None),
            ("flags_imported", flag("IMP"), None),
            ("flags_closing_debit", flag("CDR"), None),
            ("flags_closing_credit", flag("CCR"), None),
            ("flags_padding", U(5), 0),
            ("timestamp", U(64), 0),
            ("status", ("word",), _REQUIRED),
        ],
    ),
    "lookup_account": (
        "struct",
        [("id", U(128), _REQUIRED), ("data", ("opt", ("struct", _LOOKUP_DATA)), None)],
    ),
    "lookup_transfer": (
        "struct",
        [
            ("id", U(128), _REQUIRED),
            ("data", ("union", {"exists": ("bool",), "amount": U(128), "timestamp": U(64)}), _REQUIRED),
        ],
    ),
    "get_account_balances": ("struct", _ACCOUNT_FILTER),
    "get_account_balances_result": (
        "struct",
        [("transfer_id", U(128), _REQUIRED), *((c[0], U(128), _REQUIRED) for c in _LOOKUP_DATA[:4])],
    ),
    "get_account_transfers": ("struct", _ACCOUNT_FILTER),
    "get_account_transfers_result": U(128),
    "query_accounts": ("struct", _QUERY_FILTER),
    "query_accounts_result": (
        "struct",
        [("id", U(128), _REQUIRED), ("data", ("opt", ("struct", _LOOKUP_DATA)), None)],
    ),
    "query_transfers": ("struct", _QUERY_FILTER),
    "query_transfers_result": U(128),
    "get_change_events": (
        "struct",
        [
            ("timestamp_min_transfer_id", ("opt", U(128)), None),
            ("timestamp_max_transfer_id", ("opt", U(128)), None),
            ("limit", U(32), _REQUIRED),
        ],
    ),
    "get_change_events_result": (
        "struct",
        [
            ("event_type", ("opt", ("enum", ("PEN", "POS", "VOI", "EXP"))), None),
            ("timestamp_transfer", ("opt", U(128)), None),
            ("amount", U(128), _REQUIRED),
            ("transfer_pending_id", ("opt", U(128)), None),
            ("dr_account", ("struct", _CHANGE_BALANCE), _REQUIRED),
            ("cr_account", ("struct", _CHANGE_BALANCE), _REQUIRED),
        ],
    ),
}


class _Tokens:
    def __init__(self, words: list[str]) -> None:
        self.words = words
        self.at = 0

    def next(self) -> str:
        word = self.words[self.at]
        self.at += 1
        return word

    def peek(self) -> str:
        return self.words[self.at]


def _parse(kind: Any, tokens: _Tokens) -> Any:
    tag = kind[0]
    if tag == "opt":
        return _parse(kind[1], tokens)
    if tag == "enum":
        word = tokens.next()
        if word not in kind[1]:
            raise ValueError(f"{word!r} is not one of {kind[1]}")
        return word
    if tag == "word":
        return tokens.next()
    if tag == "bool":
        word = tokens.next()
        if word in ("0", "false", "F"):
            return False
        if word in ("1", "true", "T"):
            return True
        raise ValueError(f"not a boolean: {word!r}")
    if tag in ("u", "i"):
        word = tokens.next()
        body = word[1:] if word[0].isalpha() else word
        if tag == "u" and body.startswith("-"):
            return (1 << kind[1]) - 1 - int(body[1:])
        return int(body)
    if tag == "struct":
        out: dict[str, Any] = {}
        for name, sub, default in kind[1]:
            if default is not _REQUIRED and tokens.peek() == "_":
                tokens.next()
                out[name] = default
            else:
                out[name] = _parse(sub, tokens)
        return out
    if tag == "union":
        variant = tokens.next()
        return {variant: _parse(kind[1][variant], tokens)}
    raise ValueError(f"unknown column kind {kind!r}")


def parse_row(text: str) -> dict[str, Any]:
    words = text.split()
    if "//" in words:
        words = words[: words.index("//")]
    action = words[0]
    tokens = _Tokens(words[1:])
    value = _parse(ACTIONS[action], tokens)
    if tokens.at != len(tokens.words):
        raise ValueError(f"unparsed columns in {text!r}: {tokens.words[tokens.at :]}")
    row: dict[str, Any] = {"action": action}
    row.update(value if isinstance(value, dict) else {"value": value})
    union = row.get("data") if action == "lookup_transfer" else None
    row = _compact(row)
    if union is not None:
        row["data"] = union  # a union keeps its one variant, even at 0 or false
    return row


def _compact(row: dict[str, Any]) -> dict[str, Any]:
    """One short row: ``flags_*`` columns as a list of their tags, columns at 0 or null left out (the
    reader's default for a missing column is 0, or null where the column is optional)."""
    out: dict[str, Any] = {}
    flags = []
    for name, value in row.items():
        if isinstance(value, dict):
            value = _compact(value)
        if name.startswith("flags_") and name != "flags_padding":
            if value is not None:
                flags.append(value)
        elif isinstance(value, bool) or (value is not None and value != 0) or name in ("action", "value"):
            out[name] = value
    if flags:
        out["flags"] = flags
    return out


def tables_from_zig(source: str) -> list[dict[str, Any]]:
    """Every ``check(...)`` block, in order: its test name, its line, its rows."""
    tables = []
    test_name = ""
    lines = source.splitlines()
    k = 0
    while k < len(lines):
        m = re.match(r'\s*test "(.*)" \{', lines[k])
        if m:
            test_name = m.group(1)
        if re.match(r"\s*try check\($", lines[k]):
            start = k + 1
            rows = []
            k += 1
            while not re.match(r"\s*\);", lines[k]):
                stripped = lines[k].strip()
                if stripped.startswith("\\\\"):
                    text = stripped[2:].strip()
                    if text and not text.startswith("//"):
                        rows.append({"line": k + 1, **parse_row(text)})
                k += 1
            tables.append({"test": test_name, "line": start, "rows": rows})
        k += 1
    return tables


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--git", required=True, help="a TigerBeetle git directory")
    ap.add_argument("--commit", default="HEAD")
    ap.add_argument("--out", default=str(Path(__file__).with_name("tigerbeetle_tables.py")))
    args = ap.parse_args()
    sha = subprocess.run(
        ["git", "--git-dir", args.git, "rev-parse", args.commit], capture_output=True, text=True, check=True
    ).stdout.strip()
    source = subprocess.run(
        ["git", "--git-dir", args.git, "show", f"{sha}:src/state_machine_tests.zig"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    tables = tables_from_zig(source)
    rows = sum(len(t["rows"]) for t in tables)
    out = []
    for t in tables:
        out.append(f"    {{'test': {t['test']!r}, 'line': {t['line']}, 'rows': [\n")
        out.extend(f"        {row!r},\n" for row in t["rows"])
        out.append("    ]},\n")
    body = "[\n" + "".join(out) + "]"
    Path(args.out).write_text(
        '"""TigerBeetle\'s state-machine test tables as Python data (generated; do not edit).\n\n'
        f"Source: https://github.com/tigerbeetle/tigerbeetle, commit {sha},\n"
        f"src/state_machine_tests.zig: {len(tables)} tables, {rows} rows. Regenerate with\n"
        "``python tests/tigerbeetle_tables_port.py --git <tigerbeetle .git> --commit <sha>``.\n"
        '"""\n\n'
        "from typing import Any\n\n"
        f'SOURCE_COMMIT = "{sha}"\n'
        "# One row per line, as in the source tables.\n"
        "# fmt: off\n"
        f"TABLES: list[dict[str, Any]] = {body}\n"
        "# fmt: on\n"
    )
    print(f"{len(tables)} tables, {rows} rows from {sha} -> {args.out}")


if __name__ == "__main__":
    main()
