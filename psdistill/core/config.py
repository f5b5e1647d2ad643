"""Typed configs from YAML plus `key=value` overrides: one dataclass is the single source of truth.

    cfg = parse_config(PipelineConfig, ["--config", "psdistill/pipeline/configs/demo.yaml", "distill.max_steps=50"])

YAML files and overrides feed the same dataclasses; an unknown key, a value of the wrong type or a
value the dataclass's own `__post_init__` rejects is a `ConfigError` naming the dotted key
(as HfArgumentParser/TrlParser do for flat configs; ours nest, which they do not support). A key a
dataclass has dropped is listed in its `REMOVED_KEYS` ({key: value -> replacement}), and the error
says what to write instead.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml

from psdistill.core.errors import ConfigError

T = TypeVar("T")


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    """Build dataclass `cls` from a (nested) dict, checking keys and types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    removed = getattr(cls, "REMOVED_KEYS", {})  # old key -> (its value -> what to write instead)
    kwargs = {}
    for key, value in data.items():
        if key in removed:
            raise ConfigError(f"{prefix}{key}: removed; write {prefix}{removed[key](value)} instead")
        if key not in fields:
            hint = difflib.get_close_matches(str(key), fields, n=1)
            raise ConfigError(f"{prefix}{key}: unknown key" + (f"; did you mean {prefix}{hint[0]}?" if hint else "")
                              + f" (known: {', '.join(fields)})")
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}")
    try:
        return cls(**kwargs)
    except ConfigError as e:
        # A nested dataclass reports its own field name; prefix it with where it sits.
        msg = str(e)
        raise ConfigError(msg if not prefix or msg.startswith(prefix) else f"{prefix}{msg}") from None
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {e}") from None


def _coerce(tp, value, key: str):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} matches none of {tp}")
    if dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else from_dict(tp, value, key + ".")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin in (list, tuple, Sequence, typing.Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        item = args[0] if args else Any
        items = [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 2e-5 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if tp is Path:
        return Path(value)
    return value


def to_dict(cfg) -> dict:
    """Plain dict (tuples as lists, Paths as strings) for saving next to every artifact."""
    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v) if f.init}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v
    return plain(cfg)


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config: file {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    return data


def apply_override(data: dict, override: str) -> None:
    """Set `a.b.c=value` in nested `data`; the value is parsed as YAML (so 3, 0.5, true, [1,2] work)."""
    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected key=value (e.g. distill.max_steps=100)")
    key, raw = override.split("=", 1)
    parts = key.strip().split(".")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part} is not a section")
    node[parts[-1]] = value


def parse_config(cls: type[T], argv: Sequence[str] | None = None) -> T:
    """`--config FILE.yaml` (optional) then `key=value` overrides, later ones winning."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    data: dict = {}
    overrides = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--config", "-c"):
            if i + 1 >= len(argv):
                raise ConfigError("--config: needs a file path")
            data = _merge(data, load_yaml(argv[i + 1]))
            i += 2
            continue
        if arg.startswith("--config="):
            data = _merge(data, load_yaml(arg.split("=", 1)[1]))
        elif arg.startswith("--") and "=" in arg:
            overrides.append(arg[2:])
        else:
            overrides.append(arg)
        i += 1
    for o in overrides:
        apply_override(data, o)
    return from_dict(cls, data)


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def save_config(cfg, path: str | Path) -> Path:
    path = Path(path)
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    if path.is_file() and path.read_text() == text:
        return path  # unchanged: a finished run on a read-only disk is read, not rewritten
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
