"""The plan's budget half: what a proposed plan (cvtool.train.plan.propose) does with measured seconds.

    plan = fill_budget(plan, step_s=0.15, val_s=1.2, setup_s=4.0)   # steps and validation cadence
    smaller = shrink(plan)                                          # a cheaper crop while too few steps fit
    q = replan_after_validation(plan, 41.2, spent_val_s=41.2, elapsed_s=150)   # an estimate 1.5x off
    val_at = thin(val_at, done, spent, took, budget)                # validations dearer than planned

Pure functions of a Plan and seconds: the training loop (cvtool.train.loop) and its set-up (prepare) call them.
"""

from __future__ import annotations

import math

from cvtool.train.plan import (
    END_SLACK,
    LITE0_MIN_CROP,
    MIN_CROP,
    MIN_STEPS,
    RESERVE,
    UNTIMED_VAL_MARGIN,
    VAL_SHARE,
    Plan,
    depth_cap,
    round_to,
)


def training_steps(p: Plan) -> int:
    """Steps the budget holds for training alone: validation counted at most VAL_SHARE of the budget, what
    fill_budget and thin keep it to (a slow validation estimate thins the validations, it does not eat the steps)."""
    n_val = len(p.val_at) or 1
    val = min(n_val * p.val_s, VAL_SHARE * p.budget)
    return max(0, int((p.budget * (1 - RESERVE) - p.setup_s - val) / max(p.step_s, 1e-6)))


def shrink(p: Plan) -> Plan | None:
    """A cheaper plan (crop x 0.75, batch kept, depth lowered where the crop no longer carries it) when too few
    training steps fit the budget; None when nothing is left, when the user set the crop, or when the training
    steps (training_steps: validation bounded) are enough: a slow validation estimate shrinks nothing (its cost
    does not depend on the crop)."""
    if "crop" in p.given:
        return None
    if p.step_s > 0 and training_steps(p) >= MIN_STEPS:
        return None
    c = round_to(p.crop * 0.75, 32, LITE0_MIN_CROP if p.encoder == "lite0" else MIN_CROP)
    if c >= p.crop:
        return None
    q = Plan.from_dict(p.to_dict())
    q.crop = c
    q.reasons = dict(p.reasons)
    q.reasons["crop"] = p.reasons["crop"] + f"; shrunk from {p.crop}: under {MIN_STEPS} training steps fitted the budget"
    if "depth" not in p.given and q.encoder == "unet" and q.depth > depth_cap(c):  # lite0's levels are fixed
        q.depth = depth_cap(c)
        q.reasons["depth"] = p.reasons["depth"] + f"; {q.depth} levels: the most a {c}-px crop carries"
    return q


def fill_budget(p: Plan, *, step_s: float, val_s: float, setup_s: float) -> Plan:
    """Steps and validation points from measured times: validation costs at most VAL_SHARE of the budget."""
    q = Plan.from_dict(p.to_dict())
    q.step_s, q.val_s, q.setup_s = step_s, val_s, setup_s
    n_img = sum(n for _, _, n in p.val_sizes)
    half = VAL_SHARE * p.budget / 2  # two validations (one mid-run to choose from, the last) must fit the share
    if val_s > half and n_img > 1:  # a set too large to validate whole: every k-th image, the same ones each time
        q.val_fraction = max(1 / n_img, half / val_s)
        q.val_s = val_s * q.val_fraction
        q.reasons["val_fraction"] = (f"the {n_img} validation images take ~{val_s:.0f} s a pass: each validation runs "
                                     f"{round(n_img * q.val_fraction)} of them (evenly spaced), so that two fit in "
                                     f"{VAL_SHARE:.0%} of the budget")
    else:
        q.val_fraction = 1.0
        q.reasons["val_fraction"] = "every validation image, each validation"
    val_s = q.val_s
    n_val = int(max(1, min(8, (VAL_SHARE * p.budget) // max(val_s, 1e-3))))
    q.val_at = [1.0] if n_val == 1 else [round(0.5 + 0.5 * i / (n_val - 1), 3) for i in range(n_val)]
    train_s = p.budget * (1 - RESERVE) - setup_s - n_val * val_s
    q.steps = max(0, int(train_s / max(step_s, 1e-6)))
    q.reasons["steps"] = (f"{train_s:.0f} s left for training after set-up {setup_s:.0f} s and {n_val} validations "
                          f"of ~{val_s:.1f} s, at {step_s * 1000:.0f} ms a step (measured)")
    q.reasons["val_at"] = (f"whole validation images, ~{val_s:.1f} s each: {n_val} of them fit in "
                           f"{VAL_SHARE:.0%} of the budget, over its second half; the best is kept")
    need = minimum_budget(step_s=step_s, val_s=val_s, setup_s=setup_s)
    if p.budget < need and shrink(q) is None:  # not even one step and the validation: the model would be untrained
        from cvtool.errors import UsageError

        raise UsageError(f"--time {p.budget:g} s cannot hold one training step ({step_s * 1000:.0f} ms) and a "
                         f"validation (~{val_s:.1f} s) after the {setup_s:.1f} s spent reading the data and measuring: "
                         f"the minimum here is {math.ceil(need)} s", hint=f"use --time {math.ceil(need)} or more (a "
                         f"model worth keeping needs minutes: {MIN_STEPS} steps or more)")
    return q


def minimum_budget(*, step_s: float, val_s: float, setup_s: float) -> float:
    """The smallest budget in which the timed loop still takes one step and then validates: the set-up spent, a
    step, the final validation's estimate with its margin and the loop's slack, over the share not held in reserve."""
    return (setup_s + step_s + UNTIMED_VAL_MARGIN * val_s + END_SLACK) / (1 - RESERVE)


VAL_SLACK = 1.5  # a validation this many times off its estimate, either way, replans the validation points


def replan_after_validation(p: Plan, measured_s: float, *, spent_val_s: float, elapsed_s: float,
                            done: int = 1, steps_done: int = 0) -> Plan | None:
    """After the first validation (done of p.val_at run, spent_val_s seconds in validation, elapsed_s of the budget
    gone): a plan whose validation estimate p.val_s was off by more than VAL_SLACK, with the measured time as its
    estimate, the validation points still to come re-spread over the rest of the budget's second half as many as
    VAL_SHARE affords (more when validation is cheaper than planned, fewer when dearer; the final one always kept)
    and the run's steps re-estimated (steps_done so far + what the rest holds). Where what is left of VAL_SHARE does
    not hold even the final validation at the measured cost (an estimate off by less than VAL_SLACK can do that when
    two validations were planned to fill the share), the rest validate on fewer images: val_fraction scaled down so
    that the final one fits (the loop keeps them a subset of the images validated so far). None while the estimate
    holds and the rest fits. Pure: the training loop calls it and swaps plans."""
    if not p.val_s or measured_s <= 0:
        return None
    left_s = max(0.0, VAL_SHARE * p.budget - spent_val_s)
    n_img = sum(n for _, _, n in p.val_sizes) or 1_000_000  # sizes unknown (an old plan): as if images were many
    to_come = len(p.val_at) > done
    starved = to_come and left_s < measured_s and round(n_img * p.val_fraction) > 1
    if 1 / VAL_SLACK <= measured_s / p.val_s <= VAL_SLACK and not starved:
        return None
    q = Plan.from_dict(p.to_dict())
    q.reasons = dict(p.reasons)
    q.val_s = float(measured_s)
    if starved:  # the final validation alone overruns the share: it runs on the fraction of the images that fits
        q.val_fraction = max(1 / n_img, p.val_fraction * left_s / measured_s)
        q.val_s = measured_s * q.val_fraction / p.val_fraction
        q.reasons["val_fraction"] = (f"replanned at validation {done}: {round(n_img * p.val_fraction)} images took "
                                     f"{measured_s:.1f} s and {left_s:.1f} s of the {VAL_SHARE:.0%} share is left: "
                                     f"the rest validate {round(n_img * q.val_fraction)} of them (evenly spaced, "
                                     "among those validated so far)")
    n = int(max(1, min(8 - done, left_s // max(q.val_s, 1e-3))))  # 8 at most in all, as fill_budget plans
    now = min(1.0, elapsed_s / max(p.budget * (1 - RESERVE), 1e-6))
    first = max(0.5, now)
    nxt = [1.0] if n == 1 else [round(first + (1.0 - first) * (i + 1) / n, 3) for i in range(n)]
    q.val_at = list(p.val_at[:done]) + [v for v in nxt if v > now] or [1.0]
    train_left = p.budget * (1 - RESERVE) - elapsed_s - (len(q.val_at) - done) * q.val_s
    q.steps = steps_done + int(max(0.0, train_left) / max(p.step_s, 1e-6))
    q.reasons["val_at"] = (f"replanned at validation {done}: it took {measured_s:.1f} s against ~{p.val_s:.1f} s "
                           f"planned ({measured_s / p.val_s:.1f}x); {len(q.val_at) - done} more fit in what is left of "
                           f"{VAL_SHARE:.0%} of the budget")
    q.reasons["steps"] = (f"~{q.steps} steps in all, replanned after validation {done}, at {p.step_s * 1000:.0f} ms "
                          "a step")
    return q


def thin(val_at: list[float], done: int, spent: float, took: float, budget: float) -> list[float]:
    """The validation points left after `done` of them, spent seconds so far and the last one taking `took`:
    later points dropped (evenly, the final one always kept) so that validation stays within VAL_SHARE."""
    left = val_at[done:]
    if not left:
        return list(val_at)
    fits = int(max(0.0, VAL_SHARE * budget - spent) // max(took, 1e-6))
    if fits >= len(left):
        return list(val_at)
    keep = max(fits, 1)
    idx = sorted({round(i * (len(left) - 1) / max(keep - 1, 1)) for i in range(keep)} | {len(left) - 1})
    if keep == 1:
        idx = [len(left) - 1]
    return list(val_at[:done]) + [left[i] for i in idx]
