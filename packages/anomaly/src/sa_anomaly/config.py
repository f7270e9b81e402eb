"""Configs of the anomaly package: model, data, loss and engine settings (YAML files in ``configs/``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from shared_attention.engine import TrainConfig, load_bundled_config

__all__ = [
    "AnomalyModelConfig",
    "AnomalyDataConfig",
    "AnomalyLossConfig",
    "AnomalyConfig",
    "CONFIG_DIR",
    "load_ad_config",
    "ADModelConfig",
    "ADDataConfig",
    "ADLossConfig",
    "ADConfig",
]

CONFIG_DIR = Path(__file__).with_name("configs")


@dataclass(frozen=True)
class AnomalyModelConfig:
    """The detector.

    Attributes:
        backbone: timm model name. backbone_weights: ``efficientnet-lite0-package`` (offline default), a
            weights file for the backbone, or ``null`` (random: tests only).
        out_indices: feature levels. pool_size: average pooling of the features (3 in FOD).
        image_size: square network input. d_models: transformer width per level.
        n_heads / n_layers / ffn_scale: transformer shape (official: 8 / 3 / 4).
        use_out_projection: apply the attention output projection (the official code discards it).
        intra_exclude_radius: hide each token's own ``(2 r + 1)^2`` neighbourhood from FOD's intra attention
            (UniAD's neighbour masking, so reconstructions come from context; 0 = the official attention).
        score: FOD's anomaly score: ``official`` (reconstruction x inter-correlation discrepancy) or
            ``whitened_residual`` (Mahalanobis norm of the reconstruction residual under its statistics on the
            training images, fitted after training; see :class:`~sa_anomaly.models.fod.FODAnomalyModel`).
        arch: ``fod`` (trained heads) or ``patchcore`` (a coreset memory bank of the frozen features; no
            gradient training: ``train`` fits the bank in one pass).
        coreset_ratio / projection_dim / num_neighbors / target_dim: PatchCore's bank share, coreset projection,
            image-score reweighting neighbours and optional channel reduction (see
            :class:`~sa_anomaly.models.patchcore.PatchCoreModel`).
    """

    arch: Literal["fod", "patchcore"] = "fod"
    backbone: str = "efficientnet_lite0"
    backbone_weights: str | None = "efficientnet-lite0-package"
    out_indices: tuple[int, ...] = (2, 3)
    pool_size: int = 3
    image_size: int = 256
    d_models: tuple[int, ...] = (128, 256)
    n_heads: int = 8
    n_layers: int = 3
    ffn_scale: int = 4
    use_out_projection: bool = False
    intra_exclude_radius: int = 0
    score: Literal["official", "whitened_residual"] = "official"
    coreset_ratio: float = 0.1
    projection_dim: int | None = 128
    num_neighbors: int = 9
    target_dim: int | None = None


@dataclass(frozen=True)
class AnomalyDataConfig:
    """Data of one category.

    Attributes:
        root: dataset root (MVTec AD / BTAD / MVTec 3D-AD layout). category: the category folder.
        resize: shorter side before the centre crop to ``model.image_size`` (default: no extra margin).
        fit: how an image becomes the square network input: ``crop`` (shorter side to ``resize``, centre crop;
            MVTec objects) or ``resize`` (the whole image resized to ``image_size`` squared, aspect not kept:
            nothing is cut off, for photos of varying size and aspect such as the magnetic tiles).
        cache_features: compute the frozen backbone's features of every training image (and flip, with
            ``augment``) and of the validation set once, and train the heads on the cached features instead of
            running the backbone at every step (same results, much faster).
        val_fraction: share of the normal training images held out for validation / model selection.
        val_synthetic: synthetic-defect copies per validation image (0: none; then AUROC is undefined and the
            reconstruction loss is monitored instead).
        val_defects: the synthetic defects of validation: ``generic`` (scratch, stain, cut-paste), ``surface``
            (pit, crack, uneven shading, chipped edge: see :mod:`sa_anomaly.defects`) or a list of defect names.
        augment: random flips (textures). repeat: passes over the training images per epoch.
        seed: split and synthetic-defect seed.
    """

    root: str = "data/ad-sample"
    category: str = "brick"
    resize: int | None = None
    fit: Literal["crop", "resize"] = "crop"
    cache_features: bool = False
    val_fraction: float = 0.15
    val_synthetic: int = 1
    val_defects: str | tuple[str, ...] = "generic"
    augment: bool = False
    repeat: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        from .defects import defect_names

        try:
            defect_names(self.val_defects)
        except KeyError as exc:
            raise ValueError(f"data.val_defects: {exc.args[0]}") from None


@dataclass(frozen=True)
class AnomalyLossConfig:
    """Loss weights (official defaults ``lambda1 = lambda2 = 0.5``), scoring smoothing and training noise.

    Attributes:
        feature_jitter: UniAD's feature jitter scale during training (0 = official; UniAD uses 20): the heads
            reconstruct clean tokens from tokens with Gaussian noise of ``jitter * |token| / C`` per channel.
    """

    lambda1: float = 0.5
    lambda2: float = 0.5
    smooth_sigma: float = 4.0
    feature_jitter: float = 0.0


@dataclass(frozen=True)
class AnomalyConfig:
    """The whole anomaly config."""

    model: AnomalyModelConfig = field(default_factory=AnomalyModelConfig)
    data: AnomalyDataConfig = field(default_factory=AnomalyDataConfig)
    loss: AnomalyLossConfig = field(default_factory=AnomalyLossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


#: deprecated names (one release)
ADModelConfig = AnomalyModelConfig
ADDataConfig = AnomalyDataConfig
ADLossConfig = AnomalyLossConfig
ADConfig = AnomalyConfig


def load_ad_config(
    name_or_path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> AnomalyConfig:
    """Loads a config by bundled name (``cpu``, ``fod-w50``...) or YAML path, then applies dotted overrides."""
    return load_bundled_config(AnomalyConfig, name_or_path, CONFIG_DIR, overrides)
