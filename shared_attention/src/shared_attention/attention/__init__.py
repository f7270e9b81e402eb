"""Attention mechanisms of the shared core.

* :mod:`.multihead`: scaled dot-product attention (Vaswani et al. 2017, eq. 1) and multi-head
  self/cross attention; the single attention kernel used by every module here.
* :mod:`.window`: Swin window attention with relative position bias and shifted windows
  (Liu et al. 2021, eq. 4, sec. 3.2).
* :mod:`.channel`: squeeze-excitation channel attention (Hu et al. 2018, eq. 2-3).
* :mod:`.overlap`: HAT's overlapping cross-attention block (Chen et al. 2023, sec. 3.3).
* :mod:`.spatial_reduction`: PVT spatial-reduction attention (Wang et al. 2021, eq. 2-3).
* :mod:`.correlation`: FOD's I2Correlation (intra/inter-correlation) attention with learnable RBF targets
  (Yao et al. 2023).
* :mod:`.gated`: MossFormer's gated single-head attention unit with joint local quadratic + global linearised
  attention, offset-scale and rotary positions (Zhao & Ma 2023).
* :mod:`.heterogeneous`: Hiformer's heterogeneous per-feature attention with low-rank composite projections
  and query pruning (Gui et al. 2023).
"""

from shared_attention.attention.channel import ChannelAttention, SqueezeExcitation
from shared_attention.attention.correlation import I2CorrelationAttention, rbf_targets
from shared_attention.attention.gated import GatedAttentionUnit, OffsetScale, joint_attention
from shared_attention.attention.heterogeneous import HeterogeneousAttention, PerTokenLinear, PerTokenMlp
from shared_attention.attention.multihead import MultiHeadAttention, scaled_dot_product
from shared_attention.attention.overlap import OCAB, OverlappingCrossAttention, overlap_window_size
from shared_attention.attention.spatial_reduction import SpatialReductionAttention
from shared_attention.attention.window import (
    RelativePositionBias,
    WindowAttention,
    relative_position_index,
    shifted_window_attention,
    shifted_window_mask,
    window_partition,
    window_reverse,
)

__all__ = [
    "ChannelAttention",
    "GatedAttentionUnit",
    "HeterogeneousAttention",
    "I2CorrelationAttention",
    "OffsetScale",
    "PerTokenLinear",
    "PerTokenMlp",
    "joint_attention",
    "rbf_targets",
    "MultiHeadAttention",
    "OCAB",
    "OverlappingCrossAttention",
    "RelativePositionBias",
    "SpatialReductionAttention",
    "SqueezeExcitation",
    "WindowAttention",
    "overlap_window_size",
    "relative_position_index",
    "scaled_dot_product",
    "shifted_window_attention",
    "shifted_window_mask",
    "window_partition",
    "window_reverse",
]
