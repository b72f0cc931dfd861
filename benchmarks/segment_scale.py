"""`cvtool segment`'s inference on large images and on a long folder of mixed sizes: time and memory, torch
against ONNX Runtime (and NumPy on the large images when asked), each backend in a process of its own.

    python benchmarks/segment_scale.py [--folder 300] [--rounds 2] [--markdown FILE] [--json FILE] [--backends torch,ort]

What runs is `cvtool.model.inference.segment_logits` (whole while a pass fits half the free memory, else tiles of
cvtool.model.tiling, batch 4: what `segment` does per image; results before 2026-12-03 used fixed 512-px tiles)
on the default net (U-Net width 16, depth 3, RGB, 4 classes; random weights: speed and memory do not depend on
them). Images are made in memory from a seed, so both backends see the same pixels:
- large: a 1024 x 1024 and a 4000 x 3000 image, 3 rounds, the best;
- folder: N images of random sizes, 100-700 px a side; time per image, and the resident memory (VmRSS)
  after each quarter of the folder: flat memory means no cache grows with the number of shapes seen.
Peak memory is the process's VmHWM, the interpreter and the framework included (their import alone is shown).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import markdown_line  # noqa: E402

LARGE = ((1024, 1024), (3000, 4000))


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(backend: str, folder: int, seed: int, large: bool = True) -> dict:
    """Runs in the child process: one backend, every measurement."""
    import numpy as np

    import cvtool_backends as registry
    from cvtool.model.inference import segment_logits
    from cvtool.model.spec import ModelSpec, init_params

    spec = ModelSpec()
    params = init_params(spec, 0)
    be = registry.get(backend, "cpu")
    run = be.runner(spec, params)
    out = {"backend": backend, "import_mb": round(_status_mb("VmRSS"))}
    mean, std = [0.5] * 3, [0.25] * 3
    rng = np.random.default_rng(seed)
    segment_logits(run, rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), spec, mean, std)  # warm-up
    out["large"] = {}
    for H, W in LARGE if large else ():
        img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            lg = segment_logits(run, img, spec, mean, std)
            best = min(best, time.perf_counter() - t)
        assert lg.shape == (spec.num_classes, H, W)
        out["large"][f"{W}x{H}"] = {"s": round(best, 3), "peak_mb": round(_status_mb("VmHWM"))}
    sizes = rng.integers(100, 701, (folder, 2))
    rss, t0 = [], time.perf_counter()
    for i, (h, w) in enumerate(sizes, 1):
        segment_logits(run, rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8), spec, mean, std)
        if i % max(folder // 4, 1) == 0 or i == folder:
            rss.append((i, round(_status_mb("VmRSS"))))
    out["folder"] = {"images": folder, "ms_per_image": round(1000 * (time.perf_counter() - t0) / max(folder, 1), 1),
                     "rss_mb": rss, "shapes": len({(int(h), int(w)) for h, w in sizes})}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backends", default="torch,ort")
    ap.add_argument("--folder", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--markdown", type=Path)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--no-large", action="store_true", help="the folder only")
    ap.add_argument("--rounds", type=int, default=1, help="run every backend this many times, taking turns; best times")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.folder, a.seed, not a.no_large)))
        return
    res: dict[str, dict] = {}
    for rnd in range(a.rounds):  # the backends take turns: a slow spell of the host falls on both
        for name in a.backends.split(","):
            p = subprocess.run([sys.executable, __file__, "--worker", name, "--folder", str(a.folder),
                                "--seed", str(a.seed)] + (["--no-large"] if a.no_large else []),
                               capture_output=True, text=True)
            if p.returncode:
                sys.exit(f"{name}: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}")
            r = json.loads(p.stdout.strip().splitlines()[-1])
            print(json.dumps(r), file=sys.stderr)
            if name in res:  # the best time of the rounds; memory as the last round saw it
                for k, v in r["large"].items():
                    v["s"] = min(v["s"], res[name]["large"][k]["s"])
                r["folder"]["ms_per_image"] = min(r["folder"]["ms_per_image"], res[name]["folder"]["ms_per_image"])
            res[name] = r
    names = list(res)
    ref = "ort" if "ort" in res else names[-1]
    lines = [markdown_line(), "",
             "| backend | " + " | ".join(f"{k} s (x {ref})" for k in res[ref]["large"]) + " | peak MB | "
             f"folder ms/image (x {ref}) | RSS MB after " + ", ".join(str(i) for i, _ in res[ref]["folder"]["rss_mb"])
             + " images | after import |",
             "|---|" + "---|" * (len(res[ref]["large"]) + 4)]
    for n in names:
        r = res[n]
        cells = [f"{v['s']:.2f} ({v['s'] / res[ref]['large'][k]['s']:.2f})" for k, v in r["large"].items()]
        peak = max(v["peak_mb"] for v in r["large"].values())
        f = r["folder"]
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {peak} | {f['ms_per_image']:.0f} "
                     f"({f['ms_per_image'] / res[ref]['folder']['ms_per_image']:.2f}) | "
                     + ", ".join(str(m) for _, m in f["rss_mb"]) + f" | {r['import_mb']} |")
    text = "\n".join(lines)
    print(text)
    if a.markdown:
        a.markdown.write_text(text + "\n")
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
