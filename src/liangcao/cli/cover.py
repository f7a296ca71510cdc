"""``liangcao cover ...``: consumer cover insurance (``docs/cover.md``).

=============  ===============================================================================
``products``   ``publish``, ``withdraw``, ``show``, ``list`` (an insurer's products)
``capital``    ``pledge``, ``release``, ``show`` (reserves never exceed pledged capital)
``policies``   ``buy`` (the platform at checkout), ``show`` (with its claim and payout), ``expire``
``prices``     ``post`` (the platform's signed price feed), ``list`` (a day's posts)
``claims``     ``file`` (decided from the ledger's facts), ``review`` (held claims), ``flag`` (a shopper)
``payouts``    ``due`` (what the adapter has still to settle), ``adapter`` (run the payout adapter)
=============  ===============================================================================

Each action is generated from the ``cover`` contract's own argument types (``liangcao.cli.contracts``), so an
option per field, checked before anything is signed; ``payout-adapter`` is also a top-level command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from liangcao.apps.cover.contract import Cover
from liangcao.cli.common import Home, Url, fail, member_id, open_home
from liangcao.cli.contracts import MethodGroup, method_command

app = typer.Typer(
    help="Consumer cover: products, capital, policies, prices, claims, payouts.",
    no_args_is_help=True,
    add_completion=False,
)

#: group -> (command, contract method)
GROUPS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "products": ("An insurer's products.", [("publish", "publish"), ("withdraw", "withdraw"), ("show", "product"),
                                           ("list", "products")]),
    "capital": ("Pledged capital and the reserves against it.", [("pledge", "pledge_capital"),
                                                                  ("release", "release_capital"), ("show", "capital")]),
    "policies": ("Policies bought at checkout.", [("buy", "buy"), ("show", "policy"), ("expire", "expire"),
                                                  ("shopper", "shopper")]),
    "prices": ("The platform's signed price feed.", [("post", "post_price"), ("list", "prices")]),
    "claims": ("Claims decided from the ledger's facts.", [("file", "claim"), ("review", "review"),
                                                            ("flag", "flag")]),
    "payouts": ("Payments owed and recorded.", [("due", "due"), ("record-payout", "record_payout"),
                                                ("record-premium", "record_premium")]),
}  # fmt: skip


def _group(help_text: str, commands: list[tuple[str, str]]) -> typer.Typer:
    sub = typer.Typer(help=help_text, no_args_is_help=True, cls=MethodGroup)
    for name, method in commands:
        sub.command(name)(method_command(Cover.name, Cover.methods[method], args_option=False))
    return sub


def payout_adapter(
    home: Home,
    as_: Annotated[str, typer.Option("--as", help="the insurer's member that signs, e.g. org1/admin")],
    engine: Annotated[Path, typer.Option("--engine", help="the adapter's folder: its payments core and cursor")],
    url: Url = None,
    payments_url: Annotated[
        str | None, typer.Option("--payments-url", help="pay through this payments service, not the embedded core")
    ] = None,
    payments_token_file: Annotated[
        Path | None,
        typer.Option("--payments-token-file", help="the payments service's token (default: LIANGCAO_PAY_TOKEN)"),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="settle what is due and what the stream holds, then exit")
    ] = False,
) -> None:
    """Run the insurer's payout adapter: follow the ledger, pay through the payments core, record back."""
    from liangcao.adapters.payout import main

    open_home(home)  # a missing or wrong folder ends here with its reason
    member_id(as_)
    args = ["--home", str(home), "--as", as_, "--engine", str(engine)]
    if url:
        args += ["--url", url]
    if payments_url:
        args += ["--payments-url", payments_url]
    if payments_token_file:
        args += ["--payments-token-file", str(payments_token_file)]
    if once:
        args.append("--once")
    try:
        raise typer.Exit(main(args))
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))


for _name, (_help, _commands) in GROUPS.items():
    _sub = _group(_help, _commands)
    if _name == "payouts":
        _sub.command("adapter")(payout_adapter)
    app.add_typer(_sub, name=_name)
app.command("payout-adapter")(payout_adapter)
