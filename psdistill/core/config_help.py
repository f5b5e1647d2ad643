"""`--help` for a config dataclass: every dotted key with its type, default and help text.

The dataclasses are the single source of truth (psdistill.core.config), so the listing walks them: a
nested dataclass field becomes a section, each leaf one line `key  type  (default: value)`, then the
field's metadata "help" when it has one.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Sequence

HELP_FLAGS = ("-h", "--help")


def wants_help(argv: Sequence[str]) -> bool:
    return any(a in HELP_FLAGS for a in argv)


def config_help(cls, usage: str = "", values=None, values_from: str = "") -> str:
    """The text `--help` prints: `usage`, then the fields of dataclass `cls`, one per line. `values`: an
    instance of `cls` whose values are shown where they differ from the defaults (those of `values_from`,
    the config file the command runs without --config)."""
    lines = [usage.strip(), ""] if usage.strip() else []
    lines += ["Arguments: --config FILE.yaml (optional), then key=value overrides of these fields:", ""]
    if values is not None:
        lines[-1:-1] = [f"('{values_from}:' marks the value the command runs with, from that file, where it "
                        "differs from the default)"]
    lines += _fields(cls, "", values, values_from)
    return "\n".join(lines)


def _fields(cls, prefix: str, values=None, values_from: str = "") -> list[str]:
    hints = typing.get_type_hints(cls)
    lines = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        key, tp = prefix + f.name, hints[f.name]
        value = getattr(values, f.name) if values is not None else None
        if dataclasses.is_dataclass(tp):
            lines += _fields(tp, key + ".", value, values_from)
            continue
        default = _default(f)
        used = format_value(value) if values is not None else default
        lines.append(f"  {key}  {type_name(tp)}  (default: {default}" + (
            f"; {values_from}: {used})" if used != default else ")"))
        if f.metadata.get("help"):
            lines.append(f"      {f.metadata['help']}")
    return lines


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    return format_value(value)


def format_value(value) -> str:
    """A value as a YAML override writes it: true, null, a list."""
    if isinstance(value, tuple):
        value = list(value)  # as a YAML override writes it
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return repr(value)


def type_name(tp) -> str:
    """A type as a user writes its value: `int`, `float | null`, `list of str`, `one of 'a', 'b'`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("null" if a is type(None) else type_name(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple, Sequence, typing.Sequence) or tp in (list, tuple):
        items = [a for a in args if a is not Ellipsis]
        return "list" if not items else "list of " + " | ".join(type_name(a) for a in dict.fromkeys(items))
    if origin is dict or tp is dict:
        return "mapping"
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))
