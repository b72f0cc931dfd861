"""`cvtool export CHECKPOINT -o model.onnx`: an ONNX export that proves it computes what was trained."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cvtool.cli.output import emit_json, err, fmt_float, out, table

# (max relative difference of logits, min label agreement) against the NumPy reference
TOLERANCE = {"float32": (1e-4, 0.999), "float16": (2e-2, 0.98)}
VERIFY_SHAPES = ((1, 64, 64), (2, 96, 128), (1, 160, 96))  # (N, H/multiple*..., W...) scaled below


def verify_shapes(multiple: int) -> list[tuple[int, int, int]]:
    """A few batch sizes and non-square sizes, each rounded up to the net's multiple."""
    up = lambda v: -(-v // multiple) * multiple  # noqa: E731
    return [(n, up(h), up(w)) for n, h, w in VERIFY_SHAPES]


def compare(ref, got) -> dict:
    import numpy as np

    diff = np.abs(got.astype(np.float64) - ref)
    scale = np.abs(ref).max() or 1.0
    return {"max_abs": float(diff.max()), "max_rel": float(diff.max() / scale),
            "label_agreement": float((got.argmax(1) == ref.argmax(1)).mean())}


def parity_report(model, onnx_path: Path, *, half: bool, seed: int = 0) -> list[dict]:
    """The same seeded inputs through ORT (the written file), PyTorch and the NumPy reference."""
    import numpy as np

    import backends as registry

    spec = model.spec
    rng = np.random.default_rng(seed)
    runners = {}
    for name in ("numpy", "torch", "ort"):
        st = registry.status(name)
        if not st.available:
            continue
        be = registry.get(name, "cpu")
        runners[name] = be.load_onnx(onnx_path) if name == "ort" else be.runner(spec, model.params)
    ref_runner = registry.get("numpy", "cpu").runner(spec, model.params, dtype=np.float64)
    tol_rel, tol_agree = TOLERANCE["float16" if half else "float32"]
    rows = []
    for n, h, w in verify_shapes(spec.multiple):
        x = rng.standard_normal((n, spec.in_channels, h, w)).astype(np.float32)
        ref = ref_runner(x.astype(np.float64))
        for name, run in runners.items():
            c = compare(ref, run(x))
            tol = (tol_rel, tol_agree) if name == "ort" else TOLERANCE["float32"]
            c.update(backend=name + (" (onnx fp16)" if half and name == "ort" else " (onnx)" if name == "ort" else ""),
                     shape=[n, spec.in_channels, h, w], ok=c["max_rel"] <= tol[0] and c["label_agreement"] >= tol[1],
                     tol_rel=tol[0])
            rows.append(c)
    return rows


def export(
    checkpoint: Path = typer.Argument(..., help="A cvtool checkpoint (.safetensors)."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the .onnx file."),
    opset: Optional[int] = typer.Option(None, help="ONNX opset [default: the newest the installed ONNX Runtime runs]."),
    half: bool = typer.Option(False, "--half", help="float16 weights and compute (for GPUs), float32 input/output."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check the file against PyTorch and the NumPy reference."),
    json_: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Export to one self-contained ONNX file (dynamic batch/height/width) and prove it matches."""
    import json

    import onnx

    from backends.ort_backend.export import INPUT, OUTPUT, build_model
    from backends.ort_backend.opset import newest_opset
    from cvtool import __version__
    from cvtool.cli.models import file_digest, open_model
    from cvtool.errors import CvtoolError, UsageError
    from cvtool.fsutil import atomic_write_bytes

    if checkpoint.suffix == ".onnx":
        raise UsageError(f"{checkpoint} is already an ONNX file", hint="export takes a .safetensors checkpoint")
    model = open_model(checkpoint)
    if output.exists() and output.is_dir():
        raise UsageError(f"{output} is a folder", hint="give a file name such as model.onnx")
    top = newest_opset()
    opset = opset or top
    if not 13 <= opset <= top:
        raise UsageError(f"opset {opset} is outside what this ONNX Runtime runs (13..{top})")
    meta = {**model.meta(), "cvtool_version": __version__, "source_sha256": file_digest(model.path),
            "input": INPUT, "output": OUTPUT}
    m = build_model(model.spec, model.params, json.loads(json.dumps(meta)), opset=opset, half=half)
    onnx.checker.check_model(m, full_check=True)
    atomic_write_bytes(output, m.SerializeToString())
    doc = {"output": str(output), "opset": opset, "half": half, "bytes": output.stat().st_size,
           "input": INPUT, "output_name": OUTPUT, "checker": "passed"}
    if verify:
        rows = parity_report(model, output, half=half)
        doc["verify"] = rows
        doc["passed"] = all(r["ok"] for r in rows)
    if json_:
        emit_json(doc)
    else:
        err().print(f"wrote {output} ({doc['bytes'] / 1e6:.2f} MB, opset {opset}{', float16' if half else ''}); onnx.checker passed")
        if verify:
            out().print(table("Parity against the NumPy reference (float64), same seeded inputs",
                              ["backend", "input shape", "max abs", "max rel", "labels agree", "tolerance", "ok"],
                              [[r["backend"], "x".join(map(str, r["shape"])), fmt_float(r["max_abs"]), fmt_float(r["max_rel"]),
                                f"{r['label_agreement']:.4%}", f"rel {r['tol_rel']:g}", "yes" if r["ok"] else "[red]NO[/]"]
                               for r in doc["verify"]]))
    if verify and not doc["passed"]:
        raise CvtoolError("the exported model does not match the checkpoint within tolerance", exit_code=1)
