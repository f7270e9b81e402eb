"""Process memory readings for memory-bound checks (tests, benches)."""

from __future__ import annotations

import resource
import sys

__all__ = ["peak_rss_bytes"]


def peak_rss_bytes() -> int:
    """This process's own peak resident set size in bytes.

    On Linux it is ``VmHWM`` from ``/proc/self/status``: ``ru_maxrss`` would start at the *parent's* peak after
    fork + exec (the kernel carries it over), which can hide everything a child process does. Elsewhere
    ``ru_maxrss`` (bytes on macOS, KiB on other systems).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            return 1024 * next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
