"""One reader for foreign (official research) checkpoints, and a strict load that explains a mismatch.

:func:`read_state_dict` turns a file, a folder of part files or an already loaded mapping into a flat
``{name: tensor}`` state dict:

1. read: ``.safetensors`` with safetensors; every other file (``.pth``, ``.pt``, ``.bin``, ``.ckpt``...) with
   ``torch.load(path, map_location="cpu", weights_only=True)``, never with ``weights_only=False``; a folder
   only when ``parts`` names its files (each part read like a file, its keys given the part's prefix);
2. unwrap: the first key of ``wrappers`` (in that order) whose value is a mapping replaces the checkpoint;
3. strip ``strip_prefixes`` (each once, in order), then ``rename``;
4. drop (or reject) the entries that are not tensors; optionally cast the floating-point tensors.

:func:`load_strict` is ``model.load_state_dict(state, strict=True)`` that, before touching the model, lists
the missing and unexpected keys and the shape mismatches in a :class:`ForeignCheckpointError` naming the
source. Tensors are never copied by the reader (a cast to the dtype they already have is a no-op), so
``load_strict(..., assign=True)`` on a model built on the ``meta`` device holds no second copy of the weights.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "DEFAULT_WRAPPERS",
    "ForeignCheckpointError",
    "StateMismatch",
    "call_repr",
    "compare_state",
    "load_strict",
    "read_state_dict",
]

#: Keys under which research code nests the weights, most specific first: BasicSR's EMA weights win over
#: its raw ones, and a ``state_dict`` / ``model`` entry over the checkpoint's other entries.
DEFAULT_WRAPPERS: tuple[str, ...] = ("params_ema", "params", "state_dict", "model_state_dict", "model", "net")

StateSource = str | os.PathLike[str] | Mapping[str, Any]
Rename = Callable[[str], str] | Sequence[tuple[str, str]]

_MAPPING_SOURCE = "<state dict>"


class ForeignCheckpointError(ValueError):
    """A foreign checkpoint cannot be read or does not fit the model; the message names the file and the problem."""


def _fail(source: str, problem: str) -> ForeignCheckpointError:
    return ForeignCheckpointError(f"{source}: {problem}")


def call_repr(name: str, kwargs: Mapping[str, Any]) -> str:
    """``name(k=v, ...)`` for messages, e.g. ``call_repr("HAT", {"upscale": 4}) == "HAT(upscale=4)"``."""
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"


def _torch_load_problem(exc: Exception) -> str:
    """A short account of a ``torch.load(weights_only=True)`` failure (without torch's weights_only=False advice)."""
    text = str(exc)
    unsafe = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if unsafe:
        return (
            f"it pickles the Python object {unsafe.group(1)}, and weights_only=True loading imports no code; "
            "re-save it as a plain state dict (in a trusted environment: torch.save(model.state_dict(), path), "
            "or keep only the tensor entries) or as .safetensors"
        )
    detail = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|$)", text, re.S)
    first = detail.group(1) if detail else text.strip().split("\n")[0]
    return f"not a readable torch checkpoint (truncated or corrupted?): {' '.join(first.split())}"


def _read_file(path: Path) -> Any:
    """The raw object of one checkpoint file (a dict of tensors for safetensors)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:  # SafetensorError (header, truncation), OSError
            raise _fail(str(path), f"cannot read checkpoint: not a readable safetensors file: {exc}") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, invalid pickle, forbidden globals, OSError
        raise _fail(str(path), f"cannot read checkpoint: {_torch_load_problem(exc)}") from exc


def _compile_rename(rename: Rename | None) -> Callable[[str], str] | None:
    if rename is None or callable(rename):
        return rename
    rules = [(re.compile(pattern), repl) for pattern, repl in rename]

    def apply(key: str) -> str:
        for pattern, repl in rules:
            key = pattern.sub(repl, key)
        return key

    return apply


def _flat_tensors(
    obj: Any,
    source: str,
    wrappers: Sequence[str],
    strip_prefixes: Sequence[str],
    drop_non_tensors: bool,
) -> tuple[dict[str, Tensor], str]:
    """Unwraps, strips prefixes and filters one loaded object; returns the tensors and the refined source."""
    if not isinstance(obj, Mapping):
        raise _fail(source, f"expected a dict of tensors, got {type(obj).__name__}")
    for wrapper in wrappers:
        inner = obj.get(wrapper)
        if isinstance(inner, Mapping):
            obj, source = inner, f"{source}['{wrapper}']"
            break
    out: dict[str, Tensor] = {}
    for k, v in obj.items():
        if not isinstance(v, Tensor):
            if drop_non_tensors:
                continue
            raise _fail(source, f"entry {k!r} is {type(v).__name__}, not a tensor (top-level keys: {list(obj)[:8]})")
        key = str(k)
        for prefix in strip_prefixes:
            key = key.removeprefix(prefix)
        if key in out:
            raise _fail(source, f"two entries become {key!r} once {list(strip_prefixes)} are stripped")
        out[key] = v
    if not out:
        nested = [str(k) for k, v in obj.items() if isinstance(v, Mapping)]
        more = f"; entries holding a dict: {nested[:8]} (name one in wrappers?)" if nested else ""
        raise _fail(source, f"holds no tensors (keys: {list(obj)[:8]}){more}")
    return out, source


def read_state_dict(
    src: StateSource,
    *,
    wrappers: Sequence[str] = DEFAULT_WRAPPERS,
    strip_prefixes: Sequence[str] = ("module.",),
    rename: Rename | None = None,
    drop_non_tensors: bool = True,
    dtype: torch.dtype | None = None,
    parts: Mapping[str, str] | None = None,
) -> tuple[dict[str, Tensor], str]:
    """Reads a foreign checkpoint into a flat state dict.

    Args:
        src: A checkpoint file, a folder of part files (with ``parts``), or an already loaded mapping.
        wrappers: Keys that may hold the real state dict. They are tried in this order and the first one
            present whose value is a mapping is used (one level), so the order decides which wins when a
            checkpoint has several (e.g. ``params_ema`` before ``params``). ``()`` disables unwrapping.
        strip_prefixes: Prefixes removed from every key, each at most once, in this order (``module.`` of
            DataParallel/DDP saves).
        rename: Applied to every key after stripping: a function, or ``(regex, replacement)`` pairs applied
            in order with :func:`re.sub`.
        drop_non_tensors: Silently drop entries that are not tensors (epoch counters, config dicts...);
            when ``False`` such an entry is an error.
        dtype: Cast the floating-point tensors to this dtype (integer and bool tensors are kept).
        parts: For a folder: ``{file name: key prefix}``, e.g. ``{"encoder.bin": "encoder."}``; every file
            is required and read like a single file (unwrapped, stripped, filtered), its keys prefixed, and
            the parts merged before ``rename``.

    Returns:
        ``(state dict, source)``; ``source`` names the file (with the wrapper used, e.g. ``"x.pth['params']"``),
        the folder, or ``"<state dict>"``, for messages.

    Raises:
        ForeignCheckpointError: Missing file or part, unreadable or truncated file, a checkpoint that needs
            arbitrary Python objects unpickled (refused: re-save it as a plain state dict), not a mapping,
            no tensors, a non-tensor entry with ``drop_non_tensors=False``, or two keys renamed alike.
    """

    def flatten(obj: Any, where: str) -> tuple[dict[str, Tensor], str]:
        return _flat_tensors(obj, where, wrappers, strip_prefixes, drop_non_tensors)

    state: dict[str, Tensor]
    if isinstance(src, Mapping):
        state, source = flatten(src, _MAPPING_SOURCE)
    else:
        path = Path(src)
        source = str(path)
        if path.is_dir():
            if not parts:
                raise _fail(source, "is a folder; expected a checkpoint file")
            lacking = [name for name in parts if not (path / name).is_file()]
            if lacking:
                raise _fail(source, f"folder lacks {lacking} (expects {list(parts)})")
            state = {}
            for name, prefix in parts.items():
                sub, _ = flatten(_read_file(path / name), str(path / name))
                state.update({f"{prefix}{k}": v for k, v in sub.items()})
        elif path.is_file():
            state, source = flatten(_read_file(path), source)
        else:
            raise _fail(source, "no such file or folder")
    renamer = _compile_rename(rename)
    if renamer is not None:
        renamed: dict[str, Tensor] = {}
        for k, v in state.items():
            new = renamer(k)
            if new in renamed:
                raise _fail(source, f"two entries are renamed to {new!r} (the last one: {k!r})")
            renamed[new] = v
        state = renamed
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    return state, source


@dataclass(frozen=True)
class StateMismatch:
    """How a state dict differs from a model's: keys in model order, shapes as ``(key, checkpoint, model)``."""

    missing: list[str]
    unexpected: list[str]
    shapes: list[tuple[str, tuple[int, ...], tuple[int, ...]]]

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shapes)

    def keys(self) -> list[str]:
        """Every key involved: missing, unexpected, then shape-mismatched."""
        return self.missing + self.unexpected + [k for k, _, _ in self.shapes]

    def describe(self, show: int = 5) -> list[str]:
        """One line per kind of problem (the first ``show`` keys each), one per shape mismatch."""
        lines = []
        if self.missing:
            lines.append(
                f"{len(self.missing)} missing key(s), in the model but not the checkpoint: {self.missing[:show]}"
            )
        if self.unexpected:
            lines.append(
                f"{len(self.unexpected)} unexpected key(s), checkpoint keys are unexpected by the model: "
                f"{self.unexpected[:show]}"
            )
        for key, theirs, ours in self.shapes[:show]:
            lines.append(f"shape mismatch {key!r}: checkpoint {list(theirs)} vs model {list(ours)}")
        if len(self.shapes) > show:
            lines.append(f"... and {len(self.shapes) - show} more shape mismatch(es)")
        return lines


def compare_state(expected: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> StateMismatch:
    """Compares a checkpoint ``state`` with a model's ``expected`` state dict (names and shapes)."""
    return StateMismatch(
        missing=[k for k in expected if k not in state],
        unexpected=[k for k in state if k not in expected],
        shapes=[
            (k, tuple(state[k].shape), tuple(v.shape))
            for k, v in expected.items()
            if k in state and tuple(state[k].shape) != tuple(v.shape)
        ],
    )


def load_strict(
    model: nn.Module,
    state: Mapping[str, Tensor],
    source: str,
    hint: str | Callable[[StateMismatch], str | None] | None = None,
    *,
    what: str | None = None,
    assign: bool = False,
    show: int = 5,
) -> None:
    """``model.load_state_dict(state, strict=True)`` with an error that says what does not fit.

    Args:
        model: The model to fill.
        state: The checkpoint's state dict, already in the model's names.
        source: The checkpoint's name for messages (as returned by :func:`read_state_dict`).
        hint: Appended to a mismatch error, e.g. ``"check upscale / variant"``; or a function of the
            :class:`StateMismatch` returning such a text (or ``None``).
        what: How the model is named in the error (default: its class name), e.g. ``call_repr("HAT", kwargs)``.
        assign: Assign the checkpoint tensors instead of copying them (a model built on ``meta``); then every
            parameter and buffer still on ``meta`` afterwards is an error.
        show: How many keys of each kind an error lists.

    Raises:
        ForeignCheckpointError: Naming the source, the first ``show`` missing and unexpected keys and shape
            mismatches (checkpoint vs model shape), and the hint. Nothing is loaded then.
    """
    mismatch = compare_state(model.state_dict(), state)
    if mismatch:
        lines = [f"{source}: the checkpoint does not fit {what or type(model).__name__}"]
        lines += [f"  {line}" for line in mismatch.describe(show)]
        extra = hint(mismatch) if callable(hint) else hint
        if extra:
            lines.append(f"  hint: {extra}")
        raise ForeignCheckpointError("\n".join(lines))
    model.load_state_dict(state, strict=True, assign=assign)
    if assign:
        left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if left:
            raise _fail(source, f"{len(left)} tensor(s) not set by the checkpoint (still on meta): {left[:show]}")
