"""Configs of the medseg package: which network, which data, engine settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from shared_attention.engine import TrainConfig, load_bundled_config

__all__ = [
    "MedsegModelConfig",
    "MedsegDataConfig",
    "MedsegConfig",
    "CONFIG_DIR",
    "load_seg_config",
    "SegModelConfig",
    "SegDataConfig",
    "SegConfig",
]

CONFIG_DIR = Path(__file__).with_name("configs")


@dataclass(frozen=True)
class MedsegModelConfig:
    """Which network to build.

    Attributes:
        family: ``vmunet`` or ``paratranscnn``.
        variant: a named variant of the family (``vmunet-synapse``, ``vmunet-cpu``, ``paratranscnn``,
            ``paratranscnn-cpu``, ...; see ``sa_medseg.models``).
        in_chans: network input channels (3 as the official code; 1-channel slices are repeated).
        num_classes: classes including background.
        overrides: constructor arguments replacing the variant's (official argument names).
        resnet_weights: optional torchvision ResNet-34 state dict file for ParaTransCNN's CNN branch.
    """

    family: Literal["vmunet", "paratranscnn"] = "vmunet"
    variant: str = "vmunet-cpu"
    in_chans: int = 3
    num_classes: int = 3
    overrides: dict[str, Any] = field(default_factory=dict)
    resnet_weights: str | None = None


@dataclass(frozen=True)
class MedsegDataConfig:
    """Training and validation data.

    Attributes:
        train_format: ``npz`` (TransUNet ``train_npz`` slices), ``nifti`` (Synapse ``img``/``label``) or ``acdc``.
        train_dir / train_label_dir: training folder (and label folder for ``nifti``).
        val_format: ``h5`` (TransUNet ``test_vol_h5``), ``nifti`` or ``acdc``.
        val_dir / val_label_dir: validation volumes.
        windowing: intensity windowing of NIfTI volumes: ``ct`` (HU [-125, 275]), ``mr`` (percentiles), ``none``.
        class_names: names of the classes (index 0 = background).
        patch_size: training crop (H, W); multiples of 32 (VM-UNet) / 16 (ParaTransCNN).
        rot90_flip / rotate_deg / zoom: augmentations (probability, degrees, range).
        repeat: passes over the training slices per epoch.
        skip_empty: drop training slices without foreground.
        inference: ``slice`` (whole padded slice) or ``sliding`` (2D sliding window of ``patch_size``).
        max_val_volumes: evaluate on at most N volumes (0: all).
    """

    train_format: Literal["npz", "nifti", "acdc"] = "npz"
    train_dir: str = "data/seg-sample/train_npz"
    train_label_dir: str | None = None
    val_format: Literal["h5", "nifti", "acdc"] = "h5"
    val_dir: str = "data/seg-sample/val_vol_h5"
    val_label_dir: str | None = None
    windowing: Literal["ct", "mr", "none"] = "none"
    class_names: tuple[str, ...] = ("background", "grey_matter", "white_matter")
    patch_size: tuple[int, int] = (160, 160)
    rot90_flip: float = 0.0
    rotate_deg: float = 15.0
    zoom: tuple[float, float] = (0.9, 1.1)
    repeat: int = 8
    skip_empty: bool = False
    inference: Literal["slice", "sliding"] = "slice"
    max_val_volumes: int = 0


@dataclass(frozen=True)
class MedsegConfig:
    """The whole medseg config (YAML files in ``sa_medseg/configs``)."""

    model: MedsegModelConfig = field(default_factory=MedsegModelConfig)
    data: MedsegDataConfig = field(default_factory=MedsegDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    overlay_slices: int = 1


#: deprecated names (one release)
SegModelConfig = MedsegModelConfig
SegDataConfig = MedsegDataConfig
SegConfig = MedsegConfig


def load_seg_config(
    name_or_path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> MedsegConfig:
    """Loads a config by bundled name (``vmunet-cpu``, ``paratranscnn-synapse``...) or YAML path, then overrides."""
    return load_bundled_config(MedsegConfig, name_or_path, CONFIG_DIR, overrides)
