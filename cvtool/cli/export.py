"""`cvtool export CHECKPOINT -o model.onnx`: an ONNX export that proves it computes what was trained.

The file (backends/onnx_format/export.py): input "image" float32 (N, C, H, W) normalised, H and W
divisible by 2**depth; output "logits" float32 (N, K, H, W); batch, height and width dynamic; weights
inside; metadata_props["cvtool"] = JSON with spec, classes, colors, normalization, cvtool_version.

Verification runs the same seeded inputs at several shapes through ORT (the written file), PyTorch and
the NumPy reference (float32), all against the NumPy reference in float64. Relative difference =
max |got - ref| / max |ref| over the whole output. With --half, ORT's CPU provider runs the float16
graph by casting weights to float32 (it has no float16 Conv kernels), so only the weight rounding is
seen there; onnx.reference, which computes every node in float16, is the row that checks float16
arithmetic, and ORT on CUDA (a row of its own where a GPU is present) runs real float16 kernels.

--precision fp32 | fp16 | int8 (--half = fp16). Input and output stay float32 in every file, so one caller
(cvtool segment, any ORT user) runs all three alike; the casts are inside the graph. int8 is ONNX Runtime's static
quantization (backends/ort_backend/quantize.py), calibrated on training images (cli/export_precision.py). A
reduced-precision file is judged by its masks against float32's on validation images (the mIoU change included);
fp16 keeps the logits parity as well, which int8, with 256 levels per tensor, cannot meet.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from cvtool.bounds import COUNT
from cvtool.cli.options import within
from cvtool.cli.output import emit_json, err, fmt_float, out, safe, table

if TYPE_CHECKING:
    from cvtool_backends.base import Runner

VERIFY_SHAPES = ((1, 64, 64), (2, 96, 128), (1, 160, 96))  # (N, H, W), each rounded up to the net's multiple
REFERENCE_SHAPES = 1  # onnx.reference is slow: it checks the first shape only


def verify_shapes(multiple: int) -> list[tuple[int, int, int]]:
    """A few batch sizes and non-square sizes, each rounded up to the net's multiple."""
    from cvtool.arithmetic import ceil_div

    return [(n, ceil_div(h, multiple) * multiple, ceil_div(w, multiple) * multiple) for n, h, w in VERIFY_SHAPES]


def _reference_runner(onnx_path: Path):
    """onnx.reference.ReferenceEvaluator on the file: every node in the file's own dtypes (float16 too)."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    from cvtool_backends.onnx_format.export import INPUT, OUTPUT

    ev = ReferenceEvaluator(onnx.load(str(onnx_path)))

    def run(x):
        y = ev.run([OUTPUT], {INPUT: x})
        assert isinstance(y, list)  # the outputs in order (a dict only with intermediate=True)
        return y[0]

    return run


def _runners(model, onnx_path: Path, half: bool) -> list[tuple[str, Runner, str, int]]:
    """(label, runner, tolerance key, how many of the verify shapes) for every way this machine can run the model:
    each available backend on each of its devices, the written file where it runs ONNX files (load_onnx), else the
    checkpoint's weights through its runner."""
    import cvtool_backends as registry
    from cvtool.cli.convcalc.common import backend_status
    from cvtool.cli.models import runner_for
    from cvtool_backends.base import Runs, hook

    fp = "float16" if half else "float32"
    export = replace(model, path=onnx_path, kind="onnx")  # the written file, run as such where a backend can
    rows = []
    for name in registry.names():
        st = backend_status(registry, name)
        for dev in st.devices if st.available else ():
            be = registry.get(name, dev)
            if not (isinstance(be, Runs) or hook(be, "load_onnx")):
                continue
            runs_file = hook(be, "load_onnx") is not None
            label = f"{name} {dev}" if runs_file or dev != "cpu" else name
            rows.append((label, runner_for(be, export), fp if runs_file else "float32", 99))
    if half:
        rows.append(("onnx.ref fp16", _reference_runner(onnx_path), fp, REFERENCE_SHAPES))
    return rows


def parity_report(model, onnx_path: Path, *, half: bool, seed: int = 0) -> list[dict]:
    """The same seeded inputs through the written file (ORT), PyTorch and NumPy, against NumPy float64."""
    import numpy as np

    import cvtool_backends as registry
    from cvtool.compare import TOLERANCE, compare

    spec = model.spec
    rng = np.random.default_rng(seed)
    runners = _runners(model, onnx_path, half)
    ref_runner = registry.reference().runner(spec, model.params, dtype=np.float64)
    rows = []
    for i, (n, h, w) in enumerate(verify_shapes(spec.multiple)):
        x = rng.standard_normal((n, spec.in_channels, h, w)).astype(np.float32)
        ref = ref_runner(x.astype(np.float64))
        for label, run, fp, n_shapes in runners:
            if i >= n_shapes:
                continue
            tol = TOLERANCE[f"{fp} logits"]
            a = compare(run(x), ref, tol, labels=True)
            rows.append({"max_abs": a.max_abs, "max_rel": a.max_rel, "label_agreement": a.labels, "backend": label,
                         "shape": [n, spec.in_channels, h, w], "tol_rel": tol.max_rel, "tol_agreement": tol.labels,
                         "ok": a.ok})
    return rows


def check_meta(model, onnx_path: Path) -> dict:
    """The file's metadata against the checkpoint: a different network is an error, not a parity row."""
    import onnx

    from cvtool.cli.models import file_digest
    from cvtool.errors import CvtoolError, DataError
    from cvtool.model.schema import validate_meta
    from cvtool_backends.onnx_format.export import read_meta

    try:
        meta = read_meta(onnx.load(str(onnx_path), load_external_data=False))
    except FileNotFoundError:
        raise DataError(f"{onnx_path} does not exist", hint="export it first, without --verify-only") from None
    except Exception as e:  # corrupt protobuf, or no cvtool metadata
        why = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise DataError(f"{onnx_path} is not a cvtool ONNX export ({why})") from None
    validate_meta(meta, str(onnx_path))
    if meta.get("spec") != model.spec.to_dict():
        raise CvtoolError(f"{onnx_path} holds another network than {model.path} (spec {meta.get('spec')})", exit_code=1)
    same = {k: meta.get(k) == v for k, v in model.meta.to_dict().items()}
    if not all(same.values()):
        raise CvtoolError(f"{onnx_path}: metadata differs from {model.path} in " +
                          ", ".join(k for k, ok in same.items() if not ok), exit_code=1)
    from cvtool_backends.onnx_format.export import precision

    return {"precision": precision(meta), "half": precision(meta) == "fp16",
            "same_source": meta.get("source_sha256") == file_digest(model.path), "cvtool_version": meta.get("cvtool_version")}


def is_onnx_file(path: Path) -> bool:
    """Whether an existing file parses as an ONNX model (its graph, not external data): only such a file is
    replaced by an export."""
    import onnx

    try:
        return path.is_file() and len(onnx.load(str(path), load_external_data=False).graph.node) > 0
    except Exception:  # noqa: BLE001 - protobuf's errors for a file that is something else
        return False


def _print_report(rows: list[dict]) -> None:
    t = table("Parity against the NumPy reference in float64 (same seeded inputs)",
              ["run", "input", "max abs", "max rel", "labels agree", "tolerance", "ok"],
              [[r["backend"], "x".join(map(str, r["shape"])), fmt_float(r["max_abs"]), fmt_float(r["max_rel"]),
                f"{r['label_agreement']:.3%}", f"{r['tol_rel']:g} / {r['tol_agreement']:.1%}",
                "yes" if r["ok"] else "[red]NO[/]"] for r in rows])
    t.caption = "numpy/torch: the checkpoint's weights; ort and onnx.reference: the ONNX file"
    out().print(t)


def export(
    checkpoint: Path = typer.Argument(..., help="A cvtool checkpoint (.safetensors)."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the .onnx file."),
    opset: Optional[int] = typer.Option(None, callback=within(COUNT), help="ONNX opset (default: the newest that the installed "
                                        "ONNX Runtime runs)."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | fp16 (float16 weights and compute) | int8 "
                                  "(ONNX Runtime's static quantization, QDQ); input and output stay float32."),
    half: bool = typer.Option(False, "--half", help="The same as --precision fp16."),
    calibrate: Optional[Path] = typer.Option(None, "--calibrate", help="int8: calibrate on this folder's images "
                                             "(a dataset's training split, or every image in it). Default: the "
                                             "training images the checkpoint remembers."),
    calibration_images: int = typer.Option(32, "--calibration-images", help="int8: how many images calibrate "
                                           "(spread evenly over the split)."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check the file against PyTorch and the NumPy "
                                "reference before it is written; beyond tolerance: nothing written, exit 1."),
    verify_only: bool = typer.Option(False, "--verify-only", help="Write nothing: check the existing -o file "
                                     "against the checkpoint (metadata and parity); exit 1 when it does not match."),
    json_: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Export to one self-contained ONNX file (dynamic batch/height/width) and prove it matches.

    Input "image" float32 (N, C, H, W), normalised, H and W divisible by 2**depth; output "logits"
    float32 (N, K, H, W); metadata_props "cvtool" (JSON): spec, classes, colors, normalization, cvtool_version.
    """
    import onnx

    from cvtool.cli.models import build_onnx, open_model
    from cvtool.errors import CvtoolError, UsageError
    from cvtool.fsutil import atomic_path
    from cvtool.model.precision import EXPORTS, parse_precision
    from cvtool_backends.onnx_format.export import INPUT, OUTPUT
    from cvtool_backends.onnx_format.opset import OLDEST, newest_opset

    precision = parse_precision(precision, EXPORTS)
    if half and precision not in ("fp32", "fp16"):
        raise UsageError(f"--half means --precision fp16, not {precision}")
    precision = "fp16" if half else precision
    half = precision == "fp16"
    if calibrate is not None and precision != "int8":
        raise UsageError("--calibrate is for --precision int8")
    if calibration_images < 1:
        raise UsageError("--calibration-images must be at least 1")
    if checkpoint.suffix == ".onnx":
        raise UsageError(f"{checkpoint} is already an ONNX file", hint="export takes a .safetensors checkpoint")
    if output.is_dir():
        raise UsageError(f"{output} is a folder", hint="give a file name such as model.onnx")
    if output.exists() and checkpoint.exists() and output.resolve() == checkpoint.resolve():
        raise UsageError(f"-o {output} would overwrite the checkpoint itself")
    if output.suffix.lower() != ".onnx":
        raise UsageError(f"-o {output}: an export is written to a .onnx file",
                         hint=f"for example -o {output.with_suffix('.onnx').name}")
    if not verify_only and (output.exists() or output.is_symlink()) and not is_onnx_file(output):
        raise UsageError(f"-o {output} exists and is not an ONNX model: not overwritten",
                         hint="move it, or choose another -o")
    model = open_model(checkpoint)

    def report(doc: dict, path: Path, calibration=None) -> None:
        """Logits parity (fp32, fp16) and masks on validation images (fp16, int8): doc["passed"] when all hold."""
        from cvtool.cli.export_precision import judging_images, mask_report, print_mask_report

        p = doc["precision"]
        rows = parity_report(model, path, half=p == "fp16") if p != "int8" else []
        doc["verify"] = rows
        if not json_ and rows:
            _print_report(rows)
        judge = judging_images(model, calibrate, calibration) if p != "fp32" else None
        doc["masks"] = mask_report(model, path, p, judge, quiet=json_) if judge is not None else None
        if doc["masks"] is not None and not json_:
            print_mask_report(doc["masks"])
        if p == "int8" and doc["masks"] is None:
            raise UsageError("an int8 export is judged on images, and there are none",
                             hint="give --calibrate DIR, or --no-verify to write it unchecked")
        doc["passed"] = all(r["ok"] for r in rows) and (doc["masks"] is None or doc["masks"]["ok"])

    if verify_only:
        info = check_meta(model, output)
        doc = {"output": str(output), "verify_only": True, **info}
        report(doc, output)
        if json_:
            emit_json(doc)
        if not doc["passed"]:
            raise CvtoolError(f"{output} does not match {checkpoint} within tolerance", exit_code=1)
        return

    top = newest_opset()
    opset = opset or top
    if not OLDEST <= opset <= top:
        raise UsageError(f"opset {opset} is outside what this ONNX Runtime runs ({OLDEST}..{top})")
    calibration = None
    if precision == "int8":  # the images first: no data is one line before any work
        from cvtool.cli.export_precision import calibration_images as sample

        calibration = sample(model, calibrate, calibration_images)
    with atomic_path(output) as tmp:  # an unwritable place fails here, before any work; no partial file ever
        m = build_onnx(model, opset, half)
        if calibration is not None:
            from cvtool.model.calibrate import net_inputs
            from cvtool_backends.ort_backend.quantize import quantize_int8

            err().print(f"int8: calibrating on {calibration.what} ...", soft_wrap=True, markup=False)
            m = quantize_int8(m, net_inputs(calibration, model.spec, model.meta))
        onnx.checker.check_model(m, full_check=True)
        tmp.write_bytes(m.SerializeToString())
        doc = {"output": str(output), "opset": opset, "precision": precision, "half": half,
               "bytes": tmp.stat().st_size, "input": INPUT, "output_name": OUTPUT, "checker": "passed",
               "calibration": None if calibration is None else {"images": len(calibration.images),
                                                                "what": calibration.what}}
        if verify:
            report(doc, tmp, calibration)
            if not doc["passed"]:
                if json_:
                    emit_json(doc)
                raise CvtoolError(f"the export does not match {checkpoint} within tolerance; {output} not written",
                                  hint="--no-verify writes it unchecked")
    if json_:
        emit_json(doc)
    else:
        what = {"fp32": "", "fp16": ", float16", "int8": ", int8"}[precision]
        checks = ("; parity passed" if doc.get("verify") else "") + ("; masks passed" if doc.get("masks") else "")
        err().print(f"wrote {safe(output, markup=False)} ({doc['bytes'] / 1e6:.2f} MB, opset {opset}{what}); "
                    f"onnx.checker passed{checks if verify else ''}", soft_wrap=True, markup=False)
