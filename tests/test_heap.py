"""cvtool/heap.py's two glibc policies, each in a fresh process (a policy is set once per process)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from cvtool import heap
from cvtool.benchtime import rss_bytes

pytestmark = pytest.mark.skipif(heap._mallopt() is None or rss_bytes() is None, reason="glibc and /proc only")


def run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_large_blocks_go_back_to_the_kernel_when_freed():
    """Arrays of many sizes (1-30 MB), touched and freed: resident memory ends where it started."""
    out = run("""
        import numpy as np
        from cvtool import heap
        from cvtool.benchtime import rss_bytes
        assert heap.return_large_blocks()
        base = rss_bytes()
        rng = np.random.default_rng(0)
        keep = []
        for i in range(60):
            keep.append(np.ones(int(rng.integers(1, 30)) * 2**20 // 8))
            if len(keep) > 3:
                keep.pop(0)
        peak = rss_bytes()
        keep.clear()
        print((peak - base) >> 20, (rss_bytes() - base) >> 20)
    """)
    peak_mb, after_mb = map(int, out.split())
    assert peak_mb >= 20 and after_mb <= 8


def test_the_first_policy_wins():
    assert run("from cvtool import heap; print(heap.return_large_blocks(), heap.keep_freed_memory())") == "True False"
    assert run("from cvtool import heap; print(heap.keep_freed_memory(), heap.return_large_blocks())") == "True False"
