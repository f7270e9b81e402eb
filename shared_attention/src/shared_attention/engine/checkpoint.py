"""Run folders and atomic, verifiable checkpoints.

Layout of a run folder::

    runs/<domain>/<name>/
        config.yaml          resolved config (written at start)
        metadata.json        I/O spec, preprocessing, labels, versions, git commit
        model.safetensors    the weights to serve (best by the monitored metric, else the latest; EMA if used)
        metrics.csv, tb/     logs
        checkpoints/
            step_00000100/   model.safetensors, trainer_state.pt, manifest.json
            step_00000200/   ...

Every file is written to a temporary name in the same folder, flushed, fsynced and moved into place with
``os.replace``. A checkpoint folder is assembled under a temporary name and renamed only when complete;
its ``manifest.json`` lists the SHA-256 and size of every file, so truncation or corruption is detected
and :func:`find_resumable` falls back to the previous complete checkpoint. ``trainer_state.pt`` is read
with ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "CheckpointError",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "save_weights",
    "load_weights",
    "save_trainer_state",
    "load_trainer_state",
    "write_checkpoint",
    "verify_checkpoint",
    "list_checkpoints",
    "find_resumable",
    "CHECKPOINT_DIR",
    "MODEL_FILE",
    "STATE_FILE",
    "MANIFEST_FILE",
]

CHECKPOINT_DIR = "checkpoints"
MODEL_FILE = "model.safetensors"
STATE_FILE = "trainer_state.pt"
MANIFEST_FILE = "manifest.json"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated or corrupted; the message names the file."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Calls ``write(fileobj)`` on a temp file next to ``path`` and moves it into place atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Writes ``data`` to ``path`` atomically."""

    def write(fh: IO[bytes]) -> None:
        fh.write(data)

    return atomic_write(path, write)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Writes UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _contiguous_cpu(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    seen: dict[tuple[int, int], str] = {}  # (storage pointer, offset) -> first key
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"state dict entry {k!r} is {type(v).__name__}, not a tensor")
        t = v.detach().to("cpu").contiguous()
        key = (int(t.untyped_storage().data_ptr()), int(t.storage_offset()))
        if key in seen or t.untyped_storage().nbytes() != t.numel() * t.element_size():
            t = t.clone()  # safetensors refuses shared or partial storage
        seen[key] = k
        out[k] = t
    return out


def save_weights(
    path: str | Path, state: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> Path:
    """Saves a state dict as safetensors, atomically."""
    from safetensors.torch import save

    data = save(_contiguous_cpu(state), metadata=dict(metadata) if metadata else None)
    return atomic_write_bytes(path, data)


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Loads a safetensors file; raises :class:`CheckpointError` naming the file when it is unreadable."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read weights: {exc}") from exc
    try:
        state = load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a valid safetensors file (truncated or corrupted?): {exc}") from exc
    return {k: v.to(device) for k, v in state.items()}


def save_trainer_state(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Saves optimizer/scheduler/RNG/step state with ``torch.save``, atomically."""
    return atomic_write(path, lambda fh: torch.save(dict(state), fh))


def load_trainer_state(path: str | Path) -> dict[str, Any]:
    """Loads trainer state with ``weights_only=True``; :class:`CheckpointError` names the file on failure."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: trainer state file is missing")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, zipfile errors...
        raise CheckpointError(f"{path}: cannot load trainer state (truncated or corrupted?): {exc}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: trainer state is {type(state).__name__}, expected a dict")
    return state


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_checkpoint(
    run_dir: str | Path,
    step: int,
    model_state: Mapping[str, torch.Tensor],
    trainer_state: Mapping[str, Any],
    keep: int = 2,
) -> Path:
    """Writes ``checkpoints/step_XXXXXXXX/`` completely, then renames it into place.

    Keeps the newest ``keep`` complete checkpoints (``keep <= 0`` keeps all).
    """
    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".step_{step:08d}.", dir=root))
    try:
        save_weights(tmp / MODEL_FILE, model_state)
        save_trainer_state(tmp / STATE_FILE, trainer_state)
        files = {
            name: {"sha256": _sha256(tmp / name), "bytes": (tmp / name).stat().st_size}
            for name in (MODEL_FILE, STATE_FILE)
        }
        atomic_write_text(tmp / MANIFEST_FILE, json.dumps({"step": step, "files": files}, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep > 0:
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def verify_checkpoint(ckpt_dir: str | Path) -> None:
    """Checks a checkpoint folder against its manifest; raises :class:`CheckpointError` naming the bad file."""
    ckpt_dir = Path(ckpt_dir)
    manifest_path = ckpt_dir / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{manifest_path}: missing or unreadable checkpoint manifest: {exc}") from exc
    for name, info in files.items():
        path = ckpt_dir / name
        if not path.is_file():
            raise CheckpointError(f"{path}: file listed in the manifest is missing")
        size = path.stat().st_size
        if size != info["bytes"]:
            raise CheckpointError(f"{path}: truncated or wrong size ({size} bytes, manifest says {info['bytes']})")
        if _sha256(path) != info["sha256"]:
            raise CheckpointError(f"{path}: checksum mismatch (corrupted)")


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint folders of a run, oldest first (complete or not; temporaries excluded)."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith("step_"):
            try:
                found.append((int(p.name[5:]), p))
            except ValueError:
                continue
    return [p for _, p in sorted(found)]


def find_resumable(run_dir: str | Path) -> tuple[Path, dict[str, torch.Tensor], dict[str, Any]] | None:
    """The newest checkpoint that verifies and loads, with its weights and trainer state.

    Broken checkpoints are reported with a warning naming the file and skipped, falling back to older ones.
    Returns ``None`` when there is no usable checkpoint.
    """
    for ckpt in reversed(list_checkpoints(run_dir)):
        try:
            verify_checkpoint(ckpt)
            weights = load_weights(ckpt / MODEL_FILE)
            state = load_trainer_state(ckpt / STATE_FILE)
        except CheckpointError as exc:
            logger.warning("skipping unusable checkpoint: %s", exc)
            continue
        return ckpt, weights, state
    return None
