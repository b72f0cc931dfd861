"""`cvtool segment SOURCE...`: label every pixel of real images with a trained model.

Per image, in the output folder: STEM_mask.png (palette PNG, pixel = class index), STEM_overlay.png
(class colours over the image) and its class fractions in the summary / --json. A mask has exactly
its image's size. An image runs whole while one pass fits the memory budget (the backend's device memory, or
this host's), else through overlapping tiles that cost at most 1.5x its pixels (cvtool.model.tiling), made band by
band (cvtool.model.bands); same-size images are batched. The summary and --json give the net's pixels over the
images' pixels. A bad image is reported and skipped; the call then exits 1 naming every failure.

The user's files are safe: an --out that is, holds or lies inside an input folder (or holds an input file) is
refused before anything is read, and an existing STEM_mask.png / STEM_overlay.png is replaced only when cvtool
wrote it (its PNG text chunk, cvtool.data.io.written_by_cvtool); otherwise that image fails alone, nothing
overwritten. A file that cannot be written (full disk) stops the call: one line naming it, exit 2.
"""

from __future__ import annotations

import glob
import time
from pathlib import Path
from typing import List, Optional

import typer

from cvtool.bounds import COUNT, FRACTION
from cvtool.cli.options import within
from cvtool.cli.output import emit_json, err, out, safe, table


def expand_sources(sources: list[str]) -> tuple[list[Path], list[dict]]:
    """Files, folders (their images, sorted) and globs -> (images, [{source, error}])."""
    from cvtool.data.io import is_image_file

    found: list[Path] = []
    failed: list[dict] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            imgs = sorted(q for q in p.iterdir() if is_image_file(q))
            if not imgs:
                failed.append({"source": s, "error": f"{s}: folder holds no images"})
            found += imgs
        elif p.is_file():
            found.append(p)
        elif any(ch in s for ch in "*?["):
            hits = sorted(Path(h) for h in glob.glob(s, recursive=True) if Path(h).is_file())
            if not hits:
                failed.append({"source": s, "error": f"{s}: pattern matches no file"})
            found += hits
        else:
            failed.append({"source": s, "error": f"{s}: no such file or folder"})
    seen, unique = set(), []
    for f in found:
        if f.resolve() not in seen:
            seen.add(f.resolve())
            unique.append(f)
    return unique, failed


def out_overlaps_input(dest: Path, sources: list[str], images: list[Path]) -> str | None:
    """Why --out would mix outputs with inputs (it is, holds or lies inside an input folder, or holds an input
    file: a later run would read masks as images, and a mask could replace a user's file), or None."""
    d = dest.resolve()
    for s in sources:
        if Path(s).is_dir():
            q = Path(s).resolve()
            if d == q:
                return f"--out {dest} is the input folder {s}"
            if q in d.parents:
                return f"--out {dest} lies inside the input folder {s}"
            if d in q.parents:
                return f"--out {dest} holds the input folder {s}"
    for f in images:
        if d in f.resolve().parents:
            return f"--out {dest} holds the input {f}"
    return None


def foreign_outputs(paths: list[Path]) -> list[Path]:
    """The files among `paths` that exist and that cvtool did not write: never overwritten."""
    from cvtool.data.io import written_by_cvtool

    return [p for p in paths if (p.exists() or p.is_symlink()) and not (p.is_file() and written_by_cvtool(p))]


def output_stems(paths: list[Path]) -> list[str]:
    """One distinct output name per image: the stem; a.png and a.jpg -> a_png, a_jpg; then _2, _3, ..."""
    from collections import Counter

    n = Counter(p.stem for p in paths)
    taken: set[str] = set()
    stems = []
    for p in paths:
        base = p.stem if n[p.stem] == 1 else f"{p.stem}_{p.suffix.lstrip('.').lower()}"
        stem, k = base, 1
        while stem in taken:
            k += 1
            stem = f"{base}_{k}"
        taken.add(stem)
        stems.append(stem)
    return stems


def _slicer(a):
    """rows(r0, r1) of an image held whole: what cvtool.data.strips gives for a file read in strips."""
    return lambda r0, r1: a[r0:r1]


def precision_runner(be, backend: str, model, precision: str):
    """The network in a reduced precision on this backend (its precision_runner hook), or one line saying why not."""
    from cvtool.errors import BackendUnavailable, UsageError
    from cvtool_backends.base import hook

    if model.kind == "onnx":
        raise UsageError(f"--precision {precision} takes a checkpoint; {model.path} is an export, which runs in its "
                         f"own precision ({model.precision})", hint="drop --precision, or pass the .safetensors")
    if precision == "int8":
        raise UsageError("int8 needs calibration images: export an int8 file and segment with it",
                         hint="cvtool export CHECKPOINT -o model.int8.onnx --precision int8; then --model "
                              "model.int8.onnx --backend ort")
    make = hook(be, "precision_runner")
    if make is None:
        raise BackendUnavailable(f"backend {backend!r} runs float32 only", hint="bf16: --backend torch")
    return make(model.spec, model.params, precision)


def segment(
    sources: List[str] = typer.Argument(..., help="Image files, folders or globs (PNG, JPEG, BMP, TIFF)."),
    model_path: Optional[Path] = typer.Option(None, "--model", "-m", help="Checkpoint (.safetensors) or exported .onnx. "
                                              "Default: best checkpoint of the latest training run."),
    backend: str = typer.Option("torch", help="numpy | torch | ort (ort exports a checkpoint first, cached in runs/.cache/onnx)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: runs/segment/expN)."),
    tile: Optional[int] = typer.Option(None, callback=within(COUNT), help="Tiles of at most this many pixels a side "
                                       "(default: an image runs whole while one pass fits in half the free memory, "
                                       "else in tiles that do)."),
    batch_size: int = typer.Option(4, "--batch-size", "-b", callback=within(COUNT), help="Same-size images (or tiles) per forward pass."),
    alpha: float = typer.Option(0.5, callback=within(FRACTION), help="Overlay opacity."),
    tta: Optional[str] = typer.Option(None, help="Test-time augmentation: none | flip | dihedral (default: the model's)."),
    max_pixels: Optional[int] = typer.Option(None, "--max-pixels", help="Refuse an image whose header claims more "
                                             "pixels than this, before decoding it (default 100 million; 0: no limit)."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, or bf16 (torch, where the CPU has native "
                                  "bfloat16 or on CUDA); fp16 and int8 come as files: cvtool export --precision."),
    json_: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Label every pixel: palette mask PNG, colour overlay PNG and class fractions per image."""
    import numpy as np

    import cvtool_backends as registry
    from cvtool import glibc_malloc as heap
    from cvtool.cli.models import open_model, runner_for
    from cvtool.data.io import (
        MAX_CLASSES,
        MAX_PIXELS,
        read_image,
        write_mask_overlay_bands,
        write_mask_png,
        write_overlay_png,
    )
    from cvtool.data.memory import resize_image, scaled_hw
    from cvtool.data.strips import open_strips
    from cvtool.errors import CvtoolError, DataError, UsageError, WriteError
    from cvtool.fsutil import make_dir, next_run_dir, release_if_empty
    from cvtool.model.activations import pass_pixels
    from cvtool.model.bands import segment_bands
    from cvtool.model.inference import (
        TTA,
        class_fractions,
        predict_batch,
        predict_tiled,
        prepare,
        resize_logits,
        tile_margin,
        with_tta,
    )
    from cvtool.model.precision import parse_precision
    from cvtool.model.tiling import plan_tiling
    from cvtool_backends.base import hook

    precision = parse_precision(precision)
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    if max_pixels < 0:
        raise UsageError(f"--max-pixels must be 0 (no limit) or more, got {max_pixels}")
    images, failed = expand_sources(sources)
    if not images:
        raise UsageError("no images to segment: " + "; ".join(f["error"] for f in failed))
    if out_dir is not None and (why := out_overlaps_input(out_dir, sources, images)):
        raise UsageError(why, hint="write the masks to a folder of their own (default: runs/segment/expN)")
    n_bad_sources = len(failed)
    model = open_model(model_path)
    meta = model.meta
    if model_path is None:
        err().print(f"model: {safe(model.path, markup=False)} (best checkpoint of the latest training run)",
                    soft_wrap=True, markup=False)
    spec = model.spec
    if spec.num_classes > MAX_CLASSES:
        raise UsageError(f"the model has {spec.num_classes} classes; a palette mask holds at most {MAX_CLASSES}")
    be = registry.get(backend, device)
    run = precision_runner(be, backend, model, precision) if precision != "fp32" else runner_for(be, model)
    note = getattr(run, "note", None)  # the ort backend's export of a checkpoint: reused or made now
    if note:
        err().print(safe(f"{backend}: {note} for {model.path}", markup=False), soft_wrap=True, markup=False)
    passes = [0]  # forward passes: batches of images or of tiles

    def forward(x):
        passes[0] += 1
        return run(x)

    tta = meta.tta if tta is None else tta
    forward = with_tta(forward, tta)  # the model's test-time augmentation (cvtool.model.inference.segment_logits)
    multiple, margin = spec.multiple, tile_margin(spec)
    if tile is not None and tile < 4 * multiple:
        err().print(f"--tile raised to {4 * multiple}: 4 x the net's multiple {multiple}", soft_wrap=True, markup=False)
        tile = 4 * multiple
    free_memory = hook(be, "free_memory")  # a GPU's free memory; None: this host's
    budget = pass_pixels(spec, free_memory() if free_memory is not None else None)  # input pixels a pass may hold
    run_dir = out_dir or next_run_dir(Path("runs") / "segment")
    claimed = None if out_dir else run_dir  # ours to release if nothing is written
    dest = make_dir(run_dir)  # not writable: one line, exit 2, no image read
    stems = dict(zip(images, output_stems(images)))

    timings = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
    results: list[dict] = []
    queue: list = []  # (path, raw image, prepared) of one size, waiting for a batch

    def flush():
        if not queue:
            return
        t0 = time.perf_counter()
        logits = predict_batch(forward, [q[2].x for q in queue], multiple)
        timings["inference"] += time.perf_counter() - t0
        for (path, raw, _), lg in zip(queue, logits):
            finish(path, raw, lg)
        queue.clear()

    def finish(path: Path, raw, logits, mask=None, rows=None):
        """The mask and overlay PNGs of one image; rows (the banded path): its rows(r0, r1), both written a band at
        a time."""
        t0 = time.perf_counter()
        if mask is None:
            if logits.shape[-2:] != raw.shape[:2]:  # the model ran at its scale: back to the image's pixels
                logits = resize_logits(logits, raw.shape[:2])
            mask = logits.argmax(0).astype(np.uint8)
        mask_png, overlay_png = dest / f"{stems[path]}_mask.png", dest / f"{stems[path]}_overlay.png"
        if rows is not None:
            write_mask_overlay_bands(mask_png, overlay_png, rows, mask, meta.colors, alpha=alpha)
        else:
            write_mask_png(mask_png, mask, meta.colors)
            write_overlay_png(overlay_png, raw, mask, meta.colors, alpha=alpha)
        results.append({"image": str(path), "size": [int(mask.shape[0]), int(mask.shape[1])], "mask": str(mask_png),
                        "overlay": str(overlay_png), "tiled": tilings[path]["mode"] != "whole", "tiling": tilings[path],
                        "fractions": class_fractions(mask, meta.classes)})
        del logits, mask
        heap.trim()  # images of many sizes must not grow the process (cvtool/glibc_malloc.py)
        timings["postprocess"] += time.perf_counter() - t0

    from rich.progress import Progress

    tilings: dict[Path, dict] = {}  # per image: cvtool.model.tiling.Tiling.to_dict()
    with Progress(console=err(), transient=True, disable=json_ or not err().is_terminal) as prog:
        task = prog.add_task("segment", total=len(images))
        for path in images:
            try:
                if foreign := foreign_outputs([dest / f"{stems[path]}_{kind}.png" for kind in ("mask", "overlay")]):
                    raise DataError(f"{foreign[0]} exists and was not written by cvtool: not overwritten",
                                    hint="move it, or choose another --out")
                t0 = time.perf_counter()
                # a file that stores its pixels raw (uncompressed TIFF strips, BMP) is read a band at a time
                strips = open_strips(path, max_pixels=max_pixels) if meta.scale == 1.0 else None
                if strips is not None:
                    raw, hw, read_rows = None, strips.hw, strips.rows
                else:
                    raw = read_image(path, max_pixels=max_pixels)
                    hw, read_rows = raw.shape[:2], _slicer(raw)
                net_hw = hw if meta.scale == 1.0 else scaled_hw(hw, meta.scale)
                tiling = plan_tiling(spec, net_hw, max_pixels=budget, max_side=tile)
                tilings[path] = tiling.to_dict()
                if tiling.mode != "whole" and meta.scale == 1.0:  # band by band: memory follows a band of tiles
                    flush()
                    t0 = time.perf_counter()
                    mask = segment_bands(forward, read_rows, tiling,
                                         lambda band: prepare(band, spec.in_channels, meta.mean, meta.std,
                                                              name=str(path)).x,
                                         batch_size=batch_size, max_pixels=budget)
                    timings["inference"] += time.perf_counter() - t0
                    finish(path, None, None, mask, rows=read_rows)
                    prog.advance(task)
                    continue
                if raw is None:
                    raw = read_rows(0, hw[0])  # whole after all: as read_image gives it
                net_in = raw if meta.scale == 1.0 else resize_image(raw, net_hw)
                prep = prepare(net_in, spec.in_channels, meta.mean, meta.std, name=str(path))
                timings["preprocess"] += time.perf_counter() - t0
                if tiling.mode != "whole":  # at the model's scale: the logits are resampled back whole
                    flush()
                    t0 = time.perf_counter()
                    lg = predict_tiled(forward, prep.x, tiling, batch_size=batch_size, max_pixels=budget)
                    timings["inference"] += time.perf_counter() - t0
                    finish(path, raw, lg)
                else:
                    if queue and (queue[0][2].hw != prep.hw or len(queue) >= batch_size or
                                  (len(queue) + 1) * tiling.net_pixels > budget):
                        flush()
                    queue.append((path, raw, prep))
            except WriteError:  # a full disk fails every image after it: stop, naming the file
                raise
            except CvtoolError as e:
                failed.append({"source": str(path), "error": e.message + (f" (hint: {e.hint})" if e.hint else "")})
            prog.advance(task)
        flush()
    if not results:
        release_if_empty(claimed)  # every image failed: no empty runs/segment/expN left behind

    n = max(len(results), 1)
    per_image = {k: 1000 * v / n for k, v in timings.items()}
    net_px = sum(r["tiling"]["net_pixels"] for r in results)
    img_px = sum(r["tiling"]["image_pixels"] for r in results)
    doc = {"model": str(model.path), "backend": backend, "device": be.device, "precision": precision, "out": str(dest),
           "scale": meta.scale, "tta": tta, "tile": tile, "tile_margin": margin, "pass_pixels": budget,
           "batch_size": batch_size, "forward_passes": passes[0],
           # the net's pixels (tiles overlap; padding to the net's multiple) over the images' pixels at the model's
           # scale, per pass; test-time augmentation runs tta_passes such passes
           "net_pixels": net_px, "image_pixels": img_px, "pixel_ratio": round(net_px / max(img_px, 1), 4),
           "tta_passes": TTA[tta], "images": results, "failed": failed, "ms_per_image": per_image}
    if json_:
        emit_json(doc)
    else:
        def fractions(r: dict) -> str:  # largest first, the ones that show
            return ", ".join(f"{safe(c)} {f:.1%}" for c, f in sorted(r["fractions"].items(), key=lambda kv: -kv[1]) if f > 0.001)

        rows = [[safe(Path(r["image"]).name), f"{r['size'][0]}x{r['size'][1]}" + (" (tiled)" if r["tiled"] else ""),
                 fractions(r)] for r in results]
        if results:  # where every image failed, the failures below are all there is to say
            out().print(table(f"Segmented {len(results)} image(s) with {backend}/{be.device} -> {safe(dest)}",
                              ["image", "size (HxW)", "class fractions"], rows))
            out().print("ms per image: " + ", ".join(f"{k} {v:.1f}" for k, v in per_image.items()))
            out().print(f"net pixels / image pixels: {doc['pixel_ratio']:.3f} (x{TTA[tta]} passes for --tta {tta})")
        for f in failed:
            err().print(f"[red]failed[/]: {safe(f['error'])}", soft_wrap=True)
    if failed:
        names = ", ".join(Path(f["source"]).name for f in failed[:5]) + (", ..." if len(failed) > 5 else "")
        raise CvtoolError(f"{len(failed)} of {len(images) + n_bad_sources} input(s) failed: {names}", exit_code=1)
