"""Image files: PNG/JPEG/BMP/TIFF reading to float RGB, heatmap overlays, titled side-by-side panels with a
colour bar.

PNG writing is :func:`shared_attention.io.encode_png` / :func:`~shared_attention.io.write_png`, re-exported here:
float and bool images mean ``[0, 1]`` and are rounded half up to 8 bit; files are written atomically.
:func:`encode_png_text` adds ``tEXt`` entries (e.g. the score range of a heatmap's colour scale).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from shared_attention.io import PNG_SIGNATURE, encode_png, png_chunk, write_png

__all__ = [
    "IMAGE_SUFFIXES",
    "decode_image",
    "read_image",
    "read_mask",
    "encode_png",
    "encode_png_text",
    "write_png",
    "colourize",
    "heatmap_overlay",
    "colour_bar",
    "titled_panels",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Encoded image bytes -> ``(H, W, 3)`` float32 RGB in [0, 1] (gray replicated, alpha dropped).

    Raises:
        ValueError: naming ``name`` when the bytes are not a readable image.
    """
    import cv2

    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None:
        raise ValueError(f"{name}: not a readable image (PNG, JPEG, BMP or TIFF expected)")
    if img.dtype == np.uint16:
        img = img.astype(np.float32) / 65535.0
    elif img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    else:
        raise ValueError(f"{name}: unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB)
    elif img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    else:
        raise ValueError(f"{name}: unsupported channel count {img.shape[2]}")
    return np.ascontiguousarray(img, dtype=np.float32)


def read_image(path: str | Path) -> np.ndarray:
    """Reads an image file as ``(H, W, 3)`` float32 RGB in [0, 1]."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ValueError(f"{p}: cannot read: {exc}") from exc
    return decode_image(data, str(p))


def read_mask(path: str | Path) -> np.ndarray:
    """Reads a ground-truth mask as ``(H, W)`` bool (any non-zero pixel is anomalous)."""
    return read_image(path).max(axis=2) > 0


def colourize(heat: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """``(h, w)`` values -> ``(h, w, 3)`` JET colours in [0, 1] (blue at ``vmin``, red at ``vmax``, clipped)."""
    import cv2

    norm = np.array(heat, dtype=np.float32)  # a copy, worked on in place (full-size maps of large uploads)
    norm -= vmin
    norm /= max(vmax - vmin, 1e-12)
    np.clip(norm, 0, 1, out=norm)
    norm *= 255
    colour = cv2.applyColorMap(norm.astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1].astype(np.float32)
    colour /= 255
    return colour


def heatmap_overlay(
    img: np.ndarray, heat: np.ndarray, vmin: float | None = None, vmax: float | None = None, alpha: float = 0.5
) -> np.ndarray:
    """Blends a JET-coloured heatmap over an image: ``(H, W, 3)`` + ``(h, w)`` -> ``(H, W, 3)`` in [0, 1].

    The heatmap is resized to the image and scaled to [0, 1] by ``vmin``/``vmax`` (default: its own range).
    """
    import cv2

    h, w = img.shape[:2]
    heat = np.asarray(heat, dtype=np.float32)
    if heat.shape != (h, w):
        heat = cv2.resize(heat, (w, h), interpolation=cv2.INTER_LINEAR)
    lo = float(heat.min()) if vmin is None else vmin
    hi = float(heat.max()) if vmax is None else vmax
    out = colourize(heat, lo, hi)  # float32; blended in place (full-size maps of large uploads)
    out *= alpha
    out += (1 - alpha) * np.asarray(img, dtype=np.float32)
    return np.clip(out, 0, 1, out=out)


def encode_png_text(img: np.ndarray, text: Mapping[str, str], compression: int = 3) -> bytes:
    """:func:`encode_png` plus one ``tEXt`` chunk per entry (keywords of 1-79 Latin-1 characters).

    Raises:
        ValueError: naming the keyword or value that PNG text cannot hold.
    """
    data = encode_png(_to_u8(img) if np.asarray(img).dtype.kind == "f" else img, compression)
    chunks = []
    for key, value in text.items():
        try:
            k, v = key.encode("latin-1"), str(value).encode("latin-1")
        except UnicodeEncodeError as exc:
            raise ValueError(f"PNG text {key!r}: not Latin-1: {exc}") from exc
        if not 1 <= len(k) <= 79 or b"\0" in k or b"\0" in v:
            raise ValueError(f"PNG text {key!r}: keywords have 1-79 characters and no NUL")
        chunks.append(png_chunk(b"tEXt", k + b"\0" + v))
    head = len(PNG_SIGNATURE) + 8 + 13 + 4  # signature + IHDR chunk
    return data[:head] + b"".join(chunks) + data[head:]


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _put_text(canvas: np.ndarray, text: str, x: int, y: int, scale: float, thickness: int) -> None:
    """Black text into a ``uint8`` RGB canvas (OpenCV draws text on 8-bit images only)."""
    import cv2

    cv2.putText(canvas, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness, cv2.LINE_AA)


def _to_u8(img: np.ndarray, rows: int = 256) -> np.ndarray:
    """Float ``[0, 1]`` -> ``uint8`` exactly as :func:`encode_png` rounds (float64, half up), ``rows`` at a time
    so a large image needs no full-size float64 temporaries."""
    arr = np.asarray(img)
    if arr.dtype == np.uint8:
        return arr
    out = np.empty(arr.shape, np.uint8)
    for r in range(0, arr.shape[0], rows):
        block = np.clip(np.asarray(arr[r : r + rows], dtype=np.float64), 0.0, 1.0)
        out[r : r + rows] = np.floor(block * 255.0 + 0.5)
    return out


def _text_size(text: str, scale: float, thickness: int) -> tuple[int, int]:
    import cv2

    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    return int(w), int(h + base)


def _font(height: int) -> tuple[float, int, int]:
    """(font scale, thickness, title strip height) for panels ``height`` pixels tall."""
    strip = max(18, height // 12)
    return strip / 32, 1 if strip < 40 else 2, strip


def colour_bar(height: int, vmin: float, vmax: float, label: str = "score") -> np.ndarray:
    """A vertical JET colour bar, ``vmax`` at the top and ``vmin`` at the bottom, with ``label`` above it and the
    end (and middle) values beside it: ``(height, w, 3)`` float RGB on white."""
    scale, thick, strip = _font(height)
    bar_h = max(8, height - strip)
    bar_w = max(10, height // 16)
    ramp = np.linspace(vmax, vmin, bar_h, dtype=np.float32)[:, None].repeat(bar_w, 1)  # top = vmax
    labels = [_fmt(vmax), _fmt(0.5 * (vmin + vmax)), _fmt(vmin)]
    text_w = max(_text_size(t, scale, thick)[0] for t in labels)
    width = max(bar_w + 6 + text_w + 4, _text_size(label, scale, thick)[0] + 4)
    canvas = np.full((height, width, 3), 255, np.uint8)
    canvas[strip : strip + bar_h, 2 : 2 + bar_w] = _to_u8(colourize(ramp, vmin, vmax))
    _put_text(canvas, label, 2, strip - max(3, strip // 4), scale, thick)
    th = _text_size("0", scale, thick)[1]
    for t, y in zip(labels, (strip + th, strip + bar_h // 2 + th // 2, strip + bar_h - 2)):
        _put_text(canvas, t, 2 + bar_w + 6, y, scale, thick)
    return canvas.astype(np.float32) / 255


def titled_panels(
    panels: Sequence[np.ndarray],
    titles: Sequence[str],
    legend: tuple[float, float] | None = None,
    legend_label: str = "score",
    height: int | None = None,
) -> np.ndarray:
    """Side-by-side panels, each with its title above it, and optionally a colour bar for ``legend = (vmin,
    vmax)`` on the right.

    Args:
        panels: ``(h, w)`` gray or ``(h, w, 3)`` RGB images in [0, 1] (bool masks allowed); sizes may differ.
        titles: one per panel.
        legend: the score values at the two ends of the JET scale used in the panels (``None``: no bar).
        legend_label: the bar's caption.
        height: panel height in pixels (default: the first panel's, kept within 160-512 so titles stay
            legible and previews small); panels are scaled to it with their aspect kept.

    Returns:
        ``(H, W, 3)`` float32 RGB in [0, 1] on a white background.

    Raises:
        ValueError: when ``titles`` and ``panels`` differ in number or there is no panel.
    """
    import cv2

    if len(panels) != len(titles):
        raise ValueError(f"{len(panels)} panels but {len(titles)} titles")
    if not panels:
        raise ValueError("no panels to draw")
    target = height or min(512, max(160, int(panels[0].shape[0])))
    scale, thick, strip = _font(target)
    gap = max(4, target // 64)
    columns: list[np.ndarray] = []
    for p, title in zip(panels, titles):
        img: np.ndarray = np.asarray(p, dtype=np.float32)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        h, w = img.shape[:2]
        nw = max(1, round(w * target / h))
        if (h, w) != (target, nw):
            interp = cv2.INTER_AREA if target < h else cv2.INTER_NEAREST
            img = cv2.resize(img, (nw, target), interpolation=interp)
        col = np.full((strip + target, max(nw, _text_size(title, scale, thick)[0] + 4), 3), 255, np.uint8)
        col[strip:, :nw] = _to_u8(img)
        _put_text(col, title, 2, strip - max(3, strip // 4), scale, thick)
        columns.append(col.astype(np.float32) / 255)
    if legend is not None:
        columns.append(colour_bar(strip + target, float(legend[0]), float(legend[1]), legend_label))
    spacer = np.ones((strip + target, gap, 3), np.float32)
    parts: list[np.ndarray] = [columns[0]]
    for c in columns[1:]:
        parts += [spacer, c]
    return np.concatenate(parts, axis=1)
