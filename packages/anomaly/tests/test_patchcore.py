"""PatchCore: coreset, scoring and reweighting against naive loops, the run-folder round trip, a planted defect."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sa_anomaly.metrics import gaussian_smooth
from sa_anomaly.models.patchcore import (
    PatchCoreModel,
    gaussian_blur,
    greedy_coreset,
    reweighted_image_scores,
)


def _model(**kwargs: Any) -> PatchCoreModel:
    """A random tiny-input Lite0 PatchCore (no weights file), seeded."""
    torch.manual_seed(kwargs.pop("init_seed", 0))
    kwargs.setdefault("backbone_weights", None)
    kwargs.setdefault("image_size", 32)
    return PatchCoreModel(**kwargs).eval()


def _naive_coreset(x: torch.Tensor, k: int, start: int) -> list[int]:
    """Textbook greedy k-center: O(n k^2) norms in Python loops."""
    sel = [start]
    for _ in range(k - 1):
        best, best_i = -1.0, -1
        for i in range(len(x)):
            d = min(float((x[i] - x[j]).norm()) for j in sel)
            if d > best:
                best, best_i = d, i
        sel.append(best_i)
    return sel


def test_coreset_matches_brute_force_greedy() -> None:
    x = torch.randn(200, 16, generator=torch.Generator().manual_seed(1))
    got = greedy_coreset(x, 20, projection_dim=None, seed=3)
    gen = torch.Generator().manual_seed(3)
    start = int(torch.randint(200, (1,), generator=gen))  # the documented rule: start row, then projection
    assert got.tolist() == _naive_coreset(x, 20, start)
    assert torch.equal(greedy_coreset(x, 20, projection_dim=16, seed=3), got)  # p >= D: no projection
    # projected: the same greedy on x @ R, R ~ N(0, 1 / p) from the same seeded generator
    proj = greedy_coreset(x, 20, projection_dim=8, seed=3)
    assert proj.tolist() == _naive_coreset(x @ (torch.randn(16, 8, generator=gen) / 8**0.5), 20, start)
    assert len(set(proj.tolist())) == 20 and proj.tolist() != got.tolist()

    def radius(idx: torch.Tensor) -> float:
        return float(torch.cdist(x, x[idx]).amin(1).max())

    assert radius(proj) < 1.5 * radius(got)
    # duplicates: selection stops once every row is covered exactly
    dup = torch.cat([x[:3], x[:3], x[:3]])
    kept = greedy_coreset(dup, 6, projection_dim=None)
    assert len(kept) == 3 and len({i % 3 for i in kept.tolist()}) == 3
    with pytest.raises(ValueError, match="n_select"):
        greedy_coreset(x, 0)


def test_gaussian_blur_matches_scipy() -> None:
    g = torch.Generator().manual_seed(0)
    for shape, sigma in (((2, 1, 40, 37), 4.0), ((1, 1, 10, 12), 4.0), ((1, 1, 9, 9), 1.5)):  # radius 16 > 12
        m = torch.rand(shape, generator=g)
        want = gaussian_smooth(m[:, 0].numpy(), sigma)
        np.testing.assert_allclose(gaussian_blur(m, sigma)[:, 0].numpy(), want, atol=1e-5)


def test_scoring_matches_naive_nearest_neighbour_loops() -> None:
    model = _model(coreset_ratio=0.5, num_neighbors=4, smooth_sigma=2.0)
    g = torch.Generator().manual_seed(5)
    model.fit_images(torch.rand(2, 3, 32, 32, generator=g))
    bank = model.memory_bank
    assert model.bank_size == 16  # 2 images x 4 x 4 patches, half kept
    images = torch.rand(2, 3, 32, 32, generator=g)
    out = model(images)
    assert out.anomaly_map.shape == (2, 1, 32, 32) and out.image_scores.shape == (2,)
    emb = model.embed(images)  # (2, 152, 4, 4)
    for b in range(2):
        patches = [emb[b, :, y, x] for y in range(4) for x in range(4)]
        dists = [min(float((p - m).norm()) for m in bank) for p in patches]
        naive_map = torch.tensor(dists).view(1, 1, 4, 4)
        up = F.interpolate(naive_map, size=(32, 32), mode="bilinear", align_corners=False)[0].numpy()
        np.testing.assert_allclose(out.anomaly_map[b].numpy(), gaussian_smooth(up, 2.0), rtol=1e-3, atol=1e-3)
        # paper eq. 7, literally: w = 1 - exp(|m* - m_bank|) / sum_{m in N_b(m_bank)} exp(|m* - m|)
        star = max(range(16), key=lambda i: dists[i])
        m_star = patches[star]
        j = min(range(len(bank)), key=lambda i: float((m_star - bank[i]).norm()))
        near = sorted(range(len(bank)), key=lambda i: float((bank[j] - bank[i]).norm()))[:4]
        den = sum(math.exp(float((m_star - bank[i]).norm())) for i in near)
        w = 1 - math.exp(float((m_star - bank[j]).norm())) / den
        assert 0 < w < 1
        assert float(out.image_scores[b]) == pytest.approx(w * dists[star], rel=1e-4)
    assert torch.allclose(model.anomaly_map(images), out.anomaly_map[:, 0])
    assert torch.allclose(model.image_scores(images), out.image_scores)
    plain = _model(coreset_ratio=0.5, num_neighbors=1, smooth_sigma=2.0)
    plain.load_state_dict(model.state_dict())
    assert torch.allclose(plain(images).image_scores, model.patch_distances(images)[1].flatten(1).amax(1))


def test_reweighting_is_overflow_safe() -> None:
    g = torch.Generator().manual_seed(2)
    bank = 1e4 * torch.randn(50, 8, generator=g)  # distances ~1e4: exp() alone overflows
    patches = 1e4 * torch.randn(3, 10, 8, generator=g)
    dist = torch.cdist(patches, bank).amin(-1)
    s = reweighted_image_scores(patches, dist, bank, num_neighbors=9)
    assert torch.isfinite(s).all() and (s >= 0).all() and (s <= dist.amax(1)).all()


def test_patch_features_pool_once_upsample_and_reduce() -> None:
    model = _model()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    raw = model.extractor.body((x - model.mean) / model.std)  # unpooled levels: (1, 40, 8, 8), (1, 112, 4, 4)
    emb = model.embed(x)
    assert emb.shape == (1, 152, 8, 8)
    assert torch.allclose(emb[:, :40], F.avg_pool2d(raw[0], 3, 1, 1), atol=1e-6)  # the 3x3 average, once
    deep = F.interpolate(F.avg_pool2d(raw[1], 3, 1, 1), size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.allclose(emb[:, 40:], deep, atol=1e-6)
    reduced = _model(target_dim=64).embed(x)  # same init seed: same backbone
    assert reduced.shape == (1, 64, 8, 8)
    c = 152
    naive = torch.stack(
        [emb[:, (i * c) // 64 : -(-((i + 1) * c) // 64)].mean(1) for i in range(64)], 1
    )  # adaptive average bins over the channel axis
    assert torch.allclose(reduced, naive, atol=1e-5)


def test_fit_sources_agree_and_each_image_is_embedded_once() -> None:
    model = _model(coreset_ratio=0.25)
    imgs = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    seen: list[int] = []
    hook = model.extractor.register_forward_hook(lambda _m, inp, _o: seen.append(inp[0].shape[0]))
    idx = model.fit_images(imgs, batch_size=2, progress=True)
    hook.remove()
    assert sum(seen) == 5 and seen == [2, 2, 1]
    assert model.bank_size == len(idx) == 20  # 5 x 16 patches, a quarter kept
    bank = model.memory_bank.clone()
    items = [{"image": im, "label": torch.tensor(0)} for im in imgs]
    model.fit_images(_ListDataset(items), batch_size=3)
    assert torch.allclose(model.memory_bank, bank, atol=1e-5)  # batching changes only float rounding
    model.fit_images([imgs[:4], {"image": imgs[4:]}])
    assert torch.allclose(model.memory_bank, bank, atol=1e-5)  # batching changes only float rounding
    with pytest.raises(ValueError, match="batch 0"):
        model.fit_images([torch.rand(3, 32, 32)])
    with pytest.raises(ValueError, match="no feature batches"):
        model.fit_images([])
    with pytest.raises(RuntimeError, match="memory bank is empty"):
        _model()(imgs)


class _ListDataset(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self, items: list[dict[str, torch.Tensor]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.items[i]


def test_state_dict_round_trip_resizes_the_bank(tmp_path: Any) -> None:
    from safetensors.torch import load_file, save_file

    model = _model(coreset_ratio=0.3)
    g = torch.Generator().manual_seed(4)
    model.fit_images(torch.rand(3, 3, 32, 32, generator=g))
    images = torch.rand(2, 3, 32, 32, generator=g)
    want = model(images)
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    state = load_file(str(tmp_path / "model.safetensors"))
    fresh = _model(coreset_ratio=0.3, init_seed=9)  # other random backbone, empty (0, D) bank
    assert fresh.bank_size == 0
    fresh.load_state_dict(state, strict=True)
    assert fresh.bank_size == model.bank_size == 14  # int(48 * 0.3)
    got = fresh(images)
    assert torch.equal(got.anomaly_map, want.anomaly_map) and torch.equal(got.image_scores, want.image_scores)
    fitted_other = _model(coreset_ratio=0.9)
    fitted_other.fit_images(torch.rand(1, 3, 32, 32, generator=g))  # a bank of another size
    fitted_other.load_state_dict(state, strict=True)
    assert torch.equal(fitted_other.memory_bank, model.memory_bank)
    bad = dict(state, memory_bank=torch.zeros(5, 7))
    with pytest.raises(RuntimeError, match=r"memory_bank: expected a \(N, 152\) memory bank"):
        fresh.load_state_dict(bad)


def _texture(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A stationary grey noise texture around 0.5, ``(3, size, size)``."""
    grey = 0.5 + 0.1 * rng.standard_normal((size, size))
    return np.repeat(grey[None], 3, 0).astype(np.float32)


def test_planted_anomaly_lights_up_at_its_location() -> None:
    rng = np.random.default_rng(0)
    train = torch.from_numpy(np.stack([_texture(rng) for _ in range(6)]))
    normal = torch.from_numpy(np.stack([_texture(rng) for _ in range(2)]))
    defect = torch.from_numpy(_texture(rng))[None].clone()
    defect[:, :, 36:48, 12:24] = torch.tensor([0.9, 0.1, 0.1]).view(1, 3, 1, 1)  # a red square
    # shallower levels (strides 4 and 8): a random backbone's deeper levels mix the whole 64 px image
    model = _model(coreset_ratio=0.1, image_size=64, out_indices=(1, 2))
    model.fit_images(train, batch_size=4)
    out = model(torch.cat([normal, defect]))
    m = out.anomaly_map[2, 0]
    y, x = divmod(int(m.argmax()), m.shape[1])
    assert 32 <= y < 52 and 8 <= x < 28  # the peak sits on the square (a few pixels' margin)
    inside = m[36:48, 12:24].mean()
    outside = torch.cat([m[:28].flatten(), m[:, 32:].flatten()]).mean()
    assert inside > 1.6 * outside
    assert out.image_scores[2] > 1.5 * out.image_scores[:2].max()


def test_patchcore_is_trainable_evaluable_and_servable_through_the_cli(tmp_path: Path) -> None:
    """``model.arch=patchcore``: train fits the bank (no gradient steps) and writes a run folder that evaluate,
    the predictor (with its reweighted image score) and a fresh load all use."""
    from sa_anomaly.domain import main
    from sa_anomaly.predictor import AnomalyPredictor
    from sa_anomaly.sample import build_sample

    from shared_attention.evaluation import read_evaluation

    data = build_sample(tmp_path / "ad", textures=("brick",), crop=64, n_train=(2, 6), n_test=(1, 4))
    run = tmp_path / "run"
    tiny = ["model.backbone=test_efficientnet", "model.backbone_weights=null", "model.image_size=64"]
    args = [*tiny, "model.arch=patchcore", "model.coreset_ratio=0.5", f"data.root={data}", "data.category=brick"]
    assert main(["train", "--config", "cpu", *args, f"train.run_dir={run}", "train.progress=false"]) == 0
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["model"]["arch"] == "PatchCore" and meta["result"]["bank_size"] > 0
    assert "val_image_auroc" in meta["result"]["last_metrics"]
    assert main(["evaluate", "--run", str(run)]) == 0
    ev = read_evaluation(run / "evaluation.json")
    assert 0.0 <= ev.model <= 1.0 and ev.details["images"] == 8
    pred = AnomalyPredictor.load(run)
    assert pred.model.bank_size == meta["result"]["bank_size"]
    img = (np.random.default_rng(0).random((64, 96, 3))).astype(np.float32)
    out = pred.predict(pred.preprocess(img))
    assert out["map"].shape == (1, 64, 96) and torch.isfinite(out["score"]).all()
    with torch.no_grad():  # the score is the model's own (reweighted), the max over the crops it ran
        crops = [
            out_
            for out_ in (pred.model(torch.from_numpy(img[:, i : i + 64].transpose(2, 0, 1))[None]) for i in (0, 32))
        ]
    assert float(out["score"][0]) == pytest.approx(max(float(c.image_scores[0]) for c in crops), rel=1e-5)
