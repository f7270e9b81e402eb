"""Reusable layers of the shared core.

* :mod:`.position`: rotary (Su et al. 2021, eq. 34), 1D / 2D sinusoidal (Vaswani et al. 2017,
  sec. 3.5; MAE) and scaled sinusoidal (FLASH) positional encodings.
"""

from shared_attention.layers.position import (
    RotaryEmbedding,
    ScaledSinusoidalEmbedding,
    apply_rotary,
    sinusoidal_1d,
    sinusoidal_2d,
)

__all__ = [
    "RotaryEmbedding",
    "ScaledSinusoidalEmbedding",
    "apply_rotary",
    "sinusoidal_1d",
    "sinusoidal_2d",
]
