"""Reusable layers of the shared core.

* :mod:`.position`: rotary (Su et al. 2021, eq. 34), 1D / 2D sinusoidal (Vaswani et al. 2017,
  sec. 3.5; MAE) and scaled sinusoidal (FLASH) positional encodings.
* :mod:`.mlp`: the transformer MLP and stochastic depth (drop path).
* :mod:`.blocks`: the pre-norm transformer encoder block (ViT).
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

__all__ = [
    "DropPath",
    "Mlp",
    "RotaryEmbedding",
    "ScaledSinusoidalEmbedding",
    "TransformerBlock",
    "apply_rotary",
    "drop_path",
    "sinusoidal_1d",
    "sinusoidal_2d",
]
