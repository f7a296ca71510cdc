"""One registry names every result code and gives its HTTP status; nobody compares a result with a number."""

from __future__ import annotations

import re
from enum import IntEnum
from pathlib import Path

import pytest

from liangcao import codes
from liangcao.apps.bundle import default_registry
from liangcao.codes import Code

SRC = Path(__file__).resolve().parents[1] / "src" / "liangcao"


def _app_enums() -> list[type[IntEnum]]:
    default_registry()  # imports every application, which registers its codes
    import sys

    found = []
    for name, module in list(sys.modules.items()):
        if not name.startswith("liangcao.") or name.startswith("liangcao.payments"):
            continue
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, IntEnum) and value.__name__.endswith("Code"):
                found.append(value)
    return found


def test_every_code_enum_is_registered_once() -> None:
    enums = _app_enums()
    assert Code in enums and len(enums) >= 5
    for enum in enums:
        for member in enum:
            known = codes.info(int(member))
            assert known is not None and known.name == member.name, f"{enum.__name__}.{member.name} is not registered"


def test_a_number_cannot_be_claimed_twice() -> None:
    class Squatter(IntEnum):
        MINE = int(Code.BAD_SIGNATURE)

    with pytest.raises(ValueError, match="BAD_SIGNATURE"):
        codes.register(Squatter, "squatter")


def test_http_statuses_come_from_the_registry() -> None:
    assert codes.http_status(Code.NOT_FOUND) == 404 and codes.http_status(Code.INSUFFICIENT_SCOPE) == 403
    assert codes.http_status(Code.NOT_READY) == 503 and codes.http_status(Code.BAD_SIGNATURE) == 400
    assert codes.name_of(2101) == "NOT_PERMITTED" and codes.name_of(987654) == "CODE_987654"
    assert "STATUS" not in (SRC / "api" / "errors.py").read_text()


LITERAL = re.compile(r"""(\[["']code["']\]|\bcode)\s*(==|!=)\s*\d""")


def test_no_result_is_compared_with_a_number_literal() -> None:
    offenders = [
        f"{p.relative_to(SRC)}:{n}"
        for p in SRC.rglob("*.py")
        if "payments" not in p.parts  # the payments core has its own result enums and wire codes
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if LITERAL.search(line) and "status_code" not in line
    ]
    assert offenders == []
