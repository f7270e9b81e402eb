"""Configs of the restoration package: model variant, data folders, engine settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared_attention.engine import OptimConfig, ScheduleConfig, TrainConfig, load_bundled_config

__all__ = ["SRModelConfig", "SRDataConfig", "SRConfig", "CONFIG_DIR", "load_sr_config"]

CONFIG_DIR = Path(__file__).with_name("configs")


@dataclass(frozen=True)
class SRModelConfig:
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
class SRDataConfig:
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


def _default_train() -> TrainConfig:
    return TrainConfig(
        run_dir="runs/restoration/hat-cpu-x2",
        max_steps=4000,
        batch_size=8,
        eval_batch_size=1,
        eval_every=500,
        checkpoint_every=500,
        log_every=50,
        monitor="psnr_y",
        monitor_mode="max",
        ema_decay=0.99,
        optim=OptimConfig(name="adam", lr=5e-4, betas=(0.9, 0.99)),
        schedule=ScheduleConfig(name="multistep", milestones=(2000, 3000, 3500), gamma=0.5),
    )


@dataclass(frozen=True)
class SRConfig:
    """The whole restoration config (YAML files in ``sa_restoration/configs``)."""

    model: SRModelConfig = field(default_factory=SRModelConfig)
    data: SRDataConfig = field(default_factory=SRDataConfig)
    train: TrainConfig = field(default_factory=_default_train)
    sample_images: int = 2


def load_sr_config(name_or_path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> SRConfig:
    """Loads a config by bundled name (``hat-s-x4``, ``cpu-x2``...) or YAML path, then applies overrides."""
    return load_bundled_config(SRConfig, name_or_path, CONFIG_DIR, overrides)
