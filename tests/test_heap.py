"""cvtool/glibc_malloc.py: trimming the heap between images, in fresh processes (heap state is per process)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from cvtool import glibc_malloc as heap
from cvtool.timing import rss_bytes

pytestmark = pytest.mark.skipif(heap.free_heap_bytes() is None or rss_bytes() is None,
                                reason="glibc >= 2.33 and /proc only")


def run(code: str) -> list[int]:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True)
    return [int(v) for v in out.stdout.split()]

# glibc's sliding mmap threshold rises past a freed 31 MB block; five 20 MB arrays then come from the heap below a
# small pinned one, so once freed they lie in the middle of the heap, where glibc never returns them by itself
CHURN = """
    import numpy as np
    from cvtool import glibc_malloc as heap
    from cvtool.timing import rss_bytes
    a = np.ones(31 * 2**20 // 8); del a
    base = rss_bytes()
    blocks = [np.ones(20 * 2**20 // 8) for _ in range(5)]
    pin = np.ones(2**20 // 8)
    del blocks
"""


def test_trim_hands_free_pages_back():
    held, trimmed, after = run(CHURN + """
    held = (rss_bytes() - base) >> 20
    print(held, int(heap.trim(0)), (rss_bytes() - base) >> 20)
    """)
    assert held >= 16, "glibc kept nothing of the churn: nothing to test here"
    assert trimmed == 1 and after <= 8


def test_trim_waits_until_enough_lies_free():
    free, trimmed, held = run(CHURN + """
    free = heap.free_heap_bytes()
    print(free >> 20, int(heap.trim(over=free + 1)), (rss_bytes() - base) >> 20)
    """)
    assert free >= 16 and trimmed == 0 and held >= 16  # under the limit: the pages stay for the next image
