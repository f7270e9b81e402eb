"""Configs of the restoration package: model variant, data folders, engine settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared_attention.engine import TrainConfig, load_bundled_config

__all__ = [
    "RestorationModelConfig",
    "RestorationDataConfig",
    "RestorationConfig",
    "SRModelConfig",
    "SRDataConfig",
    "SRConfig",
    "CONFIG_DIR",
    "load_sr_config",
]

CONFIG_DIR = Path(__file__).with_name("configs")


@dataclass(frozen=True)
class RestorationModelConfig:
    """Which HAT to build.

    Attributes:
        variant: ``hat-s``, ``hat``, ``hat-l`` or ``hat-cpu`` (small CPU config).
        upscale: 2, 3 or 4.
        overrides: constructor arguments that replace the variant's (official argument names).
    """

    variant: str = "hat-cpu"
    upscale: int = 2
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RestorationDataConfig:
    """Training and validation data.

    Attributes:
        train_gt_dir: HR images; degraded on the fly with MATLAB-style bicubic when ``train_lq_dir`` is empty.
        train_lq_dir: paired LR images (optional).
        val_gt_dir / val_lq_dir: paired validation set (``{scale}`` is replaced by the upscale factor).
        patch_size: LR training patch size.
        repeat: passes over the training images per epoch (small sets).
        max_val_images: evaluate on at most this many validation images (0: all).
    """

    train_gt_dir: str = "data/sr-sample/train/GT"
    train_lq_dir: str | None = None
    val_gt_dir: str = "data/sr-sample/test/GTmod{scale}"
    val_lq_dir: str = "data/sr-sample/test/LRbicx{scale}"
    patch_size: int = 48
    repeat: int = 20
    max_val_images: int = 0


@dataclass(frozen=True)
class RestorationConfig:
    """The whole restoration config (YAML files in ``sa_restoration/configs``)."""

    model: RestorationModelConfig = field(default_factory=RestorationModelConfig)
    data: RestorationDataConfig = field(default_factory=RestorationDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample_images: int = 2


#: deprecated names (one release)
SRModelConfig = RestorationModelConfig
SRDataConfig = RestorationDataConfig
SRConfig = RestorationConfig


def load_sr_config(
    name_or_path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> RestorationConfig:
    """Loads a config by bundled name (``hat-s-x4``, ``cpu-x2``...) or YAML path, then applies overrides."""
    return load_bundled_config(RestorationConfig, name_or_path, CONFIG_DIR, overrides)
