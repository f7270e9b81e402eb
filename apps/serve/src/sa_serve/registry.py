"""Finds the installed domain predictors (entry points, loaded lazily) and builds them from run folders.

Discovery reads the ``shared_attention.predictors`` entry-point group without importing anything; a domain's
module is imported only when a model of that domain is requested. The built-in toy task of the core is added
explicitly (``BUILTIN``) so ``make demo``'s toy run can be served too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "BUILTIN",
    "DOMAIN_ENTRY_POINT_GROUP",
    "ENTRY_POINT_GROUP",
    "installed_domains",
    "ModelSource",
    "discover",
    "find_runs",
    "load_class",
    "parse_assignment",
]

ENTRY_POINT_GROUP = "shared_attention.predictors"
DOMAIN_ENTRY_POINT_GROUP = "shared_attention.domains"
BUILTIN: dict[str, str] = {"toy": "shared_attention.toy:PointerPredictor"}


def discover() -> dict[str, str]:
    """``{domain: "module:Class"}`` for every installed predictor (nothing is imported)."""
    found = dict(BUILTIN)
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.value
    return dict(sorted(found.items()))


def installed_domains() -> dict[str, str]:
    """``{domain: "module:DOMAIN"}`` of the installed :class:`~shared_attention.domain.Domain` declarations."""
    return {ep.name: ep.value for ep in metadata.entry_points(group=DOMAIN_ENTRY_POINT_GROUP)}


def load_class(target: str) -> type[Any]:
    """Imports ``"module:Class"``; errors name the target."""
    import importlib

    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{target!r}: expected 'module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"{target}: cannot import {module_name} ({exc})") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise ImportError(f"{target}: {module_name} has no attribute {attr!r}") from exc
    return obj


@dataclass(frozen=True)
class ModelSource:
    """Where one served model comes from: a run folder, official weights, or (tests, benches) a factory.

    Attributes:
        domain: the route name (``/v1/<domain>/predict``).
        run_dir: a finished run folder (``Predictor.load``).
        official: a weights file for ``Predictor.from_official(path, **official_kwargs)``.
        official_kwargs: constructor arguments for ``from_official`` (``variant=hat``, ``upscale=4`` ...).
        target: ``"module:Class"`` overriding the installed entry point (stand-ins for benches).
        factory: a callable returning a ready predictor (tests); takes precedence over the rest.
    """

    domain: str
    run_dir: str | None = None
    official: str | None = None
    official_kwargs: Mapping[str, Any] = field(default_factory=dict)
    target: str | None = None
    factory: Callable[[], Any] | None = None

    def describe(self) -> str:
        """One line for logs and ``/v1/info``."""
        if self.factory is not None:
            return f"factory {getattr(self.factory, '__qualname__', repr(self.factory))}"
        if self.official:
            return f"official weights {self.official}"
        if self.run_dir:
            return f"run folder {self.run_dir}"
        return f"{self.target} (no weights)"

    def to_json(self) -> dict[str, Any]:
        """Serialisable form for multi-process serving (factories cannot cross processes)."""
        if self.factory is not None:
            raise ValueError(f"{self.domain}: a factory source cannot be passed to --workers > 1")
        return {
            "domain": self.domain,
            "run_dir": self.run_dir,
            "official": self.official,
            "official_kwargs": dict(self.official_kwargs),
            "target": self.target,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ModelSource:
        """Inverse of :meth:`to_json`."""
        return cls(
            d["domain"], d.get("run_dir"), d.get("official"), dict(d.get("official_kwargs") or {}), d.get("target")
        )

    def load(self, device: str = "cpu") -> Any:
        """Builds the predictor (imports the domain package now)."""
        if self.factory is not None:
            return self.factory()
        target = self.target or discover().get(self.domain)
        if target is None:
            raise LookupError(f"no installed predictor for domain {self.domain!r}; installed: {sorted(discover())}")
        cls = load_class(target)
        if self.official:
            declared = installed_domains().get(self.domain)
            if declared is None or load_class(declared).official is None:
                raise ValueError(f"{self.domain}: the domain declares no official checkpoints")
            return cls.from_official(self.official, device=device, **dict(self.official_kwargs))
        if self.run_dir:
            return cls.load(self.run_dir, device=device)
        return cls()


def parse_assignment(text: str, what: str) -> tuple[str, str]:
    """``"DOMAIN=VALUE"`` -> (domain, value), with an error naming the option."""
    domain, sep, value = text.partition("=")
    if not sep or not domain or not value:
        raise ValueError(f"{what}: expected DOMAIN=VALUE, got {text!r}")
    return domain.strip(), value.strip()


def _coerce(value: str) -> Any:
    for conv in (int, float):
        try:
            return conv(value)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(value.lower(), value)


def parse_official(text: str) -> ModelSource:
    """``DOMAIN=PATH[,key=value...]`` -> a :class:`ModelSource` for official weights."""
    domain, rest = parse_assignment(text, "--official")
    path, *pairs = rest.split(",")
    kwargs: dict[str, Any] = {}
    for pair in pairs:
        k, sep, v = pair.partition("=")
        if not sep:
            raise ValueError(f"--official {text!r}: expected key=value after the path, got {pair!r}")
        kwargs[k.strip()] = _coerce(v.strip())
    return ModelSource(domain, official=path, official_kwargs=kwargs)


def find_runs(root: str | Path, installed: Mapping[str, str] | None = None) -> list[ModelSource]:
    """Run folders directly under ``root`` (e.g. ``runs/demo``) whose domain is installed.

    A folder's domain is its name (``restoration``) or the prefix before a dash (``toy-pointer`` -> ``toy``),
    checked against ``metadata.json``'s ``task``. Folders that are not finished runs are skipped.
    """
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"{base}: no such runs folder")
    installed = dict(installed if installed is not None else discover())
    out: list[ModelSource] = []
    for d in sorted(p for p in base.iterdir() if p.is_dir()):
        if not (d / "model.safetensors").is_file() or not (d / "metadata.json").is_file():
            continue
        try:
            task = str(json.loads((d / "metadata.json").read_text(encoding="utf-8")).get("task", ""))
        except (ValueError, OSError):
            task = ""
        for name in (d.name, d.name.split("-")[0], task, task.split("-")[0]):
            if name in installed and all(s.domain != name for s in out):
                out.append(ModelSource(name, run_dir=str(d)))
                break
    return out
