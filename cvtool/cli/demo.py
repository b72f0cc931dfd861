"""`cvtool demo`: the main job on built-in data, step by step, each step a real cvtool command."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from cvtool.cli.output import out, safe


def _run(args: str) -> int:
    """Run one cvtool command in this process, printed first as a person would type it."""
    from cvtool.cli import app

    out().rule(f"$ cvtool {args}", align="left", style="bold magenta")
    cmd = typer.main.get_command(app)
    rc = cmd.main(shlex.split(args), prog_name="cvtool", standalone_mode=False)
    return int(rc or 0)


def demo(
    quick: bool = typer.Option(False, help="A much shorter run (tiny network, seconds; used by the tests)."),
    out_dir: Path = typer.Option(None, "--out", help="Folder for everything the demo writes (default runs/demo/expN)."),
) -> None:
    """The tour on built-in data: convcalc and a cross-backend check, then train, segment, export, segment with ORT, bench;
    then the layers of the ImageNet-pretrained lite0 encoder (train --data picks it on photos)."""
    from cvtool.cli.convcalc.command import convcalc_tour
    from cvtool.errors import CvtoolError
    from cvtool.fsutil import next_run_dir

    root = out_dir or next_run_dir(Path("runs") / "demo")
    q = shlex.quote
    train_opts = "--epochs 1 --width 4 --depth 2 --img-size 32 --batch-size 4 --synth-images 64" if quick else ""
    bench_opts = "--sizes 64 --min-time 0.05" if quick else "--sizes 128 --batch-sizes 1"
    n_images = 3 if quick else 6
    convcalc_tour(quick=quick)
    steps = [
        f"train {train_opts} --out {q(str(root / 'train'))}",
        f"data synth --out {q(str(root / 'images'))} -n {n_images} --size 160 --seed 7",
        f"segment {q(str(root / 'images' / 'images'))} --model {q(str(root / 'train' / 'best.safetensors'))} "
        f"--backend torch --out {q(str(root / 'segment-torch'))}",
        f"export {q(str(root / 'train' / 'best.safetensors'))} -o {q(str(root / 'model.onnx'))}",
        f"segment {q(str(root / 'images' / 'images'))} --model {q(str(root / 'model.onnx'))} --backend ort "
        f"--out {q(str(root / 'segment-ort'))}",
        f"bench --model {q(str(root / 'train' / 'best.safetensors'))} {bench_opts}",
    ]
    if not quick:  # the ImageNet-pretrained encoder in cvtool's own layers: its strides and receptive field
        steps.append("convcalc --model lite0 --input 224")
    for args in steps:
        rc = _run(" ".join(args.split()))
        if rc != 0:
            raise CvtoolError(f"demo step failed (exit {rc}): cvtool {args}")
    out().rule("done", align="left", style="bold green")
    out().print(f"everything the demo wrote is under {safe(root)}/")
