"""What the training loop asks of a trainer that runs in several processes (torchrun): two optional hooks.

Declared here, in the core, because the loop tests for them and the core never imports `backends`;
cvtool_backends.base re-exports them with the rest of the contract (its `hook` finds them by name). A trainer in
one process needs neither.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class MaxOverRanks(Protocol):
    def max_over_ranks(self, v: int) -> int: ...  # the largest v over all processes: ranks agree on when to stop


@runtime_checkable
class SyncBuffers(Protocol):
    def sync_buffers(self) -> None: ...  # BatchNorm's running statistics made the same on every rank
