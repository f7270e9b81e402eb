"""Synthetic defects with exact masks for the validation split's synthetic anomalies and the ad-sample test sets.

Two sets (:data:`DEFECT_SETS`): ``generic`` (scratch, stain, cut-paste: the ad-sample test defects) and
``surface`` (pit, crack, uneven, chip: what cast, pressed or sintered surfaces such as magnetic tiles show -
small dark holes, thin dark fissures, low-frequency shading, broken-off edges), all intensity changes of the
surface itself, without colour. Every function takes a ``(H, W, 3)`` float RGB image in [0, 1] and a numpy
``Generator`` and returns ``(defective image, bool mask)``; the mask marks exactly the changed pixels."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = [
    "DEFECTS",
    "DEFECT_SETS",
    "scratch",
    "stain",
    "cut_paste",
    "pit",
    "crack",
    "uneven",
    "chip",
    "apply_defect",
    "defect_names",
]


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


def pit(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A small dark hole (a blowhole or pore): a soft-edged ellipse of 1.5-4 % of the shorter side, darkened
    to 25-60 % of the surface."""
    import cv2

    h, w = img.shape[:2]
    side = min(h, w)
    paint = np.zeros((h, w), np.float32)
    centre = (int(rng.uniform(0.1, 0.9) * w), int(rng.uniform(0.1, 0.9) * h))
    ax = max(1, int(round(rng.uniform(0.015, 0.04) * side)))
    axes = (ax, max(1, int(round(ax * rng.uniform(0.6, 1.0)))))
    cv2.ellipse(paint, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    blurred = cv2.GaussianBlur(paint, (0, 0), max(0.5, ax / 3))
    weight = np.clip(blurred / max(float(blurred.max()), 1e-6), 0, 1)[..., None]  # (H, W, 1)
    out = img * (1 - weight * (1 - rng.uniform(0.25, 0.6)))
    return _finish(img, out)


def crack(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A thin dark fissure: a wandering 1-2 px polyline (4-8 segments, 15-40 % of the shorter side long)
    darkened to 30-60 % of the surface."""
    import cv2

    h, w = img.shape[:2]
    paint = np.zeros((h, w), np.uint8)
    n = int(rng.integers(4, 9))
    seg = rng.uniform(0.15, 0.4) * min(h, w) / n
    pts = [(rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h)]
    angle = rng.uniform(0, 2 * np.pi)
    for _ in range(n):
        angle += rng.uniform(-0.7, 0.7)
        pts.append((pts[-1][0] + seg * np.cos(angle), pts[-1][1] + seg * np.sin(angle)))
    thickness = int(rng.integers(1, 3))
    for a, b in zip(pts[:-1], pts[1:]):
        cv2.line(paint, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), 255, thickness, cv2.LINE_8)
    sel = (paint > 0)[..., None]
    out = np.where(sel, img * rng.uniform(0.3, 0.6), img)
    return _finish(img, out)


def uneven(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Low-frequency shading: a smooth bump of 10-25 % of the shorter side in radius that brightens or darkens
    the surface by 20-40 % at its centre (compact support, so the mask is the bump)."""
    h, w = img.shape[:2]
    radius = rng.uniform(0.1, 0.25) * min(h, w)
    cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / radius**2
    bump = np.clip(1 - r2, 0, 1) ** 2  # (H, W), 1 at the centre, 0 beyond the radius
    gain = rng.uniform(0.2, 0.4) * rng.choice([-1.0, 1.0])
    out = img * (1 + gain * bump[..., None])
    return _finish(img, out)


def chip(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A broken-off edge: a dark irregular polygon (5-15 % of the side deep) cut into one border of the image."""
    import cv2

    h, w = img.shape[:2]
    depth = rng.uniform(0.05, 0.15)
    span = rng.uniform(0.1, 0.3)
    start = rng.uniform(0.05, 0.95 - span)
    n = int(rng.integers(3, 6))
    along = np.sort(rng.uniform(start, start + span, n))
    inner = [(a, rng.uniform(0.3, 1.0) * depth) for a in along]
    poly = [(start, 0.0), *inner, (start + span, 0.0)]  # (position along the border, depth into the image)
    side = int(rng.integers(0, 4))
    pts = []
    for a, d in poly:
        if side == 0:  # top
            pts.append((a * w, d * h))
        elif side == 1:  # bottom
            pts.append((a * w, (1 - d) * h))
        elif side == 2:  # left
            pts.append((d * w, a * h))
        else:  # right
            pts.append(((1 - d) * w, a * h))
    paint = np.zeros((h, w), np.uint8)
    cv2.fillPoly(paint, [np.array(pts, dtype=np.int32)], 255)
    sel = (paint > 0)[..., None]
    out = np.where(sel, img * rng.uniform(0.1, 0.35), img)
    return _finish(img, out)


Defect = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]

DEFECTS: dict[str, Defect] = {
    "scratch": scratch,
    "stain": stain,
    "cut_paste": cut_paste,
    "pit": pit,
    "crack": crack,
    "uneven": uneven,
    "chip": chip,
}

#: named defect sets (``data.val_defects`` takes a set name or a list of defect names)
DEFECT_SETS: dict[str, tuple[str, ...]] = {
    "generic": ("scratch", "stain", "cut_paste"),
    "surface": ("pit", "crack", "uneven", "chip"),
}


def defect_names(spec: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The defect names of a set name (``generic``, ``surface``) or of a list of names; ``KeyError`` naming the
    unknown entry otherwise."""
    names = DEFECT_SETS.get(spec, (spec,)) if isinstance(spec, str) else tuple(spec)
    for name in names:
        if name not in DEFECTS:
            raise KeyError(f"unknown defect {name!r}; known: {sorted(DEFECTS)} or sets {sorted(DEFECT_SETS)}")
    if not names:
        raise KeyError("no defect names given")
    return names


def apply_defect(name: str, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Applies the named defect; retries (new draws) until at least a few pixels change."""
    if name not in DEFECTS:
        raise KeyError(f"unknown defect {name!r}; known: {sorted(DEFECTS)}")
    for _ in range(10):
        out, mask = DEFECTS[name](img, rng)
        if mask.sum() >= 8:
            return out, mask
    return out, mask
