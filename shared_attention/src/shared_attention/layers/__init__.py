"""Reusable layers of the shared core.

* :mod:`.position`: rotary (Su et al. 2021, eq. 34), 1D / 2D sinusoidal (Vaswani et al. 2017,
  sec. 3.5; MAE) and scaled sinusoidal (FLASH) positional encodings.
* :mod:`.mlp`: the transformer MLP and stochastic depth (drop path).
* :mod:`.blocks`: the pre-norm transformer encoder block (ViT).
* :mod:`.winograd`: Winograd F(2x2, 3x3) convolution for wide 3x3 layers in CPU inference.
"""

from shared_attention.layers.blocks import TransformerBlock
from shared_attention.layers.mlp import DropPath, Mlp, drop_path
from shared_attention.layers.position import (
    RotaryEmbedding,
    ScaledSinusoidalEmbedding,
    apply_rotary,
    sinusoidal_1d,
    sinusoidal_2d,
)
from shared_attention.layers.winograd import WinogradConv2d, set_winograd, winograd_conv3x3

__all__ = [
    "DropPath",
    "Mlp",
    "RotaryEmbedding",
    "ScaledSinusoidalEmbedding",
    "TransformerBlock",
    "WinogradConv2d",
    "apply_rotary",
    "drop_path",
    "sinusoidal_1d",
    "set_winograd",
    "sinusoidal_2d",
    "winograd_conv3x3",
]
