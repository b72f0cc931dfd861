"""`cvtool val MODEL DATA`: score a checkpoint or an exported .onnx on a labelled dataset, on any backend.

Each image is segmented through segment's path (the backend runner of cvtool.cli.models.runner_for, the
model's scale, tiles and test-time augmentation: cvtool.model.evaluate), one confusion matrix is summed over the
images, and the figures are printed and written to runs/val/expN (or --out): metrics.json (what --json prints),
per_image.csv, confusion.csv, confusion.png and worst/ (the N lowest per-image mean IoUs, as overlays).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Optional

import typer

from cvtool.bounds import COUNT, FRACTION, INT32_MAX, OPEN_FRACTION, SEED, Bound
from cvtool.cli.options import number, within
from cvtool.cli.output import emit_json, err, fmt_float, out, safe, table

if TYPE_CHECKING:
    from cvtool.data.loader import DataInfo

SPLITS = ("auto", "all", "train", "val")


class Chosen(NamedTuple):
    views: list  # dataset views to score
    split: str  # what was scored, for people
    notes: list[str]
    info: "DataInfo"  # the dataset's format, description, notes


def remembered_training(model) -> dict:
    """The data folder, val_split and seed a checkpoint was trained with ({} for an export or the synthetic set)."""
    from cvtool.model import checkpoint as ckpt_io

    if model.kind != "checkpoint":
        return {}
    cfg = (ckpt_io.read_meta(model.path).get("train_state") or {}).get("config") or {}
    return cfg if isinstance(cfg, dict) and isinstance(cfg.get("data"), str) else {}


def choose_views(data: str, split: str, val_split: float | None, seed: int | None, model) -> Chosen:
    """Open DATA and pick the part to score. auto: when the checkpoint was trained on this very folder, its held-out
    validation part (split as training split it); otherwise every image."""
    from cvtool.data import open_datasets
    from cvtool.errors import UsageError

    if split not in SPLITS:
        raise UsageError(f"unknown --split {split!r}", hint=f"choose one of {', '.join(SPLITS)}")
    cfg = remembered_training(model)
    same = bool(cfg) and Path(cfg["data"]).resolve() == Path(data).resolve()
    vs = val_split if val_split is not None else float(cfg.get("val_split", 0.2)) if same else 0.2
    sd = seed if seed is not None else int(cfg.get("seed", 0)) if same else 0
    train_ds, val_ds, info = open_datasets(data, val_split=vs, seed=sd)
    notes = list(info.notes)
    if split == "auto":
        split = "val" if same else "all"
        if same:
            notes.append(f"the model was trained on {data}: scoring the part training held out for validation; "
                         f"--split all scores every image")
    views = {"all": [train_ds, val_ds], "train": [train_ds], "val": [val_ds]}[split]
    what = {"all": f"all {info.n_train + info.n_val} images", "train": f"the training part ({info.n_train} images)",
            "val": f"the validation part ({info.n_val} images)"}[split]
    return Chosen(views, f"{what}; split: {info.split}" if split != "all" else what, notes, info)


def write_outputs(dest: Path, doc: dict, ev, ds, colors, alpha: float) -> list[str]:
    """metrics.json, per_image.csv, confusion.csv, confusion.png and worst/RANK_NAME.png; each file atomic."""
    import json

    from cvtool.data.io import write_image_png
    from cvtool.data.memory import to_hwc_uint8
    from cvtool.fsutil import atomic_write_bytes, write_csv
    from cvtool.model.evaluate import worst_panel
    from cvtool.plot import confusion_chart

    classes = [c["name"] for c in doc["classes"]]
    for w, entry in zip(ev.worst, doc["worst"]):
        s = ds[w.score.item]
        write_image_png(entry["overlay"], worst_panel(to_hwc_uint8(s.image), s.mask, w.pred, colors, alpha))
    write_csv(dest / "per_image.csv", ["image", "pixels", "pixel_accuracy", "mean_iou"],
              ([r["image"], r["pixels"], r["pixel_accuracy"], r["mean_iou"]] for r in doc["per_image"]))
    write_csv(dest / "confusion.csv", ["truth \\ prediction", *classes],
              ([c, *row] for c, row in zip(classes, doc["confusion"])))
    confusion_chart(dest / "confusion.png", ev.cm, classes,
                    title=f"{Path(doc['model']).name} on {doc['images']} images: mIoU {fmt_float(doc['mean_iou'])}")
    atomic_write_bytes(dest / "metrics.json", (json.dumps(doc, indent=2) + "\n").encode())
    return ["metrics.json", "per_image.csv", "confusion.csv", "confusion.png"] + (
        [f"worst/ ({len(ev.worst)} overlays)"] if ev.worst else [])


def val(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="Checkpoint (.safetensors) or exported .onnx."),
    data: str = typer.Argument(..., metavar="DATA", help="Labelled dataset: DIR/images + DIR/masks (optionally "
                               "train/ and val/), or a PASCAL VOC folder."),
    backend: str = typer.Option("torch", help="numpy | torch | ort (ort exports a checkpoint first, cached in "
                                "runs/.cache/onnx)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    split: str = typer.Option("auto", help="all | train | val | auto (the held-out part when the checkpoint was "
                              "trained on DATA, else every image)."),
    val_split: Optional[float] = number(None, "--val-split", bound=OPEN_FRACTION,
                                        help="Held-out share when DATA has no val/ (default: the checkpoint's, else 0.2)."),
    seed: Optional[int] = number(None, "--seed", bound=SEED,
                                 help="Seed of the hold-out split (default: the checkpoint's, else 0)."),
    tta: Optional[str] = typer.Option(None, help="Test-time augmentation: none | flip | dihedral (default: the model's)."),
    tile: Optional[int] = number(None, "--tile", bound=COUNT,
                                 help="Tiles of at most this many pixels a side (default, as in segment and training's "
                                      "validation: an image runs whole while one pass fits in half the free memory, "
                                      "else in tiles that do)."),
    batch_size: int = number(4, "--batch-size", "-b", bound=COUNT, help="Tiles per forward pass."),
    worst: int = number(5, "--worst", bound=Bound(lo=0, hi=INT32_MAX, integer=True),
                        help="Write overlays of the N images with the lowest mean IoU (0: none)."),
    alpha: float = typer.Option(0.5, callback=within(FRACTION), help="Overlay opacity."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: runs/val/expN)."),
    json_: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Score a model on labelled images: pixel accuracy, mIoU, per-class IoU and Dice, confusion matrix, worst images."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    import cvtool_backends as registry
    from cvtool.cli.models import open_model, runner_for
    from cvtool.data import check_dataset
    from cvtool.errors import UsageError
    from cvtool.fsutil import make_dir, next_run_dir, release_if_empty
    from cvtool.metrics import mean_iou
    from cvtool.model.evaluate import evaluate, finite, labelled, match_classes, summary
    from cvtool.model.inference import TTA, min_tile

    if tta is not None and tta not in TTA:
        raise UsageError(f"unknown test-time augmentation {tta!r}", hint=f"choose one of {', '.join(TTA)}")
    model = open_model(model_path)
    meta, spec = model.meta, model.spec
    chosen = choose_views(data, split, val_split, seed, model)
    info = chosen.info
    found = labelled(chosen.views)
    ds = found.data
    notes = chosen.notes + match_classes(ds, list(meta.classes))
    check_dataset(ds)  # every mask its image's size, every value a class: exit 2 before any inference
    tta = meta.tta if tta is None else tta
    tile = None if tile is None else max(tile, min_tile(spec))
    be = registry.get(backend, device)
    run = runner_for(be, model)  # segment's runner: the ort backend runs its cached export of a checkpoint
    run_dir = out_dir or next_run_dir(Path("runs") / "val")
    claimed = None if out_dir else run_dir  # ours to release if nothing is written
    dest = make_dir(run_dir)
    con = err()
    say = (lambda s: None) if json_ else (lambda s: con.print(safe(s, markup=False), soft_wrap=True, markup=False))
    say(f"model: {model.path} ({model.kind}, {spec.num_classes} classes), {backend}/{be.device}, scale {meta.scale}, "
        f"tta {tta}, tile {tile or 'as memory allows'}")
    note = getattr(run, "note", None)  # the ort backend's export of a checkpoint: reused or made now
    if note:
        say(f"{backend}: {note}")
    say(f"data: {info.description}: {chosen.split}")
    for n in notes:
        say(f"note: {n}")
    if found.unlabelled:
        names = ", ".join(Path(p).name for p in found.unlabelled[:8]) + (", ..." if len(found.unlabelled) > 8 else "")
        con.print(f"skipped {len(found.unlabelled)} image(s) without a mask: {safe(names)}", soft_wrap=True)

    t0 = time.perf_counter()
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=con, transient=True, disable=not con.is_terminal) as bar:
            task = bar.add_task("val", total=len(ds))

            def tick(score, cm):  # the bar shows the running mIoU: a bad model shows itself early
                bar.update(task, advance=1, description=f"val: mIoU so far {fmt_float(mean_iou(cm))}")

            ev = evaluate(run, ds, spec, meta, tta=tta, tile=tile, batch_size=batch_size, worst=worst, on_image=tick)
    except BaseException:
        release_if_empty(claimed)  # a bad image or Ctrl-C before anything was written: no empty expN left
        raise
    seconds = time.perf_counter() - t0

    K = spec.num_classes
    figures = summary(ev.cm, list(meta.classes))
    files = [Path(ds.scan(sc.item).image).name for sc in ev.images]  # the image files, as the user knows them
    doc = {"model": str(model.path), "kind": model.kind, "data": data, "format": info.format, "split": chosen.split,
           "backend": backend, "device": be.device, "scale": meta.scale, "tta": tta, "tile": tile,
           "images": len(ev.images), "skipped": found.unlabelled, "n_skipped": len(found.unlabelled), "notes": notes,
           **figures, "seconds": round(seconds, 3), "out": str(dest),
           "per_image": [{"image": files[sc.item], "pixels": sc.pixels, "pixel_accuracy": finite(sc.pixel_accuracy),
                          "mean_iou": finite(sc.mean_iou)} for sc in ev.images],
           "worst": [{"rank": r, "image": files[w.score.item], "mean_iou": w.score.mean_iou,
                      "pixel_accuracy": w.score.pixel_accuracy,
                      "overlay": str(dest / "worst" / f"{r:02d}_{Path(files[w.score.item]).stem}.png")}
                     for r, w in enumerate(ev.worst, 1)]}
    wrote = write_outputs(dest, doc, ev, ds, meta.colors, alpha)
    if json_:
        emit_json(doc)
        return
    report(doc, K)
    out().print(safe(f"wrote {dest}/: {', '.join(wrote)}", markup=False), soft_wrap=True, markup=False)


def report(doc: dict, K: int) -> None:
    """The figures as rich tables: per class, the confusion matrix (shares of each true class), the worst images."""
    con = out()
    total, pred_total = max(sum(c["pixels"] for c in doc["classes"]), 1), max(sum(c["predicted"] for c in doc["classes"]), 1)
    rows = [[safe(c["name"]), fmt_float(c["iou"]), fmt_float(c["dice"]), f"{c['pixels'] / total:.1%}",
             f"{c['predicted'] / pred_total:.1%}"] for c in doc["classes"]]
    n_in = K - len(doc["absent"])
    rows.append([f"[bold]mean ({n_in} classes)[/]", f"[bold]{fmt_float(doc['mean_iou'])}[/]",
                 f"[bold]{fmt_float(doc['mean_dice'])}[/]", "", ""])
    rows.append(["pixel accuracy", fmt_float(doc["pixel_accuracy"]), "", "", ""])
    con.print(table(f"Scores over {doc['images']} image(s), {total:,} labelled pixels, {doc['backend']}/{doc['device']}",
                    ["class", "IoU", "Dice", "true share", "predicted share"], rows))
    if doc["absent"]:
        con.print(f"not in the means: {safe(', '.join(doc['absent']))} (in neither the masks nor the predictions)",
                  soft_wrap=True)
    names = [c["name"] for c in doc["classes"]]
    cm_rows = []
    for name, row in zip(names, doc["confusion"]):
        n = sum(row)
        cm_rows.append([safe(name), *(f"{v / n:.1%}" if n else "-" for v in row), f"{n:,}"])
    con.print(table("Confusion matrix: rows truth, columns prediction, share of each true class",
                    ["truth \\ prediction", *map(safe, names), "pixels"], cm_rows))
    if doc["worst"]:
        con.print(table(f"Worst {len(doc['worst'])} image(s) by mean IoU", ["rank", "image", "mIoU", "pixel acc", "overlay"],
                        [[w["rank"], safe(w["image"]), fmt_float(w["mean_iou"]), fmt_float(w["pixel_accuracy"]),
                          safe(Path(w["overlay"]).name)] for w in doc["worst"]]))
