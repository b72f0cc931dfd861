"""`cvtool data`: write the synthetic dataset to disk, check a dataset before training, convert labelling tools'
exports (COCO JSON, YOLO) to the folder format."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import typer

from cvtool.bounds import COUNT, INT32_MAX, SEED, SPLIT_TO_CHECK, Bound
from cvtool.cli.options import number, within
from cvtool.cli.output import emit_json, err, fmt_float, out, safe, table

data_app = typer.Typer(help="Segmentation datasets: make the synthetic one, check or convert any.",
                       no_args_is_help=True)

JSON_OPT = typer.Option(False, "--json", help="Print one JSON document on stdout.")


@contextlib.contextmanager
def progress(what: str, total: int):
    """A rich progress bar on stderr (only on a terminal); yields advance()."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    con = err()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=con, transient=True, disable=not con.is_terminal) as bar:
        task = bar.add_task(what, total=total)
        yield lambda *_: bar.advance(task)


@data_app.command("synth")
def synth(
    out_dir: Path = typer.Option(..., "--out", help="Folder to write images/, masks/ and classes.json into."),
    n: int = typer.Option(..., "-n", "--n", callback=within(COUNT), help="Number of images."),
    size: int = typer.Option(128, "--size", callback=within(Bound(lo=8, hi=INT32_MAX, integer=True)), help="Image side in pixels."),
    seed: int = typer.Option(0, "--seed", callback=within(SEED), help="Seed: the same seed writes the same files."),
    force: bool = typer.Option(False, "--force", help="Overwrite same-named files in a folder that holds a dataset."),
    json_: bool = JSON_OPT,
) -> None:
    """Write the built-in synthetic shapes dataset (folder format: palette-PNG masks, classes.json)."""
    import numpy as np

    from cvtool.data.io import write_image_png, write_mask_png
    from cvtool.data.synth import TRAIN, SynthDataset
    from cvtool.errors import UsageError
    from cvtool.footprint import array, require
    from cvtool.fsutil import atomic_write_bytes

    if not force and any((out_dir / sub).is_dir() and any((out_dir / sub).iterdir()) for sub in ("images", "masks")):
        raise UsageError(f"{out_dir} already holds a dataset", hint="choose another --out, or --force")
    require([array("an image's float32 colour field", (3, size, size), 4), array("its mask", (size, size), 1)],
            doing=f"data synth --size {size}", hint="use a smaller --size")
    ds = SynthDataset(n, size, seed, TRAIN)
    K = len(ds.classes)
    pixels = np.zeros(K, np.int64)
    t0 = time.perf_counter()
    with progress(f"writing {n} images", n) as advance:
        for i in range(n):
            img, mask = ds.generate(i)
            write_image_png(out_dir / "images" / f"{ds.name(i)}.png", img)
            write_mask_png(out_dir / "masks" / f"{ds.name(i)}.png", mask, ds.colors)
            pixels += np.bincount(mask.ravel(), minlength=K)
            advance()
    doc = {"classes": ds.classes, "colors": [list(c) for c in ds.colors],
           "source": {"generator": "cvtool data synth", "n": n, "size": size, "seed": seed}}
    atomic_write_bytes(out_dir / "classes.json", (json.dumps(doc, indent=2) + "\n").encode())
    fractions = pixels / pixels.sum()
    seconds = time.perf_counter() - t0
    if json_:
        emit_json({"out": str(out_dir), "n": n, "size": size, "seed": seed, "classes": ds.classes,
                   "pixel_fractions": fractions, "seconds": round(seconds, 3)})
        return
    out().print(f"wrote {n} images {size}x{size} to {safe(out_dir)} in {seconds:.1f} s "
                f"(images/, masks/ as palette PNGs, classes.json)")
    out().print(table("Pixels per class", ["class", "fraction"],
                      [[c, fmt_float(float(f))] for c, f in zip(ds.classes, fractions)]))


@data_app.command("check")
def check(
    data: str = typer.Argument(..., help="Dataset folder (images/ + masks/, PASCAL VOC, COCO JSON, YOLO), or 'synth'."),
    val_split: float = number(0.2, "--val-split", bound=SPLIT_TO_CHECK,
                              help="Held-out share when the folder has no split (0: every image as training data)."),
    seed: int = number(0, "--seed", bound=SEED, help="Seed of the hold-out split."),
    json_: bool = JSON_OPT,
) -> None:
    """Validate every image/mask pair (exit 2 on the first bad one), show each class's share of pixels and the
    dataset's fingerprint (sizes, statistics, object sizes, warnings: what `cvtool train --data` plans from)."""
    from cvtool.cli.train_view import FINGERPRINT_CACHE, fingerprint_table
    from cvtool.data import check_dataset, open_datasets
    from cvtool.data.fingerprint import dataset_fingerprint

    train, val, info = open_datasets(data, val_split=val_split, seed=seed)
    stats = {}
    with progress("checking masks", len(train) + len(val)) as advance:
        for part, ds in (("train", train), ("val", val)):
            stats[part] = check_dataset(ds, on_item=advance)
    with progress("fingerprint", 1):
        fp = dataset_fingerprint(train, val, list(info.notes), FINGERPRINT_CACHE)
    if json_:
        emit_json({**info.to_dict(), **{part: st.to_dict() for part, st in stats.items()}, "fingerprint": fp.to_dict()})
        return
    con = out()
    con.print(f"{info.format} dataset {safe(info.root or '')}: {info.n_train} train + {info.n_val} val images, "
              f"{len(info.classes)} classes, {info.in_channels} channel(s); split: {info.split}")
    for note in info.notes:  # plain text: a note may hold [...] (file names, values)
        con.print(f"note: {safe(note)}")
    tr, va = stats["train"], stats["val"]
    rows = [[k, safe(c), "#%02x%02x%02x" % tuple(info.colors[k]), fmt_float(float(tr.fractions()[k])), int(tr.present[k]),
             fmt_float(float(va.fractions()[k])), int(va.present[k])] for k, c in enumerate(info.classes)]
    if tr.ignored or va.ignored:
        rows.append(["255", "(ignore)", "", f"{tr.ignored / max(tr.total, 1):.3g} of all", "",
                     f"{va.ignored / max(va.total, 1):.3g} of all", ""])
    con.print(table("Pixel fraction per class (of labelled pixels)",
                    ["index", "class", "colour", "train", "train images", "val", "val images"], rows))
    con.print(fingerprint_table(fp.to_dict()))
    for w in fp.warnings:
        con.print(f"[yellow]warning[/]: {safe(w)}")
    con.print("ok: every image has a mask of its size with valid class values")


@data_app.command("convert")
def convert(
    src: str = typer.Argument(..., help="Dataset to convert: COCO JSON, YOLO segmentation, PASCAL VOC or a folder."),
    to: Path = typer.Option(..., "--to", help="New folder to write (refused when it exists and is not empty)."),
    val_split: float = typer.Option(0.0, "--val-split",
                                     help="Hold out this share as val/ when SRC has no split of its own."),
    seed: int = typer.Option(0, "--seed", help="Seed of that hold-out."),
    json_: bool = JSON_OPT,
) -> None:
    """Write SRC in the folder format: images/ (the files as they were), palette-PNG masks/ (255 = ignore) and
    classes.json; train/ + val/ when SRC has a split. Written whole or not at all."""
    from cvtool.data import open_datasets
    from cvtool.data.convert import check_target, write_folder

    check_target(to)  # before reading SRC: a refusal costs nothing
    train, val, info = open_datasets(src, val_split=val_split, seed=seed)
    t0 = time.perf_counter()
    with progress(f"converting {len(train) + len(val)} images", len(train) + len(val)) as advance:
        res = write_folder(train, val, info, to, on_item=advance)
    seconds = time.perf_counter() - t0
    labelled = max(int(res.pixels.sum()), 1)
    if json_:
        emit_json({"source": src, "format": info.format, "to": str(to), "parts": res.parts, "split": info.split,
                   "classes": info.classes, "notes": info.notes,
                   "pixel_fractions": res.pixels / labelled, "images_per_class": res.images,
                   "ignored_pixels": res.ignored, "seconds": round(seconds, 3)})
        return
    con = out()
    layout = (f"train/ and val/ ({safe(info.split)})" if "" not in res.parts else "one folder, no split")
    con.print(f"converted {info.format} dataset {safe(src)}: {sum(res.parts.values())} images, "
              f"{len(info.classes)} classes -> {safe(str(to))} in {seconds:.1f} s: images/, palette masks/ and "
              f"classes.json, {layout}")
    for note in info.notes:
        con.print(f"note: {safe(note)}")
    rows = [[k, c, fmt_float(float(p / labelled)), int(n)] for k, (c, p, n) in
            enumerate(zip(info.classes, res.pixels, res.images))]
    if res.ignored:
        rows.append(["255", "(ignore)", f"{res.ignored} pixels", ""])
    con.print(table("Pixels per class (of labelled pixels)", ["index", "class", "fraction", "images"], rows))
