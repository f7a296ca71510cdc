"""``liangcao token``: bearer tokens a node's admin issues (``create``: read or write) and revokes."""

from __future__ import annotations

from typing import Annotated

import typer

from liangcao.cli.common import NODE_DIR, Home, NodeDir, console, fail, open_home

app = typer.Typer(help="Bearer tokens: read (the default) or write, and their revocation.", no_args_is_help=True)


@app.command("create")
def token_create(
    home: Home,
    member: Annotated[str, typer.Option(help="the member the token reads as, e.g. org1/alice")],
    days: Annotated[int, typer.Option(min=1, max=366)] = 30,
    scope: Annotated[
        str, typer.Option(help="read (the default), or write: also lets a custody node sign captures as the member")
    ] = "read",
    node_dir: NodeDir = NODE_DIR,
) -> None:
    """Issue a token (needs the node's token.secret: an admin's command)."""
    from liangcao.tokens import SCOPES

    if scope not in SCOPES:
        fail(f"--scope is one of: {', '.join(SCOPES)}")
    console.print(open_home(home, node_dir).auth().create(member, days, scope=scope), soft_wrap=True)


@app.command("revoke")
def token_revoke(
    home: Home,
    member: Annotated[str, typer.Option(help="the member whose tokens to void, e.g. org1/alice")],
    node_dir: NodeDir = NODE_DIR,
) -> None:
    """Void every token of a member issued until now; the running node refuses them and ends their streams."""
    at = open_home(home, node_dir).auth().revoke(member)
    console.print(f"tokens of {member} issued up to {at} ms are revoked; issue a new one with 'token create'")
