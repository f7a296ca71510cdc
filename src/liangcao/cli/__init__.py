"""The ``liangcao`` command line (typer + rich): one module per noun, assembled here.

Every command that can fail exits non-zero with a one-line reason; none prints a traceback for bad input,
and a fault of this machine (``liangcao.errors.Fault``: the store, the disk) is one line too (:func:`main`).
Options every noun shares (``--home``, ``--as``, ``--url``, ``--node``, ``--json``) are defined once, in
``liangcao.cli.common``.

=================  =========================================================================================
``network``        ``network.py``: ``init`` a network folder; ``up``/``status``/``add-org``/``down`` a consortium
``node``           ``node.py``: ``start`` a node, ``rebuild`` its state from its blocks
``token``          ``tokens.py``: ``create`` and ``revoke`` bearer tokens
``tx``, ``query``  ``tx.py``: any contract method by name, arguments as one JSON object
``contract``       ``contracts.py``: every contract's methods as commands, generated from the registry
``scf``            ``scf.py``: the supply-chain finance contracts' actions (the same generator)
``trace``          ``trace.py``: EPCIS 2.0 documents, capture, queries, histories, the capture benchmark
``dg``             ``dg.py``: sealed dangerous-goods declarations
``audit``          ``audit.py``: re-verify a ledger from genesis
``verify-proof``   ``verify_proof.py``: check a proof or a traceability bundle offline
``demo``           ``demo.py``: the demo consortium and scenario
``bench``          ``bench.py``: the node's (or a consortium's) benchmark
``sim``            ``sim.py``: the deterministic simulator over many seeds (``liangcao.sim``)
``pay``            ``liangcao.payments.cli``: the payments core, mounted as it is
``checkout``       ``liangcao.checkout.cli``: the checkout gateway and its surge simulator
``authn``          ``liangcao.authn.cli``: devices, payment confirmation, the WebAuthn benchmark
``risk``           ``liangcao.risk.cli``: the risk engine, its replay and benchmark
``credit``         ``liangcao.credit.cli``: installment plans, credit lines and merchant loans
``cover``          ``cover.py``: consumer cover insurance (products, policies, facts, claims, payouts)
``abs``            ``abs.py``: receivable asset-backed securities (pool, notes, waterfall, triggers)
=================  =========================================================================================
"""

from __future__ import annotations

import typer

from liangcao.cli import abs as abs_cli
from liangcao.cli import (
    audit,
    bench,
    contracts,
    cover,
    demo,
    dg,
    network,
    node,
    scf,
    sim,
    tokens,
    trace,
    tx,
    verify_proof,
)
from liangcao.cli.common import err

app = typer.Typer(
    help="liangcao: a consortium ledger for e-commerce fintech.", no_args_is_help=True, add_completion=False
)


def _assemble() -> None:
    # Commands first, then groups: typer lists them in this order in --help.
    app.command("tx")(tx.tx_cmd)
    app.command("query")(tx.query_cmd)
    app.command("audit")(audit.audit_cmd)
    app.command("verify-proof")(verify_proof.verify_proof_cmd)
    app.command("demo")(demo.demo_cmd)
    app.command("bench")(bench.bench_cmd)
    app.command("sim")(sim.sim_cmd)
    app.add_typer(network.app, name="network")
    app.add_typer(node.app, name="node")
    app.add_typer(tokens.app, name="token")

    from liangcao.apps.bundle import default_registry
    from liangcao.authn.cli import app as authn_app
    from liangcao.checkout.cli import app as checkout_app
    from liangcao.credit.cli import app as credit_app
    from liangcao.payments.cli import pay_app
    from liangcao.risk.cli import app as risk_app

    app.add_typer(pay_app, name="pay", no_args_is_help=True)
    app.add_typer(checkout_app, name="checkout")
    app.add_typer(authn_app, name="authn")
    app.add_typer(risk_app, name="risk")
    app.add_typer(credit_app, name="credit")
    registry = default_registry()
    app.add_typer(contracts.contract_apps(registry), name="contract")
    app.add_typer(scf.build(registry), name="scf")
    app.add_typer(trace.app, name="trace")
    app.add_typer(dg.app, name="dg")
    app.add_typer(cover.app, name="cover")
    app.add_typer(abs_cli.app, name="abs")


_assemble()


def main() -> None:
    """The ``liangcao`` entry point (``[project.scripts]``)."""
    from liangcao.errors import Fault

    try:
        app()
    except Fault as exc:  # this machine failed (the store, the disk): one clear line, not a traceback
        err.print(f"[red]error:[/] {exc.message}")
        raise SystemExit(1) from None


__all__ = ["app", "main"]
