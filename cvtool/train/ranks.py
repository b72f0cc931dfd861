"""What the training loop asks of a trainer that runs in several processes (torchrun): two optional hooks, and the
agreements built on them (every rank decides alike what the clock decides).

Declared here, in the core, because the loop tests for them and the core never imports `backends`;
cvtool_backends.base re-exports them with the rest of the contract (its `hook` finds them by name). A trainer in
one process needs neither.
"""

from __future__ import annotations

import math
from typing import Callable, Protocol, runtime_checkable


@runtime_checkable
class MaxOverRanks(Protocol):
    def max_over_ranks(self, v: int) -> int: ...  # the largest v over all processes: ranks agree on when to stop


@runtime_checkable
class SyncBuffers(Protocol):
    def sync_buffers(self) -> None: ...  # BatchNorm's running statistics made the same on every rank


def ranks_max(trainer, world: int) -> Callable[[int], int]:
    """v -> the largest v over the ranks, the same on every rank (the trainer's max_over_ranks); v in one process."""
    if world == 1 or not isinstance(trainer, MaxOverRanks):
        return lambda v: v
    return trainer.max_over_ranks


def seconds_agreed(trainer, world: int) -> Callable[[float], float]:
    """Seconds -> the largest over the ranks, to the millisecond; the seconds themselves in one process."""
    if world == 1:
        return lambda v: v
    agree = ranks_max(trainer, world)
    return lambda v: agree(_ms(v)) / 1000


def _ms(seconds: float) -> int:
    """Seconds as whole milliseconds, rounded up: what the ranks compare (an all-reduce of ints)."""
    return int(math.ceil(seconds * 1000))


CODE_SHIFT = 40  # a turn's agreement packs the stop code above the clock's milliseconds (2^40 ms: 34 years)


def turn_agreed(trainer, world: int) -> Callable[[int, float], tuple[int, float]]:
    """(stop code, clock seconds) -> the largest code and, while no rank stops, the largest clock over the ranks: one
    all-reduce a turn, not two. code << CODE_SHIFT | ms: the max is the largest code's; where every code is 0, the
    largest clock (a stopping turn does not read the clock)."""
    if world == 1:
        return lambda code, clock: (code, clock)
    agree = ranks_max(trainer, world)

    def both(code: int, clock: float) -> tuple[int, float]:
        v = agree(code << CODE_SHIFT | _ms(clock))
        return v >> CODE_SHIFT, (v & ((1 << CODE_SHIFT) - 1)) / 1000

    return both
