"""Run every benchmark side by side and write the results as Markdown (each section names its machine).

    python benchmarks/run_all.py [--only startup,conv,bench,numpy,step,train,labels] [--out docs/benchmarks-latest.md]

docs/benchmarks.md is the curated record: these sections, with the analysis written around them by hand.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

SECTIONS = {
    "startup": [PY, "benchmarks/startup.py"],
    "conv": [PY, "benchmarks/conv_numpy_vs_torch.py"],
    "bench": [PY, "-m", "cvtool", "bench", "--sizes", "256", "--batch-sizes", "1", "--rounds", "3"],
    "numpy": [PY, "benchmarks/numpy_profile.py"],
    "step": [PY, "benchmarks/train_step.py"],
    "train": [PY, "benchmarks/train_targets.py"],
    "labels": [PY, "benchmarks/label_formats.py"],
}

HEADER = """# Benchmarks

Every number here was measured by `python benchmarks/run_all.py` (or the script named in its section), with the
implementations compared side by side in one run, and is reported as a ratio. Each section names the machine it ran on.
No test asserts a time.

"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=",".join(SECTIONS))
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks-latest.md"))
    a = ap.parse_args()
    parts = [HEADER]
    for name in a.only.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            md = Path(tmp) / f"{name}.md"
            cmd = SECTIONS[name] + ["--markdown", str(md)]
            print("$", " ".join(cmd), file=sys.stderr, flush=True)
            rc = subprocess.run(cmd, cwd=ROOT).returncode
            if rc != 0 or not md.exists():
                print(f"benchmark {name} failed (exit {rc})", file=sys.stderr)
                parts.append(f"## {name}\n\nFailed (exit {rc}) in the last run.\n\n")
                continue
            parts.append(md.read_text().rstrip() + "\n\n")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("".join(parts))
    print(f"wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
