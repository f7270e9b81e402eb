"""Tiled inference with overlap and smooth blending, for images too large to super-resolve in one pass.

The input is cut into ``tile x tile`` low-resolution tiles whose starts are multiples of ``align`` (use the
model's window size so tiles see the same window partition as the whole image) and that overlap by
``overlap`` pixels. Each output pixel is a weighted mean of the tiles covering it; a tile's weight is zero
within ``margin`` LR pixels of its inner borders (where the tile lacks context), then ramps linearly to one.
Edges that lie on the image border keep full weight.

Exactness: for a model whose output at a pixel depends only on inputs within ``margin`` LR pixels (its
receptive margin), tiled and whole-image outputs agree to float rounding whenever ``overlap >= 2 * margin + 1``.
HAT is not strictly local: its channel attention pools over the whole map (weighted by conv_scale = 0.01)
and OCAB / shifted windows reach up to about one window per block, so tiled HAT outputs differ slightly from
whole-image ones; ``bench/restoration.py`` reports that difference. Memory is bounded by the output buffer
plus ``batch`` tiles at a time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from shared_attention.serving.control import check_cancelled

__all__ = ["tile_starts", "blend_ramp", "tiled_forward"]


def tile_starts(size: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Start offsets covering ``[0, size)`` with tiles of ``tile`` overlapping by at least ``overlap``.

    Starts are multiples of ``align`` except possibly the last, which is flush with the end (and then
    aligned down, so the last tile may be longer than ``tile`` by less than ``align``; it still covers the end).
    """
    if tile >= size:
        return [0]
    if overlap >= tile:
        raise ValueError(f"overlap ({overlap}) must be smaller than the tile ({tile})")
    step = max(((tile - overlap) // align) * align, align)
    starts = list(range(0, size - tile, step))
    last = ((size - tile) // align) * align
    if not starts or starts[-1] != last:
        starts.append(last)
    return sorted(set(starts))


def blend_ramp(length: int, lead: int, trail: int, margin: int, device: torch.device) -> torch.Tensor:
    """1D weights of one tile: zero within ``margin`` of an inner edge, a linear ramp over the rest of the
    overlap (``lead`` at the start, ``trail`` at the end; 0 means the edge is the image border)."""
    w = torch.ones(length, device=device)
    pos = torch.arange(length, device=device, dtype=torch.float32)
    if lead > 0:
        span = max(lead - 2 * margin, 1)
        w = torch.minimum(w, ((pos - margin + 1) / (span + 1)).clamp(0, 1))
    if trail > 0:
        span = max(trail - 2 * margin, 1)
        w = torch.minimum(w, ((length - 1 - pos - margin + 1) / (span + 1)).clamp(0, 1))
    return w


@torch.no_grad()
def tiled_forward(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    scale: int,
    tile: int = 128,
    overlap: int = 32,
    margin: int | None = None,
    align: int = 1,
    batch: int = 1,
    progress: bool = False,
) -> torch.Tensor:
    """Applies ``fn`` (LR ``(n, C, h, w)`` -> ``(n, C, h*scale, w*scale)``) to ``x`` tile by tile.

    Args:
        fn: the model (or any callable with that contract).
        x: ``(B, C, H, W)`` input.
        scale: the upscaling factor.
        tile: LR tile size. overlap: LR overlap between neighbouring tiles.
        margin: LR pixels at inner tile edges that get zero weight (default ``overlap // 4``); set it to the
            model's receptive margin. ``overlap >= 2 * margin + 1`` is required.
        align: tile starts are multiples of this (the model's window size).
        batch: tiles per forward call (tiles on the image border may differ in size and run alone).
        progress: show a tqdm bar.

    Returns:
        ``(B, C, H*scale, W*scale)``.
    """
    if x.ndim != 4:
        raise ValueError(f"expected (B, C, H, W), got {tuple(x.shape)}")
    B, C, H, W = x.shape
    margin = overlap // 4 if margin is None else margin
    if (H > tile or W > tile) and overlap < 2 * margin + 1:
        raise ValueError(f"overlap ({overlap}) must be >= 2 * margin + 1 ({2 * margin + 1})")
    ys, xs = tile_starts(H, tile, overlap, align), tile_starts(W, tile, overlap, align)
    out = torch.zeros(B, C, H * scale, W * scale, dtype=torch.float32, device=x.device)
    weight = torch.zeros(1, 1, H * scale, W * scale, dtype=torch.float32, device=x.device)
    boxes = []
    for i, y0 in enumerate(ys):
        y1 = H if i == len(ys) - 1 else min(y0 + tile, H)
        for j, x0 in enumerate(xs):
            x1 = W if j == len(xs) - 1 else min(x0 + tile, W)
            boxes.append((y0, y1, x0, x1, i, j))
    from tqdm.auto import tqdm

    bar = tqdm(total=len(boxes), disable=not progress, desc="tiles", unit="tile")
    k = 0
    while k < len(boxes):
        check_cancelled()  # a server request whose client gave up stops here, within one tile
        y0, y1, x0, x1, _, _ = boxes[k]
        group = [boxes[k]]
        while len(group) < batch and k + len(group) < len(boxes):
            nb = boxes[k + len(group)]
            if (nb[1] - nb[0], nb[3] - nb[2]) != (y1 - y0, x1 - x0):
                break
            group.append(nb)
        inp = torch.cat([x[:, :, a:b, c:d] for a, b, c, d, _, _ in group], 0)  # (n*B, C, th, tw)
        res = fn(inp).float()  # (n*B, C, th*s, tw*s)
        for g, (a, b, c, d, i, j) in enumerate(group):
            piece = res[g * B : (g + 1) * B]
            lead_y = max(min(ys[i - 1] + tile, H) - a, 0) if i > 0 else 0
            trail_y = max(b - ys[i + 1], 0) if i + 1 < len(ys) else 0
            lead_x = max(min(xs[j - 1] + tile, W) - c, 0) if j > 0 else 0
            trail_x = max(d - xs[j + 1], 0) if j + 1 < len(xs) else 0
            wy = blend_ramp((b - a) * scale, lead_y * scale, trail_y * scale, margin * scale, x.device)
            wx = blend_ramp((d - c) * scale, lead_x * scale, trail_x * scale, margin * scale, x.device)
            w2 = (wy[:, None] * wx[None, :])[None, None]  # (1, 1, th*s, tw*s)
            out[:, :, a * scale : b * scale, c * scale : d * scale] += piece * w2
            weight[:, :, a * scale : b * scale, c * scale : d * scale] += w2
        k += len(group)
        bar.update(len(group))
    bar.close()
    if bool((weight <= 0).any()):
        raise RuntimeError("tiling left pixels without weight: increase overlap relative to margin")
    return (out / weight).to(x.dtype)
