"""Configs as frozen dataclasses, loaded from YAML with dotted command-line overrides.

A config is a (possibly nested) frozen dataclass. Values come from, in increasing priority:
the dataclass defaults, a YAML file, and ``key.sub=value`` overrides. Override values are parsed with
``yaml.safe_load`` (so ``lr=1e-3``, ``milestones=[10,20]``, ``amp=bf16`` all work); nothing is ever
evaluated as code. Unknown keys and wrong types raise :class:`ConfigError` naming the file and field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")

__all__ = [
    "ConfigError",
    "config_to_dict",
    "dump_config",
    "load_bundled_config",
    "load_config",
    "parse_overrides",
    "replace",
    "resolve_config_path",
]


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the source and the field."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Checks ``value`` against the annotation ``tp`` and converts lists to tuples / dicts to dataclasses."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} does not match {_type_name(tp)}")
    if origin is typing.Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(get_args(tp))}")
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if dataclasses.is_dataclass(value) and isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return _build(tp, value, where)
    if origin in (tuple, Sequence, list) or tp in (tuple, list):
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item_tp = args[0] if args else Any
        return tuple(_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    return value


def _build(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], f"{where}.{name}" if where else name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """Parses ``["a.b=1", "c=[1,2]"]`` into a nested dict; values through ``yaml.safe_load``."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: cannot parse value: {exc}") from exc
        _set_dotted(tree, key, value)
    return tree


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML-safe dict of a config dataclass (tuples become lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, Mapping):
            return {str(k): plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


BASE_KEY = "base"


def _read_yaml_mapping(p: Path) -> dict[str, Any]:
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config: {exc}") from exc
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML: {exc}") from exc
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"{p}: top level must be a mapping, got {type(loaded).__name__}")
    return dict(loaded)


def _read_with_bases(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, dict[str, Any]]]:
    """``[(file, mapping), ...]`` from the innermost ``base:`` to ``path`` itself, ``base`` keys removed.

    ``base: NAME`` names a sibling ``NAME.yaml`` (a bundled config) or a path relative to the including file.
    """
    resolved = path.resolve()
    if resolved in seen:
        chain = " -> ".join(str(p) for p in (*seen, resolved))
        raise ConfigError(f"{path}: 'base' includes form a cycle: {chain}")
    loaded = _read_yaml_mapping(path)
    base = loaded.pop(BASE_KEY, None)
    if base is None:
        return [(path, loaded)]
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: field 'base' must name a config, got {base!r}")
    candidate = path.parent / base
    if candidate.suffix not in (".yaml", ".yml"):
        candidate = path.parent / f"{base}.yaml"
    if not candidate.is_file():
        raise ConfigError(f"{path}: base config {base!r} not found (looked for {candidate})")
    return [*_read_with_bases(candidate, (*seen, resolved)), (path, loaded)]


def load_config(
    cls: type[T],
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    base: T | None = None,
) -> T:
    """Builds a config dataclass from defaults, an optional YAML file and dotted overrides.

    Args:
        cls: the frozen dataclass type.
        path: YAML file whose top-level mapping matches ``cls``'s fields (missing fields keep defaults). A
            top-level ``base: NAME`` first loads ``NAME.yaml`` beside it (or a relative path), recursively;
            the file's own values then override the base's.
        overrides: ``"train.lr=3e-4"``-style strings, applied last.
        base: start from this instance instead of the defaults.

    Raises:
        ConfigError: naming the file (or "override") and the dotted field.
    """
    if base is None:
        try:
            base = cls()
        except TypeError:  # fields without defaults: they must come from the file or overrides
            base = None
    data: dict[str, Any] = config_to_dict(base) if base is not None else {}
    if path is not None:
        for p, loaded in _read_with_bases(Path(path)):
            try:
                _build(cls, _merge(data, loaded), "")  # validate each file on its own so errors name it
            except ConfigError as exc:
                raise ConfigError(f"{p}: {exc}") from exc
            data = _merge(data, loaded)
    if overrides:
        ov = parse_overrides(overrides)
        try:
            _build(cls, _merge(data, ov), "")
        except ConfigError as exc:
            raise ConfigError(f"override: {exc}") from exc
        data = _merge(data, ov)
    return _build(cls, data, "")


def resolve_config_path(name_or_path: str | Path | None, config_dir: str | Path) -> Path | None:
    """A YAML path, or the bundled config ``<config_dir>/<name>.yaml`` of a package; ``None`` stays ``None``.

    Raises:
        FileNotFoundError: neither a file nor a bundled name (the message lists the bundled names).
    """
    if name_or_path is None:
        return None
    p = Path(name_or_path)
    bundled = Path(config_dir) / f"{name_or_path}.yaml"
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    if bundled.exists():
        return bundled
    names = sorted(f.stem for f in Path(config_dir).glob("*.yaml") if not f.stem.startswith("_"))
    raise FileNotFoundError(f"config {str(name_or_path)!r}: no such file and not a bundled config {names}")


def load_bundled_config(
    cls: type[T], name_or_path: str | Path | None, config_dir: str | Path, overrides: Sequence[str] = ()
) -> T:
    """:func:`load_config` of a bundled config name (``cpu-x2``) or a YAML path, then dotted overrides."""
    return load_config(cls, resolve_config_path(name_or_path, config_dir), list(overrides))


def dump_config(cfg: Any) -> str:
    """The YAML text of a config (round-trips through :func:`load_config`)."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def replace(cfg: T, **changes: Any) -> T:
    """``dataclasses.replace`` with dotted keys: ``replace(cfg, **{"train.lr": 1e-3})``."""
    tree: dict[str, Any] = {}
    for key, value in changes.items():
        _set_dotted(tree, key, value)
    return _build(type(cfg), _merge(config_to_dict(cfg), tree), "")
