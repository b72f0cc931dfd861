"""What a run may spend: a number of epochs, a number of seconds, or both. Two kinds of budget for one loop.

The loop asks a budget three things, each turn, with the step count and the clock (seconds since the process
started, everything counted: reading, planning, validation, checkpoints):
    progress(step, clock)  the share of the run done, which sets the learning rate;
    due(step, clock)       whether a validation runs now (after every epoch; at the plan's shares of the time);
    over(step, clock)      whether training ends now (the final validation follows).
A seconds budget ends training early enough for the final validation and the last checkpoint to fit: it keeps
RESERVE of the budget and the time a validation takes (estimated by the plan, measured after the first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from cvtool.train.plan import END_SLACK, RESERVE, UNTIMED_VAL_MARGIN
from cvtool.train.plan_budget import thin


@dataclass
class Budget:
    steps: int | None = None  # epochs x steps per epoch; None: no step limit
    steps_per_epoch: int | None = None  # set: a validation after every epoch
    seconds: float | None = None  # None: no time limit
    val_at: list[float] = field(default_factory=list)  # shares of the training time with a validation (the plan's)
    val_s: float = 0.0  # what one validation takes: the plan's estimate, then the last one measured
    validations: int = 0  # done so far (over resumes)
    last_val_step: int = 0
    val_spent: float = 0.0  # seconds of validation so far (this process)

    def end(self) -> float:
        """The clock at which training stops, leaving the final validation and the save their time."""
        if self.seconds is None:
            return math.inf
        margin = 1.0 if self.validations else UNTIMED_VAL_MARGIN
        return self.seconds * (1 - RESERVE) - self.val_s * margin - END_SLACK

    def progress(self, step: int, clock: float) -> float:
        p = step / self.steps if self.steps else 0.0
        if self.seconds is not None:
            p = max(p, clock / max(self.end(), 1e-9))
        return min(p, 1.0)

    def over(self, step: int, clock: float) -> str | None:
        """Why training ends now ("epochs", "time"), or None."""
        if self.steps is not None and step >= self.steps:
            return "epochs"
        if clock >= self.end():
            return "time"
        return None

    def due(self, step: int, clock: float) -> bool:
        if self.steps_per_epoch and step > self.last_val_step and step % self.steps_per_epoch == 0:
            return True
        return (self.seconds is not None and self.validations < len(self.val_at) and step > self.last_val_step
                and clock >= self.val_at[self.validations] * self.end())  # never twice without a step between

    def validated(self, step: int, took: float) -> None:
        """A validation took `took` seconds: the next should take about as long; where validating runs slower than
        planned, fewer validations follow (plan_budget.thin)."""
        self.val_s = max(self.val_s, took) if self.validations == 0 else took
        self.validations += 1
        self.last_val_step = step
        self.val_spent += took
        if self.seconds is not None and self.val_at:
            self.val_at = thin(self.val_at, self.validations, self.val_spent, took, self.seconds)

    def spent(self, step: int, elapsed: float) -> str | None:
        """Why a run that has come this far cannot train on under this budget ("epochs", "time"), or None."""
        if self.steps is not None and step >= self.steps:
            return "epochs"
        if self.seconds is not None and elapsed >= self.end():  # where over() stopped it: no step would fit
            return "time"
        return None
