"""Process memory readings for memory-bound checks (tests, benches)."""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
import sys

__all__ = ["peak_rss_bytes", "keep_freed_heap"]

#: glibc ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_applied: tuple[int, int] | None = None


def keep_freed_heap(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Lets glibc reuse freed heap pages for large tensors instead of mapping fresh, zero-filled ones each time.

    By default glibc serves every allocation above its (adaptive) mmap threshold with a new ``mmap`` and returns
    it on free, so a model whose activations are a few MB pays a page fault per 4 KiB page on every request:
    scoring 1,000 Frappe candidates with Hiformer took 42 ms instead of 30 ms (``bench/ranking.py``). Raising the
    mmap threshold (allocations up to ``mmap_threshold`` come from the heap) and the trim threshold (up to
    ``trim_threshold`` of freed memory stays mapped for the next request) removes those faults; the price is that
    resident memory does not shrink below the working set between requests. Long-running serving processes call
    this once (``sa-serve`` does); it changes no result.

    Returns:
        ``True`` when applied, ``False`` where there is no glibc ``mallopt`` (macOS, musl, Windows): a no-op.
    """
    global _applied
    if _applied == (mmap_threshold, trim_threshold):
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    if ok:
        _applied = (mmap_threshold, trim_threshold)
    return ok


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
