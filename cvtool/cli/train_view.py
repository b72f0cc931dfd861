"""What `cvtool train` shows: the fingerprint and plan tables, the progress bar, the closing report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cvtool.cli.output import err, fmt_float, out, safe, table

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

FINGERPRINT_CACHE = Path("runs") / ".cache" / "fingerprints.json"  # shared by `cvtool train --data` and `data check`


def net_name(spec: dict) -> str:
    """What messages call a spec's network."""
    from cvtool.model.spec import NAMES  # numpy: not at `cvtool --help`

    return NAMES[spec.get("encoder", "unet")]


def plan_table(plan: dict):
    from cvtool.train.plan import Plan

    return table(f"Plan for a {plan['budget']:g} s budget on {plan['device']}", ["value", "chosen", "why"],
                 [[safe(v) for v in r] for r in Plan.from_dict(plan).rows()])  # a reason may name classes


def fingerprint_table(fp: dict):
    f3 = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
    rows = [[str(k), safe(c), f"{fp['class_share'][k]:.1%}", f"{fp['class_images'][k]:.0%}", str(fp["val_images"][k]),
             f3(fp["object_area"][k]), f3(fp["thickness"][k])] for k, c in enumerate(fp["classes"])]
    title = (f"Fingerprint: {fp['n_train']} train / {fp['n_val']} val images, {fp['channels']} channel(s), "
             f"H {fp['size_h'][0]}/{fp['size_h'][1]}/{fp['size_h'][2]}, W {fp['size_w'][0]}/{fp['size_w'][1]}/"
             f"{fp['size_w'][2]} (min/median/max), mean {', '.join(f'{v:.3f}' for v in fp['mean'])}, "
             f"std {', '.join(f'{v:.3f}' for v in fp['std'])}, ignored {fp['ignore_share']:.1%}"
             + (" (cached)" if fp.get("cached") else ""))
    return table(title, ["index", "class", "pixels", "train images", "val images", "object px", "thickness px"], rows)


def report(r: dict) -> None:
    con = out()
    if r["status"] == "interrupted":
        err().print(f"[yellow]interrupted[/]: saved a resumable checkpoint {safe(r['checkpoint'])} (step {r['step']})",
                    soft_wrap=True)
        err().print(f"resume with: cvtool train --resume {safe(r['checkpoint'])}", soft_wrap=True)
        return
    if r.get("iou"):
        rows = [[safe(name), fmt_float(v) if v is not None else "-"] for name, v in zip(r["classes"], r["iou"])]
        f = r["final"]
        rows.append(["[bold]mean IoU[/]", f"[bold]{fmt_float(f['mean_iou'])}[/]"])
        rows.append(["pixel accuracy", fmt_float(f["pixel_accuracy"])])
        con.print(table("Validation, per class", ["class", "IoU"], rows))
    run = Path(r["out"])
    if r.get("plan"):
        done = (f"{r['status']}: {r['steps']} steps and {r['validations']} validations in {r['seconds']:.0f} s "
                f"(the step waited for data {r['data_wait_share']:.1%} of its time); best mIoU {fmt_float(r['best_mean_iou'])}")
        if r.get("absent_classes"):
            names = ", ".join(r["classes"][k] for k in r["absent_classes"])
            done += f" (not in the mean: {names}, in neither the validation masks nor the predictions)"
    else:
        done = (f"{r['status']}: {r['epochs']} epochs, {r['steps']} steps in {r['seconds']:.0f} s; "
                f"best mIoU {fmt_float(r['best_mean_iou'])}")
    for line in (done,
                 f"wrote {run}/best.safetensors, last.safetensors, metrics.csv, train_loss.csv, curves.png"
                 + (", plan.json" if r.get("plan") else ""),
                 "next:",
                 f"  cvtool segment IMAGE --model {run}/best.safetensors",
                 f"  cvtool export {run}/best.safetensors -o {run}/model.onnx",
                 f"  cvtool convcalc --model {run}/best.safetensors"):
        con.print(safe(line, markup=False), soft_wrap=True, markup=False)  # whole, for copy and paste


class ProgressUI:
    """Rich progress bar on stderr with live loss and images/s; one line per epoch.

    The bar starts with training ("start"), so an error while the data or the net are set up is the one
    line main() prints, with no empty bar before it."""

    def __init__(self, quiet: bool, show_plan: bool = True):
        self.quiet = quiet
        self.show_plan = show_plan  # --plan prints the plan on stdout itself
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.timed = False
        self.loading: Progress | None = None
        self.loading_task: TaskID | None = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.loading is not None:
            self.loading.__exit__(*exc)
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def _print(self, text: str) -> None:
        (self.progress.console if self.progress is not None else err()).print(text, soft_wrap=True)

    def _start(self, total: float, done: float, timed: bool = False) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=err(), transient=False)
        self.progress.__enter__()
        # rich declares add_task's completed an int; a Task's completed is a float (seconds here), as update takes it
        self.task = self.progress.add_task("train (s)" if timed else "train", total=total,
                                           completed=done, info="")  # type: ignore[arg-type]

    def _update(self, completed: float, info: str) -> None:
        assert self.progress is not None and self.task is not None, "the bar starts with the 'start' event"
        self.progress.update(self.task, completed=completed, info=info)

    def event(self, kind: str, d: dict) -> None:
        if self.quiet:
            return
        if kind == "data":
            self._print(f"data: {safe(d['info'].get('description', ''))} — {d['train']} train / {d['val']} val "
                        f"images, classes {', '.join(safe(c) for c in d['classes'])}")
            for note in d["info"].get("notes", []):
                self._print(f"note: {safe(note)}")
        elif kind == "note":
            self._print(f"note: {safe(d['text'])}")
        elif kind == "loading":
            from rich.progress import Progress

            self.loading = Progress(console=err(), transient=True)
            self.loading.__enter__()
            self.loading_task = self.loading.add_task("reading images", total=d["total"])
        elif kind == "loaded":
            assert self.loading is not None and self.loading_task is not None  # after "loading"
            self.loading.advance(self.loading_task)
        elif kind == "fingerprint":
            if self.loading is not None:
                self.loading.__exit__(None, None, None)
                self.loading = None
            fp = d["fingerprint"]
            err().print(fingerprint_table(fp))
            for note in fp["warnings"]:
                self._print(f"[yellow]warning[/]: {safe(note)}")
        elif kind == "plan":
            if self.show_plan:
                err().print(plan_table(d["plan"]))
        elif kind == "start" and d.get("mode") == "time":
            s = d["spec"]
            self.timed = True
            self._print(f"model: {net_name(s)} width {s['width']} depth {s['depth']} {s['activation']} norm={s['norm']}, "
                        f"{d['params']:,} parameters; ~{d['total_steps']} steps in {d['budget']:g} s")
            dice = f" + {d['dice']:g} x soft Dice" if d.get("dice") else ""
            self._print(f"loss: {'class-weighted ' if d.get('class_weights') else ''}cross-entropy{dice}")
            self._start(d["budget"], d["elapsed"], timed=True)
        elif kind == "step" and self.timed:
            self._update(d["elapsed"],
                         f"step {d['step']} loss {d['loss']:.4f} lr {d['lr']:.2e} {d['images_per_s']:.1f} img/s")
        elif kind == "validating" and self.timed:  # the bar would stand still meanwhile: say why
            self._update(d["elapsed"], f"validating on {d['images']} whole images (~{d['expected_s']:.0f} s)")
        elif kind == "epoch" and self.timed:
            self._update(d["seconds"], "")
            mark = " *" if d.get("best") else ""
            loss = "-" if d["train_loss"] is None else f"{d['train_loss']:.4f}"  # no step since the last one
            self._print(f"validation {d['validation']} at {d['seconds']:.0f} s, step {d['step']}: train loss "
                        f"{loss}  pixel acc {d['pixel_accuracy']:.4f}  mIoU {d['mean_iou']:.4f}{mark} "
                        f"({d['val_seconds']:.1f} s)")
        elif kind == "start":
            s = d["spec"]
            self._print(f"model: {net_name(s)} width {s['width']} depth {s['depth']} {s['activation']} norm={s['norm']}, "
                        f"{d['params']:,} parameters; {d['steps_per_epoch']} steps/epoch")
            dice = f" + {d['dice']:g} x soft Dice" if d.get("dice") else ""
            self._print(f"loss: {'class-weighted ' if d.get('class_weights') else ''}cross-entropy{dice} "
                        "(val loss: cross-entropy)")
            self._start(d["total_steps"], d["resumed_at"]["step"] if d["resumed_at"] else 0)
        elif kind == "step":
            self._update(d["step"], f"epoch {d['epoch'] + 1} loss {d['loss']:.4f} lr {d['lr']:.2e} "
                                    f"{d['images_per_s']:.1f} img/s")
        elif kind == "epoch":
            mark = " *" if d.get("best") else ""
            loss = "-" if d["train_loss"] is None else f"{d['train_loss']:.4f}"
            self._print(f"epoch {d['epoch']:>3g}: train loss {loss}  val loss {d['val_loss']:.4f}  "
                        f"pixel acc {d['pixel_accuracy']:.4f}  mIoU {d['mean_iou']:.4f}{mark}")
