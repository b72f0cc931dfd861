"""The training loop, backend-agnostic: batches, schedule, validation, checkpoints, resume.

It is handed a `make_trainer(spec, params, optim, class_weights, seed, dice) -> Trainer` (see
cvtool_backends.base.Trainer) and reports through `on_event(kind, data)`, so it needs neither a
framework nor rich. Determinism: every epoch's order and augmentation come from
np.random.default_rng([seed, epoch, rank]), so a resumed run replays the same batches.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cvtool.errors import CvtoolError, DataError, TrainingDiverged, UsageError
from cvtool.metrics import SegMetrics
from cvtool.model import checkpoint as ckpt_io
from cvtool.model.meta import ModelMeta
from cvtool.model.spec import ACTIVATIONS, NORMS, ModelSpec, init_params, trainable
from cvtool.train.optim import OptimConfig
from cvtool.train.ranks import MaxOverRanks, SyncBuffers
from cvtool.train.schedule import SCHEDULES, lr_at

OPTIMIZERS = ("sgd", "momentum", "adam")


@dataclass
class TrainConfig:
    data: str | None = None  # None: the built-in synthetic shapes
    epochs: int = 6
    batch_size: int = 8
    img_size: int = 96
    lr: float = 5e-3
    optimizer: str = "adam"
    schedule: str = "poly"
    warmup: float = 0.03  # fraction of the run
    weight_decay: float = 0.0
    activation: str = "relu"
    width: int = 16
    depth: int = 3
    norm: str = "batch"
    val_split: float = 0.2
    seed: int = 0
    time_budget: float | None = None  # seconds; the schedule then runs on elapsed time
    class_balance: bool = True
    dice: float = 1.0  # weight of the soft Dice loss added to the cross-entropy (0: cross-entropy only)
    synth_train: int = 2400  # synthetic images per epoch (6 x 2400 / 8 = 1800 steps: ~150 s on 2 cores)
    synth_val: int = 64
    synth_size: int = 128  # synthetic images are generated at this size, cropped to img_size
    backend: str = "torch"
    device: str = "cpu"

    def validate(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"unknown optimizer {self.optimizer!r}", hint=f"choose one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"unknown schedule {self.schedule!r}", hint=f"choose one of {', '.join(SCHEDULES)}")
        for name in ("epochs", "batch_size", "img_size"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
        if not self.lr > 0:
            raise UsageError("--lr must be positive")
        if not 0 <= self.warmup < 1:
            raise UsageError(f"--warmup is a fraction of the run: 0 <= warmup < 1, got {self.warmup}")
        if self.weight_decay < 0:
            raise UsageError("--weight-decay must be at least 0")
        if self.width < 1 or not 0 <= self.depth <= 6:
            raise UsageError(f"--width must be at least 1 and --depth between 0 and 6 (got {self.width}, {self.depth})")
        if self.activation not in ACTIVATIONS or self.norm not in NORMS:
            raise UsageError(f"unknown activation {self.activation!r} or norm {self.norm!r}",
                             hint=f"activations: {', '.join(ACTIVATIONS)}; norms: {', '.join(NORMS)}")
        if not self.dice >= 0:
            raise UsageError(f"--dice is the weight of the Dice loss: at least 0, got {self.dice}")
        if not 0 < self.val_split < 1:
            raise UsageError("--val-split must be between 0 and 1")
        if self.time_budget is not None and self.time_budget <= 0:
            raise UsageError("--time must be positive")
        m = 2**self.depth
        if self.img_size % m:
            raise UsageError(f"--img-size {self.img_size} must be divisible by 2**depth = {m}")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        d = {"dice": 0.0, **d}  # a run saved before the Dice term existed resumes with the loss it began with
        return cls(**{k: v for k, v in d.items() if k in names})


def class_weights(masks_hist: np.ndarray, power: float = 0.25) -> np.ndarray:
    """Inverse fourth-root frequency, normalised to mean 1 over present classes, clipped to [0.2, 5].

    Mild on purpose: weighting shifts the argmax towards rare classes, which buys recall with false positives.
    On the synthetic shapes (background ~70%) validation mIoU after 1440 steps fell as the power rose:
    0.895 unweighted, 0.892 at 1/4, 0.884 at 1/2, 0.846 at 1. A little weighting stays, so that a heavily
    imbalanced set cannot settle on "all background"."""
    f = masks_hist / max(masks_hist.sum(), 1)
    w = np.where(f > 0, np.maximum(f, 1e-12) ** -power, 0.0)
    present = f > 0
    w[present] /= w[present].mean()
    return np.clip(w, 0.2 if present.any() else 0, 5.0).astype(np.float32)


def softmax_ce(logits: np.ndarray, y: np.ndarray, ignore: int = 255) -> float:
    """Mean cross-entropy over non-ignored pixels (validation loss; no weights)."""
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    keep = y != ignore
    if not keep.any():
        return float("nan")
    yk = np.where(keep, y, 0)
    picked = np.take_along_axis(logp, yk[:, None], axis=1)[:, 0]
    return float(-(picked[keep]).mean())


class _Subset:
    """A view of a dataset through an index list (one rank's shard of an epoch)."""

    def __init__(self, ds, idx):
        self.ds, self.idx = ds, list(idx)
        for a in ("classes", "colors", "in_channels", "ignore_index", "description"):
            setattr(self, a, getattr(ds, a))

    def __len__(self):
        return len(self.idx)

    def __getitem__(self, i):
        return self.ds[self.idx[i]]


@dataclass
class RunState:
    epoch: int = 0  # epochs completed
    batch: int = 0  # batches completed within the current epoch
    step: int = 0  # optimiser steps in total
    elapsed: float = 0.0  # seconds of training so far (over resumes)
    best_miou: float = -1.0  # -1: no best checkpoint yet (a NaN mIoU still makes the first one)
    history: list | None = None
    loss_sum: float = 0.0  # training loss summed over the current epoch's batches (also over a resume)
    trace: list | None = None  # time-driven runs: [step, seconds, mean loss] every few steps (the loss curve)


TRACE_POINTS = 200  # a loss trace keeps between this many and twice as many points, however long the run


def trace_add(trace: list, step: int, seconds: float, loss: float) -> None:
    """Append [step, seconds, loss]; past 2 x TRACE_POINTS, neighbours merge in pairs (the later step and time,
    the mean loss), so a long run's trace stays bounded and evenly spread."""
    trace.append([int(step), round(float(seconds), 2), float(loss)])
    if len(trace) > 2 * TRACE_POINTS:
        trace[:] = [[b[0], b[1], (a[2] + b[2]) / 2] for a, b in zip(trace[0::2], trace[1::2])] + \
            ([trace[-1]] if len(trace) % 2 else [])


def evaluate(predict: Callable[[np.ndarray], np.ndarray], ds, mean, std, batch_size: int, multiple: int) -> dict:
    """Full-size evaluation: pad each image to the net's multiple, crop logits back."""
    from cvtool.data.transforms import pad_to_multiple

    m = SegMetrics(len(ds.classes), ds.ignore_index)
    losses = []
    i = 0
    while i < len(ds):
        first = ds[i]
        group = [first]
        j = i + 1
        while j < len(ds) and len(group) < batch_size:  # batch equally sized neighbours
            s = ds[j]
            if s.image.shape != first.image.shape:
                break
            group.append(s)
            j += 1
        x = np.stack([s.image for s in group]).astype(np.float32)
        y = np.stack([s.mask for s in group])
        x = (x - mean[:, None, None]) / std[:, None, None]
        xp, box = pad_to_multiple(x, multiple)
        logits = predict(xp)
        t, b, l, r = box
        logits = logits[:, :, t:b, l:r]
        losses.append(softmax_ce(logits, y, ds.ignore_index) * len(group))
        m.update(logits.argmax(1), y)
        i = j
    out = m.summary()
    out["loss"] = float(np.nansum(losses) / len(ds))
    out["confusion"] = m.cm.tolist()
    return out


DIVERGED = 1e3  # a step's loss above this (plus the Dice weight, at most 1 x dice) has diverged: the cross-entropy is
# a weighted mean of -log p over pixels, so 1000 means the logits stand ~1000 apart; no healthy run gets near it


def check_loss(loss: float, y: np.ndarray, *, step: int, lr: float, peak_lr: float, dice: float, out_dir: Path,
               resumable: bool = True, ignore: int = 255) -> None:
    """After each step: a loss that is not finite or above DIVERGED + dice stops the run with one line naming the
    step, what was kept (best/last.safetensors from earlier validations, left as they are: the weights in memory are
    already broken) and a lower --lr. A batch with no labelled pixel has no loss at all: that one is the data's."""
    if math.isfinite(loss) and loss <= DIVERGED + dice:
        return
    kept = _kept(Path(out_dir))
    if not (np.asarray(y) != ignore).any():
        raise DataError(f"training stopped at step {step}: every mask pixel of the batch is {ignore} (ignore), so "
                        f"the loss is undefined; {kept}", hint="train on larger crops (--img-size), or check the masks")
    lower = f"{peak_lr / 10:.2g}"
    hint = f"lower --lr (this run's peak was {peak_lr:.3g}), e.g. --lr {lower}"
    if resumable and "last.safetensors (step" in kept:
        hint += f"; 'cvtool train --resume {out_dir} --lr {lower}' continues from the last checkpoint"
    raise TrainingDiverged(f"training diverged at step {step} (loss {loss:.3g} at learning rate {lr:.3g}); {kept}",
                           hint=hint)


def other_rank_failed(step: int, peak_lr: float) -> TrainingDiverged:
    """What the ranks whose own loss was fine say when another rank's failed its check (torchrun)."""
    return TrainingDiverged(f"training stopped at step {step}: the loss of another rank's batch failed its check "
                            f"(that rank's line names it)", hint=f"lower --lr (this run's peak was {peak_lr:.3g})")


def _kept(out_dir: Path) -> str:
    """What a run that stops now leaves: 'kept DIR/best.safetensors (mIoU ..) and DIR/last.safetensors (step ..)'."""
    parts = []
    for name in ("best", "last"):
        path = out_dir / f"{name}.safetensors"
        state = _train_state(path)
        if state is None:
            pass
        elif name == "best":
            miou = (state.get("metrics") or {}).get("mean_iou")
            parts.append(f"{path} (validation mIoU {miou:.3g})" if isinstance(miou, float) else str(path))
        else:
            parts.append(f"{path} (step {(state.get('run') or {}).get('step', '?')}, resumable)")
    return "kept " + " and ".join(parts) if parts else "it stopped before the first validation: no checkpoint was written"


def _train_state(path: Path) -> dict | None:
    try:
        return ckpt_io.read_meta(path).get("train_state", {})
    except Exception:  # noqa: BLE001 - absent or unreadable: not kept
        return None


STOP_NONE, STOP_TIME, STOP_SIGNAL, STOP_FAILED = 0, 1, 2, 3  # why a run stops early; ranks agree on the largest


def train(cfg: TrainConfig, make_trainer: Callable, out_dir: Path, *, resume: ckpt_io.Checkpoint | None = None,
          on_event: Callable[[str, dict], None] = lambda k, d: None, should_stop: Callable[[], bool] = lambda: False,
          rank: int = 0, world: int = 1, digest_dir: str | Path | None = None) -> dict[str, Any]:
    """Train; returns a summary. Only rank 0 writes files.

    should_stop() is polled after every step and before every epoch: when it says yes (Ctrl-C, SIGTERM)
    last.safetensors gets everything a resume needs and the status is "interrupted". With several
    processes the ranks agree after each step (any rank stopping stops all at the same step), so none is
    left waiting in an all-reduce. digest_dir: each rank writes a digest of its final weights there.
    """
    from cvtool.data import open_datasets
    from cvtool.data.loader import batches, channel_stats
    from cvtool.data.validate import check_dataset

    cfg.validate()
    train_ds, val_ds, info = open_datasets(cfg.data, val_split=cfg.val_split, seed=cfg.seed,
                                           synth_size=cfg.synth_size, synth_n=(cfg.synth_train, cfg.synth_val))
    if cfg.data is not None:  # before any output: a bad mask is one error line, nothing else
        check_dataset(train_ds)
        check_dataset(val_ds)
    if len(val_ds) == 0:
        raise UsageError("the validation set is empty", hint="raise --val-split, or add DIR/val")
    steps_per_epoch = len(train_ds) // world // cfg.batch_size
    if steps_per_epoch < 1:
        raise UsageError(f"the training set ({len(train_ds)} images) is smaller than one batch per process "
                         f"({cfg.batch_size} x {world})", hint="lower --batch-size")

    if resume is not None:
        spec = resume.spec
        params = resume.params
        mean, std = np.array(resume.meta.mean, np.float32), np.array(resume.meta.std, np.float32)
        st = RunState(**{k: v for k, v in resume.train_state.get("run", {}).items() if k in RunState.__dataclass_fields__})
        weights = np.array(resume.train_state["class_weights"], np.float32) if resume.train_state.get("class_weights") else None
        if st.epoch >= cfg.epochs:
            raise UsageError(f"{resume.path or 'the checkpoint'} has finished its {st.epoch} epochs",
                             hint=f"pass --epochs N with N > {st.epoch} to train on")
        if (spec.in_channels, spec.num_classes) != (train_ds.in_channels, len(train_ds.classes)):
            raise UsageError(f"the checkpoint's net takes {spec.in_channels} channels and {spec.num_classes} classes, "
                             f"the data has {train_ds.in_channels} and {len(train_ds.classes)}",
                             hint="resume on the data the run was started with")
    else:
        spec = ModelSpec(in_channels=train_ds.in_channels, num_classes=len(train_ds.classes), width=cfg.width,
                         depth=cfg.depth, activation=cfg.activation, norm=cfg.norm)
        params = init_params(spec, cfg.seed)
        mean, std = channel_stats(train_ds, max_items=64)
        mean, std = np.asarray(mean, np.float32), np.maximum(np.asarray(std, np.float32), 1e-3)
        st = RunState(history=[])
        weights = _class_weights(train_ds, spec.num_classes) if cfg.class_balance else None
    if st.history is None:
        st.history = []
    on_event("data", {"info": info, "train": len(train_ds), "val": len(val_ds), "classes": list(train_ds.classes)})

    trainer = make_trainer(spec, params, OptimConfig(name=cfg.optimizer, weight_decay=cfg.weight_decay), weights, cfg.seed,
                           cfg.dice)
    if resume is not None and resume.optim_state:
        trainer.load_optim_state(resume.optim_state, int(resume.train_state.get("optim_step", st.step)))
    agree = trainer.max_over_ranks if world > 1 and isinstance(trainer, MaxOverRanks) else None
    sync = trainer.sync_buffers if world > 1 and isinstance(trainer, SyncBuffers) else None  # BN statistics alike

    failed: CvtoolError | None = None  # several ranks: this rank's failed loss check, raised once they agree

    def poll(step_done: bool) -> int:
        """STOP_* for this moment, the same on every rank; a failed loss check on any rank stops every rank."""
        why = STOP_FAILED if failed is not None else STOP_SIGNAL if should_stop() else STOP_NONE
        if step_done and why == STOP_NONE and cfg.time_budget and st.elapsed >= cfg.time_budget:
            why = STOP_TIME
        why = agree(why) if agree is not None else why
        if why == STOP_FAILED:
            raise failed or other_rank_failed(st.step, cfg.lr)
        return why

    total_steps = steps_per_epoch * cfg.epochs
    on_event("start", {"spec": spec.to_dict(), "params": spec.num_params(), "steps_per_epoch": steps_per_epoch,
                       "total_steps": total_steps, "resumed_at": asdict(st) if resume else None,
                       "class_weights": None if weights is None else weights.tolist(), "dice": cfg.dice})

    def lr_after(steps: int) -> float:
        """The learning rate of the step that brings the count to `steps` (the first step: 1)."""
        p = steps / total_steps
        if cfg.time_budget:
            p = max(p, st.elapsed / cfg.time_budget)
        return lr_at(p, cfg.lr, schedule=cfg.schedule, warmup=cfg.warmup)

    def save(name: str, metrics: dict | None = None) -> Path | None:
        if rank != 0:
            return None
        optim, ostep = trainer.optim_state()
        state = {"run": asdict(st), "config": asdict(cfg), "class_weights": None if weights is None else weights.tolist(),
                 "optim_step": ostep, "metrics": metrics or {}}
        meta = ModelMeta(list(train_ds.classes), [list(c) for c in train_ds.colors], mean.tolist(), std.tolist())
        ck = ckpt_io.Checkpoint(spec=spec, params=trainer.params(), meta=meta, train_state=state,
                                optim_state=optim if name == "last" else {})
        return ckpt_io.save(ck, out_dir / f"{name}.safetensors")

    if rank == 0:
        from cvtool.fsutil import make_dir

        make_dir(out_dir)
    stopped = STOP_NONE
    metrics: dict = {}
    shards: dict[int, list[int]] = {}  # epoch -> the dataset indices this rank trains on (for the digest)
    t_last = time.perf_counter()
    while st.epoch < cfg.epochs:
        stopped = poll(step_done=False)  # a signal during validation or start-up
        if stopped:
            break
        epoch = st.epoch
        rng = np.random.default_rng([cfg.seed, epoch])
        perm = rng.permutation(len(train_ds))[rank::world][: steps_per_epoch * cfg.batch_size]
        shards[epoch] = perm.tolist()
        shard = _Subset(train_ds, perm)
        it = batches(shard, cfg.batch_size, crop=cfg.img_size, augment=True,
                     rng=np.random.default_rng([cfg.seed, epoch, rank, 1]), shuffle=False, drop_last=True,
                     start=st.batch)  # resumed mid-epoch: skip the batches already done
        for b, (x, y) in enumerate(it, start=st.batch):
            x = (x - mean[:, None, None]) / std[:, None, None]
            lr = lr_after(st.step + 1)
            loss = trainer.step(x.astype(np.float32), y, lr)
            try:
                check_loss(loss, y, step=st.step + 1, lr=lr, peak_lr=cfg.lr, dice=cfg.dice, out_dir=out_dir,
                           ignore=train_ds.ignore_index)
            except CvtoolError as e:
                if agree is None:
                    raise
                failed = e  # poll() below raises it, on every rank at this step
            now = time.perf_counter()
            dt, t_last = now - t_last, now
            st.elapsed += dt
            st.step += 1
            st.batch = b + 1
            st.loss_sum += loss
            on_event("step", {"epoch": epoch, "batch": b + 1, "steps_per_epoch": steps_per_epoch, "step": st.step,
                              "loss": loss, "lr": lr, "images_per_s": cfg.batch_size * world / max(dt, 1e-9)})
            stopped = poll(step_done=True)
            if stopped:
                break
        if sync is not None:  # every rank gets here at the same step (they agree on stopping)
            sync()
        if stopped == STOP_SIGNAL:
            break
        # epoch done (or time budget hit, the epoch then unfinished): validate, record, checkpoint
        train_loss = st.loss_sum / st.batch if st.batch else float("nan")
        if not stopped:
            st.epoch, st.batch, st.loss_sum = st.epoch + 1, 0, 0.0
        metrics = evaluate(trainer.predict, val_ds, mean, std, cfg.batch_size, spec.multiple) if rank == 0 else {}
        row = {"epoch": epoch + 1, "step": st.step, "lr": lr_after(st.step), "train_loss": train_loss,
               "val_loss": metrics.get("loss"), "pixel_accuracy": metrics.get("pixel_accuracy"),
               "mean_iou": metrics.get("mean_iou"), "seconds": round(st.elapsed, 2)}
        st.history.append(row)
        best = False
        if rank == 0:
            miou = metrics["mean_iou"]
            best = miou > st.best_miou if math.isfinite(miou) else st.best_miou < 0  # NaN: only while none is better
            if best:
                st.best_miou = miou if math.isfinite(miou) else st.best_miou
                save("best", metrics)
            save("last", metrics)
            write_metrics(out_dir, st.history)
            write_curves(out_dir, st.history)
        on_event("epoch", {**row, "iou": metrics.get("iou"), "best": best})
        t_last = time.perf_counter()  # validation time is not training time
        if stopped:
            break

    if digest_dir is not None:
        write_digest(Path(digest_dir), rank, world, trainer.params(), shards)
    if stopped == STOP_SIGNAL:
        path = save("last")
        on_event("interrupted", {"checkpoint": str(path) if path else None, "step": st.step})
        return {"status": "interrupted", "checkpoint": str(path) if path else None, "step": st.step,
                "epoch": st.epoch, "batch": st.batch, "out": str(out_dir)}
    return {"status": "time budget reached" if stopped else "done", "out": str(out_dir), "epochs": st.epoch,
            "steps": st.step, "seconds": round(st.elapsed, 2), "best_mean_iou": st.best_miou,
            "final": st.history[-1] if st.history else None, "iou": metrics.get("iou"), "classes": list(train_ds.classes),
            "confusion": metrics.get("confusion")}


def write_digest(folder: Path, rank: int, world: int, params: dict[str, np.ndarray], shards: dict[int, list[int]]) -> Path:
    """rank<r>.json: sha256 of the final weights (trainable, and with BN running stats) and the dataset
    indices the rank trained on per epoch. Lets a test check that DDP ranks agree and saw different data."""
    import hashlib
    import json

    def sha(names) -> str:
        h = hashlib.sha256()
        for k in sorted(names):
            h.update(k.encode())
            h.update(np.ascontiguousarray(params[k], np.float32).tobytes())
        return h.hexdigest()

    doc = {"rank": rank, "world": world, "weights": sha([k for k in params if trainable(k)]), "all": sha(params),
           "shards": {str(e): v for e, v in shards.items()}}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"rank{rank}.json"
    path.write_text(json.dumps(doc))
    return path

def _class_weights(ds, K: int, max_items: int = 64) -> np.ndarray:
    hist = np.zeros(K, np.int64)
    step = max(1, len(ds) // max_items)
    for i in range(0, len(ds), step):
        m = ds[i].mask
        hist += np.bincount(m[m != ds.ignore_index].ravel(), minlength=K)[:K]
    return class_weights(hist)


def _write_csv(path: Path, header: list[str], rows) -> None:
    """A CSV file with a header row, written atomically."""
    from cvtool.fsutil import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)


def write_metrics(out_dir: Path, history: list[dict]) -> None:
    """metrics.csv: a row per epoch or validation."""
    keys = list(history[0])
    _write_csv(out_dir / "metrics.csv", keys, ([h.get(k, "") for k in keys] for h in history))


def write_trace(out_dir: Path, trace: list) -> None:
    """train_loss.csv: step, seconds, loss (the mean over the steps since the row before)."""
    _write_csv(out_dir / "train_loss.csv", ["step", "seconds", "loss"], trace)


def write_curves(out_dir: Path, history: list[dict], xlabel: str = "epoch", trace: list | None = None) -> None:
    """curves.png: losses, validation mIoU and accuracy, per-class IoU. With a trace (time-driven runs, which
    validate a few times only) the x axis is the step: the loss every few steps, validation where it ran."""
    from cvtool.plot import line_chart

    per_class = {k[4:]: [h.get(k) for h in history] for k in history[-1] if k.startswith("iou_")}
    val = {"val mIoU": [h["mean_iou"] for h in history], "pixel acc": [h["pixel_accuracy"] for h in history]}
    titles = ["loss (log scale when it spans > 20x)", "validation", "validation IoU per class"]
    if trace:
        at = [h["step"] for h in history]
        line_chart(out_dir / "curves.png", at, {"train loss": [t[2] for t in trace]}, val, per_class or None,
                   title="cvtool train", xlabel="step", titles=titles, panel_xs=[[t[0] for t in trace], at, at])
        return
    ep = [h["epoch"] for h in history]
    line_chart(out_dir / "curves.png", ep, {"train loss": [h["train_loss"] for h in history],
                                             "val loss": [h["val_loss"] for h in history]},
               val, per_class or None, title="cvtool train", xlabel=xlabel, titles=titles)
