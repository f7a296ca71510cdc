"""The layer diagram is the import graph (``shared/ARCHITECTURE.md`` §2), and this test keeps it so.

In the spirit of TigerBeetle's ``tidy.zig``: the rule is enforced by code, not review. Every ``import`` in
``src/liangcao`` (including those inside functions and under ``TYPE_CHECKING``) is read with ``ast``; a module
may import only its own layer or a lower one; the SDK does not pull in the node; nothing imports a benchmark,
the demo or the simulator but the command line; the payments core stands beside the ledger, on the
foundations alone; and there is no cycle between modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "liangcao"

#: Lowest first. The first entry whose prefix matches a module names its layer.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "foundations",
        (
            "liangcao",  # the package itself: __version__
            "liangcao.encoding",
            "liangcao.codes",
            "liangcao.errors",
            "liangcao.limits",
            "liangcao.clock",
            "liangcao.domain",
            "liangcao.tokens",
            "liangcao.sessions",  # session tokens (HMAC): the checkout gateway and the credit service share the core
            "liangcao.procs",
            "liangcao.crypto",
        ),
    ),
    ("ledger", ("liangcao.ledger",)),
    ("libraries", ("liangcao.trace", "liangcao.shipping")),  # GS1 EPCIS, dangerous-goods rules: pure code
    ("runtime", ("liangcao.contracts",)),
    ("apps", ("liangcao.apps",)),
    ("ordering", ("liangcao.ordering",)),
    ("node", ("liangcao.node",)),
    (
        "interfaces",
        (
            "liangcao.api",
            "liangcao.web",
            "liangcao.client",
            "liangcao.witness",
            "liangcao.adapters",  # follow the ledger's events, pay through the payments core (house plan §11)
            "liangcao.network",
            "liangcao.testing",
            "liangcao.demo",
            "liangcao.bench",
            "liangcao.sim",
            "liangcao.cli",
        ),
    ),
]
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}
PAYMENTS = "liangcao.payments"
#: The consumer side (house plan §11) stands beside the ledger, like the payments core: each package may import
#: the foundations, itself and the consumer packages named here (and nothing of the ledger side).
CONSUMER: dict[str, tuple[str, ...]] = {
    "liangcao.flow": (),  # admission control: a library the gateway, the node's API and payments use
    "liangcao.authn": (),  # the WebAuthn relying party
    "liangcao.risk": (),  # features, rules, the online model
    "liangcao.credit": (PAYMENTS,),  # plans, lines and loans hold their money in the payments core
    "liangcao.checkout": (PAYMENTS, "liangcao.flow", "liangcao.authn", "liangcao.risk", "liangcao.credit"),
}
#: Who may import a consumer package besides the consumer side itself: the interfaces (the node's API uses
#: ``flow``; the command line mounts each package's commands; adapters pay through the payments core).
CONSUMER_USERS = ("interfaces",)


def beside(module: str) -> str | None:
    """The side package (payments or a consumer package) that holds ``module``, or None for the ledger side."""
    for prefix in (PAYMENTS, *CONSUMER):
        if within(module, prefix):
            return prefix
    return None


#: What only the command line (and each other) may import.
TOOLS = ("liangcao.demo", "liangcao.bench", "liangcao.sim")
#: The SDK runs in the caller's process: it must not load the node, ordering, the API or the tools.
SDK = ("liangcao.client",)
SDK_MAY = ("foundations", "ledger", "libraries", "runtime", "apps")


def module_of(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> str:
    best = ""
    for name, prefixes in LAYERS:
        for p in prefixes:
            if within(module, p) and len(p) > len(best):
                best, found = p, name
    if not best:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS")
    return found


def imports() -> dict[str, set[str]]:
    modules = {module_of(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in modules.items():
        deps: set[str] = set()
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for name in names:
                if within(name, "liangcao"):
                    while name not in modules and "." in name:
                        name = name.rsplit(".", 1)[0]
                    if name != mod:
                        deps.add(name)
        graph[mod] = deps
    return graph


GRAPH = imports()


def test_every_module_has_a_layer() -> None:
    for mod in GRAPH:
        if beside(mod) is None:
            layer_of(mod)


def test_no_upward_import() -> None:
    upward = [
        f"{mod} ({layer_of(mod)}) imports {dep} ({layer_of(dep)})"
        for mod, deps in GRAPH.items()
        if beside(mod) is None
        for dep in deps
        if beside(dep) is None and RANK[layer_of(dep)] > RANK[layer_of(mod)]
    ]
    assert upward == []


def test_the_consumer_side_stands_beside_the_ledger() -> None:
    wrong = []
    for mod, deps in GRAPH.items():
        home = beside(mod)
        for dep in deps:
            there = beside(dep)
            if home in CONSUMER:
                if there is None and layer_of(dep) != "foundations":
                    wrong.append(f"{mod} imports {dep}: the consumer side stands on the foundations")
                elif there is not None and there != home and there not in CONSUMER[home]:
                    wrong.append(f"{mod} imports {dep}: not among {home}'s allowed neighbours")
            elif there in CONSUMER and home is None and layer_of(mod) not in CONSUMER_USERS:
                wrong.append(f"{mod} ({layer_of(mod)}) imports {dep}: only the interfaces use the consumer side")
    assert wrong == []


def test_the_payments_core_stands_on_the_foundations_alone() -> None:
    wrong = [
        f"{mod} imports {dep}"
        for mod, deps in GRAPH.items()
        if within(mod, PAYMENTS)
        for dep in deps
        if not within(dep, PAYMENTS)
        and not within(dep, "liangcao.flow")  # the payments service admits work through the flow library
        and (beside(dep) is not None or layer_of(dep) != "foundations")
    ]
    assert wrong == []
    # The ledger side meets the payments core only through the interfaces (the CLI, adapters): never below them.
    assert not [m for m, deps in GRAPH.items() if beside(m) is None and layer_of(m) != "interfaces"
                and any(within(d, PAYMENTS) for d in deps)]  # fmt: skip


def test_the_sdk_does_not_pull_in_the_node() -> None:
    wrong = [
        f"{mod} imports {dep}"
        for mod, deps in GRAPH.items()
        if any(within(mod, s) for s in SDK)
        for dep in deps
        if not any(within(dep, s) for s in SDK) and (beside(dep) is not None or layer_of(dep) not in SDK_MAY)
    ]
    assert wrong == []


def test_nothing_imports_the_tools_but_the_command_line() -> None:
    wrong = [
        f"{mod} imports {dep}"
        for mod, deps in GRAPH.items()
        for dep in deps
        if any(within(dep, t) for t in TOOLS)
        and not within(mod, "liangcao.cli")
        and not any(within(mod, t) and within(dep, t) for t in TOOLS)  # a tool's own modules
    ]
    assert wrong == []


def test_no_cycle_between_modules() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(GRAPH.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert cycles == []


def test_the_house_plan_names_the_same_layers() -> None:
    plan = Path(__file__).resolve().parents[2] / "shared" / "ARCHITECTURE.md"
    text = plan.read_text()
    for folder in ("ledger/", "contracts/", "apps/", "ordering/", "node/", "api/", "cli/", "web/", "client/"):
        assert folder in text or folder.rstrip("/") in text, f"{folder} is not in the house plan's diagram"
