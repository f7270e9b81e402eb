"""The domain contract: a package declares one :class:`Domain`; the core builds its command line from it.

A domain package exports ``DOMAIN`` from ``sa_<domain>/domain.py`` (entry-point group
``shared_attention.domains``) and points its console script at ``sa_<domain>.domain:main``. Everything the
declaration names is a ``"module:attribute"`` reference imported only when a command needs it, so
``sa-<domain> --help`` never imports torch.

The generated command line, the same flags and the same errors in every domain::

    sa-<domain> train    [--config NAME|FILE] [key.sub=value ...]
    sa-<domain> evaluate --run RUN [--data PATH] [--baseline RUN] [--json FILE] [--device D]
    sa-<domain> predict  INPUT [INPUT ...] [--out OUT] --run RUN [--device D]
    sa-<domain> convert  [SOURCE ...] --out RUN_DIR           (official weights -> a servable run folder)
    sa-<domain> sample   OUT [builder options ...]            (the offline sample set)

plus each domain's own options on those commands, its extra commands (ranking's ``validate``) and old verbs
kept as aliases (``separate``, ``score``). ``evaluate`` writes ``<run>/evaluation.json`` through
:class:`~shared_attention.evaluation.Evaluation`; ``convert`` always writes a run folder (``config.yaml``,
``metadata.json``, ``model.safetensors``) that ``predict`` and ``sa-serve`` load like a trained one.

Exit codes: 0 success, 1 some inputs failed (each named on stderr), 2 usage or input errors (one line
``error: ...`` naming the file or field).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "Argument",
    "Command",
    "Converted",
    "Domain",
    "arg",
    "build_parser",
    "resolve",
    "run_cli",
]


def resolve(ref: str) -> Any:
    """Imports a ``"module:attribute"`` reference (dotted attributes allowed); errors name the reference."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{ref!r}: expected 'module:attribute'")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise ImportError(f"{ref}: {module_name} has no attribute {attr!r}") from exc
    return obj


@dataclass(frozen=True)
class Argument:
    """One ``argparse`` argument: the flags and the keyword arguments of ``add_argument``."""

    flags: tuple[str, ...]
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        """Adds the argument to ``parser``."""
        parser.add_argument(*self.flags, **dict(self.kwargs))


def arg(*flags: str, **kwargs: Any) -> Argument:
    """Shorthand for :class:`Argument`: ``arg("--tile", type=int, default=0, help=...)``."""
    return Argument(tuple(flags), kwargs)


@dataclass(frozen=True)
class Command:
    """A domain's own sub-command (beyond train / evaluate / predict / convert / sample).

    Attributes:
        help: one line for ``--help``.
        run: ``"module:function"``; called with the parsed namespace, returns the exit code.
        arguments: its arguments.
    """

    help: str
    run: str
    arguments: tuple[Argument, ...] = ()


@dataclass
class Converted:
    """What a domain's ``convert`` function returns; the core writes it as a run folder.

    Attributes:
        model: the loaded model (its ``state_dict`` becomes ``model.safetensors``).
        config: the domain config (written to ``config.yaml``) that rebuilds ``model``.
        metadata: extra ``metadata.json`` entries (source file, official constructor arguments).
        summary: one line printed after writing.
        files: extra files to write into the run folder ``{name: bytes}``.
    """

    model: Any
    config: Any
    metadata: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    files: dict[str, bytes] = field(default_factory=dict)


Hook = Literal["train", "evaluate", "predict", "convert", "model"]


@dataclass(frozen=True)
class Domain:
    """A domain package's declaration; the core turns it into the CLI, run folders and evaluation files.

    Every ``str`` callable field is a ``"module:attribute"`` reference, imported only when used. Left empty,
    the conventional one is used (for ``name="medseg"``: package ``sa_medseg``, ``sa_medseg.config:MedsegConfig``,
    ``sa_medseg.models:build_model``, ``sa_medseg.task:MedsegTask``, ``sa_medseg.predictor:MedsegPredictor``,
    ``sa_medseg.evaluate:evaluate``, ``sa_medseg.domain:predict_one``, ``sa_medseg.sample:main``).

    Attributes:
        name: the domain (``"restoration"``): console script ``sa-<name>``, route ``/v1/<name>``.
        summary: one line for ``--help``.
        package: the import package (``"sa_restoration"``); its ``configs/`` folder holds the bundled YAMLs.
        config: the config dataclass (``<Domain>Config``) with a nested ``train`` section.
        build_model: ``build_model(cfg) -> nn.Module`` (in ``models/``).
        task: the ``TrainTask`` class, constructed as ``Task(cfg, **train_options)``.
        predictor: the ``Predictor`` class (``<Domain>Predictor``).
        evaluate: ``evaluate(predictor, data=None, baseline=None, **options) -> Evaluation``; ``options`` are
            the domain's evaluate arguments plus ``device`` and ``progress``.
        predict: ``predict_one(predictor, input: Path, out: Path | None, options) -> str``: writes the outputs of
            one input and returns the line to print; raises ``InputError`` for bad input.
        sample: ``main(argv) -> int`` of the offline sample-set builder (``sa-<name> sample``).
        convert: ``convert(options) -> Converted`` (official weights -> model + config).
        official: ``load_official`` (or one per family), documented in ``--help`` and the server's info.
        checkpoint: ``safetensors`` (rank-0 dense weights) or ``dcp`` (sharded torchrec tables).
        default_config: the bundled config ``train`` uses without ``--config``.
        train_runner: ``run(cfg, options) -> FitResult``-like; default: the engine's ``fit`` on ``task``.
        prepare_config: ``prepare(cfg) -> cfg`` applied after loading (e.g. placeholders in ``run_dir``).
        load_predictor: ``load(options) -> Predictor`` for model-selection options beyond ``--run``
            (official weights); default ``predictor.load(run, device=...)``.
        arguments: extra arguments per hook: ``train``, ``evaluate``, ``predict``, ``convert`` and ``model``
            (added to both evaluate and predict).
        predict_suffixes: file suffixes taken from a folder given to ``predict``.
        predict_needs_out: ``predict`` must write files (the last positional is the output when ``--out`` is
            absent); ``False``: output defaults to stdout.
        commands: extra sub-commands.
        aliases: old verbs kept as aliases (``{"separate": "predict"}``).
        flag_aliases: extra spellings of core flags (``{"--data": ("--dir",)}``).
        examples: the epilog of ``--help``.
        user_errors: extra exception types reported as one ``error:`` line with exit code 2.
        on_start: ``setup() -> None`` called before every command (e.g. quieting third-party logging).
    """

    name: str
    summary: str
    package: str = ""
    config: str = ""
    build_model: str = ""
    task: str = ""
    predictor: str = ""
    evaluate: str = ""
    predict: str = ""
    sample: str | None = ""
    convert: str | None = None
    official: str | None = None
    checkpoint: Literal["safetensors", "dcp"] = "safetensors"
    default_config: str = "cpu"
    train_runner: str | None = None
    prepare_config: str | None = None
    load_predictor: str | None = None
    arguments: Mapping[str, tuple[Argument, ...]] = field(default_factory=dict)
    predict_suffixes: tuple[str, ...] = ()
    predict_needs_out: bool = True
    commands: Mapping[str, Command] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)
    flag_aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    examples: str = ""
    user_errors: tuple[str, ...] = ()
    on_start: str | None = None

    def __post_init__(self) -> None:
        # the naming scheme is the default: a package that follows it declares only what is specific to it
        pkg = self.package or f"sa_{self.name}"
        cap = self.name[:1].upper() + self.name[1:]
        defaults = {
            "package": pkg,
            "config": f"{pkg}.config:{cap}Config",
            "build_model": f"{pkg}.models:build_model",
            "task": f"{pkg}.task:{cap}Task",
            "predictor": f"{pkg}.predictor:{cap}Predictor",
            "evaluate": f"{pkg}.evaluate:evaluate",
            "predict": f"{pkg}.domain:predict_one",
            "sample": f"{pkg}.sample:main",
        }
        for key, value in defaults.items():
            if getattr(self, key) == "":
                object.__setattr__(self, key, value)

    @property
    def prog(self) -> str:
        """The console script, ``sa-<name>``."""
        return f"sa-{self.name}"

    @property
    def config_dir(self) -> Path:
        """The package's bundled ``configs/`` folder (found without importing the package)."""
        import importlib.util

        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise ImportError(f"{self.package}: package not found")
        return Path(next(iter(spec.submodule_search_locations))) / "configs"

    def config_names(self) -> list[str]:
        """The bundled config names."""
        return sorted(p.stem for p in self.config_dir.glob("*.yaml") if not p.stem.startswith("_"))

    def load_config(self, name_or_path: str | Path | None = None, overrides: Sequence[str] = ()) -> Any:
        """A bundled config (or YAML path) with dotted overrides, then ``prepare_config``."""
        from .engine.config import load_bundled_config

        cfg = load_bundled_config(
            resolve(self.config), name_or_path or self.default_config, self.config_dir, list(overrides)
        )
        return resolve(self.prepare_config)(cfg) if self.prepare_config else cfg

    def main(self, argv: Sequence[str] | None = None) -> int:
        """The generated CLI's entry point (see :func:`run_cli`)."""
        return run_cli(self, argv)

    def _flags(self, *flags: str) -> list[str]:
        return [*flags, *(a for f in flags for a in self.flag_aliases.get(f, ()))]


# ------------------------------------------------------------------------------------------------- the CLI
def _options(ns: argparse.Namespace, hooks: Sequence[Hook], domain: Domain) -> dict[str, Any]:
    """The values of the domain's own arguments for ``hooks`` (by ``dest``)."""
    out: dict[str, Any] = {}
    probe = argparse.ArgumentParser(add_help=False)
    for hook in hooks:
        for a in domain.arguments.get(hook, ()):
            action = probe.add_argument(*a.flags, **dict(a.kwargs))
            out[action.dest] = getattr(ns, action.dest, None)
    return out


def _configure_logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


def _is_main_rank() -> bool:
    import os

    return int(os.environ.get("RANK", "0") or 0) == 0


def _cmd_train(domain: Domain, ns: argparse.Namespace) -> int:
    _configure_logging()
    cfg = domain.load_config(ns.config, [*ns.overrides, *(["train.restart=true"] if ns.restart else [])])
    options = _options(ns, ("train",), domain)
    if domain.train_runner:
        res = resolve(domain.train_runner)(cfg, options)
    else:
        from .engine import fit

        res = fit(resolve(domain.task)(cfg, **options), cfg.train, full_config=cfg)
    if _is_main_rank():
        m = getattr(res, "last_metrics", None) or {}
        shown = ", ".join(f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, int | float))
        best = getattr(res, "best_step", None)
        best_txt = f" (best step {best})" if best is not None else ""
        print(f"\nrun {res.run_dir}: step {res.step}{best_txt}" + (f": {shown}" if shown else ""))
    return 0


#: the ``--precision`` choices (``shared_attention.serving.PRECISIONS``, repeated here so building the CLI
#: imports no torch)
_PRECISIONS = ("fp32", "bf16")
_COMPILE_HELP = "run the model through torch.compile (the first input of each shape compiles; pays on some models)"


def _load_predictor(domain: Domain, ns: argparse.Namespace) -> Any:
    if domain.load_predictor:
        pred = resolve(domain.load_predictor)(ns)
    elif not getattr(ns, "run", None):
        raise ValueError("give --run RUN_DIR (a folder written by train or convert)")
    else:
        pred = resolve(domain.predictor).load(ns.run, device=ns.device)
    precision = getattr(ns, "precision", "fp32")
    if precision != "fp32":
        pred.set_precision(precision)
    if getattr(ns, "compile", False):
        pred.set_compile(True)
    return pred


def _cmd_evaluate(domain: Domain, ns: argparse.Namespace) -> int:
    pred = _load_predictor(domain, ns)
    options = _options(ns, ("evaluate",), domain)
    ev = resolve(domain.evaluate)(
        pred, data=ns.data, baseline=ns.baseline, device=ns.device, progress=not ns.no_progress, **options
    )
    precision = str(getattr(pred, "precision", "fp32"))
    ev.details["precision"] = precision
    if ev.report:
        print(ev.report)
    print(ev.headline() + ("" if precision == "fp32" else f" [{precision}]"))
    from .engine.checkpoint import atomic_write_text

    run = getattr(ns, "run", None)
    if run and precision == "fp32":
        print(f"wrote {ev.write(run)}")
    elif run:  # the run's evaluation.json stays the float32 one
        written = atomic_write_text(Path(run) / f"evaluation.{precision}.json", ev.to_json() + "\n")
        print(f"wrote {written}")
    if ns.json:
        atomic_write_text(Path(ns.json), ev.to_json() + "\n")
    return 0


def _split_out(domain: Domain, inputs: list[str], out: str | None) -> tuple[list[str], str | None]:
    """Old form ``predict IN OUT``: without ``--out`` the last positional is the output."""
    if out is None and domain.predict_needs_out:
        if len(inputs) < 2:
            raise ValueError("give the output with --out OUT (or as the last argument)")
        return inputs[:-1], inputs[-1]
    return inputs, out


def _expand(domain: Domain, inputs: Sequence[str]) -> list[Path]:
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir() and domain.predict_suffixes:
            found += sorted(c for c in p.iterdir() if c.is_file() and c.name.lower().endswith(domain.predict_suffixes))
        else:
            found.append(p)
    return found


def _cmd_predict(domain: Domain, ns: argparse.Namespace) -> int:
    from .serving import InputError

    inputs, out = _split_out(domain, list(ns.inputs), ns.out)
    pred = _load_predictor(domain, ns)
    options = _options(ns, ("predict",), domain)
    options["device"] = ns.device
    one = resolve(domain.predict)
    failed = 0
    for path in _expand(domain, inputs):
        if str(path) != "-" and not path.is_file():
            print(f"error: {path}: no such file", file=sys.stderr)
            failed += 1
            continue
        try:
            line = one(pred, path, Path(out) if out is not None and out != "-" else None, options)
        except InputError as exc:
            msg = str(exc)
            print(f"error: {msg if str(path) in msg else f'{path}: {msg}'}", file=sys.stderr)
            failed += 1
            continue
        if line:
            print(line, file=sys.stdout if out not in (None, "-") else sys.stderr)
    return 2 if failed else 0  # every failure above is the input's (named on stderr); internal errors raise


def write_run_folder(domain: Domain, out: str | Path, converted: Converted) -> Path:
    """Writes ``converted`` as a servable run folder: weights, ``config.yaml``, ``metadata.json``."""
    import json
    import time

    from .engine.checkpoint import MODEL_FILE, atomic_write_bytes, atomic_write_text, save_weights
    from .engine.config import dump_config

    fresh = resolve(domain.build_model)(converted.config)  # servable: the config must rebuild these weights
    try:
        fresh.load_state_dict(converted.model.state_dict(), strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"{out}: the converted weights do not fit the model its config builds ({first})") from exc
    run = Path(out)
    run.mkdir(parents=True, exist_ok=True)
    save_weights(run / MODEL_FILE, converted.model.state_dict(), {"source": "convert"})
    atomic_write_text(run / "config.yaml", dump_config(converted.config))
    io_spec = getattr(resolve(domain.predictor), "io_spec", None)
    meta: dict[str, Any] = {
        "task": domain.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "weights": "converted",
        **({"io": io_spec.to_dict()} if io_spec is not None else {}),
        **converted.metadata,
    }
    atomic_write_text(run / "metadata.json", json.dumps(meta, indent=2, default=str))
    for name, data in converted.files.items():
        atomic_write_bytes(run / name, data)
    return run


def _cmd_convert(domain: Domain, ns: argparse.Namespace) -> int:
    if not domain.convert:
        raise ValueError(f"{domain.prog} has no official checkpoints to convert")
    sources, out = list(ns.sources), ns.out
    if out is None:
        if not sources:
            raise ValueError("give the run folder to write with --out RUN_DIR")
        sources, out = sources[:-1], sources[-1]
    if str(out).endswith(".safetensors"):  # old form wrote a bare weights file: now a run folder beside it
        out = str(out)[: -len(".safetensors")]
        print(f"note: convert writes a run folder; writing {out}/", file=sys.stderr)
    options = _options(ns, ("convert",), domain)
    converted = resolve(domain.convert)(sources, **options)
    run = write_run_folder(domain, out, converted)
    print(f"{converted.summary or 'converted'} -> run folder {run}")
    return 0


def _cmd_sample(domain: Domain, ns: argparse.Namespace) -> int:
    if not domain.sample:
        raise ValueError(f"{domain.prog} has no sample-set builder")
    return int(resolve(domain.sample)(list(ns.args)))


def build_parser(domain: Domain) -> argparse.ArgumentParser:
    """The generated ``argparse`` parser of ``sa-<domain>`` (imports nothing heavy)."""
    ap = argparse.ArgumentParser(
        prog=domain.prog,
        description=domain.summary,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=domain.examples or None,
    )
    sub = ap.add_subparsers(dest="command", required=True)

    def extras(p: argparse.ArgumentParser, *hooks: Hook) -> None:
        for hook in hooks:
            for a in domain.arguments.get(hook, ()):
                a.add_to(p)

    def aliases_of(name: str) -> list[str]:
        return [a for a, target in domain.aliases.items() if target == name]

    t = sub.add_parser("train", help="train (resumes automatically from the run folder)")
    t.add_argument(
        "--config", default=None, help=f"bundled config name or YAML path (default: {domain.default_config})"
    )
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=1000")
    t.add_argument(
        "--restart",
        action="store_true",
        help="when the run folder's checkpoints are all unusable, train again from step 0 (else: stop)",
    )
    extras(t, "train")
    t.set_defaults(handler=_cmd_train)

    e = sub.add_parser("evaluate", help="score a run against its baseline; writes <run>/evaluation.json")
    e.add_argument("--run", help="run folder written by train or convert")
    e.add_argument(*domain._flags("--data"), dest="data", help="evaluation data (default: the run's config)")
    e.add_argument(*domain._flags("--baseline", "--baseline-run"), dest="baseline", help="a baseline run folder")
    e.add_argument("--json", help="also write the evaluation as JSON here")
    e.add_argument("--device", default="cpu")
    e.add_argument("--precision", choices=_PRECISIONS, default="fp32", help="run the model in bf16 autocast")
    e.add_argument("--compile", action="store_true", help=_COMPILE_HELP)
    e.add_argument("--no-progress", action="store_true", help="no progress bar")
    extras(e, "model", "evaluate")
    e.set_defaults(handler=_cmd_evaluate)

    p = sub.add_parser("predict", aliases=aliases_of("predict"), help="run the model on files or folders")
    p.add_argument("inputs", nargs="+", help="input files or folders (the output may come last, as in IN OUT)")
    p.add_argument("-o", "--out", help="output file or folder")
    p.add_argument("--run", help="run folder written by train or convert")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=_PRECISIONS, default="fp32", help="run the model in bf16 autocast")
    p.add_argument("--compile", action="store_true", help=_COMPILE_HELP)
    extras(p, "model", "predict")
    p.set_defaults(handler=_cmd_predict)

    if domain.convert:
        c = sub.add_parser("convert", help="official checkpoint -> a servable run folder (strict load check)")
        c.add_argument("sources", nargs="*", help="official checkpoint file(s) (the run folder may come last)")
        c.add_argument("--out", help="run folder to write")
        extras(c, "convert")
        c.set_defaults(handler=_cmd_convert)

    if domain.sample:
        s = sub.add_parser("sample", help="build the offline sample set (options: sa-<domain> sample OUT --help)")
        s.add_argument("args", nargs=argparse.REMAINDER, help="OUT folder and the builder's options")
        s.set_defaults(handler=_cmd_sample)

    for name, cmd in domain.commands.items():
        x = sub.add_parser(name, help=cmd.help)
        for a in cmd.arguments:
            a.add_to(x)
        x.set_defaults(handler=None, command_ref=cmd.run)
    return ap


def _user_errors(domain: Domain) -> tuple[type[BaseException], ...]:
    from .engine.checkpoint import CheckpointError
    from .engine.config import ConfigError

    base: list[type[BaseException]] = [FileNotFoundError, ValueError, ConfigError, CheckpointError]
    for ref in domain.user_errors:
        base.append(resolve(ref))
    return tuple(base)


def run_cli(domain: Domain, argv: Sequence[str] | None = None) -> int:
    """Parses ``argv`` for ``domain`` and runs the command.

    Returns:
        0 on success; 2 for usage, configuration, data, checkpoint or input errors the user can fix (one
        ``error: ...`` line naming the file or field; with several inputs, each bad one is named and the good
        ones are still processed); an internal error raises (Python's exit code 1, with its traceback).
    """
    ns = build_parser(domain).parse_args(argv)
    if domain.on_start:
        resolve(domain.on_start)()
    handler: Callable[[Domain, argparse.Namespace], int] | None = ns.handler
    try:
        if handler is None:
            return int(resolve(ns.command_ref)(ns))
        return int(handler(domain, ns))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - user errors become one line, anything else propagates
        if isinstance(exc, _user_errors(domain)):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise
