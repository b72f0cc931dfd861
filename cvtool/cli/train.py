"""`cvtool train`: train the segmentation U-Net on the synthetic shapes, a folder or a VOC layout."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

import typer

from cvtool.cli.output import emit_json, err, fmt_float, out, table


def _opt(default_help: str):
    return typer.Option(None, help=default_help)


def train(
    data: Optional[str] = typer.Option(None, help="Dataset folder (images/ + masks/, or VOC layout). Default: built-in synthetic shapes."),
    epochs: Optional[int] = _opt("Epochs (default 6)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Images per step (default 8)."),
    img_size: Optional[int] = typer.Option(None, "--img-size", help="Training crop size (default 96)."),
    lr: Optional[float] = _opt("Peak learning rate (default 5e-3)."),
    optimizer: Optional[str] = _opt("sgd | momentum | adam (default adam)."),
    schedule: Optional[str] = _opt("poly | cosine | constant, after linear warm-up (default poly)."),
    warmup: Optional[float] = _opt("Warm-up as a fraction of the run (default 0.03)."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="L2 weight decay (default 0)."),
    activation: Optional[str] = _opt("relu | sigmoid | tanh (default relu)."),
    width: Optional[int] = _opt("Channels at the first level (default 16)."),
    depth: Optional[int] = _opt("Number of down/up levels (default 3)."),
    norm: Optional[str] = _opt("batch | none (default batch)."),
    val_split: Optional[float] = typer.Option(None, "--val-split", help="Held-out fraction when the data has no val/ (default 0.2)."),
    seed: Optional[int] = _opt("Random seed (default 0)."),
    dice: Optional[float] = _opt("Weight of the soft Dice loss added to the class-weighted cross-entropy; 0: cross-entropy only (default 1.0)."),
    synth_images: Optional[int] = typer.Option(None, "--synth-images", help="Synthetic data: training images per epoch (default 2400)."),
    time_budget: Optional[float] = typer.Option(None, "--time", help="Time budget in seconds; the schedule follows elapsed time."),
    backend: str = typer.Option("torch", help="numpy | torch (ort cannot train)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    workers: int = typer.Option(0, help="Threads for the backend (0: the backend's default)."),
    resume: Optional[Path] = typer.Option(None, help="Continue from a checkpoint (or a run folder's last.safetensors)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Run folder (default runs/train/expN)."),
    json_: bool = typer.Option(False, "--json", help="Print one JSON summary on stdout."),
) -> None:
    """Train a U-Net: conv, max pooling, activations, transposed-conv upsampling, skip connections."""
    import signal
    from dataclasses import asdict

    import backends as registry
    from cvtool import checkpoint as ckpt_io
    from cvtool.errors import UsageError
    from cvtool.fsutil import next_run_dir
    from cvtool.training import TrainConfig, train as run_train

    given = {k: v for k, v in dict(data=data, epochs=epochs, batch_size=batch_size, img_size=img_size, lr=lr,
                                   optimizer=optimizer, schedule=schedule, warmup=warmup, weight_decay=weight_decay,
                                   activation=activation, width=width, depth=depth, norm=norm, val_split=val_split,
                                   seed=seed, dice=dice, time_budget=time_budget, synth_train=synth_images).items() if v is not None}
    ck = None
    if resume is not None:
        path = resume / "last.safetensors" if resume.is_dir() else resume
        ck = ckpt_io.load(path)
        saved = ck.train_state.get("config")
        if not saved:
            raise UsageError(f"{path} holds no training state to resume from")
        fixed = [k for k in ("width", "depth", "activation", "norm") if k in given and given[k] != saved.get(k)]
        if fixed:
            raise UsageError(f"--{fixed[0]} cannot change when resuming (the checkpoint's net has "
                             f"{fixed[0]} {saved.get(fixed[0])!r})", hint="start a new run instead")
        cfg = TrainConfig.from_dict({**saved, **given})
        run_dir = out_dir or path.parent
    else:
        cfg = TrainConfig(**given)
        run_dir = out_dir or next_run_dir(Path("runs") / "train")
    cfg.validate()  # bad options fail here, before a framework is imported

    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    be = registry.get(backend, device)
    if not getattr(be.capabilities, "train", False):
        raise UsageError(f"backend {backend!r} cannot train", hint="use --backend torch or --backend numpy")
    if workers:
        be.set_threads(workers)
    if world > 1:
        be.init_distributed()
    cfg.backend, cfg.device = backend, be.device
    cfg.validate()

    stop = {"flag": False}

    def on_signal(signum, frame):
        if stop["flag"]:  # a second Ctrl-C: stop now, without the checkpoint (main() exits 130)
            raise KeyboardInterrupt
        stop["flag"] = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    quiet = json_ or rank != 0
    ui = _ProgressUI(quiet=quiet)
    try:
        with ui:
            result = run_train(
                cfg, lambda spec, params, optim, weights, sd, dice: be.trainer(
                    spec, params, optim=optim, class_weights=weights, seed=sd, distributed=world > 1, dice=dice),
                Path(run_dir), resume=ck, on_event=ui.event, should_stop=lambda: stop["flag"], rank=rank, world=world,
                digest_dir=os.environ.get("CVTOOL_DIGEST_DIR"))  # test hook: per-rank digests of the final weights
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if world > 1:
            be.finish_distributed()
    if rank != 0:
        return
    result["config"] = asdict(cfg)
    if json_:
        emit_json(_finite(result))
    else:
        _report(result)
    if result["status"] == "interrupted":
        raise typer.Exit(130)  # like a shell's Ctrl-C; last.safetensors resumes it


def _finite(o):
    """NaN and infinities -> None, so that --json prints standard JSON."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def _report(r: dict) -> None:
    con = out()
    if r["status"] == "interrupted":
        err().print(f"[yellow]interrupted[/]: saved a resumable checkpoint {r['checkpoint']} (step {r['step']})", soft_wrap=True)
        err().print(f"resume with: cvtool train --resume {r['checkpoint']}", soft_wrap=True)
        return
    if r.get("iou"):
        rows = [[name, fmt_float(v) if v is not None else "-"] for name, v in zip(r["classes"], r["iou"])]
        f = r["final"]
        rows.append(["[bold]mean IoU[/]", f"[bold]{fmt_float(f['mean_iou'])}[/]"])
        rows.append(["pixel accuracy", fmt_float(f["pixel_accuracy"])])
        con.print(table("Validation, per class", ["class", "IoU"], rows))
    run = Path(r["out"])
    for line in (f"{r['status']}: {r['epochs']} epochs, {r['steps']} steps in {r['seconds']:.0f} s; "
                 f"best mIoU {fmt_float(r['best_mean_iou'])}",
                 f"wrote {run}/best.safetensors, last.safetensors, metrics.csv, curves.png",
                 "next:",
                 f"  cvtool segment IMAGE --model {run}/best.safetensors",
                 f"  cvtool export {run}/best.safetensors -o {run}/model.onnx",
                 f"  cvtool convcalc --model {run}/best.safetensors"):
        con.print(line, soft_wrap=True, markup=False)  # paths and commands stay whole, for copy and paste


class _ProgressUI:
    """Rich progress bar on stderr with live loss and images/s; one line per epoch.

    The bar starts with training ("start"), so an error while the data or the net are set up is the one
    line main() prints, with no empty bar before it."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.progress = None
        self.task = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def _print(self, text: str) -> None:
        (self.progress.console if self.progress is not None else err()).print(text, soft_wrap=True)

    def _start(self, total: int, done: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=err(), transient=False)
        self.progress.__enter__()
        self.task = self.progress.add_task("train", total=total, completed=done, info="")

    def event(self, kind: str, d: dict) -> None:
        if self.quiet:
            return
        if kind == "data":
            self._print(f"data: {d['info'].get('description', '')} — {d['train']} train / {d['val']} val images, "
                        f"classes {', '.join(d['classes'])}")
            for note in d["info"].get("notes", []):
                self._print(f"note: {note}")
        elif kind == "start":
            s = d["spec"]
            self._print(f"model: U-Net width {s['width']} depth {s['depth']} {s['activation']} norm={s['norm']}, "
                        f"{d['params']:,} parameters; {d['steps_per_epoch']} steps/epoch")
            dice = f" + {d['dice']:g} x soft Dice" if d.get("dice") else ""
            self._print(f"loss: {'class-weighted ' if d.get('class_weights') else ''}cross-entropy{dice} "
                        "(val loss: cross-entropy)")
            self._start(d["total_steps"], d["resumed_at"]["step"] if d["resumed_at"] else 0)
        elif kind == "step":
            self.progress.update(self.task, completed=d["step"],
                                 info=f"epoch {d['epoch'] + 1} loss {d['loss']:.4f} lr {d['lr']:.2e} "
                                      f"{d['images_per_s']:.1f} img/s")
        elif kind == "epoch":
            mark = " *" if d.get("best") else ""
            self._print(f"epoch {d['epoch']:>3}: train loss {d['train_loss']:.4f}  val loss {d['val_loss']:.4f}  "
                        f"pixel acc {d['pixel_accuracy']:.4f}  mIoU {d['mean_iou']:.4f}{mark}")
