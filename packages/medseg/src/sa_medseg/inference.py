"""Volume inference with a 2D network: slice by slice (padded to the network's multiple) or 2D sliding window."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from shared_attention.serving.control import check_cancelled

__all__ = ["predict_slices", "segment_volume"]


@torch.no_grad()
def predict_slices(
    model: nn.Module,
    slices: torch.Tensor,
    multiple: int = 32,
    mode: Literal["slice", "sliding"] = "slice",
    roi: tuple[int, int] = (224, 224),
    overlap: float = 0.25,
) -> torch.Tensor:
    """Class logits of a batch of 2D slices.

    Args:
        model: 2D network ``(B, 1|3, H, W) -> (B, C, H, W)``.
        slices: ``(B, 1, H, W)`` images in [0, 1].
        multiple: pad H, W up to a multiple of this (32 for VM-UNet, 16 for ParaTransCNN).
        mode: ``slice`` (whole padded slice) or ``sliding`` (MONAI sliding window of ``roi``).

    Returns:
        ``(B, C, H, W)`` logits.
    """
    H, W = slices.shape[-2:]
    if mode == "sliding":
        from monai.inferers import sliding_window_inference

        ph, pw = max(0, roi[0] - H), max(0, roi[1] - W)
        x = F.pad(slices, (0, pw, 0, ph))
        out = sliding_window_inference(x, roi, sw_batch_size=4, predictor=model, overlap=overlap, mode="gaussian")
        return out[..., :H, :W]  # type: ignore[call-overload]
    ph, pw = (-H) % multiple, (-W) % multiple
    x = F.pad(slices, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))  # (B, 1, H', W') centred
    out = model(x)  # (B, C, H', W')
    return out[..., ph // 2 : ph // 2 + H, pw // 2 : pw // 2 + W]


@torch.no_grad()
def segment_volume(
    model: nn.Module,
    image: torch.Tensor,
    batch_size: int = 8,
    multiple: int = 32,
    mode: Literal["slice", "sliding"] = "slice",
    roi: tuple[int, int] = (224, 224),
    return_probs: bool = False,
) -> torch.Tensor:
    """Label map of a volume ``(S, H, W)`` (2D network applied slice by slice): ``(S, H, W)`` long.

    With ``return_probs`` the softmax probabilities ``(S, C, H, W)`` are returned instead.
    """
    device = next(model.parameters()).device
    outs = []
    for s in range(0, image.shape[0], batch_size):
        check_cancelled()  # a server request whose client gave up stops here, within one batch of slices
        x = image[s : s + batch_size, None].to(device=device, dtype=torch.float32)  # (b, 1, H, W)
        logits = predict_slices(model, x, multiple, mode, roi).float()
        outs.append(logits.softmax(1) if return_probs else logits.argmax(1))
    return torch.cat(outs).cpu()
