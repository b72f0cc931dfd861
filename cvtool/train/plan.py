"""The training plan: written rules from a dataset fingerprint, the device and a wall-clock budget.

nnU-Net's idea for 2-D images on a CPU-or-GPU time budget. Two pure steps:

    plan = propose(fp, device="cpu", budget=300, overrides={"lr": 1e-3})   # shapes, net, optimiser, data
    plan = fill_budget(plan, step_s=0.15, val_s=1.2, setup_s=4.0)           # steps and validation cadence

Between them the caller measures the step time of the proposed shape on its backend (and may `shrink` a plan
whose steps would be too few). Every value carries the reason it was chosen; a value the user set wins and
says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from cvtool.data.augment import LEVELS, PRESETS
from cvtool.data.fingerprint import Fingerprint

PIXELS_PER_STEP = 8 * 128 * 128  # batch x crop^2 of a step: batch 8 at 128, 2 at 256
CONTEXT = {"cpu": 256, "cuda": 512}  # the long side a median image is resampled to at most
MIN_THICKNESS = 8.0  # px a class's structures keep after resampling (2 * area / boundary)
MIN_STEPS = 400  # fewer steps than this in the budget: the plan shrinks the crop (down to MIN_CROP)
MIN_CROP = 96
VAL_SHARE = 0.10  # of the budget, at most, spent on validation
RESERVE = 0.01  # of the budget kept for the last checkpoint and the summary
BASE_LR = 3e-3  # Adam at batch 8
UNTIMED_VAL_MARGIN = 1.3  # until a validation has been timed, the estimate of the final one x this (docs/benchmarks.md)
END_SLACK = 0.5  # s a seconds budget stops training before its end, to save and report (cvtool.train.budget)
NETWORK_REACH = 6  # a thin class's context: this many thicknesses (membrane, 300 s: depth 3 0.806-0.810, depth 4 0.801)


@dataclass
class Plan:
    scale: float = 1.0
    crop: int = 128
    batch_size: int = 8
    depth: int = 3
    width: int = 16
    lr: float = BASE_LR
    warmup: float = 0.03
    schedule: str = "poly"
    optimizer: str = "adam"
    dice: float = 1.0
    class_power: float = 0.25
    augment: str = "default"
    rot90: bool = False
    elastic: float = 0.0  # std (pixels) of U-Net's smooth elastic warp on the geometric crops; 0: off
    tta: str = "flip"  # test-time augmentation stored with the model: none | flip | dihedral
    p_focus: float = 0.0
    focus: list[int] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    budget: float = 300.0
    steps: int = 0  # estimated from the measured step time
    val_at: list[float] = field(default_factory=list)  # fractions of the budget at which validation runs
    step_s: float = 0.0
    val_s: float = 0.0
    setup_s: float = 0.0
    device: str = "cpu"
    reasons: dict[str, str] = field(default_factory=dict)
    given: list[str] = field(default_factory=list)  # values the user set

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def rows(self) -> list[tuple[str, str, str]]:
        """(name, value, reason) for a table."""
        show = {"scale": f"{self.scale:g}", "crop": f"{self.crop}x{self.crop}", "batch_size": str(self.batch_size),
                "depth": str(self.depth), "width": str(self.width), "lr": f"{self.lr:.2g}",
                "warmup": f"{self.warmup:g} of the run", "schedule": self.schedule, "optimizer": self.optimizer,
                "dice": f"{self.dice:g}", "class_power": f"1/f^{self.class_power:g}",
                "augment": self.augment + (" + rot90/vflip" if self.rot90 else ""),
                "elastic": f"{self.elastic:g} px" if self.elastic else "off", "tta": self.tta,
                "p_focus": f"{self.p_focus:.2f}" + (f" on classes {self.focus}" if self.focus else ""),
                "mean": ", ".join(f"{v:.3f}" for v in self.mean), "std": ", ".join(f"{v:.3f}" for v in self.std),
                "steps": f"~{self.steps}" if self.steps else "-",
                "val_at": ", ".join(f"{v:.0%}" for v in self.val_at) or "-"}
        return [(k, v, ("set by you" if k in self.given else self.reasons.get(k, ""))) for k, v in show.items()]


def round_to(v: float, m: int, lo: int) -> int:
    return max(lo, int(round(v / m)) * m)


def choose_scale(fp: Fingerprint, device: str) -> tuple[float, str]:
    """Shrink images whose median long side exceeds what the device affords, unless a class's structures
    would become thinner than MIN_THICKNESS pixels."""
    H, W = fp.median_hw
    long = max(H, W)
    target = CONTEXT.get(device, CONTEXT["cpu"])
    s_ctx = min(1.0, target / long)
    thin = [t for t, sh in zip(fp.thickness, fp.class_share) if t and sh > 0.005]
    t_min = min(thin) if thin else float("inf")
    s_detail = min(1.0, MIN_THICKNESS / t_min)
    s = round(max(s_ctx, s_detail), 3)
    if s >= 1.0:
        why = (f"median image {H}x{W} fits the {target}-px context" if s_ctx >= 1 else
               f"structures {t_min:.1f} px thick (2 x area / boundary) would fall under {MIN_THICKNESS:g} px if shrunk")
        return 1.0, f"full resolution: {why}"
    return s, (f"median image {H}x{W} -> {round(H * s)}x{round(W * s)} (long side {target} on {device}); the thinnest "
               f"class stays {t_min * s:.0f} px thick")


def choose_depth(fp: Fingerprint, scale: float, crop: int) -> tuple[int, str]:
    """The shallowest U-Net (3..5 levels) whose reach covers the typical object; no deeper than leaves
    8 x 8 features at the bottom of a crop."""
    from cvtool.model.inference import halo
    from cvtool.model.spec import ModelSpec

    dom = max(range(len(fp.class_share)), key=lambda k: fp.class_share[k])
    # a thin network (membranes) spans a few of its thicknesses around a pixel, however far it is connected
    sides = [min(math.sqrt(a), NETWORK_REACH * (t or math.inf)) * scale
             for k, (a, t) in enumerate(zip(fp.object_area, fp.thickness))
             if a and k != dom]
    obj = max(sides) if sides else 0.0
    cap = max(3, min(5, int(math.log2(max(crop, 8) / 8))))
    for d in range(3, cap + 1):
        reach = halo(ModelSpec(in_channels=1, num_classes=2, width=4, depth=d))
        if reach >= obj or d == cap:
            limit = " (the most the crop allows)" if d == cap and reach < obj else ""
            return d, f"reach {reach} px around a pixel vs typical object {obj:.0f} px across{limit}"
    return cap, "deepest the crop allows"


def propose(fp: Fingerprint, *, device: str = "cpu", budget: float = 300.0, overrides: dict | None = None) -> Plan:
    """Every value of the plan but its step count, with reasons; `overrides` (plan field -> value) win."""
    over = dict(overrides or {})
    p = Plan(budget=float(budget), device=device)
    R = p.reasons
    p.scale, R["scale"] = choose_scale(fp, device)
    H, W = fp.median_hw
    sh, sw = H * over.get("scale", p.scale), W * over.get("scale", p.scale)
    cap = CONTEXT.get(device, CONTEXT["cpu"])
    p.crop = min(cap, round_to(min(sh, sw), 32, 64))
    R["crop"] = (f"the resampled median image's short side {min(sh, sw):.0f} px, to a multiple of 32, "
                 f"at most {cap} on {device}")
    crop = over.get("crop", p.crop)
    p.batch_size = int(min(32, max(2, round(PIXELS_PER_STEP / crop**2))))
    R["batch_size"] = f"{PIXELS_PER_STEP:,} pixels a step / {crop}^2 (at least 2 for BatchNorm)"
    p.depth, R["depth"] = choose_depth(fp, over.get("scale", p.scale), crop)
    p.width = 32 if device == "cuda" else 16
    R["width"] = "32 channels at the first level on a GPU" if device == "cuda" else "16 channels: what a CPU trains in the budget"
    b = over.get("batch_size", p.batch_size)
    p.lr = float(f"{BASE_LR * math.sqrt(b / 8):.2g}")
    R["lr"] = f"Adam {BASE_LR:g} at batch 8, scaled by sqrt(batch / 8)"
    R["warmup"] = "linear warm-up over the first 3% of the time"
    R["schedule"] = "poly decay on elapsed time, to 1% at the budget's end"
    R["optimizer"] = "Adam: robust to the learning rate"
    R["dice"] = "soft Dice added to the cross-entropy: rare classes count as much as large ones"
    R["class_power"] = "cross-entropy weights 1/f^0.25 of the class frequency f, clipped to [0.2, 5]"
    n = fp.n_train
    p.augment = "heavy" if n < 50 else "default" if n < 500 else "light"
    R["augment"] = f"{n} training images: " + ("few, so heavy" if n < 50 else "default" if n < 500 else "many, so light")
    sq = fp.size_h[0] == fp.size_h[2] == fp.size_w[0] == fp.size_w[2]
    p.rot90 = fp.channels == 1 and sq
    if p.rot90:
        R["augment"] += "; square grayscale tiles of one size (microscopy-like): no up, so 90-degree turns and flips"
    R["elastic"] = ("off: on membrane (U-Net's own case) a 10-px warp scored 0.806 / 0.800 against 0.807 / 0.803 "
                    "without it (docs/benchmarks.md); --elastic SIGMA turns it on")
    p.tta = "dihedral" if p.rot90 else "flip"
    R["tta"] = ("at test time the mean over the " + ("8 flips and quarter turns" if p.rot90 else "left-right mirror") +
                " it was trained with (nnU-Net mirrors too): steadier masks for 2x-8x the inference")
    dom = max(range(len(fp.class_share)), key=lambda k: fp.class_share[k])
    rare = [k for k, s in enumerate(fp.class_share) if k != dom and s > 0]
    if rare and min(fp.class_share[k] for k in rare) < 0.10:
        p.p_focus, p.focus = 0.33, rare
        R["p_focus"] = (f"a class under 10% of the pixels: a third of the crops centred on a pixel of "
                        f"{', '.join(fp.classes[k] for k in rare)}")
    else:
        R["p_focus"] = "no class under 10% of the pixels: crops placed uniformly"
    p.mean, p.std = list(fp.mean), [max(s, 1e-3) for s in fp.std]
    R["mean"] = R["std"] = "the training images' per-channel statistics"
    for k, v in over.items():
        if k in Plan.__dataclass_fields__ and v is not None:
            setattr(p, k, v)
            p.given.append(k)
    if p.augment not in LEVELS:
        from cvtool.errors import UsageError

        raise UsageError(f"unknown --augment {p.augment!r}", hint=f"choose one of {', '.join(PRESETS)}")
    return p


def shrink(p: Plan) -> Plan | None:
    """A cheaper plan (crop x 0.75, batch kept) when too few steps fit the budget; None when nothing is left."""
    if "crop" in p.given:
        return None
    c = round_to(p.crop * 0.75, 32, MIN_CROP)
    if c >= p.crop:
        return None
    q = Plan.from_dict(p.to_dict())
    q.crop = c
    q.reasons = dict(p.reasons)
    q.reasons["crop"] = p.reasons["crop"] + f"; shrunk from {p.crop}: under {MIN_STEPS} steps fitted the budget"
    return q


def fill_budget(p: Plan, *, step_s: float, val_s: float, setup_s: float) -> Plan:
    """Steps and validation points from measured times: validation costs at most VAL_SHARE of the budget."""
    q = Plan.from_dict(p.to_dict())
    q.step_s, q.val_s, q.setup_s = step_s, val_s, setup_s
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
