"""State-space model operators (Mamba selective scan)."""

from shared_attention.ssm.selective_scan import (
    selective_scan_chunked,
    selective_scan_fn,
    selective_scan_ref,
)

__all__ = ["selective_scan_chunked", "selective_scan_fn", "selective_scan_ref"]
