"""Synthetic defects with exact masks: scratch, stain and cut-paste (ad-sample test sets and the validation
split's optional synthetic anomalies). Every function takes a ``(H, W, 3)`` float RGB image in [0, 1] and a
numpy ``Generator`` and returns ``(defective image, bool mask)``; the mask marks exactly the changed pixels."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["DEFECTS", "scratch", "stain", "cut_paste", "apply_defect"]


def _finish(img: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = np.clip(out, 0, 1).astype(np.float32)
    mask = np.abs(out - img).max(axis=2) > 1.5 / 255  # exactly the pixels that visibly changed
    return np.where(mask[..., None], out, img).astype(np.float32), mask


def scratch(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A thin straight or bent line, brighter or darker than the surface."""
    import cv2

    h, w = img.shape[:2]
    paint = np.zeros((h, w), np.uint8)
    length = rng.uniform(0.3, 0.6) * min(h, w)
    x0, y0 = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
    angle = rng.uniform(0, np.pi)
    pts = [(x0, y0)]
    for _ in range(int(rng.integers(1, 3))):
        angle += rng.uniform(-0.5, 0.5)
        seg = length / 2
        pts.append((pts[-1][0] + seg * np.cos(angle), pts[-1][1] + seg * np.sin(angle)))
    thickness = int(rng.integers(2, 4))
    for a, b in zip(pts[:-1], pts[1:]):
        cv2.line(paint, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), 255, thickness, cv2.LINE_8)
    sel = paint > 0
    mean = float(img.mean())
    value = rng.uniform(0.85, 1.0) if mean < 0.5 else rng.uniform(0.0, 0.15)
    out = img.copy()
    out[sel] = value
    return _finish(img, out)


def stain(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A tinted ellipse blended over the surface (a spot of dirt or liquid)."""
    import cv2

    h, w = img.shape[:2]
    paint = np.zeros((h, w), np.uint8)
    centre = (int(rng.uniform(0.25, 0.75) * w), int(rng.uniform(0.25, 0.75) * h))
    axes = (int(rng.uniform(0.05, 0.12) * w), int(rng.uniform(0.04, 0.1) * h))
    cv2.ellipse(paint, centre, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    sel = (paint > 0)[..., None]
    tint = np.array(rng.choice([[0.55, 0.35, 0.15], [0.2, 0.25, 0.5], [0.75, 0.7, 0.3]]), dtype=np.float32)
    alpha = rng.uniform(0.5, 0.7)
    out = np.where(sel, (1 - alpha) * img + alpha * tint, img)
    return _finish(img, out)


def cut_paste(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A rectangle cut from elsewhere in the image, rotated and re-lit, pasted at another place."""
    h, w = img.shape[:2]
    ph, pw = int(rng.uniform(0.12, 0.22) * h), int(rng.uniform(0.12, 0.22) * w)
    sy, sx = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
    patch = img[sy : sy + ph, sx : sx + pw]
    patch = np.rot90(patch, k=int(rng.integers(1, 4)))
    patch = np.clip(patch * rng.choice([rng.uniform(0.55, 0.75), rng.uniform(1.3, 1.5)]), 0, 1)
    qh, qw = patch.shape[:2]
    ty, tx = int(rng.integers(0, h - qh)), int(rng.integers(0, w - qw))
    out = img.copy()
    out[ty : ty + qh, tx : tx + qw] = patch
    return _finish(img, out)


DEFECTS: dict[str, Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]] = {
    "scratch": scratch,
    "stain": stain,
    "cut_paste": cut_paste,
}


def apply_defect(name: str, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Applies the named defect; retries (new draws) until at least a few pixels change."""
    if name not in DEFECTS:
        raise KeyError(f"unknown defect {name!r}; known: {sorted(DEFECTS)}")
    for _ in range(10):
        out, mask = DEFECTS[name](img, rng)
        if mask.sum() >= 8:
            return out, mask
    return out, mask
