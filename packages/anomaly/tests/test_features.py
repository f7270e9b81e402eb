"""The offline EfficientNet-Lite0 weights mapped onto timm, and user weight files for any timm backbone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sa_anomaly.features import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FeatureExtractor,
    lite0_package_state_dict,
    load_state_dict_file,
)


def _classify(img: np.ndarray, model: torch.nn.Module) -> list[int]:
    x = torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None]
    x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return model(x)[0].topk(5).indices.tolist()


def test_packaged_lite0_classifies_photos() -> None:
    import timm
    from skimage import data

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    model.load_state_dict(lite0_package_state_dict(), strict=True)
    model.eval()
    cats = set(range(281, 286))  # ImageNet domestic cats: tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert cats & set(_classify(data.chelsea(), model))
    assert 967 in _classify(data.coffee(), model)  # espresso
    assert not cats & set(_classify(data.coffee(), model))


def test_extractor_levels_pooling_and_frozen() -> None:
    ext = FeatureExtractor("efficientnet_lite0", (2, 3))
    assert ext.channels == [40, 112] and ext.reductions == [8, 16]
    assert not any(p.requires_grad for p in ext.parameters())
    ext.train()
    assert not ext.body.training  # batch-norm statistics stay frozen
    feats = ext(torch.rand(1, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(1, 40, 8, 8), (1, 112, 4, 4)]


def test_user_weight_file_for_another_backbone(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    full = timm.create_model("test_efficientnet", pretrained=False)
    state = {f"module.{k}": v.clone() for k, v in full.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": full.state_dict()}, tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        ext = FeatureExtractor("test_efficientnet", (2, 3), weights=tmp_path / name)
        torch.testing.assert_close(ext.body.conv_stem.weight, full.conv_stem.weight)
    with pytest.raises(ValueError, match="do not fit"):
        FeatureExtractor("test_efficientnet", (2, 3), weights=_partial(tmp_path, state))
    with pytest.raises(ValueError, match="only fit"):
        FeatureExtractor("test_efficientnet", (2, 3), weights="efficientnet-lite0-package")
    with pytest.raises(FileNotFoundError):
        load_state_dict_file(tmp_path / "nope.pth")


def _partial(tmp_path: Path, state: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file

    part = {k: v for k, v in state.items() if "conv_stem" not in k}
    save_file(part, str(tmp_path / "part.safetensors"))
    return tmp_path / "part.safetensors"
