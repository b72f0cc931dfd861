"""`cvtool bench --precision fp32,fp16,int8,bf16`: reduced-precision rows, timed in the same run as the float32 ones.

Each (backend, device) gets a row per precision it can run (its `precision_runner` hook); one it cannot is a row
`unavailable` with the backend's reason. A row is checked against the same float64 NumPy reference as the float32
rows, under its precision's tolerance (cvtool.compare.TOLERANCE: "float16 logits", "bfloat16 logits", "int8 logits";
the int8 bound is a sanity check, int8 is judged by its masks: export's verification, benchmarks/precision.py), and
`x fp32` is its speed over the float32 row of the same backend, device and input, measured in the same run.

int8 is calibrated on the training images of --data, else on those the checkpoint remembers, else (random weights)
on seeded inputs drawn like the benched ones.
"""

from __future__ import annotations

from typing import Callable

TOLERANCE_KEY = {"fp16": "float16 logits", "bf16": "bfloat16 logits", "int8": "int8 logits"}
CALIBRATION_IMAGES = 16  # bench measures speed: a small sample is enough


def tolerance(precision: str, fp32_rtol: float):
    """The cvtool.compare.Tolerance a row of this precision is held to."""
    from cvtool.compare import TOLERANCE, Tolerance

    return Tolerance(max_rel=fp32_rtol) if precision == "fp32" else TOLERANCE[TOLERANCE_KEY[precision]]


def calibration(net: dict, data: str | None, sizes: list[int], seed: int) -> Callable[[], list]:
    """A callable giving the int8 calibration inputs (made once, on first use: only an int8 row needs them)."""
    import numpy as np

    from cvtool.model import calibrate as cal

    made: list = []

    def get() -> list:
        if made:
            return made[0]
        spec, meta = net["spec"], net.get("meta")
        if meta is not None and (data is not None or net.get("data") is not None):
            if data is not None:
                from cvtool.data import open_datasets

                train = open_datasets(data)[0]
                images = cal.from_dataset(train, CALIBRATION_IMAGES, f"training images of {data}")
            else:
                images = cal.remembered(net["data"], "train", CALIBRATION_IMAGES)
            xs = cal.net_inputs(images, spec, meta)
        else:  # random weights: inputs drawn as the benched ones are
            rng = np.random.default_rng(seed + 7)
            xs = [rng.standard_normal((1, spec.in_channels, S, S), dtype=np.float32)
                  for S in sizes for _ in range(max(1, CALIBRATION_IMAGES // len(sizes)))]
        made.append(xs)
        return xs

    return get


def maker(precision: str, make_fp32: Callable, net: dict, calib: Callable[[], list]) -> Callable:
    """make(be) -> run(x) for one precision: the float32 maker itself, else the backend's precision_runner hook."""
    from cvtool_backends.base import hook

    if precision == "fp32":
        return make_fp32

    def make(be):
        from cvtool.cli.bench_rows import NotSupported

        build = hook(be, "precision_runner")
        if build is None:
            raise NotSupported(f"{be.name} runs float32 only")
        if net.get("onnx") is not None:
            raise NotSupported(f"{precision} is built from a checkpoint; --model is an ONNX file")
        return build(net["spec"], net["params"], precision, calib() if precision == "int8" else None)

    return make


def notes(precisions: list[str], fp32_rtol: float) -> list[str]:
    """The footer lines that say how reduced-precision rows are judged and compared."""
    if precisions == ["fp32"]:
        return []
    bounds = "; ".join(f"{p}: max rel <= {tolerance(p, fp32_rtol).max_rel:g} and labels >= {tolerance(p, fp32_rtol).labels:.0%}"
                       for p in precisions if p != "fp32")
    return [f"reduced precision, against the same float64 reference: {bounds} (int8: a sanity bound; its masks are "
            "judged on real images by cvtool export --precision int8)",
            "x fp32: the float32 row's p50 over this row's, same backend, device and input, measured in this run"]


def add_ratios(rows: list[dict]) -> None:
    """Each reduced-precision row's speed over the float32 row of its backend, device and input (x fp32)."""
    fp32 = {(r["backend"], r["device"], tuple(r["input"] or ())): r for r in rows if r.get("precision") == "fp32"}
    for r in rows:
        base = fp32.get((r["backend"], r["device"], tuple(r["input"] or ())))
        ok = r.get("precision") != "fp32" and base is not None and base.get("p50_ms") and r.get("p50_ms")
        r["vs_fp32"] = base["p50_ms"] / r["p50_ms"] if ok and base is not None else None
