"""Commands generated from the contracts themselves: one per ``@transaction`` and ``@query`` method.

``liangcao contract <contract> <method>`` exists for every contract of the registry the node runs
(``liangcao.apps.bundle.default_registry``), with one option per field of the method's msgspec argument
type, and ``--args JSON`` for the whole object (options given beside it win); ``--help`` lists a contract's
methods and a method's arguments. ``liangcao scf <instrument> <method>`` is the same for the supply-chain
finance contracts, with their required fields as required options (``docs/scf.md``).

Built from each method's own argument type, so the CLI cannot drift from the contract: values are converted
by msgspec (``"100"`` becomes 100 where the field is an integer) and checked before anything is signed.
Methods marked ``internal`` (only other contracts call them) get no command.
"""

from __future__ import annotations

import inspect
import sys
import types
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from liangcao.cli.common import READER, Home, Reader, Signers, Url, fail, json_arg, json_object, query, submit

if TYPE_CHECKING:  # the registry imports every contract; the CLI builds its commands when it starts
    from typer import _click as click

    from liangcao.contracts.base import Contract, Method, Registry

#: Parameter names the generated commands use themselves; a field of the same name gets a prefix.
_RESERVED = frozenset({"home", "as_", "url", "args_json"})


class MethodGroup(TyperGroup):
    """A contract's methods: ``request_financing`` finds the command ``request-financing`` (the SDK's and the
    docs' spelling both work)."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name.replace("_", "-"))


def type_name(t: Any) -> str:
    """A field's type as a reader needs it: ``int``, ``str``, ``list of str``, ``object`` (a nested struct)."""
    import msgspec

    origin = typing.get_origin(t)
    if origin is Annotated:
        return type_name(typing.get_args(t)[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(t) if a is not type(None))
    # No square brackets: typer's help is rich markup, where "[int]" would vanish as a style tag.
    if origin is list:
        return f"list of {type_name(typing.get_args(t)[0])}"
    if origin is dict:
        key, value = typing.get_args(t)
        return f"map of {type_name(key)} to {type_name(value)}"
    if isinstance(t, type):
        return "object" if issubclass(t, msgspec.Struct) else t.__name__
    return str(t)


def _option_value(text: str, is_list: bool) -> Any:
    """A command-line value: JSON when it looks like JSON, a comma-separated list for list fields, else text."""
    if text[:1] in "[{":
        return json_arg(text, f"the value {text[:40]!r}")
    if is_list:
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def method_command(contract: str, method: Method, *, args_option: bool) -> Callable[..., None]:
    """A typer command for one contract method, with an option per argument field.

    ``args_option``: also take ``--args JSON`` (then no field option is required on the command line:
    a required field may come from either, and a missing one is named before anything is signed)."""
    import msgspec

    fields = msgspec.structs.fields(method.args_type)
    names = {f.name: (f"arg_{f.name}" if f.name in _RESERVED else f.name) for f in fields}
    kw_only = inspect.Parameter.KEYWORD_ONLY
    params: list[inspect.Parameter] = [inspect.Parameter("home", kw_only, annotation=Home)]
    for f in fields:
        is_list = "list" in str(f.type)
        kind = type_name(f.type)
        help_text = f"{kind}: a,b,c or JSON" if is_list else kind + (" (JSON)" if "object" in kind else "")
        required = f.required and not args_option
        if f.required and args_option:
            help_text += "; required (here or in --args)"
        option = typer.Option(f"--{f.encode_name.replace('_', '-')}", help=help_text)
        annotation = Annotated[str, option] if required else Annotated[str | None, option]
        default = inspect.Parameter.empty if required else None
        params.append(inspect.Parameter(names[f.name], kw_only, annotation=annotation, default=default))
    if args_option:
        args_opt = typer.Option("--args", help="the arguments as one JSON object (options given beside it win)")
        params.append(inspect.Parameter("args_json", kw_only, annotation=Annotated[str, args_opt], default="{}"))
    if method.kind == "transaction":
        params.append(inspect.Parameter("as_", kw_only, annotation=Signers, default=[]))
    else:
        params.append(inspect.Parameter("as_", kw_only, annotation=Reader, default=READER))
    params.append(inspect.Parameter("url", kw_only, annotation=Url, default=None))

    def command(**kw: Any) -> None:
        args: dict[str, Any] = json_object(kw["args_json"], "--args") if args_option else {}
        for f in fields:
            value = kw.get(names[f.name])
            if value is not None:
                args[f.encode_name] = _option_value(value, "list" in str(f.type))
        missing = [f.encode_name for f in fields if f.required and f.encode_name not in args]
        if missing:  # only with --args: otherwise the options themselves are required
            fail(
                f"{contract}.{method.name} needs "
                + ", ".join(f"--{m.replace('_', '-')}" for m in missing)
                + " (as options or in --args)"
            )
        try:
            typed = msgspec.convert(args, method.args_type, strict=False)
        except msgspec.ValidationError as exc:
            fail(f"invalid arguments for {contract}.{method.name}: {exc}")
        clean = msgspec.to_builtins(typed)
        if method.kind == "transaction":
            submit(kw["home"], contract, method.name, clean, kw["as_"], kw["url"], True)
        else:
            query(kw["home"], contract, method.name, clean, kw["as_"], kw["url"])

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = (
        (method.fn.__doc__ or f"{method.kind.capitalize()} {contract}.{method.name}.").strip().split("\n")[0]
    )
    return command


def contract_help(contract: Contract) -> str:
    """The first line of the contract module's docstring (what the contract is for)."""
    module_doc = sys.modules[type(contract).__module__].__doc__ or contract.name
    return module_doc.strip().split("\n")[0].replace("``", "")


def contract_app(contract: Contract, *, args_option: bool) -> typer.Typer:
    """A sub-app with one command per public method of ``contract``, sorted by name."""
    sub = typer.Typer(help=contract_help(contract), no_args_is_help=True, cls=MethodGroup)
    for method in sorted(contract.methods.values(), key=lambda m: m.name):
        if not method.internal:
            sub.command(method.name.replace("_", "-"))(method_command(contract.name, method, args_option=args_option))
    return sub


def contract_apps(registry: Registry) -> typer.Typer:
    """``liangcao contract``: a sub-app per contract of ``registry``, named as the contract is."""
    app = typer.Typer(
        help="Every contract's methods as commands: options per argument, or --args JSON.", no_args_is_help=True
    )
    for name in registry.names():
        contract = registry.get(name)
        if contract is not None:
            app.add_typer(contract_app(contract, args_option=True), name=name)
    return app


def family_app(registry: Registry, prefix: str, help_text: str) -> typer.Typer:
    """Sub-apps for the contracts named ``<prefix>.<name>``, each named ``<name>`` (``liangcao scf vouchers``)."""
    app = typer.Typer(help=help_text, no_args_is_help=True)
    for name in registry.names():
        contract = registry.get(name)
        if contract is not None and name.startswith(prefix + "."):
            app.add_typer(contract_app(contract, args_option=False), name=name.removeprefix(prefix + "."))
    return app
