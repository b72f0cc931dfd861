"""Everything a run needs before its first step, made one of two ways; the one loop (cvtool/train/loop.py) runs both.

    configured(cfg, ...)  the user's options: net, crop, batch, learning rate; an epoch budget (and --time if given);
                          batches read from the dataset (crop + flip)
    planned(cfg, ...)     a dataset fingerprint -> a plan (cvtool/train/plan.py) -> this backend's step and
                          validation measured -> the plan filled to the seconds budget; batches from the images in
                          memory, resampled by the plan's scale (the plan's augmentation and focus sampling)

Either way batch k is a function of (seed, k) alone (cvtool/train/batches.py): a resumed run replays the batches.
Under torchrun rank r trains on global batches k * world + r.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cvtool.errors import UsageError
from cvtool.model.checkpoint import Checkpoint
from cvtool.model.meta import ModelMeta
from cvtool.model.pretrained import Starts
from cvtool.model.spec import ModelSpec, init_params
from cvtool.train.batches import batch_indices, class_weights, dataset_class_weights
from cvtool.train.budget import Budget
from cvtool.train.config import TrainConfig
from cvtool.train.optim import OptimConfig
from cvtool.train.plan import MIN_STEPS, Plan, propose
from cvtool.train.plan_budget import fill_budget, shrink
from cvtool.train.ranks import seconds_agreed
from cvtool.train.records import RunState

Sampler = Callable[[int], tuple[np.ndarray, np.ndarray]]  # k -> this rank's batch k: x (N, C, S, S) normalised, y


@dataclass
class Setup:
    spec: ModelSpec
    params: dict[str, np.ndarray]
    optim: OptimConfig
    class_weights: np.ndarray | None
    dice: float
    meta: ModelMeta  # what the checkpoint stores for `segment`: classes, colours, normalisation, scale, TTA
    sample: Sampler
    val_images: list[np.ndarray]  # uint8 (H, W, C), as the files hold them: validation resamples as segment does
    val_masks: list[np.ndarray]
    ignore: int
    budget: Budget
    state: RunState
    lr: float  # the peak learning rate
    schedule: str
    warmup: float
    batch_size: int
    plan: Plan | None = None
    fingerprint: Any = None  # cvtool.data.fingerprint.Fingerprint (planned runs)


def _check_resume(resume: Checkpoint, ds) -> None:
    spec = resume.spec
    if (spec.in_channels, spec.num_classes) != (ds.in_channels, len(ds.classes)):
        raise UsageError(f"the checkpoint's net takes {spec.in_channels} channels and {spec.num_classes} classes, "
                         f"the data has {ds.in_channels} and {len(ds.classes)}",
                         hint="resume on the data the run was started with")


def _budget(st: RunState, **kw) -> Budget:
    """The budget of a run that has come as far as `st`: a resume keeps the validation time it measured last."""
    last = st.history[-1] if st.history else {}
    if last.get("val_seconds") is not None:
        kw["val_s"] = float(last["val_seconds"])
    return Budget(validations=len(st.history or []), last_val_step=int(last.get("step", 0)), **kw)


def _refuse_spent(budget: Budget, st: RunState, resume: Checkpoint | None, cfg: TrainConfig) -> None:
    why = budget.spent(st.step, st.elapsed) if resume is not None else None
    name = resume.path if resume is not None and resume.path else "the checkpoint"
    if why == "epochs":
        done = st.step // max(budget.steps_per_epoch or 1, 1)
        raise UsageError(f"{name} has finished its {done} epochs ({st.step} steps)",
                         hint=f"pass --epochs N with N > {done} to train on")
    if why == "time":
        raise UsageError(f"{name} has used {st.elapsed:.0f} s of its {budget.seconds:g} s budget",
                         hint=f"pass a larger --time (more than {st.elapsed / 0.99:.0f}) to train on, "
                              "or --epochs N, or start a new run")


def configured(cfg: TrainConfig, *, resume: Checkpoint | None, on_event, rank: int = 0, world: int = 1,
               checked: Callable[[], None] = lambda: None, starts: Starts | None = None) -> Setup:
    """checked(): called once the data has passed its checks (the loop then makes the run folder)."""
    from cvtool.data import open_datasets
    from cvtool.data.loader import channel_stats, collate
    from cvtool.data.memory import load_arrays
    from cvtool.data.validate import check_dataset

    train_ds, val_ds, info = open_datasets(cfg.data, val_split=cfg.val_split, seed=cfg.seed,
                                           synth_size=cfg.synth_size, synth_n=(cfg.synth_train, cfg.synth_val))
    if cfg.data is not None:  # before any output: a bad mask is one error line, nothing else
        check_dataset(train_ds)
        check_dataset(val_ds)
    if len(val_ds) == 0:
        raise UsageError("the validation set is empty", hint="raise --val-split, or add DIR/val")
    checked()
    B = cfg.batch_size
    spe = len(train_ds) // world // B
    if spe < 1:
        raise UsageError(f"the training set ({len(train_ds)} images) is smaller than one batch per process "
                         f"({B} x {world})", hint="lower --batch-size")
    if resume is not None:
        _check_resume(resume, train_ds)
        spec, params, meta = resume.spec, resume.params, resume.meta
        st = RunState.from_dict(resume.train_state.get("run"))
        was = (resume.train_state.get("config") or {}).get("time_budget")
        if cfg.time_budget != was:  # a new --time on resume: used, and said
            now = "no time limit" if cfg.time_budget is None else f"{cfg.time_budget:g} s"
            on_event("note", {"text": f"this run's time budget is now {now} (was "
                                      f"{'none' if was is None else f'{was:g} s'}), of which {st.elapsed:.0f} s are spent"})
        cw = resume.train_state.get("class_weights")
        weights = np.array(cw, np.float32) if cw else None
    else:
        start = None if starts is None else starts.get(cfg.encoder)
        spec = ModelSpec(in_channels=train_ds.in_channels, num_classes=len(train_ds.classes), width=cfg.width,
                         depth=cfg.depth, activation=cfg.activation, norm=cfg.norm, encoder=cfg.encoder)
        params = init_params(spec, cfg.seed) if start is None else start.params(spec, cfg.seed)
        given = None if start is None else start.normalization(spec.in_channels)  # what pretrained weights expect
        mean, std = channel_stats(train_ds, max_items=64) if given is None else given
        std = np.maximum(np.asarray(std, np.float32), 1e-3)
        meta = ModelMeta(list(train_ds.classes), [list(c) for c in train_ds.colors],
                         np.asarray(mean, np.float32).tolist(), std.tolist())
        st = RunState.from_dict(None)
        weights = dataset_class_weights(train_ds, spec.num_classes) if cfg.class_balance else None
    budget = _budget(st, steps=spe * cfg.epochs, steps_per_epoch=spe, seconds=cfg.time_budget)
    _refuse_spent(budget, st, resume, cfg)
    on_event("data", {"info": info, "train": len(train_ds), "val": len(val_ds), "classes": list(train_ds.classes)})
    mean, std = np.asarray(meta.mean, np.float32), np.asarray(meta.std, np.float32)

    def sample(k: int):
        g = k * world + rank  # the global batch
        idx = batch_indices(g, B, len(train_ds), cfg.seed)
        u = np.random.default_rng([cfg.seed, g, 1]).random((B, 3))  # crop corners and flips
        x, y = collate([train_ds[int(i)] for i in idx], cfg.img_size, u)
        return ((x - mean[:, None, None]) / std[:, None, None]).astype(np.float32), y

    va = load_arrays(val_ds)
    return Setup(spec=spec, params=params, optim=OptimConfig(name=cfg.optimizer, weight_decay=cfg.weight_decay,
                                                                encoder_lr=cfg.encoder_lr, frozen_bn=cfg.frozen_bn),
                 class_weights=weights, dice=cfg.dice, meta=meta, sample=sample, val_images=va.images,
                 val_masks=va.masks, ignore=train_ds.ignore_index, budget=budget, state=st, lr=cfg.lr,
                 schedule=cfg.schedule, warmup=cfg.warmup, batch_size=B)


def planned(cfg: TrainConfig, make_trainer: Callable, *, t0: float, clock: Callable[[], float],
            overrides: dict | None, resume: Checkpoint | None, cache_dir: Path | None, on_event,
            rank: int = 0, world: int = 1, checked: Callable[[], None] = lambda: None, starts: Starts | None = None) -> Setup:
    from cvtool.data import check_dataset, open_datasets
    from cvtool.data.fingerprint import dataset_fingerprint
    from cvtool.data.memory import load_arrays, rescale

    train_ds, val_ds, info = open_datasets(cfg.data, val_split=cfg.val_split, seed=cfg.seed)
    check_dataset(train_ds)
    check_dataset(val_ds)
    if len(val_ds) == 0:
        raise UsageError("the validation set is empty", hint="raise --val-split, or add DIR/val")
    checked()
    on_event("data", {"info": info, "train": len(train_ds), "val": len(val_ds), "classes": list(train_ds.classes)})
    on_event("loading", {"total": len(train_ds) + len(val_ds)})
    tick = lambda i: on_event("loaded", {})  # noqa: E731
    tr_a, va_a = load_arrays(train_ds, on_item=tick), load_arrays(val_ds, on_item=tick)
    cache = None if cache_dir is None else Path(cache_dir) / "fingerprints.json"
    fp = dataset_fingerprint(train_ds, val_ds, list(info.notes), cache, tr_a, va_a)
    on_event("fingerprint", {"fingerprint": fp.to_dict()})

    K = len(train_ds.classes)
    if resume is not None:
        _check_resume(resume, train_ds)
        plan = Plan.from_dict(resume.train_state["plan"])
        st = RunState.from_dict(resume.train_state.get("run"))
        if cfg.time_budget is not None and cfg.time_budget != plan.budget:  # a new --time on resume: used, and said
            on_event("note", {"text": f"--time {cfg.time_budget:g}: this run's budget is now {cfg.time_budget:g} s "
                                      f"(was {plan.budget:g} s), of which {st.elapsed:.0f} s are spent"})
            plan.budget = float(cfg.time_budget)
    else:
        plan = propose(fp, device=cfg.device, budget=float(cfg.time_budget or 300.0), overrides=overrides,
                       encoders=starts.encoders if starts is not None else ("unet",))
        cfg.encoder = plan.encoder
        start = None if starts is None else starts.get(plan.encoder)
        given = None if start is None else start.normalization(train_ds.in_channels)
        if given is not None:  # the encoder's weights were trained on this normalisation: the batches get it too
            plan.mean, plan.std = given
            plan.reasons["mean"] = plan.reasons["std"] = "what the encoder's pretrained weights expect"
        st = RunState.from_dict(None)
    if resume is not None:
        start = None
    tr_s = rescale(tr_a, plan.scale)
    hist = np.asarray(fp.class_share, np.float64) * 1e6
    weights = class_weights(hist, plan.class_power) if cfg.class_balance else None

    def spec_for(p: Plan) -> ModelSpec:
        return ModelSpec(in_channels=train_ds.in_channels, num_classes=K, width=p.width, depth=p.depth,
                         activation=cfg.activation, norm=cfg.norm, encoder=p.encoder)

    if resume is None:  # measure this backend's step at the planned shape; shrink while too few steps fit
        va_s = rescale(va_a, plan.scale)
        while True:
            sample = _sampler(plan, tr_s, cfg.seed, rank, world)
            step_s, val_s, agree_s = _measure(make_trainer, spec_for(plan), plan, sample, cfg.seed, weights,
                                              va_s.images, world, full=(va_a.images, va_a.masks),
                                              ignore=train_ds.ignore_index, clock=clock)
            plan = fill_budget(plan, step_s=step_s, val_s=val_s, setup_s=agree_s(clock() - t0))
            smaller = shrink(plan) if plan.steps < MIN_STEPS else None
            if smaller is None:
                break
            if smaller.scale != plan.scale:
                tr_s, va_s = rescale(tr_a, smaller.scale), rescale(va_a, smaller.scale)
            plan = smaller
    spec = resume.spec if resume is not None else spec_for(plan)
    params = resume.params if resume is not None else init_params(spec, cfg.seed) if start is None else \
        start.params(spec, cfg.seed)
    meta = ModelMeta(list(train_ds.classes), [list(c) for c in train_ds.colors], list(plan.mean), list(plan.std),
                     scale=plan.scale, tta=plan.tta)
    budget = _budget(st, seconds=plan.budget, val_at=list(plan.val_at), val_s=plan.val_s)
    _refuse_spent(budget, st, resume, cfg)
    _apply(cfg, plan)
    keep = val_subset(len(va_a.images), plan.val_fraction)
    return Setup(spec=spec, params=params, optim=OptimConfig(name=plan.optimizer, weight_decay=cfg.weight_decay,
                                                                encoder_lr=plan.encoder_lr, frozen_bn=plan.frozen_bn),
                 class_weights=weights, dice=plan.dice, meta=meta, sample=_sampler(plan, tr_s, cfg.seed, rank, world),
                 val_images=[va_a.images[i] for i in keep], val_masks=[va_a.masks[i] for i in keep],
                 ignore=train_ds.ignore_index, budget=budget, state=st,
                 lr=plan.lr, schedule=plan.schedule, warmup=plan.warmup, batch_size=plan.batch_size, plan=plan,
                 fingerprint=fp)


def val_subset(n: int, fraction: float) -> list[int]:
    """Evenly spaced indices of round(n * fraction) of n validation images (at least one): the same ones every
    validation, so that the best checkpoint is chosen on one set."""
    k = max(1, min(n, round(n * fraction)))
    return sorted({int(i) for i in np.linspace(0, n - 1, k).round()})


def _sampler(p: Plan, tr, seed: int, rank: int, world: int) -> Sampler:
    """The plan's batches: its crop, augmentation and focus sampling, over the resampled images in memory."""
    from cvtool.data.augment import PRESETS, Augment, sample_batch

    aug = PRESETS[p.augment]
    if p.rot90:
        aug = Augment(**{**aug.to_dict(), "rot90": True, "vflip": True})
    if p.elastic:
        aug = Augment(**{**aug.to_dict(), "elastic": float(p.elastic)})
    focus = np.asarray(p.focus, np.int64)
    mean, std = np.asarray(p.mean, np.float32), np.asarray(p.std, np.float32)
    fill = mean.copy()  # pixels a crop adds outside its image: the mean (0 after normalisation)

    def sample(k: int):
        g = k * world + rank
        rng = np.random.default_rng([seed, g, 1])
        idx = batch_indices(g, p.batch_size, len(tr), seed)
        x, y = sample_batch(tr.images, tr.masks, idx, p.crop, aug, rng, fill=fill, focus=focus, p_focus=p.p_focus)
        return ((x - mean[:, None, None]) / std[:, None, None]).astype(np.float32), y
    return sample


def _measure(make_trainer, spec, plan: Plan, sample, seed: int, weights, val_images: list,
             world: int = 1, full: tuple[list, list] | None = None,
             ignore: int = 255, clock: Callable[[], float] = time.perf_counter,
             ) -> tuple[float, float, Callable[[float], float]]:
    """(seconds a training step takes, seconds one validation pass should take, the ranks' agreement on seconds) on
    this backend, measured on a throw-away trainer: 2 warm-up steps, then 3 timed; predict warmed up on the
    median-sized validation image, then timed on up to 3 more. full: the validation images and masks at their own
    size (val_images are them at the plan's scale), for what validation costs beyond the net: resampling the image
    down, the K-class logits back up to every pixel, argmax, loss and confusion (ccp: 59 classes on 0.45 MP images
    cost more than its net at scale 0.31, and an estimate of the net alone was 2.7x short). Under torchrun both
    times are the slowest rank's. clock: the run's (a test's fake clock makes the plan independent of the machine's
    load)."""
    from cvtool.model.inference import TTA, net_pixels, predict_batch, prepare

    opt = OptimConfig(name=plan.optimizer, encoder_lr=plan.encoder_lr, frozen_bn=plan.frozen_bn)  # as it will train
    tr = make_trainer(spec, init_params(spec, seed), opt, weights, seed, plan.dice)
    x, y = sample(0)
    for _ in range(2):
        tr.step(x, y, 1e-6)
    t = clock()
    for _ in range(3):
        tr.step(x, y, 1e-6)
    step_s = (clock() - t) / 3
    sizes = [int(np.prod(im.shape[:2])) for im in val_images]
    order = np.argsort(sizes)
    med = int(order[len(order) // 2])
    # timed: up to 3 images of shapes not seen yet (as most validation images are), nearest the median in size; the
    # median of their rates, so that one slow call (a busy moment) does not set the whole run's validation cadence
    seen = {val_images[med].shape}
    probes: list[int] = []
    for i in sorted(order.tolist(), key=lambda i: abs(sizes[i] - sizes[med])):
        if len(probes) < 3 and val_images[i].shape not in seen:
            seen.add(val_images[i].shape)
            probes.append(int(i))
    probes = probes or [med] * 3  # one size only: its steady rate
    rates, post = [], []
    for k, i in enumerate([med] + probes):  # the first call warms the code up, untimed
        xv = prepare(val_images[i], spec.in_channels, plan.mean, plan.std).x
        padded = int(np.prod([-(-v // spec.multiple) * spec.multiple for v in xv.shape[1:]]))
        t = clock()
        lg = predict_batch(tr.predict, [xv], spec.multiple)[0]
        if k:
            rates.append(padded / max(clock() - t, 1e-6))
        if full is not None:  # the first one warms up (imports, first allocations), untimed
            post.append(_post_seconds(lg, full[0][i], full[1][i], val_images[i].shape[:2], ignore, clock))
    post = post[1:]
    px_s = float(np.median(rates))
    work = sum(net_pixels(im.shape[:2], spec) for im in val_images)  # tiles overlap where an image is cut
    agree = seconds_agreed(tr, world)
    after = 0.02 * len(sizes)  # without the images at their size: a guess per image
    if full is not None and post:  # seconds per image pixel, times every validation image's pixels
        after = float(np.median(post)) * sum(int(np.prod(m.shape[:2])) for m in full[1])
    val_s = 1.2 * (TTA[plan.tta] * work / px_s + after)
    return agree(step_s), agree(val_s), agree


def _post_seconds(lg: np.ndarray, image: np.ndarray, mask: np.ndarray, hw: tuple[int, int], ignore: int,
                  clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds per image pixel that validating one image costs beyond its net (cvtool.train.validate.evaluate_images:
    the image resampled to the net's hw, logits (K, h, w) resized back, argmax, cross-entropy, confusion)."""
    from cvtool.data.memory import resize_image
    from cvtool.metrics import SegMetrics
    from cvtool.model.inference import resize_logits
    from cvtool.train.validate import softmax_ce

    K = lg.shape[0]
    t = clock()
    img = image[..., None] if image.ndim == 2 else image
    if tuple(img.shape[:2]) != tuple(hw):
        resize_image(np.ascontiguousarray(img), hw)
    up = resize_logits(lg[:, : hw[0], : hw[1]], mask.shape[:2])
    SegMetrics(K, ignore).update(up.argmax(0), mask)
    softmax_ce(up[None], mask[None].astype(np.int64), ignore)
    return (clock() - t) / max(1, int(np.prod(mask.shape[:2])))


def _apply(cfg: TrainConfig, plan: Plan) -> None:
    """Write the plan's values into the config (what the summary and the checkpoint report)."""
    cfg.img_size, cfg.batch_size, cfg.depth, cfg.width = plan.crop, plan.batch_size, plan.depth, plan.width
    cfg.lr, cfg.warmup, cfg.schedule, cfg.optimizer = plan.lr, plan.warmup, plan.schedule, plan.optimizer
    cfg.dice, cfg.encoder, cfg.encoder_lr, cfg.frozen_bn = plan.dice, plan.encoder, plan.encoder_lr, plan.frozen_bn
