"""`cvtool segment SOURCE...`: label every pixel of real images with a trained model."""

from __future__ import annotations

import glob
import time
from pathlib import Path
from typing import List, Optional

import typer

from cvtool.cli.output import emit_json, err, out, table


def expand_sources(sources: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files, folders (their images, sorted) and globs -> (images, [(source, why it failed)])."""
    from cvtool.data.io import is_image_file

    found: list[Path] = []
    failed: list[tuple[str, str]] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            imgs = sorted(q for q in p.iterdir() if q.is_file() and is_image_file(q))
            if not imgs:
                failed.append((s, "folder holds no images"))
            found += imgs
        elif p.is_file():
            found.append(p)
        elif any(ch in s for ch in "*?["):
            hits = sorted(Path(h) for h in glob.glob(s, recursive=True) if Path(h).is_file())
            if not hits:
                failed.append((s, "pattern matches no file"))
            found += hits
        else:
            failed.append((s, "no such file or folder"))
    seen, unique = set(), []
    for f in found:
        if f.resolve() not in seen:
            seen.add(f.resolve())
            unique.append(f)
    return unique, failed


def onnx_for_checkpoint(ckpt: Path, model, opset: int | None = None) -> tuple[Path, bool]:
    """The checkpoint exported to ONNX, cached beside it; rebuilt when the checkpoint changed."""
    import json

    import onnx

    from backends.ort_backend.export import build_model, read_meta
    from backends.ort_backend.opset import newest_opset
    from cvtool import __version__
    from cvtool.cli.models import file_digest
    from cvtool.fsutil import atomic_write_bytes

    digest = file_digest(ckpt)
    cache = ckpt.with_name(ckpt.stem + ".cache.onnx")
    if cache.exists():
        try:
            if read_meta(onnx.load(str(cache), load_external_data=False)).get("source_sha256") == digest:
                return cache, True
        except Exception:
            pass  # unreadable cache: rebuild it
    meta = {**model.meta(), "cvtool_version": __version__, "source_sha256": digest}
    m = build_model(model.spec, model.params, json.loads(json.dumps(meta)), opset=opset or newest_opset())
    atomic_write_bytes(cache, m.SerializeToString())
    return cache, False


def segment(
    sources: List[str] = typer.Argument(..., help="Image files, folders or globs (PNG, JPEG, BMP, TIFF)."),
    model_path: Optional[Path] = typer.Option(None, "--model", "-m", help="Checkpoint (.safetensors) or exported .onnx. "
                                              "Default: best checkpoint of the latest training run."),
    backend: str = typer.Option("torch", help="numpy | torch | ort."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Output folder [default runs/segment/expN]."),
    tile: int = typer.Option(512, help="Images larger than this go through overlapping tiles of this size."),
    batch_size: int = typer.Option(4, "--batch-size", "-b", help="Same-size images (or tiles) per forward pass."),
    alpha: float = typer.Option(0.5, help="Overlay opacity."),
    json_: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Label every pixel: palette mask PNG, colour overlay PNG and class fractions per image."""
    import numpy as np

    import backends as registry
    from cvtool.cli.models import open_model
    from cvtool.data.io import read_image, write_mask_png, write_overlay_png
    from cvtool.errors import CvtoolError, UsageError
    from cvtool.fsutil import next_run_dir
    from cvtool.inference import class_fractions, predict_batch, predict_tiled, prepare

    if tile < 1 or batch_size < 1:
        raise UsageError("--tile and --batch-size must be at least 1")
    if not 0 <= alpha <= 1:
        raise UsageError("--alpha must be between 0 and 1")
    images, failed = expand_sources(sources)
    if not images:
        raise UsageError("no images to segment: " + "; ".join(f"{s}: {why}" for s, why in failed))
    model = open_model(model_path)
    if model_path is None:
        err().print(f"model: {model.path} (best checkpoint of the latest training run)")
    be = registry.get(backend, device)
    if backend == "ort":
        if model.kind == "checkpoint":
            onnx_path, reused = onnx_for_checkpoint(model.path, model)
            err().print(f"ort: {'reusing' if reused else 'exported'} {onnx_path} for {model.path}")
        else:
            onnx_path = model.path
        run = be.load_onnx(onnx_path)
    else:
        run = be.runner(model.spec, model.params)
    spec = model.spec
    multiple = spec.multiple
    tile = max(multiple, tile - tile % multiple)
    dest = out_dir or next_run_dir(Path("runs") / "segment")
    dest.mkdir(parents=True, exist_ok=True)

    timings = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
    results: list[dict] = []
    queue: list = []  # (path, raw image, prepared) of one size, waiting for a batch

    def flush():
        if not queue:
            return
        t0 = time.perf_counter()
        logits = predict_batch(run, [q[2].x for q in queue], multiple)
        timings["inference"] += time.perf_counter() - t0
        for (path, raw, _), lg in zip(queue, logits):
            finish(path, raw, lg)
        queue.clear()

    def finish(path: Path, raw, logits):
        t0 = time.perf_counter()
        mask = logits.argmax(0).astype(np.uint8)
        stem = path.stem
        write_mask_png(dest / f"{stem}_mask.png", mask, model.colors)
        write_overlay_png(dest / f"{stem}_overlay.png", raw, mask, model.colors, alpha=alpha)
        results.append({"image": str(path), "size": [int(mask.shape[0]), int(mask.shape[1])],
                        "mask": str(dest / f"{stem}_mask.png"), "overlay": str(dest / f"{stem}_overlay.png"),
                        "fractions": class_fractions(mask, model.classes)})
        timings["postprocess"] += time.perf_counter() - t0

    from rich.progress import Progress

    with Progress(console=err(), transient=True, disable=json_) as prog:
        task = prog.add_task("segment", total=len(images))
        for path in images:
            try:
                t0 = time.perf_counter()
                raw = read_image(path)
                prep = prepare(raw, spec.in_channels, model.mean, model.std, name=str(path))
                timings["preprocess"] += time.perf_counter() - t0
                H, W = prep.hw
                if H > tile or W > tile:
                    flush()
                    t0 = time.perf_counter()
                    lg = predict_tiled(run, prep.x, multiple, tile, batch_size=batch_size)
                    timings["inference"] += time.perf_counter() - t0
                    finish(path, raw, lg)
                else:
                    if queue and (queue[0][2].hw != prep.hw or len(queue) >= batch_size):
                        flush()
                    queue.append((path, raw, prep))
            except CvtoolError as e:
                failed.append((str(path), e.message))
            prog.advance(task)
        flush()

    n = max(len(results), 1)
    per_image = {k: 1000 * v / n for k, v in timings.items()}
    doc = {"model": str(model.path), "backend": backend, "device": be.device, "out": str(dest),
           "images": results, "failed": [{"source": s, "error": why} for s, why in failed],
           "ms_per_image": per_image}
    if json_:
        emit_json(doc)
    else:
        rows = [[Path(r["image"]).name, f"{r['size'][0]}x{r['size'][1]}",
                 ", ".join(f"{c} {f:.1%}" for c, f in sorted(r["fractions"].items(), key=lambda kv: -kv[1]) if f > 0.001)]
                for r in results]
        out().print(table(f"Segmented {len(results)} image(s) with {backend}/{be.device} -> {dest}",
                          ["image", "size", "class fractions"], rows))
        out().print("ms per image: " + ", ".join(f"{k} {v:.1f}" for k, v in per_image.items()))
        for s, why in failed:
            err().print(f"[red]failed[/]: {s}: {why}")
    if failed:
        raise typer.Exit(1)
