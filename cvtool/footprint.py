"""What a command's arrays will take, estimated from its arguments, against the memory this machine has free.

    require([array("the input batch", (8, 3, 100000, 100000), 4)], doing="train --img-size 100000",
            hint="use a smaller --img-size")

refuses (UsageError, exit 2) before anything is allocated when the arrays cannot fit, instead of a MemoryError
(or NumPy's "array is too big") in the middle of the work. The estimates are lower bounds: the arrays the
work cannot do without (an input, an output, the activations a training step keeps for its backward pass), not
the temporaries around them, so a refusal is certain and a run that passes may still be tight. What a U-Net's
arrays take is in cvtool/model/footprint.py.

Available memory: MemAvailable of /proc/meminfo, lowered to what a cgroup (a container's memory limit) leaves;
where neither can be read, the physical memory; where not even that, nothing is refused.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

from cvtool.errors import UsageError

GiB = 1024**3


class Need(NamedTuple):
    """One array a piece of work cannot do without."""

    what: str  # "the float64 input 2x3x100000x100000"
    bytes: int


def array(what: str, shape: Sequence[int], itemsize: int) -> Need:
    """An array of `shape` with `itemsize` bytes per element (Python ints: no overflow however large)."""
    n = math.prod(int(s) for s in shape)
    return Need(f"{what} {'x'.join(str(int(s)) for s in shape)}", n * int(itemsize))


def _meminfo(path: str = "/proc/meminfo") -> dict[str, int]:
    """Fields of /proc/meminfo in bytes ({} where it cannot be read)."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    out[key] = int(parts[0]) * (1024 if parts[1:2] == ["kB"] else 1)
    except OSError:
        return {}
    return out


def _cgroup_left(root: str = "/sys/fs/cgroup") -> int | None:
    """What this process's cgroup (v2) still allows: memory.max - memory.current; None without a limit."""
    try:
        limit = Path(root, "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int(Path(root, "memory.current").read_text().strip()))
    except (OSError, ValueError):
        return None


def available_bytes() -> int | None:
    """Memory that new arrays can take now; None where the machine does not say."""
    info = _meminfo()
    free = info.get("MemAvailable")
    if free is None:
        free = info.get("MemFree", 0) + info.get("Cached", 0) or None
    if free is None:
        try:
            free = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            free = None
    left = _cgroup_left()
    if left is not None:
        free = left if free is None else min(free, left)
    return free


def size_text(n: int) -> str:
    """Bytes for a person: '894 GiB', '12.3 MiB'; astronomically large counts in powers of ten."""
    if n >= 1024**6:
        return f"{n / GiB:.3g} GiB"
    for unit, scale in (("GiB", GiB), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            v = n / scale
            return f"{v:.3g} {unit}" if v < 1000 else f"{v:.0f} {unit}"
    return f"{n} bytes"


def require(needs: Iterable[Need], *, doing: str, hint: str | None = None, available: int | None = None) -> int:
    """The total of `needs`, in bytes; a UsageError when it exceeds the memory available (measured unless given)."""
    needs = list(needs)
    total = sum(n.bytes for n in needs)
    free = available_bytes() if available is None else available
    if free is not None and total > free:
        big = max(needs, key=lambda n: n.bytes)
        parts = f" ({big.what} alone is {size_text(big.bytes)})" if len(needs) > 1 else f" ({big.what})"
        raise UsageError(f"{doing} needs at least {size_text(total)} of memory for its arrays{parts}, more than the "
                         f"{size_text(free)} available here", hint=hint)
    return total


__all__ = ["Need", "array", "available_bytes", "require", "size_text", "GiB"]
