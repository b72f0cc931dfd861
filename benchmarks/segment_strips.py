"""Peak memory of `cvtool segment` on one large image: the same pixels as a PNG (decoded whole) and as an
uncompressed TIFF in strips (read a band of rows at a time, cvtool/data/strips.py), side by side in one run.

    python benchmarks/segment_strips.py [--size 8000] [--tile 1024] [--markdown FILE]

The model is a default-width U-Net (16 channels, depth 3, 3 -> 4 classes, random weights, scale 1): its tiles make
the banded path run. Peak memory is each segment process's own maximum resident set (wait4's ru_maxrss); the masks
of the two files must be identical.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import markdown_line  # noqa: E402
from cvtool.model import checkpoint as ckpt_io  # noqa: E402
from cvtool.model.meta import ModelMeta  # noqa: E402
from cvtool.model.spec import ModelSpec, init_params  # noqa: E402


def run(cmd: list[str], log: Path) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of one process: its own maximum resident set, from wait4."""
    t = time.perf_counter()
    with open(log, "wb") as out, open(log.with_suffix(".err"), "wb") as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT)
        _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    if status:
        raise SystemExit(f"{' '.join(cmd)} failed: {log.with_suffix('.err').read_text()[-400:]}")
    return wall, usage.ru_maxrss / 1024, log.read_text()  # KiB -> MiB


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=8000)
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--markdown", metavar="FILE")
    a = ap.parse_args()
    from PIL import Image

    machine = markdown_line()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        spec = ModelSpec(in_channels=3, num_classes=4)
        meta = ModelMeta([f"c{i}" for i in range(4)], [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]],
                         [0.5] * 3, [0.25] * 3)
        model = ckpt_io.save(ckpt_io.Checkpoint(spec, init_params(spec, 0), meta), d / "m.safetensors")
        rng = np.random.default_rng(0)
        small = rng.integers(0, 256, (a.size // 16, a.size // 16, 3), dtype=np.uint8)
        img = Image.fromarray(np.kron(small, np.ones((16, 16, 1), np.uint8)))  # smooth blocks: a plausible picture
        img.save(d / "big.png", compress_level=1)
        img.save(d / "big.tif", tiffinfo={278: 64})  # uncompressed, 64 rows a strip
        del img
        rows, masks = [], {}
        for name in ("big.tif", "big.png"):
            cmd = [sys.executable, "-m", "cvtool", "segment", str(d / name), "-m", str(model), "--backend", "torch",
                   "--tile", str(a.tile), "--out", str(d / name.replace(".", "_")), "--json"]
            wall, rss, out = run(cmd, d / f"{name}.log")
            doc = json.loads(out)["images"][0]
            with Image.open(doc["mask"]) as m:
                masks[name] = np.asarray(m)
            rows.append((name, wall, rss, doc["tiling"]["mode"], doc["tiling"]["tiles"]))
            print(f"{name}: {wall:.1f} s, peak RSS {rss:.0f} MiB, {doc['tiling']['mode']} x{doc['tiling']['tiles']}")
        same = bool(np.array_equal(masks["big.tif"], masks["big.png"]))
        print("masks identical:", same)
    if a.markdown:
        mp = a.size * a.size / 1e6
        lines = [f"## segment of one {a.size} x {a.size} RGB image ({mp:.0f} MP): strips against a whole decode", "",
                 f"`python benchmarks/segment_strips.py --size {a.size} --tile {a.tile}`: a default-width U-Net (random "
                 "weights, scale 1), torch, the same pixels as a PNG and as an uncompressed TIFF in 64-row strips. "
                 "Peak memory is each process's own maximum resident set (wait4).", "",
                 "| file | wall s | peak RSS MiB | tiling | image bytes (RGB) MiB |", "|---|---:|---:|---|---:|"]
        lines += [f"| {n} | {w:.1f} | {r:.0f} | {m} x{t} | {a.size * a.size * 3 / 2**20:.0f} |" for n, w, r, m, t in rows]
        lines += ["", f"Masks identical: {same}.", "", machine, ""]
        Path(a.markdown).write_text("\n".join(lines))
    if os.environ.get("CVTOOL_STRIPS_STRICT") and not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
