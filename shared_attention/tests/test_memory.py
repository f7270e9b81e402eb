"""Process memory helpers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shared_attention.memory import peak_rss_bytes


def test_peak_rss_is_positive() -> None:
    assert peak_rss_bytes() > 1 << 20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt exists on Linux only")
def test_keep_freed_heap_stops_page_faults_on_reused_buffers() -> None:
    # in a fresh process, allocating and freeing a 8 MB tensor repeatedly faults its pages in every time by
    # default (glibc maps and unmaps it); after keep_freed_heap the pages are reused, so minor faults stay low
    code = (
        "import resource, sys, torch\n"
        "from shared_attention.memory import keep_freed_heap\n"
        "def faults():\n"
        "    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "    for _ in range(50):\n"
        "        torch.empty(2 << 20).fill_(1.0)\n"
        "    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before\n"
        "plain = faults()\n"
        "assert keep_freed_heap() and keep_freed_heap()\n"
        "faults()\n"
        "print(plain, faults())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    plain, kept = map(int, out.split())
    assert plain > 50 * 100, (plain, kept)  # glibc trims and re-faults much of each 8 MB buffer without it
    assert kept < plain / 20, (plain, kept)
