"""Training on a user's data within a wall-clock budget: fingerprint -> plan -> a run driven by elapsed time.

    result = train_timed(cfg, make_trainer, out_dir, t0=start_of_command, overrides={...}, cache_dir=...)

The budget counts everything from t0: reading, fingerprint, the step-time measurement, augmentation,
validation, checkpoints. The learning rate follows the elapsed share of the time left for training;
validation runs on whole images (cvtool.model.inference.segment_logits, as `cvtool segment` does) at the plan's
points, each timed so that the next ones, and the training's end, keep to the budget. Batches come from a
background thread; batch k depends only on (seed, k), so a resumed run replays the same batches.

Under torchrun (world > 1) every rank runs this loop: rank r trains on global batches k*world + r (its own data),
DDP averages the gradients, and the ranks agree (max over ranks, the trainer's max_over_ranks) on everything the
clock decides: the measured step and validation times the plan is built from, the elapsed time that sets the
learning rate and the validation points, and the stop. BatchNorm statistics are averaged before each validation,
which every rank runs on the same weights; rank 0 alone writes files.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cvtool.errors import CvtoolError, UsageError
from cvtool.metrics import SegMetrics
from cvtool.model import checkpoint as ckpt_io
from cvtool.model.meta import ModelMeta
from cvtool.model.spec import ModelSpec, init_params
from cvtool.train.optim import OptimConfig
from cvtool.train.plan import MIN_STEPS, RESERVE, Plan, fill_budget, propose, shrink, thin
from cvtool.train.schedule import lr_at

STOP_TIME, STOP_SIGNAL = "time budget reached", "interrupted"


def batch_indices(k: int, B: int, n: int, seed: int) -> np.ndarray:
    """Images of batch k: positions k*B .. k*B+B-1 of a stream of per-epoch permutations of range(n)."""
    pos = np.arange(k * B, (k + 1) * B)
    out = np.empty(B, np.int64)
    for e in np.unique(pos // n):
        sel = pos // n == e
        out[sel] = np.random.default_rng([seed, int(e), 7]).permutation(n)[pos[sel] % n]
    return out


class Batches:
    """Augmented batches k = start, start+1, ... made in a background thread (a queue of a few ahead).
    get() returns (x, y) and adds the time it waited to `waited`."""

    def __init__(self, make: Callable[[int], tuple[np.ndarray, np.ndarray]], start: int, ahead: int = 3):
        self.make, self.k = make, start
        self.q: queue.Queue = queue.Queue(maxsize=ahead)
        self.stop = threading.Event()
        self.waited = 0.0
        self.thread = threading.Thread(target=self._run, name="cvtool-batches", daemon=True)
        self.thread.start()

    def _run(self):
        k = self.k
        while not self.stop.is_set():
            try:
                item = (k, self.make(k), None)
            except BaseException as e:  # handed to the consumer, raised there
                item = (k, None, e)
            while not self.stop.is_set():
                try:
                    self.q.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[2] is not None:
                return
            k += 1

    def get(self) -> tuple[np.ndarray, np.ndarray]:
        t = time.perf_counter()
        k, xy, e = self.q.get()
        self.waited += time.perf_counter() - t
        if e is not None:
            raise e
        return xy

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)


def evaluate_images(predict, images, masks, spec: ModelSpec, mean, std, scale: float, K: int, ignore: int,
                    tta: str = "none") -> dict:
    """Whole-image validation: one confusion matrix over every image, each segmented as `cvtool segment` would."""
    from cvtool.model.inference import segment_logits

    m = SegMetrics(K, ignore)
    for img, msk in zip(images, masks):
        lg = segment_logits(predict, img, spec, mean, std, scale=scale, tta=tta)
        m.update(lg.argmax(0), msk)
    out = m.summary()
    out["absent"] = [k for k, v in enumerate(out["iou"]) if v is None]  # in neither truth nor prediction: not averaged
    out["confusion"] = m.cm.tolist()
    return out


def ranks_max(trainer, world: int) -> Callable[[int], int]:
    """v -> the largest v over the ranks, the same on every rank (the trainer's max_over_ranks); v in one process."""
    from cvtool.train.ranks import MaxOverRanks

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


def _measure(make_trainer, spec, plan: Plan, sample, seed: int, weights, val_images: list,
             world: int = 1) -> tuple[float, float, Callable[[float], float]]:
    """(seconds a training step takes, seconds one validation pass should take, the ranks' agreement on seconds) on
    this backend, measured on a throw-away trainer: 2 warm-up steps, then 3 timed; predict warmed up on the
    median-sized validation image, then timed on up to 3 more. Under torchrun both times are the slowest rank's."""
    from cvtool.model.inference import TTA, net_pixels, predict_batch, prepare

    tr = make_trainer(spec, init_params(spec, seed), OptimConfig(name=plan.optimizer), weights, seed, plan.dice)
    x, y = sample(0)
    for _ in range(2):
        tr.step(x, y, 1e-6)
    t = time.perf_counter()
    for _ in range(3):
        tr.step(x, y, 1e-6)
    step_s = (time.perf_counter() - t) / 3
    sizes = [int(np.prod(im.shape[:2])) for im in val_images]
    order = np.argsort(sizes)
    med = int(order[len(order) // 2])
    # timed: up to 3 images of shapes not seen yet (as most validation images are), nearest the median in size; the
    # median of their rates, so that one slow call (a busy moment) does not set the whole run's validation cadence
    seen, probes = {val_images[med].shape}, []
    for i in sorted(order.tolist(), key=lambda i: abs(sizes[i] - sizes[med])):
        if len(probes) < 3 and val_images[i].shape not in seen:
            seen.add(val_images[i].shape)
            probes.append(int(i))
    probes = probes or [med] * 3  # one size only: its steady rate
    rates = []
    for k, i in enumerate([med] + probes):  # the first call warms the code up, untimed
        xv = prepare(val_images[i], spec.in_channels, plan.mean, plan.std).x
        padded = int(np.prod([-(-v // spec.multiple) * spec.multiple for v in xv.shape[1:]]))
        t = time.perf_counter()
        predict_batch(tr.predict, [xv], spec.multiple)
        if k:
            rates.append(padded / max(time.perf_counter() - t, 1e-6))
    px_s = float(np.median(rates))
    work = sum(net_pixels(im.shape[:2], spec) for im in val_images)  # tiles overlap where an image is cut
    agree = seconds_agreed(tr, world)
    val_s = 1.2 * TTA[plan.tta] * work / px_s + 0.02 * len(sizes)  # + resampling, argmax, metrics
    return agree(step_s), agree(val_s), agree


UNTIMED_VAL_MARGIN = 1.3  # the final validation's estimate x this, when no validation has been timed yet


def train_timed(cfg, make_trainer: Callable, out_dir: Path, *, t0: float, overrides: dict | None = None,
                resume: ckpt_io.Checkpoint | None = None, cache_dir: Path | None = None, plan_only: bool = False,
                on_event: Callable[[str, dict], None] = lambda k, d: None,
                should_stop: Callable[[], bool] = lambda: False, rank: int = 0, world: int = 1,
                digest_dir: str | Path | None = None) -> dict[str, Any]:
    """Fingerprint the data, plan, and train until cfg.time_budget seconds after t0. Returns a summary.
    rank, world: torchrun's (see the module's notes); digest_dir: each rank writes a digest of its final weights."""
    from cvtool.data import check_dataset, open_datasets
    from cvtool.data.augment import PRESETS, Augment, sample_batch
    from cvtool.data.fingerprint import dataset_fingerprint
    from cvtool.data.memory import load_arrays, rescale
    from cvtool.train.loop import (
        TRACE_POINTS,
        RunState,
        check_loss,
        class_weights,
        other_rank_failed,
        trace_add,
        write_curves,
        write_digest,
        write_metrics,
        write_trace,
    )
    from cvtool.train.ranks import SyncBuffers

    budget = float(cfg.time_budget)
    train_ds, val_ds, info = open_datasets(cfg.data, val_split=cfg.val_split, seed=cfg.seed)
    check_dataset(train_ds)
    check_dataset(val_ds)
    if len(val_ds) == 0:
        raise UsageError("the validation set is empty", hint="raise --val-split, or add DIR/val")
    if not plan_only and rank == 0:  # an --out that cannot be written fails now, not after the budget is spent
        from cvtool.fsutil import make_dir

        make_dir(out_dir)
    on_event("data", {"info": info, "train": len(train_ds), "val": len(val_ds), "classes": list(train_ds.classes)})
    on_event("loading", {"total": len(train_ds) + len(val_ds)})
    tick = lambda i: on_event("loaded", {})  # noqa: E731
    tr_a, va_a = load_arrays(train_ds, on_item=tick), load_arrays(val_ds, on_item=tick)
    cache = None if cache_dir is None else Path(cache_dir) / "fingerprints.json"
    fp = dataset_fingerprint(train_ds, val_ds, list(info.notes), cache, tr_a, va_a)
    on_event("fingerprint", {"fingerprint": fp.to_dict()})

    K = len(train_ds.classes)
    device = cfg.device
    if resume is not None:
        plan = Plan.from_dict(resume.train_state["plan"])
        spec = resume.spec
        st = RunState(**{k: v for k, v in resume.train_state.get("run", {}).items() if k in RunState.__dataclass_fields__})
        if st.history is None:
            st.history = []
        if (spec.in_channels, spec.num_classes) != (train_ds.in_channels, K):
            raise UsageError(f"the checkpoint's net takes {spec.in_channels} channels and {spec.num_classes} classes, "
                             f"the data has {train_ds.in_channels} and {K}", hint="resume on the data the run was started with")
        if st.elapsed >= plan.budget * (1 - RESERVE):
            raise UsageError(f"{resume.path or 'the checkpoint'} has used its {plan.budget:g} s budget",
                             hint="start a new run, or train on with --epochs")
    else:
        plan = propose(fp, device=device, budget=budget, overrides=overrides)
        st = RunState(history=[])
    tr_s, va_s = rescale(tr_a, plan.scale), rescale(va_a, plan.scale)
    spec = resume.spec if resume is not None else ModelSpec(
        in_channels=train_ds.in_channels, num_classes=K, width=plan.width, depth=plan.depth,
        activation=cfg.activation, norm=cfg.norm)
    hist = np.asarray(fp.class_share, np.float64) * 1e6
    weights = class_weights(hist, plan.class_power) if cfg.class_balance else None
    mean, std = np.asarray(plan.mean, np.float32), np.asarray(plan.std, np.float32)
    fill = mean.copy()  # pixels a crop adds outside its image: the mean (0 after normalisation)

    def sample_for(p: Plan):
        aug = PRESETS[p.augment]
        if p.rot90:
            aug = Augment(**{**aug.to_dict(), "rot90": True, "vflip": True})
        if p.elastic:
            aug = Augment(**{**aug.to_dict(), "elastic": float(p.elastic)})
        focus = np.asarray(p.focus, np.int64)

        def sample(k: int):  # this rank's batch k: the global batch k*world + rank
            k = k * world + rank
            rng = np.random.default_rng([cfg.seed, k, 1])
            idx = batch_indices(k, p.batch_size, len(tr_s), cfg.seed)
            x, y = sample_batch(tr_s.images, tr_s.masks, idx, p.crop, aug, rng, fill=fill, focus=focus,
                                p_focus=p.p_focus)
            return ((x - mean[:, None, None]) / std[:, None, None]).astype(np.float32), y
        return sample

    if resume is None:  # measure this backend's step at the planned shape; shrink while too few steps fit
        while True:
            spec = ModelSpec(in_channels=train_ds.in_channels, num_classes=K, width=plan.width, depth=plan.depth,
                             activation=cfg.activation, norm=cfg.norm)
            step_s, val_s, agree_s = _measure(make_trainer, spec, plan, sample_for(plan), cfg.seed, weights,
                                              va_s.images, world)
            plan = fill_budget(plan, step_s=step_s, val_s=val_s, setup_s=agree_s(time.perf_counter() - t0))
            smaller = shrink(plan) if plan.steps < MIN_STEPS else None
            if smaller is None:
                break
            plan = smaller
    on_event("plan", {"plan": plan.to_dict(), "rows": plan.rows()})
    _apply(cfg, plan)
    if plan_only:
        return {"status": "plan", "plan": plan.to_dict(), "fingerprint": fp.to_dict(), "out": str(out_dir)}

    params = resume.params if resume is not None else init_params(spec, cfg.seed)
    trainer = make_trainer(spec, params, OptimConfig(name=plan.optimizer, weight_decay=cfg.weight_decay), weights,
                           cfg.seed, plan.dice)
    if resume is not None and resume.optim_state:
        trainer.load_optim_state(resume.optim_state, int(resume.train_state.get("optim_step", st.step)))
    agree_turn, agree_s = turn_agreed(trainer, world), seconds_agreed(trainer, world)
    sync = trainer.sync_buffers if world > 1 and isinstance(trainer, SyncBuffers) else (lambda: None)
    from cvtool.fsutil import atomic_write_bytes, make_dir

    if rank == 0:
        import json

        make_dir(out_dir)
        atomic_write_bytes(out_dir / "plan.json", (json.dumps({"plan": plan.to_dict(), "fingerprint": fp.to_dict()},
                                                              indent=2) + "\n").encode())
    base = t0 - st.elapsed  # wall clock of a resumed run continues where it stopped

    def now() -> float:
        return time.perf_counter() - base

    def save(name: str, metrics: dict | None = None) -> Path | None:
        if rank != 0:
            return None
        optim, ostep = trainer.optim_state()
        state = {"run": asdict(st), "config": asdict(cfg), "plan": plan.to_dict(), "fingerprint": fp.to_dict(),
                 "class_weights": None if weights is None else weights.tolist(), "optim_step": ostep,
                 "metrics": metrics or {}}
        meta = ModelMeta(list(train_ds.classes), [list(c) for c in train_ds.colors], mean.tolist(), std.tolist(),
                         scale=plan.scale, tta=plan.tta)
        ck = ckpt_io.Checkpoint(spec=spec, params=trainer.params(), meta=meta, train_state=state,
                                optim_state=optim if name == "last" else {})
        return ckpt_io.save(ck, out_dir / f"{name}.safetensors")

    val_s = plan.val_s
    n_done = len(st.history)
    # training stops here, leaving time for the last validation and the save; until a validation has been timed, the
    # probe's estimate gets a margin (a 60 s BUSI run, validated once only, took 14.3 s for an estimated 11.4)
    end_at = lambda: plan.budget * (1 - RESERVE) - val_s * (1.0 if n_done else UNTIMED_VAL_MARGIN) - 0.5  # noqa: E731
    on_event("start", {"spec": spec.to_dict(), "params": spec.num_params(), "mode": "time", "budget": plan.budget,
                       "total_steps": plan.steps, "resumed_at": asdict(st) if resume else None,
                       "class_weights": None if weights is None else weights.tolist(), "dice": plan.dice,
                       "elapsed": now()})
    stream = Batches(sample_for(plan), st.step)
    st.history, st.trace = list(st.history), [list(t) for t in st.trace or []]  # a resume's own copies, not its checkpoint's
    every = max(1, round(plan.steps / TRACE_POINTS))  # steps per point of the loss trace
    w_sum, w_n = 0.0, 0  # the loss over the steps since the trace's last point
    stopped = None
    metrics: dict = {}
    t_train = t_val = 0.0  # seconds inside steps and inside validation (this process)
    batches: list[int] = []  # the global batch numbers this rank trained on (for the digest)
    failed: CvtoolError | None = None  # under torchrun: this rank's loss check, raised once the ranks agree
    try:
        while stopped is None:
            # 2: a rank's loss failed, 1: a signal; and one clock reading per turn, the slowest rank's: every rank
            # decides alike
            code, clock = agree_turn(2 if failed is not None else int(should_stop()), now())
            if code == 2:  # every rank stops at the same step
                raise failed or other_rank_failed(st.step, plan.lr)
            if code == 1:
                stopped = STOP_SIGNAL
                break
            t_end = end_at()
            due = n_done < len(plan.val_at) and clock >= plan.val_at[n_done] * t_end
            final = clock >= t_end
            if due or final:
                sync()  # BatchNorm statistics averaged over the ranks: every rank validates the same net
                on_event("validating", {"images": len(va_a.images), "expected_s": val_s, "elapsed": now()})
                tv = time.perf_counter()
                metrics = evaluate_images(trainer.predict, va_a.images, va_a.masks, spec, mean, std, plan.scale,
                                          K, train_ds.ignore_index, plan.tta)  # the files' images: segment_logits resamples
                took = agree_s(time.perf_counter() - tv)
                t_val += took
                val_s = max(val_s, took) if n_done == 0 else took  # the next pass should take about as long
                n_done += 1
                plan.val_at = thin(plan.val_at, n_done, t_val, took, plan.budget)  # slower than planned: fewer
                st.elapsed = now()
                row = {"epoch": n_done, "step": st.step, "lr": lr_at(min(st.elapsed / t_end, 1), plan.lr,
                                                                     schedule=plan.schedule, warmup=plan.warmup),
                       "train_loss": st.loss_sum / st.batch if st.batch else None, "val_loss": None,
                       "pixel_accuracy": metrics["pixel_accuracy"], "mean_iou": metrics["mean_iou"],
                       "seconds": round(st.elapsed, 2),
                       **{f"iou_{c}": v for c, v in zip(train_ds.classes, metrics["iou"])}}  # per-class curves
                st.history.append(row)
                st.loss_sum, st.batch = 0.0, 0
                miou = metrics["mean_iou"]
                best = miou > st.best_miou if math.isfinite(miou) else st.best_miou < 0
                if best:
                    st.best_miou = miou if math.isfinite(miou) else st.best_miou
                    save("best", metrics)
                if final:
                    stopped = STOP_TIME
                save("last", metrics)
                if rank == 0:
                    write_metrics(out_dir, st.history)
                    write_trace(out_dir, st.trace)
                    write_curves(out_dir, st.history, trace=st.trace)
                on_event("epoch", {**row, "iou": metrics.get("iou"), "best": best, "val_seconds": val_s})
                continue
            x, y = stream.get()
            ts = time.perf_counter()
            lr = lr_at(min(clock / t_end, 1.0), plan.lr, schedule=plan.schedule, warmup=plan.warmup)
            loss = trainer.step(x, y, lr)
            t_train += time.perf_counter() - ts
            try:
                check_loss(loss, y, step=st.step + 1, lr=lr, peak_lr=plan.lr, dice=plan.dice, out_dir=out_dir,
                           resumable=False, ignore=train_ds.ignore_index)  # a resume keeps the plan's --lr
            except CvtoolError as e:
                if world == 1:
                    raise
                failed = e  # raised at the top of the next turn, on every rank together
            batches.append(st.step * world + rank)
            st.step += 1
            st.batch += 1
            st.loss_sum += loss
            st.elapsed = now()
            w_sum, w_n = w_sum + loss, w_n + 1
            if w_n >= every:
                trace_add(st.trace, st.step, st.elapsed, w_sum / w_n)
                w_sum, w_n = 0.0, 0
            on_event("step", {"epoch": n_done, "step": st.step, "loss": loss, "lr": lr, "elapsed": st.elapsed,
                              "t_end": t_end, "images_per_s": plan.batch_size / max(time.perf_counter() - ts, 1e-9)})
    finally:
        stream.close()
    st.elapsed = now()
    if stopped == STOP_SIGNAL:
        sync()
    if digest_dir is not None:
        write_digest(Path(digest_dir), rank, world, trainer.params(), {0: batches})
    if stopped == STOP_SIGNAL:
        path = save("last")
        on_event("interrupted", {"checkpoint": str(path) if path else None, "step": st.step})
        return {"status": "interrupted", "checkpoint": str(path) if path else None, "step": st.step,
                "out": str(out_dir), "seconds": round(st.elapsed, 2)}
    wait = stream.waited / max(stream.waited + t_train, 1e-9)
    return {"status": STOP_TIME, "stop_reason": "time", "out": str(out_dir), "epochs": n_done, "steps": st.step,
            "seconds": round(st.elapsed, 2), "train_seconds": round(t_train, 2), "val_seconds": round(t_val, 2),
            "data_wait_share": round(wait, 4),
            "best_mean_iou": st.best_miou, "final": st.history[-1] if st.history else None, "iou": metrics.get("iou"),
            "absent_classes": metrics.get("absent", []), "classes": list(train_ds.classes),
            "confusion": metrics.get("confusion"), "plan": plan.to_dict(), "fingerprint": fp.to_dict(),
            "validations": n_done}


def _apply(cfg, plan: Plan) -> None:
    """Write the plan's values into the config (what the summary and the checkpoint report)."""
    cfg.img_size, cfg.batch_size, cfg.depth, cfg.width = plan.crop, plan.batch_size, plan.depth, plan.width
    cfg.lr, cfg.warmup, cfg.schedule, cfg.optimizer, cfg.dice = plan.lr, plan.warmup, plan.schedule, plan.optimizer, plan.dice
