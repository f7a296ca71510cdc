"""``liangcao contract``: commands generated for every contract of the registry, checked against the registry
itself (so a new contract or method cannot lack its command) and run against a live node."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from typer.testing import CliRunner

from conftest import Live
from liangcao.apps.bundle import default_registry
from liangcao.cli import app

ENV = {"COLUMNS": "200"}


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env=ENV)


def test_every_public_method_of_every_contract_has_a_command_with_its_fields() -> None:
    registry = default_registry()
    listing = run("contract", "--help")
    assert listing.exit_code == 0
    for name in registry.names():
        contract = registry.get(name)
        assert contract is not None
        assert name in listing.output
        methods = run("contract", name, "--help")
        assert methods.exit_code == 0, methods.output
        for method in contract.methods.values():
            command = method.name.replace("_", "-")
            if method.internal:  # only other contracts call it: no command
                assert run("contract", name, command, "--help").exit_code != 0
                continue
            assert command in methods.output
            page = run("contract", name, command, "--help")
            assert page.exit_code == 0, page.output
            for field in msgspec.structs.fields(method.args_type):
                assert f"--{field.encode_name.replace('_', '-')}" in page.output
            assert "--args" in page.output and "--as" in page.output


def test_the_sdk_spelling_of_a_method_finds_its_command() -> None:
    assert run("contract", "scf.vouchers", "request_financing", "--help").exit_code == 0


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--args", '{"to": "org1/alice"}'], "needs --amount"),
        (["--args", "[1]"], "--args must be a JSON object"),
        (["--to", "org1/alice", "--amount", "ten"], "invalid arguments for demo.wallet.mint"),
    ],
)
def test_bad_arguments_are_named_before_anything_is_signed(args: list[str], words: str) -> None:
    # No network folder exists: the command must stop at the arguments, before it looks for keys or a node.
    r = run("contract", "demo.wallet", "mint", "--home", "/nonexistent", "--as", "org1/admin", *args)
    assert r.exit_code == 1
    assert words in r.output


def test_options_and_args_json_reach_the_contract(live: Live) -> None:
    home = str(live.home.root)
    r = run(
        "contract", "demo.wallet", "mint", "--home", home, "--as", "org1/admin", "--to", "org2/carol", "--amount", "40"
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["receipt"]["result"] == {"balance": 40}
    # Options beside --args win over its fields.
    r = run(
        "contract", "demo.wallet", "mint", "--home", home, "--as", "org1/admin",
        "--args", '{"to": "org2/carol", "amount": 1}', "--amount", "2",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    r = run("contract", "demo.wallet", "balance", "--home", home, "--args", '{"member": "org2/carol"}')
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {"balance": 42}


def test_a_refused_transaction_exits_2(live: Live) -> None:
    r = run(
        "contract", "demo.wallet", "transfer", "--home", str(live.home.root), "--as", "org2/alice",
        "--to", "org1/bob", "--amount", "1000000",
    )  # fmt: skip
    assert r.exit_code == 2, r.output
    assert json.loads(r.output)["receipt"]["code"] != 0
