"""`cvtool export --precision fp16|int8`: the images a reduced-precision export is calibrated and judged on.

int8 is calibrated on a sample of the training images the checkpoint remembers (cvtool.model.checkpoint.DataSource)
or on `--calibrate DIR`. Every reduced-precision export is judged by its masks: the validation images the checkpoint
remembers (else DIR's validation split, else DIR's images without masks: agreement only), segmented as `cvtool
segment` does by the float32 export and by the new file in ONNX Runtime; the report gives the share of pixels of the
same class and the mIoU change against the true masks, held to cvtool.compare.MASK_TOLERANCE.
"""

from __future__ import annotations

from pathlib import Path

from cvtool.cli.output import err, fmt_float, out, table

VERIFY_IMAGES = 100  # at most this many validation images (spread evenly over the split) judge an export


def calibration_images(model, calibrate: Path | None, n: int):
    """The int8 calibration sample: --calibrate DIR, else the checkpoint's training split; UsageError without either."""
    from cvtool.errors import UsageError
    from cvtool.model import calibrate as cal

    if calibrate is not None:
        return cal.folder(calibrate, n)
    if model.data is None:
        raise UsageError(f"{model.path} does not say what it was trained on, so int8 has no images to calibrate on",
                         hint="give a folder of training images with --calibrate DIR")
    return cal.remembered(model.data, "train", n)


def judging_images(model, calibrate: Path | None, calibration):
    """The images an export is judged on: the checkpoint's validation split, else --calibrate DIR's (a dataset's
    validation split, or the calibration images themselves, without masks)."""
    from cvtool.data import open_datasets
    from cvtool.model import calibrate as cal

    if model.data is not None:
        return cal.remembered(model.data, "val", VERIFY_IMAGES)
    if calibrate is not None and ((calibrate / "images").is_dir() or (calibrate / "JPEGImages").is_dir()):
        val = open_datasets(str(calibrate))[1]
        if len(val):
            return cal.from_dataset(val, VERIFY_IMAGES, f"{min(len(val), VERIFY_IMAGES)} validation images of {calibrate}")
    if calibration is None:
        return None
    return cal.Images(calibration.images, None, f"the {len(calibration.images)} calibration images (no masks)")


def mask_report(model, onnx_path: Path, precision: str, images, *, quiet: bool) -> dict:
    """The file (ORT, CPU) against the float32 network (ORT, CPU) on `images`, as segment runs them."""
    from rich.progress import Progress

    import cvtool_backends as registry
    from cvtool.cli.models import runner_for
    from cvtool.compare import MASK_TOLERANCE
    from cvtool.model.calibrate import compare_masks
    from cvtool_backends.base import hook

    ort = registry.get("ort", "cpu")
    load_onnx = hook(ort, "load_onnx")
    assert load_onnx is not None  # the ort backend runs ONNX files
    ref, got = runner_for(ort, model), load_onnx(onnx_path)
    tol = MASK_TOLERANCE[precision]
    with Progress(console=err(), transient=True, disable=quiet) as prog:
        task = prog.add_task(f"judge {precision} masks", total=len(images.images))
        rep = compare_masks(ref, got, images, model.spec, model.meta, on_image=lambda: prog.advance(task))
    change = rep.miou_change
    ok = rep.agreement >= tol.agreement and (change is None or abs(change) <= tol.miou_change)
    return {**rep.to_dict(), "precision": precision, "tol_agreement": tol.agreement, "tol_miou_change": tol.miou_change,
            "ok": ok}


def print_mask_report(r: dict) -> None:
    p = r["precision"]
    t = table(f"{p} masks against float32's ({r['what']}, segmented as cvtool segment does)",
              ["images", "pixels", "same class", "mIoU fp32", f"mIoU {p}", "change", "tolerance", "ok"],
              [[str(r["images"]), f"{r['pixels']:,}", f"{r['agreement']:.3%}", fmt_float(r["miou_ref"], 4),
                fmt_float(r["miou"], 4), "-" if r["miou_change"] is None else f"{r['miou_change']:+.4f}",
                f">= {r['tol_agreement']:.0%} / |change| <= {r['tol_miou_change']:g}",
                "yes" if r["ok"] else "[red]NO[/]"]])
    t.caption = "both run by ONNX Runtime on the CPU: the float32 export of the checkpoint, and the written file"
    out().print(t)
