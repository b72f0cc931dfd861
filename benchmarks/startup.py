"""Start-up time of `cvtool convcalc -i 32 -k 3` next to a minimal Typer hello-world app.

Both run N times as fresh subprocesses, alternately (so that a busy moment hurts both alike),
with the same interpreter. Reports the medians and their ratio (the product target: <= 1.5).

Bytecode caching is on, as on a user's machine, even where PYTHONDONTWRITEBYTECODE is set:
the caches go to a temporary PYTHONPYCACHEPREFIX (nothing is written into the repository).
--as-is keeps the environment as it is (then cvtool's own modules are compiled on every run).

    python benchmarks/startup.py [-n 30] [--as-is] [--markdown FILE] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HELLO = '''import typer

app = typer.Typer()


@app.command()
def hello(name: str = "world") -> None:
    typer.echo(f"hello {name}")


if __name__ == "__main__":
    app()
'''
TARGET = 1.5


def cvtool_cmd(args: list[str]) -> list[str]:
    """The installed `cvtool` script next to this interpreter (what a user runs), else `python -m cvtool`."""
    script = Path(sys.executable).with_name("cvtool")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "cvtool", *args]


def time_once(cmd: list[str], env: dict | None = None) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.decode()[-500:]}")
    return dt


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import typer

    return {"python": platform.python_version(), "platform": platform.platform(), "cpu": cpu,
            "cores": os.cpu_count(), "typer": getattr(typer, "__version__", "?")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=30, help="runs of each (default 30)")
    ap.add_argument("--markdown", metavar="FILE", help="write a markdown section with the results")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--as-is", action="store_true", help="keep the environment's bytecode settings")
    a = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="cvtool-startup-"))
    env = None
    if not a.as_is:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    try:
        hello = tmp / "hello.py"
        hello.write_text(HELLO)
        commands = {"typer hello": [sys.executable, str(hello)],
                    "cvtool convcalc -i 32 -k 3": cvtool_cmd(["convcalc", "-i", "32", "-k", "3"])}
        for cmd in commands.values():  # warm the file and bytecode caches, check both run
            time_once(cmd, env)
        times: dict[str, list[float]] = {k: [] for k in commands}
        for _ in range(a.n):
            for name, cmd in commands.items():
                times[name].append(time_once(cmd, env))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    base, ours = med["typer hello"], med["cvtool convcalc -i 32 -k 3"]
    ratio = ours / base
    res = {"runs": a.n, "median_s": med, "min_s": {k: min(v) for k, v in times.items()}, "ratio": ratio,
           "target": TARGET, "ok": ratio <= TARGET, "bytecode_cache": not a.as_is, "machine": machine()}
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        for k in commands:
            print(f"{k:32s} median {med[k] * 1000:7.1f} ms   min {res['min_s'][k] * 1000:7.1f} ms")
        print(f"ratio {ratio:.2f} (target <= {TARGET}): {'ok' if res['ok'] else 'TOO SLOW'}")
    if a.markdown:
        m = res["machine"]
        lines = ["## Start-up time", "",
                 f"`cvtool convcalc -i 32 -k 3` against a minimal Typer hello-world app, {a.n} runs each, "
                 "alternating, fresh subprocesses, same interpreter, bytecode cache "
                 f"{'on' if res['bytecode_cache'] else 'as the environment has it'}.", "",
                 "| command | median (ms) | min (ms) |", "|---|---:|---:|"]
        lines += [f"| `{k}` | {med[k] * 1000:.1f} | {res['min_s'][k] * 1000:.1f} |" for k in commands]
        lines += ["", f"Ratio of the medians: **{ratio:.2f}** (target <= {TARGET}: {'met' if res['ok'] else 'NOT met'}).",
                  "", f"Machine: {m['cpu']}, {m['cores']} cores; {m['platform']}; Python {m['python']}; "
                  f"Typer {m['typer']}.", ""]
        Path(a.markdown).write_text("\n".join(lines))


if __name__ == "__main__":
    main()
