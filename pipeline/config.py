"""The run config: YAML and `--set` overrides parsed into typed, frozen dataclasses.

Parsing is strict: an unknown key, a value of the wrong type or a value outside
its allowed set is a `ConfigError` (a ValueError) that names the key, the value
and what is allowed. Names that live in registries (activation, loss, optimizer,
data set) and the model's shapes are checked by `pipeline.spec.validate`, which
`load_config` runs before anything trains.

The dataclasses live in `pipeline.schema`, below every module that reads them;
they are re-exported here because this is where callers find the config.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from pipeline.schema import (
    BLOCK_TYPES,
    ActivationSpec,
    AugmentSpec,
    Block,
    ConfigError,
    ConvSpec,
    DataSpec,
    DropoutSpec,
    EarlyStoppingSpec,
    HeadSpec,
    LossSpec,
    ModelSpec,
    OptimizerSpec,
    PoolSpec,
    RunConfig,
    ScalingSpec,
    ScheduleSpec,
    TrainingSpec,
)

__all__ = [
    "ActivationSpec",
    "AugmentSpec",
    "Block",
    "ConfigError",
    "ConvSpec",
    "DataSpec",
    "DropoutSpec",
    "EarlyStoppingSpec",
    "HeadSpec",
    "LossSpec",
    "ModelSpec",
    "OptimizerSpec",
    "PoolSpec",
    "RunConfig",
    "ScalingSpec",
    "ScheduleSpec",
    "TrainingSpec",
    "apply_override",
    "load_config",
    "parse_config",
    "read_config_file",
    "resolve_root",
]


def parse_config(data: Any, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Parse a mapping (from YAML or JSON) plus `key=value` overrides into a RunConfig."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping at the top, got {type(data).__name__}")
    try:
        data = json.loads(json.dumps(data))  # a deep copy we may change
    except (TypeError, ValueError, RecursionError) as exc:  # dates, bytes, sets, cycles (YAML)
        raise ConfigError(
            f"config: {exc}; values must be strings, numbers, booleans, lists or mappings"
        ) from None
    for item in overrides:
        apply_override(data, item)
    cfg = _build(RunConfig, data, "")
    return dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, root=resolve_root(cfg.data.root))
    )


def resolve_root(root: str | None) -> str | None:
    """`data.root` as an absolute path (`~` expanded, a relative one joined to the cwd),
    or a URI kept as it is (file:///PATH becomes the path).

    Done where the config enters (the driver), so the dict sent to Ray workers, which
    start in another directory, carries the absolute path; an absolute one stays as it
    is, so parsing the resolved dict again gives the same config. A URI must not carry
    credentials (user info or secret query options): the resolved config is written to
    config.json, so they come from the environment instead.
    """
    if root is None:
        return None
    if not root.strip():
        raise ConfigError(f"data.root: {root!r} is not allowed; must be a folder path or null")
    if "://" in root:
        return _data_uri(root)
    path = os.path.expanduser(root)
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(os.getcwd(), path))


SECRET_OPTIONS = ("access_key", "secret_key", "session_token", "password", "token", "credential")


def _data_uri(root: str) -> str:
    from urllib.parse import parse_qsl, urlparse

    from runstore.location import StoreLocation, redact

    try:
        location = StoreLocation.parse(root)
    except ValueError as exc:
        raise ConfigError(f"data.root: {exc}") from None
    if location.is_local:
        return location.uri
    parsed = urlparse(location.uri)
    secret = [k for k, _ in parse_qsl(parsed.query) if any(s in k.lower() for s in SECRET_OPTIONS)]
    if "@" in parsed.netloc or secret:
        raise ConfigError(
            f"data.root: {redact(location.uri)} carries credentials in the URI, which would be "
            "written to config.json; give them in the environment instead "
            "(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS, ...)"
        )
    return location.uri


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML config, apply overrides, and check it fully (names, shapes)."""
    cfg = parse_config(read_config_file(path), overrides)
    # The checks build the model and the registries, which import torch: only when loading,
    # so that parsing stays light. pipeline.spec never imports this module (no circle).
    from pipeline.spec import validate

    validate(cfg)
    return cfg


def read_config_file(path: str | Path) -> Any:
    """A config file's YAML as plain data; every way it can be unreadable is a ConfigError
    naming the file (sweeps and the demo read the mapping, then expand it)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: a date like 2001-02-31
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a run config") from None
    return data


def _yaml_problem(exc: Exception) -> str:
    """PyYAML's error on one line: the problem and where (its own text spans several)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if problem and mark is not None:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply one `dotted.key=value` override; the value is read as YAML (1, 0.1, true, [a, b])."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r}: expected key=value, e.g. optimizer.name=adam")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except (yaml.YAMLError, ValueError):  # ValueError: a date like 2001-02-31
        value = raw
    except RecursionError:
        raise ConfigError(f"override {key!r}: the value is nested too deeply") from None
    parts = key.split(".")
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            node = node[_index(node, part, where)]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"override {key!r}: {where} is not a section")
        node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        node[_index(node, last, key)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"override {key!r}: its parent is not a section")


def _index(items: list[Any], part: str, where: str) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise ConfigError(f"override {where!r}: index must be 0..{len(items) - 1}")
    return int(part)


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}unknown key {unknown[0]!r}; allowed: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{path}.{name}" if path else name
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: required")
    return cls(**kwargs)


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = get_origin(tp)
    args = get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if all(dataclasses.is_dataclass(a) for a in options) and len(options) > 1:
            return _build_block(value, key)
        errors = []
        for option in options:
            try:
                return _convert(option, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(
            errors[-1]
            if len(options) == 1
            else f"{key}: {value!r} is not " + " or ".join(_type_name(o) for o in options)
        )
    if origin is Literal:
        if value not in args:
            raise ConfigError(
                f"{key}: {value!r} is not allowed; allowed: " + ", ".join(str(a) for a in args)
            )
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(
            _convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if tp is ActivationSpec and isinstance(value, str):
        return ActivationSpec(name=value)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)  # type: ignore[arg-type]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"config type {tp!r} of {key} is not supported")  # a bug, not user input


def _build_block(value: Any, key: str) -> Any:
    if not isinstance(value, dict) or "type" not in value:
        raise ConfigError(f"{key}: a block is a mapping with type one of {', '.join(BLOCK_TYPES)}")
    kind = value["type"]
    if kind not in BLOCK_TYPES:
        raise ConfigError(f"{key}.type: {kind!r} is not allowed; allowed: {', '.join(BLOCK_TYPES)}")
    return _build(BLOCK_TYPES[kind], value, key)


def _type_name(tp: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))
