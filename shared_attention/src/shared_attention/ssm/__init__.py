"""State-space model operators: Mamba's selective scan and VMamba's SS2D four-direction cross-scan."""

from shared_attention.ssm.selective_scan import (
    selective_scan_chunked,
    selective_scan_fn,
    selective_scan_ref,
)
from shared_attention.ssm.ss2d import SS2D, VSSBlock, cross_merge, cross_scan

__all__ = [
    "SS2D",
    "VSSBlock",
    "cross_merge",
    "cross_scan",
    "selective_scan_chunked",
    "selective_scan_fn",
    "selective_scan_ref",
]
