"""`cvtool convcalc`: convolution arithmetic explained with the numbers substituted.

Modes (picked by the options given):
    -k 2 -s 2                      o as a function of i, conv and transposed conv, over common sizes
    -i 32 -k 3 -p 1                the output size, formula with the numbers in (--transposed, --pool)
    -i 32 -k 4 --same              the padding that keeps the size (and what 'same' means for s > 1)
    -i 32 -o 16 -k 3 [--solve]     paddings (and kernel/stride choices) that give the output
    -i 64 --chain "conv k3 p1 c16; pool k2 s2"   shapes and receptive fields through a stack
    --matrix --x ... --w ...       the convolution as its matrix C (and C^T for --transposed)
    --steps --x ... --w ...        every output written as its sum with the numbers (pooling: the winner)
    -i 32 -k 3 --verify            run it on every backend, compare with the NumPy reference
What a mode computes is in cvtool/convcalc/ (plain data: the --json document); how it is printed, in
cvtool/cli/convcalc_*.py; what those share, in convcalc_common.py. This module parses the options, picks
the mode and hands its document to the renderer. Only --matrix, --steps, --backward and --verify import numpy; only --verify and --backward
import a backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import typer

from cvtool.bounds import COUNT, POSITIVE, SEED
from cvtool.cli.convcalc.chain import render_chain, render_model
from cvtool.cli.convcalc.common import finish, layer_spec, refuse_with, say, size
from cvtool.cli.convcalc.sizes import render_formula, render_output, render_same, render_solve
from cvtool.cli.options import within
from cvtool.cli.output import out
from cvtool.convcalc.chain import LayerSpec
from cvtool.convcalc.sizes import formula_doc, output_doc, same_doc
from cvtool.convcalc.solve import solve_doc
from cvtool.convcalc.trace import chain_doc, model_doc
from cvtool.errors import CvtoolError, UsageError

if TYPE_CHECKING:
    from cvtool.model.spec import ModelSpec


def convcalc(
    input: Optional[str] = typer.Option(None, "--input", "-i", help="Input size: 32 or HxW (224x160)."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Wanted output size: solve for the padding."),
    kernel: Optional[str] = typer.Option(None, "--kernel", "-k", help="Kernel size: 3 or KHxKW."),
    stride: Optional[str] = typer.Option(None, "--stride", "-s", help="Stride (default 1; pools: the kernel)."),
    padding: str = typer.Option("0", "--padding", "-p", help="p, PHxPW, top,bottom,left,right, same or valid."),
    dilation: str = typer.Option("1", "--dilation", "-d", help="Dilation: 2 or DHxDW."),
    transposed: bool = typer.Option(False, "--transposed", "-t", help="Transposed convolution."),
    output_padding: str = typer.Option("0", "--output-padding", help="Transposed convolution: output_padding."),
    pool: Optional[str] = typer.Option(None, "--pool", help="Pooling instead: max or avg."),
    ceil_mode: bool = typer.Option(False, "--ceil-mode", help="Pooling: round up (PyTorch ceil_mode)."),
    same: bool = typer.Option(False, "--same", help="The padding that keeps the size, explained."),
    solve: bool = typer.Option(False, "--solve", help="With -i and -o: also search kernel 1..11, stride 1..4."),
    chain: Optional[str] = typer.Option(None, "--chain", help='Layers: "conv k3 p1 c16; pool k2 s2; tconv k2 s2 c8".'),
    channels: Optional[int] = typer.Option(None, "--channels", "-c", callback=within(COUNT), help="--chain: input channels."),
    matrix: bool = typer.Option(False, "--matrix", help="Show the convolution as its matrix C (small sizes)."),
    steps: bool = typer.Option(False, "--steps", help="Write every output as its sum with the numbers (small sizes)."),
    draw: Optional[str] = typer.Option(None, "--draw", help="Draw the layer: FILE.png, .gif (a frame per output) or .svg."),
    backward: bool = typer.Option(False, "--backward", help="Forward, backward (dL/dx, dL/dw, dL/db) and update on the numbers."),
    dy: Optional[str] = typer.Option(None, "--dy", help="--backward: the upstream gradient dL/dy (default all ones)."),
    lr: float = typer.Option(0.1, "--lr", callback=within(POSITIVE), help="--backward: the learning rate of the update w - lr * dL/dw."),
    activation: Optional[str] = typer.Option(None, "--activation", help="--backward: relu | sigmoid | tanh instead of a layer."),
    x: Optional[str] = typer.Option(None, "--x", help="--matrix/--steps/--backward input: '4,5;1,8' (rows by ';') or a .npy file."),
    w: Optional[str] = typer.Option(None, "--w", help="--matrix/--steps kernel: '1,4;1,4' or a .npy file."),
    seed: int = typer.Option(0, "--seed", callback=within(SEED), help="Seed of the generated values (--matrix, --steps, --verify)."),
    verify: bool = typer.Option(False, "--verify", help="Run it on every backend and compare with NumPy."),
    backend: str = typer.Option("all", "--backend", help="--verify: all, or a list such as numpy,torch,ort."),
    device: str = typer.Option("auto", "--device", help="--verify: auto, cpu or cuda."),
    model: Optional[str] = typer.Option(None, "--model", help="Trace a network: a checkpoint, a cvtool .onnx export, "
                                         "'default' (the default U-Net) or 'lite0' (EfficientNet-Lite0 + U-Net decoder)."),
    json_: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Convolution arithmetic explained: output sizes, 'same' padding, solving, chains, the matrix C, cross-checks."""
    hw = size(input, "input size") if input is not None else None

    def layer(default_kernel: str | None = None) -> LayerSpec:
        return layer_spec(kernel, stride, padding, dilation, transposed, output_padding, pool, ceil_mode, default_kernel)

    if model is not None:
        refuse_with("--model", chain=chain, kernel=kernel, stride=stride, transposed=transposed, pool=pool, same=same,
                    solve=solve, matrix=matrix, verify=verify, output=output)
        return finish(model_doc(*model_spec(model), hw or (256, 256)), json_, render_model)
    if chain is not None:
        refuse_with("--chain", kernel=kernel, stride=stride, transposed=transposed, pool=pool, same=same,
                    solve=solve, matrix=matrix, verify=verify, output=output)
        if hw is None:
            raise UsageError("--chain needs the input size", hint='e.g. -i 64 --chain "conv k3 p1; pool k2"')
        return finish(chain_doc(chain, hw, channels), json_, render_chain)
    refuse_with("without --chain", channels=channels)
    if draw is not None:
        refuse_with("--draw", matrix=matrix, steps=steps, backward=backward, same=same, solve=solve, verify=verify,
                    output=output, x=x, w=w)
        if hw is None:
            raise UsageError("--draw needs the input size", hint="e.g. -i 5 -k 3 --draw conv.gif")
        from cvtool.convcalc.draw import draw_doc

        return finish(draw_doc(layer(), hw, draw), json_, render_draw)
    values_kernel = None if w is None else "1"  # --w sets the kernel
    if backward:
        refuse_with("--backward", matrix=matrix, steps=steps, same=same, solve=solve, verify=verify, output=output)
        from cvtool.cli.convcalc.backward import gradients, render_backward
        from cvtool.convcalc import backward as backward_doc

        if activation is not None:
            if activation not in backward_doc.ACTIVATIONS:
                raise UsageError(f"unknown --activation {activation!r}", hint="use relu, sigmoid or tanh")
            refuse_with("--activation", kernel=kernel, pool=pool, transposed=transposed, w=w)
        spec = None if activation is not None else layer(values_kernel)
        case = backward_doc.case(spec, hw, x, w, dy, lr, seed, kernel is not None, activation)
        return finish(gradients(case), json_, render_backward, ok="ok")
    refuse_with("without --backward", dy=dy, activation=activation)
    if steps:
        refuse_with("--steps", matrix=matrix, same=same, solve=solve, verify=verify, output=output)
        spec = layer(values_kernel)
        from cvtool.cli.convcalc.sums import render_steps
        from cvtool.convcalc.sums import steps_doc

        return finish(steps_doc(spec, hw, x, w, seed, kernel_given=kernel is not None), json_, render_steps)
    if matrix:
        refuse_with("--matrix", same=same, solve=solve, verify=verify, output=output)
        spec = layer(values_kernel)
        from cvtool.cli.convcalc.matrix import render_matrix
        from cvtool.convcalc.matrix import matrix_doc

        return finish(matrix_doc(spec, hw, x, w, seed, kernel_given=kernel is not None), json_, render_matrix)
    refuse_with("without --matrix, --steps or --backward", x=x, w=w)
    spec = layer("1" if solve and kernel is None else None)  # --solve searches the kernel
    if verify:
        refuse_with("--verify", same=same, solve=solve, output=output)
        if hw is None:
            raise UsageError("--verify needs the input size", hint="e.g. -i 32")
        from cvtool.cli.convcalc.verify import cross_check, render_verify

        return finish(cross_check(spec, hw, backend, device, seed), json_, render_verify, ok="ok")
    if same:
        refuse_with("--same", output=output)
        if padding != "0":
            raise UsageError("--same works the padding out itself: drop --padding")
        return finish(same_doc(spec, hw), json_, render_same)
    if output is not None or solve:
        if hw is None or output is None:
            raise UsageError("solving needs both --input and --output", hint="e.g. -i 32 -o 16 -k 3 --solve")
        doc = solve_doc(spec, hw, size(output, "output size"), solve, kernel is not None)
        return finish(doc, json_, render_solve, ok="found")
    if hw is None:
        return finish(formula_doc(spec), json_, render_formula)
    return finish(output_doc(spec, hw), json_, render_output)


def render_draw(doc: dict) -> None:
    frames = doc["frames"] if doc["file"].lower().endswith(".gif") else 1
    say(f"wrote {doc['file']}: {doc['title']}; {frames} frame(s), {doc['size'][0]}x{doc['size'][1]} px")


# --- the tour of `cvtool demo` ----------------------------------------------------------------

TOUR = [
    ("Stride 2, kernel 2: conv halves, transposed conv doubles", "--stride 2 --kernel 2", True),
    ("An output size, the numbers substituted", "-i 224 -k 3 -s 2 -p 1", True),
    ("Padding 'same' for an even kernel", "-i 32 -k 4 --same", True),
    ("Padding 'same' with stride 2", "-i 224 -k 3 -s 2 --same", False),
    ("Which padding gives 64 from 32 with a 4x4, stride-2 transposed conv?", "-i 32 -o 64 -k 4 -s 2 --transposed", True),
    ("Which kernel and stride halve 32?", "-i 32 -o 16 --solve --pool max", False),
    ("Shapes and receptive fields through a small encoder-decoder",
     '-i 64 -c 1 --chain "conv k3 p1 c16; conv k3 p1 c16; pool k2 s2; conv k3 p1 c32; tconv k2 s2 c16"', True),
    ("The lecture's example: a convolution as a matrix",
     '--matrix --x "4,5,8,7;1,8,8,8;3,6,6,4;6,5,7,8" --w "1,4,1;1,4,3;3,3,1"', True),
    ("The transposed convolution is C^T", '--matrix --transposed -k 3 -i 2', False),
    ("Cross-check: a max pooling with ceil_mode on every backend", "-i 15 -k 3 -s 2 --pool max --ceil-mode --verify", False),
    ("Cross-check: a transposed convolution on every backend", "-i 16 -k 3 -s 2 -p 1 --output-padding 1 -t --verify", False),
    ("Cross-check: a strided convolution on every backend", "-i 32 -k 3 -s 2 -p 1 --verify", True),
]


def convcalc_tour(quick: bool = False) -> None:
    """Several convcalc modes printed for a person, ending in a cross-backend --verify."""
    import shlex

    from cvtool.cli import app

    cmd = typer.main.get_command(app)
    for title, args, in_quick in TOUR:
        if quick and not in_quick:
            continue
        out().rule(title, align="left")
        say(f"$ cvtool convcalc {args}", style="bold magenta")
        rc = cmd.main(["convcalc", *shlex.split(args)], prog_name="cvtool", standalone_mode=False)
        say()
        if rc not in (None, 0) and "--verify" in args:
            raise CvtoolError("the cross-backend check failed (see the table above)")


__all__ = ["convcalc", "convcalc_tour"]


def model_spec(model: str) -> tuple[ModelSpec, str]:
    """(spec, source) for --model: 'default', 'lite0', a cvtool .onnx export (read with onnx alone), or a checkpoint
    (its metadata only, no tensors)."""
    from pathlib import Path

    from cvtool.model.spec import ModelSpec

    if model == "default":
        return ModelSpec(), "default ModelSpec()"
    if model == "lite0":
        return ModelSpec(encoder="lite0", depth=5), "lite0 ModelSpec(encoder='lite0', depth=5)"
    if model.lower().endswith(".onnx"):
        from cvtool.cli.models import open_model

        return open_model(Path(model)).spec, model
    from cvtool.model.checkpoint import read_meta

    return ModelSpec.from_dict(read_meta(model)["spec"]), model
