"""`cvtool convcalc`: every mode through the CLI (--json), checked against hand-worked values and
PyTorch (shapes, conv2d / conv_transpose2d / avg_pool2d values, autograd receptive fields)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_arithmetic import CONV, DILATED, POOL, TCONV
from typer.testing import CliRunner

from cvtool.cli import app, main
from cvtool.convcalc.chain import output_1d, parse_chain, trace
from cvtool.convcalc.matrix import conv_matrix
from cvtool.convcalc.solve import Solution, kernel_stride, paddings

runner = CliRunner()
LECTURE_X = "4,5,8,7;1,8,8,8;3,6,6,4;6,5,7,8"
LECTURE_W = "1,4,1;1,4,3;3,3,1"


def cc(*args: str, code: int = 0) -> dict:
    """`cvtool convcalc ... --json` in-process: stdout must be one JSON document."""
    r = runner.invoke(app, ["convcalc", *args, "--json"])
    assert r.exit_code == code, (r.output, r.exception)
    return json.loads(r.stdout)


def fails(capsys, *args: str) -> str:
    """Run main() as the console script does; it must exit 2 with exactly one line on stderr."""
    with pytest.raises(SystemExit) as e:
        main(["convcalc", *args])
    cap = capsys.readouterr()
    assert e.value.code == 2, cap
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), cap.err
    assert "Traceback" not in cap.err + cap.out
    return lines[0]


# --- Dumoulin & Visin through the CLI ----------------------------------------------------------

@pytest.mark.parametrize("rel", list(CONV))
def test_dumoulin_conv_cli(rel):
    i, k, s, p, o = CONV[rel]
    doc = cc("-i", str(i), "-k", str(k), "-s", str(s), "-p", str(p))
    assert doc["output"] == [o, o]
    assert doc["substituted"] == [f"o = floor(({i} + 2*{p} - {k})/{s}) + 1 = floor({i + 2 * p - k}/{s}) + 1 "
                                  f"= {(i + 2 * p - k) // s} + 1 = {o}"]


def test_dumoulin_pool_cli():
    i, k, s, p, o = POOL[7]
    assert cc("-i", str(i), "-k", str(k), "-s", str(s), "--pool", "max")["output"] == [o, o]


@pytest.mark.parametrize("rel", list(TCONV))
def test_dumoulin_transposed_cli(rel):
    i, k, s, p, op, o = TCONV[rel]
    doc = cc("-i", str(i), "-k", str(k), "-s", str(s), "-p", str(p), "--output-padding", str(op), "--transposed")
    assert doc["output"] == [o, o]
    assert doc["substituted"][0].endswith(f"= {o}")


def test_dumoulin_dilated_cli():
    i, k, s, p, d, o = DILATED[15]
    doc = cc("-i", str(i), "-k", str(k), "-d", str(d))
    assert doc["output"] == [o, o]
    assert doc["substituted"] == ["o = floor((7 + 2*0 - (2*(3-1) + 1))/1) + 1 = floor(2/1) + 1 = 2 + 1 = 3"]


# --- o as a function of i -----------------------------------------------------------------------

def test_formula_mode_stride2_kernel2():
    doc = cc("--stride", "2", "--kernel", "2")
    conv, tconv = doc["ops"]
    assert conv["formulas"][0]["substituted"] == "o = floor((i - 2)/2) + 1 = floor(i/2)"
    assert tconv["formulas"][0]["substituted"] == "o = 2(i - 1) + 2 = 2i"
    table = {r["input"]: (r["conv"][0], r["tconv"][0]) for r in doc["table"]}
    assert table == {7: (3, 14), 8: (4, 16), 28: (14, 56), 32: (16, 64), 64: (32, 128), 224: (112, 448), 256: (128, 512)}
    assert "output" not in doc
    text = runner.invoke(app, ["convcalc", "-s", "2", "-k", "2"]).stdout
    assert "halves" in text and "doubles" in text and "2i" in text


def test_formula_mode_per_dimension_and_pool():
    doc = cc("-k", "3x5", "-s", "2", "-p", "1")
    assert [f["axis"] for f in doc["ops"][0]["formulas"]] == ["H", "W"]
    assert doc["table"][0] == {"input": 7, "conv": [4, 3], "tconv": [13, 15]}
    doc = cc("-k", "3", "-s", "2", "--pool", "max", "--ceil-mode")
    assert len(doc["ops"]) == 1 and doc["ops"][0]["formulas"][0]["substituted"] == "o = ceil((i - 3)/2) + 1 = ceil((i - 1)/2)"
    assert [r["maxpool"][0] for r in doc["table"]][:2] == [3, 4]


# --- one output size: per dimension, every op, against torch ------------------------------------

@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("args,torch_fn", [
    (["-i", "224x160", "-k", "3x5", "-s", "2", "-p", "1x2", "-d", "2"],
     lambda x: F.conv2d(x, torch.zeros(1, 1, 3, 5), stride=2, padding=(1, 2), dilation=2)),
    (["-i", "7x9", "-k", "3", "-p", "0,1,2,0"],
     lambda x: F.conv2d(F.pad(x, (2, 0, 0, 1)), torch.zeros(1, 1, 3, 3))),
    (["-i", "16", "-k", "4", "-s", "2", "-p", "1", "-t", "--output-padding", "1"],
     lambda x: F.conv_transpose2d(x, torch.zeros(1, 1, 4, 4), stride=2, padding=1, output_padding=1)),
    (["-i", "15x8", "-k", "3", "-s", "2", "--pool", "max", "--ceil-mode", "-p", "1"],
     lambda x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True)),
    (["-i", "8", "-k", "2", "-s", "3", "--pool", "avg", "--ceil-mode", "-p", "1"],
     lambda x: F.avg_pool2d(x, 2, 3, 1, ceil_mode=True)),
    (["-i", "9", "-k", "4", "-p", "same"], lambda x: F.conv2d(x, torch.zeros(1, 1, 4, 4), padding="same")),
])
def test_output_mode_matches_torch(args, torch_fn):
    doc = cc(*args)
    hw = doc["input"]
    assert doc["output"] == list(torch_fn(torch.zeros(1, 1, *hw)).shape[-2:])


def test_output_mode_text_and_notes():
    doc = cc("-i", "224", "-k", "3", "-s", "2", "-p", "1")
    assert doc["substituted"] == ["o = floor((224 + 2*1 - 3)/2) + 1 = floor(223/2) + 1 = 111 + 1 = 112"]
    assert any("not a multiple of the stride 2" in n for n in doc["notes"])
    doc = cc("-i", "32", "-k", "4", "-s", "2", "-p", "1", "-t")
    assert any("64, 65" in n for n in doc["notes"])  # the sizes output_padding chooses between
    doc = cc("-i", "8", "-k", "2", "-s", "3", "-p", "1", "--pool", "max", "--ceil-mode")
    assert doc["output"] == [3, 3] and doc["substituted"][0].endswith("+ 1 - 1 = 3")


# --- 'same' ----------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("k,d", [(3, 1), (5, 1), (2, 1), (4, 1), (3, 2), (4, 3)])
def test_same_stride1_matches_torch(k, d):
    doc = cc("-i", "10x13", "-k", str(k), "-d", str(d), "--same")
    (t, b), (l, r) = doc["padding"]
    assert doc["output"] == [10, 13] and doc["pytorch_padding_same"] is True
    x, w = torch.randn(1, 1, 10, 13), torch.randn(1, 1, k, k)
    torch.testing.assert_close(F.conv2d(F.pad(x, (l, r, t, b)), w, dilation=d), F.conv2d(x, w, padding="same", dilation=d))
    if k % 2 == 0 and d % 2 == 1:  # even kernel: the extra pixel at the end, and said so
        assert b == t + 1 and "extra pixel at the end" in " ".join(doc["explanation"][0]["lines"])


def test_same_stride2():
    doc = cc("-i", "224", "-k", "3", "-s", "2", "--same")
    assert doc["output"] == [112, 112] and doc["padding"] == [[0, 1], [0, 1]]
    assert doc["pytorch_padding_same"] is False
    lines = " ".join(doc["explanation"][0]["lines"])
    assert "PyTorch refuses" in lines and "ceil(i/s)" in lines
    with pytest.raises(RuntimeError):  # PyTorch really refuses it
        F.conv2d(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 3, 3), stride=2, padding="same")
    doc = cc("-k", "3", "-s", "2", "--same")  # no input: the rule over common sizes
    assert doc["padding"] is None and "output" not in doc
    assert {r["input"]: r["output"][0] for r in doc["table"]}[7] == 4


# --- solving ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,i,o,k,s,d", [
    ("conv", 32, 32, 3, 1, 1), ("conv", 32, 16, 3, 2, 1), ("conv", 32, 32, 4, 1, 1), ("conv", 28, 14, 5, 2, 2),
    ("tconv", 32, 64, 4, 2, 1), ("tconv", 16, 32, 3, 2, 1), ("tconv", 7, 14, 3, 2, 2),
    ("maxpool", 15, 8, 3, 2, 1), ("avgpool", 32, 16, 2, 2, 1),
])
def test_every_padding_solution_gives_the_output(kind, i, o, k, s, d):
    sols = paddings(kind, i, o, k, s, d)
    assert sols, "expected at least one solution"
    for sol in sols:
        assert output_1d(kind, i, k, s, sol.padding, d, sol.output_padding) == o
        assert torch_1d(kind, i, sol) == o, sol


def torch_1d(kind: str, i: int, sol: Solution) -> int:
    x, (pb, pe) = torch.zeros(1, 1, 1, i), sol.padding
    w = torch.zeros(1, 1, 1, sol.kernel)
    if kind == "conv":
        return F.conv2d(F.pad(x, (pb, pe)), w, stride=(1, sol.stride), dilation=(1, sol.dilation)).shape[-1]
    if kind == "tconv":  # asymmetric padding of a transposed conv crops the output (ONNX pads)
        y = F.conv_transpose2d(x, w, stride=(1, sol.stride), output_padding=(0, sol.output_padding),
                               dilation=(1, sol.dilation))
        return y[..., pb:y.shape[-1] - pe].shape[-1]
    pool = F.max_pool2d if kind == "maxpool" else F.avg_pool2d
    return pool(x, (1, sol.kernel), (1, sol.stride), (0, pb), ceil_mode=sol.ceil_mode).shape[-1]


def test_solve_lists_the_classic_answers():
    p = paddings("conv", 32, 32, 3)
    assert [s.padding for s in p] == [(1, 1)]
    assert [s.padding for s in paddings("conv", 32, 32, 4)] == [(1, 2)]  # PyTorch's 'same' split
    t = paddings("tconv", 32, 64, 4, 2)
    assert (1, 1) in [s.padding for s in t if s.output_padding == 0]
    ks = kernel_stride("conv", 32, 16)
    assert {(s.kernel, s.stride, s.padding[0]) for s in ks} >= {(2, 2, 0), (3, 2, 1), (4, 2, 1)}
    for sol in ks:
        assert 1 <= sol.kernel <= 11 and 1 <= sol.stride <= 4 and 0 <= sol.padding[0] <= sol.kernel
        assert torch_1d("conv", 32, sol) == 16


def test_solve_cli_round_trip_and_none():
    doc = cc("-i", "32", "-o", "16", "--solve", "-k", "3", "-s", "2")
    ax = doc["axes"][0]
    assert doc["found"] and doc["output"] == [16, 16]
    assert [p["padding"] for p in ax["paddings"]] == [[0, 1], [1, 1]]
    assert all(p["check"].endswith("= 16") for p in ax["paddings"] + ax["kernel_stride"])
    doc = cc("-i", "32", "-o", "16", "-k", "3", code=1)  # stride 1 cannot shrink 32 to 16 with padding
    assert not doc["found"] and "smallest is 30" in doc["axes"][0]["why_not"]
    r = runner.invoke(app, ["convcalc", "-i", "32", "-o", "16", "-k", "3"])
    assert r.exit_code == 1 and "no padding gives 16 from 32" in r.stdout
    doc = cc("-i", "5", "-o", "100", "--solve", "--pool", "max", code=1)
    assert doc["axes"][0]["kernel_stride"] == []
    doc = cc("-i", "32x16", "-o", "64x32", "-k", "4", "-s", "2", "-t")
    assert [a["axis"] for a in doc["axes"]] == ["H", "W"] and doc["found"]


# --- chains ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,rf,jump", [
    ("conv k3; conv k3", 5, "1"),
    ("conv k3; pool k2 s2; conv k3", 8, "2"),
    ("conv k3 p1 c16; pool k2 s2; tconv k2 s2 c8", 4, "1"),
    ("conv k3 d2; conv k3 d4", 13, "1"),
    ("conv k7 s2 p3; maxpool k3 s2 p1", 11, "4"),  # a ResNet stem
])
def test_chain_receptive_field_by_hand(text, rf, jump):
    doc = cc("-i", "32", "--chain", text)
    assert doc["receptive_field"] == [rf, rf]
    assert doc["layers"][-1]["jump"] == [jump, jump]


def test_chain_shapes_channels_and_params_vs_torch():
    text = "conv k3 p1 c16; pool k2 s2; conv k3 s2 p1 c32 d1; avgpool k2; tconv k2 s2 c8; tconv k3 s2 p1 op1 c4"
    doc = cc("-i", "64x48", "-c", "3", "--chain", text)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.MaxPool2d(2, 2), torch.nn.Conv2d(16, 32, 3, 2, 1),
        torch.nn.AvgPool2d(2), torch.nn.ConvTranspose2d(32, 8, 2, 2), torch.nn.ConvTranspose2d(8, 4, 3, 2, 1, 1))
    x = torch.zeros(1, 3, 64, 48)
    for layer, step in zip(net, doc["layers"]):
        x = layer(x)
        assert step["shape"] == list(x.shape[1:])
        assert step["params"] == sum(p.numel() for p in layer.parameters())
    assert doc["shape"] == list(x.shape[1:]) == [4, 32, 24] and doc["output"] == [32, 24]
    doc = cc("-i", "16", "--chain", "conv k3 c8; pool k2")  # no input channels: unknown until a c
    assert doc["layers"][0]["input"][0] is None and doc["channels"] == 8 and doc["layers"][0]["params"] is None


@pytest.mark.parametrize("text", ["conv k3; conv k3", "conv k3; pool k2 s2; conv k3", "conv k3 p1; pool k2 s2; tconv k2 s2",
                                  "tconv k3 s2; conv k3", "conv k5 s2; tconv k4 s2 p1; conv k3 d2", "tconv k2 s2; conv k2"])
def test_chain_receptive_field_vs_autograd(text):
    """Backprop from each output pixel of a window of the centre; the widest nonzero input-gradient
    extent is the receptive field (weights all 1, so nothing cancels; avg pool for the geometry)."""
    n = 40
    doc = cc("-i", str(n), "--chain", text.replace("pool", "avgpool"))
    layers = []
    for st in doc["layers"]:
        sp = st["spec"]
        k, s, d = sp["kernel"][0], sp["stride"][0], sp["dilation"][0]
        if sp["kind"] == "conv":
            layers.append(torch.nn.Conv2d(1, 1, k, s, 0, d, bias=False))
        elif sp["kind"] == "tconv":
            layers.append(torch.nn.ConvTranspose2d(1, 1, k, s, 0, 0, 1, False, d))
        else:
            layers.append(torch.nn.AvgPool2d(k, s))
    net = torch.nn.Sequential(*layers)
    for p in net.parameters():
        torch.nn.init.ones_(p)
    x = torch.ones(1, 1, n, n, requires_grad=True)
    y = net(x)
    widest, mid = 0, y.shape[-2] // 2
    for j in range(y.shape[-1] // 2 - 4, y.shape[-1] // 2 + 4):
        g, = torch.autograd.grad(y[0, 0, mid, j], x, retain_graph=True)
        nz = torch.nonzero(g[0, 0].sum(0)).flatten()  # columns that can change this pixel
        if len(nz):
            widest = max(widest, int(nz[-1] - nz[0]) + 1)
    assert doc["receptive_field"][1] == widest


def test_chain_layer_records_are_complete():
    steps = trace(parse_chain("conv k3 p1 c16; pool k2 s2; tconv k2 s2 c8"), (32, 32), 3)
    assert [s.out_shape for s in steps] == [(16, 32, 32), (16, 16, 16), (8, 32, 32)]
    assert [s.params for s in steps] == [3 * 16 * 9 + 16, 0, 16 * 8 * 4 + 8]
    assert steps[0].macs == 32 * 32 * 16 * 3 * 9 and steps[2].macs == 16 * 16 * 16 * 8 * 4
    assert steps[1].pads == ((0, 0), (0, 0)) and steps[0].pads == ((1, 1), (1, 1))
    assert str(steps[1].rf[0].start) == "1/2" and steps[2].rf[0].jump == 1


# --- the matrix ------------------------------------------------------------------------------------

def test_lecture_matrix():
    doc = cc("--matrix", "--x", LECTURE_X, "--w", LECTURE_W)
    C = np.array(doc["matrix"])
    assert C.shape == (4, 16) and doc["matrix_shape"] == [4, 16]
    assert C[0].tolist() == [1, 4, 1, 0, 1, 4, 3, 0, 3, 3, 1, 0, 0, 0, 0, 0]
    assert C[3].tolist() == [0, 0, 0, 0, 0, 1, 4, 1, 0, 1, 4, 3, 0, 3, 3, 1]
    assert doc["result"] == [[122, 148], [126, 134]] and doc["output"] == [2, 2]
    text = runner.invoke(app, ["convcalc", "--matrix", "--x", LECTURE_X, "--w", LECTURE_W]).stdout
    assert "1  4  1  0  1  4  3  0  3  3   1   0   0   0   0   0" in text and "122" in text and "134" in text


def test_matrix_from_npy(tmp_path):
    np.save(tmp_path / "x.npy", np.array([[4, 5, 8, 7], [1, 8, 8, 8], [3, 6, 6, 4], [6, 5, 7, 8]], dtype=np.float32))
    np.save(tmp_path / "w.npy", np.array([[1, 4, 1], [1, 4, 3], [3, 3, 1]]))
    doc = cc("--matrix", "--x", str(tmp_path / "x.npy"), "--w", str(tmp_path / "w.npy"))
    assert doc["result"] == [[122, 148], [126, 134]]


CASES = [  # (H, W, KH, KW, stride, padding (t,b,l,r), dilation)
    (4, 4, 3, 3, 1, (0, 0, 0, 0), 1), (5, 5, 3, 3, 2, (1, 1, 1, 1), 1), (6, 5, 2, 3, 2, (0, 1, 1, 0), 1),
    (7, 7, 3, 3, 1, (2, 2, 2, 2), 2), (5, 6, 3, 2, (2, 1), (1, 1, 0, 0), (1, 2)),
]


@pytest.mark.parametrize("H,W,KH,KW,s,pads,d", CASES)
def test_conv_matrix_is_conv2d(H, W, KH, KW, s, pads, d):
    rng = np.random.default_rng(H * W)
    x, w = rng.standard_normal((H, W)), rng.standard_normal((KH, KW))
    C = conv_matrix(w, (H, W), stride=s, padding=pads, dilation=d)
    t, b, l, r = pads
    want = F.conv2d(F.pad(torch.tensor(x)[None, None], (l, r, t, b)), torch.tensor(w)[None, None], stride=s, dilation=d)
    assert C.shape == (want.numel(), H * W)
    np.testing.assert_allclose(C @ x.ravel(), want.flatten().numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("i,k,s,p,op,d", [(2, 3, 1, 0, 0, 1), (2, 3, 2, 0, 0, 1), (3, 3, 2, 1, 1, 1), (3, 4, 2, 1, 0, 1),
                                          (4, 3, 1, 1, 0, 2), (2, 3, 3, 0, 2, 1), (2, 2, 2, 0, 0, 1), (3, 2, 1, 0, 1, 2)])
def test_transposed_matrix_is_conv_transpose2d(i, k, s, p, op, d):
    """C^T y == conv_transpose2d(y, w), through the CLI (seeded integers) and torch."""
    doc = cc("--matrix", "-t", "-i", str(i), "-k", str(k), "-s", str(s), "-p", str(p), "--output-padding", str(op),
             "-d", str(d), "--seed", str(i + k))
    y, w = torch.tensor(doc["x"])[None, None], torch.tensor(doc["w"])[None, None]
    want = F.conv_transpose2d(y, w, stride=s, padding=p, output_padding=op, dilation=d)[0, 0]
    assert doc["applied"] == "C^T" and doc["output"] == list(want.shape)
    np.testing.assert_allclose(np.array(doc["result"]), want.numpy())
    C_T = np.array(doc["matrix"])  # one row per output pixel of the transposed conv, one column per y pixel
    assert C_T.shape == (want.numel(), i * i)
    # C (the convolution from the output size back down to i) is its transpose: conv2d(z) == C z
    z = torch.randn(1, 1, *want.shape, dtype=torch.float64)
    conv = F.conv2d(z, w.double(), stride=s, padding=p, dilation=d)[0, 0, :i, :i]
    np.testing.assert_allclose(C_T.T @ z.flatten().numpy(), conv.flatten().numpy(), rtol=1e-10, atol=1e-10)


def test_avg_pool_matrix():
    doc = cc("--matrix", "--pool", "avg", "-k", "2", "-p", "1", "-i", "4", "--seed", "3")
    x = torch.tensor(doc["x"])[None, None]
    np.testing.assert_allclose(np.array(doc["result"]), F.avg_pool2d(x, 2, 2, 1)[0, 0].numpy())


# --- cross-checking --------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["-k", "3", "-s", "2", "-p", "1"], ["-k", "4", "-p", "same"],
                                  ["-k", "3", "-p", "0,1,2,0", "-d", "2"], ["-k", "3", "-s", "2", "-p", "same"],
                                  ["-k", "3", "-s", "2", "-p", "1", "-t", "--output-padding", "1"],
                                  ["-k", "3", "-s", "2", "--pool", "max", "--ceil-mode"],
                                  ["-k", "3", "-s", "2", "-p", "1", "--pool", "avg"]])
def test_verify_all_backends(args):
    doc = cc("-i", "11", "--verify", "--backend", "all", *args)
    assert doc["ok"] is True
    by = {r["backend"]: r for r in doc["results"]}
    assert {"numpy", "torch", "ort"} <= set(by)
    for name in ("numpy", "torch", "ort"):
        r = by[name]
        assert r["ok"] and r["shape_ok"] and r["shape"] == doc["expected_shape"] and r["max_rel_err"] <= 1e-4
    # the reference is NumPy in float64: the float32 rows round; max pooling picks inputs, so it is exact
    pooled = "max" in args
    assert (by["numpy"]["max_abs_err"] == 0) if pooled else (0 < by["numpy"]["max_rel_err"] < 1e-5)


class WrongBackend:
    """Gives conv2d a wrong answer (and the right shape): the table must say FAIL, exit 1."""

    name = "wrong"

    def __init__(self, device: str = "cpu"):
        self.device = device

    @classmethod
    def status(cls):
        from cvtool_backends.base import Status

        return Status(name="wrong", available=True, devices=("cpu",))

    def conv2d(self, x, w, b=None, **kw):
        import cvtool_backends as registry

        return registry.get("numpy", "cpu").conv2d(x, w, b, **kw) + 1e-2


def test_verify_reports_failures_and_unavailable(monkeypatch, capsys):
    import cvtool_backends as registry

    monkeypatch.setitem(registry.BUILTIN, "wrong", "test_convcalc:WrongBackend")
    monkeypatch.setitem(registry.BUILTIN, "missing", "no_such_module_xyz:Backend")
    doc = cc("-i", "8", "-k", "3", "--verify", "--backend", "numpy,wrong,missing", code=1)
    by = {r["backend"]: r for r in doc["results"]}
    assert by["numpy"]["ok"] and by["wrong"]["ok"] is False and by["wrong"]["max_abs_err"] > 1e-3
    assert by["missing"]["available"] is False and "unavailable" in by["missing"]["error"]
    doc = cc("-i", "8", "-k", "3", "--verify", "--backend", "numpy,missing")  # unavailable is not a failure
    assert doc["ok"] is True
    with pytest.raises(SystemExit) as e:
        main(["convcalc", "-i", "8", "-k", "3", "--verify", "--backend", "numpy,wrong"])
    assert e.value.code == 1 and "FAIL" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_verify_cuda_without_gpu(capsys):
    assert "CUDA" in fails(capsys, "-i", "8", "-k", "3", "--verify", "--device", "cuda")


# --- errors: one line, exit 2 ----------------------------------------------------------------------

@pytest.mark.parametrize("args,says", [
    (["-i", "3", "-k", "5"], "larger than the padded input"),
    (["-i", "5", "-k", "3", "-s", "0"], "stride must be at least 1"),
    (["-i", "-5", "-k", "3"], "at least 1"),
    (["-i", "5", "-k", "0"], "kernel must be at least 1"),
    (["-i", "5", "-k", "3", "-p", "-1"], "padding"),
    (["-i", "5", "-k", "3", "-t", "-s", "2", "--output-padding", "2"], "output_padding 2 must be smaller"),
    (["-i", "5", "-k", "3", "-t", "--output-padding", "1"], "output_padding 1 must be smaller"),
    (["-i", "5x", "-k", "3"], "malformed input size"),
    (["-i", "5x5x5", "-k", "3"], "malformed input size"),
    (["-i", "5", "-k", "3x"], "malformed kernel"),
    (["-i", "5", "-k", "3", "-p", "1,2,3"], "malformed padding"),
    (["-i", "5", "-k", "3", "-p", "half"], "malformed padding"),
    (["-i", "5", "-k", "3", "--pool", "min"], "unknown --pool"),
    (["-i", "5", "-k", "3", "--pool", "max", "-t"], "exclude each other"),
    (["-i", "5", "-k", "3", "--pool", "max", "-p", "2"], "at most half the kernel"),
    (["-i", "5", "-k", "3", "--ceil-mode"], "ceil_mode is for pooling only"),
    (["-i", "5", "-k", "3", "-t", "-p", "same"], "numeric padding only"),
    (["-i", "5"], "give the kernel size"),
    (["-o", "5", "-k", "3"], "needs both --input and --output"),
    (["-i", "8", "--chain", "conv k3; foo k2"], "unknown layer kind 'foo'"),
    (["-i", "8", "--chain", "conv k3 z4"], "unknown token 'z4'"),
    (["-i", "8", "--chain", "conv p1"], "has no kernel"),
    (["-i", "8", "--chain", "conv k3 k5"], "k given twice"),
    (["-i", "8", "--chain", "pool k2 c4"], "pooling keeps the channels"),
    (["-i", "8", "--chain", ""], "empty chain"),
    (["-i", "2", "--chain", "conv k3; conv k3"], "layer 1"),
    (["-i", "8", "--chain", "conv k3; conv k3; conv k3; conv k3"], "layer 4"),
    (["--chain", "conv k3"], "needs the input size"),
    (["-i", "8", "-k", "3", "--chain", "conv k3"], "cannot be combined"),
    (["--matrix", "-i", "10", "-k", "3"], "too large to show"),
    (["--matrix", "--x", "1,2;3", "--w", "1"], "malformed --x"),
    (["--matrix", "--x", "missing.npy", "--w", "1"], "no such file"),
    (["--matrix", "--x", "1,2;3,4", "--w", "1,1", "-k", "3"], "--kernel says 3"),
    (["--matrix", "-i", "4", "-k", "2", "--pool", "max"], "not linear"),
    (["-i", "8", "-k", "3", "--verify", "--backend", "nonexistent"], "unknown backend"),
    (["-i", "8", "-k", "3", "--verify", "--device", "tpu"], "unknown device"),
    (["-i", "8", "-k", "3", "--same", "-t"], "about convolutions"),
    (["-k"], "requires an argument"),
    (["-i", "8", "-k", "3", "-c", "3"], "--channels means nothing without --chain"),
    (["-i", "8", "-k", "3", "--x", "1,2"], "--x means nothing without --matrix"),
    (["-i", "8", "-k", "3", "-p", "1", "--same"], "drop --padding"),
])
def test_errors_are_one_line_exit_2(capsys, args, says):
    assert says in fails(capsys, *args)


def run_cvtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cvtool", *args], capture_output=True, text=True, timeout=60)


def test_real_process_exit_codes_and_streams():
    r = run_cvtool("convcalc", "-i", "3", "-k", "5", "--json")
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.strip() == "error: kernel 5 is larger than the padded input 3 (3 + 0 + 0)"
    r = run_cvtool("convcalc", "-i", "8", "--chain", "conv k3; tconv k2 s2 c8", "--json")
    assert r.returncode == 0 and r.stderr == "" and json.loads(r.stdout)["output"] == [12, 12]
    r = run_cvtool("convcalc", "-i", "32", "-o", "16", "-k", "3")
    assert r.returncode == 1 and "no padding gives 16 from 32" in r.stdout


# --- JSON everywhere -------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["-k", "2", "-s", "2"], ["-i", "32", "-k", "3"], ["-i", "32", "-k", "4", "--same"], ["-k", "3", "-s", "2", "--same"],
    ["-i", "32", "-o", "16", "--solve"], ["-i", "16", "-c", "3", "--chain", "conv k3 p1 c8; pool k2"],
    ["--matrix", "-i", "3", "-k", "2"], ["-i", "8", "-k", "3", "--verify", "--backend", "numpy"],
])
def test_json_is_one_document(args):
    r = runner.invoke(app, ["convcalc", *args, "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert isinstance(doc, dict) and doc["mode"]
    if "output" in doc:
        assert all(isinstance(v, int) for v in doc["output"])


def test_demo_tour_quick(capsys):
    """The convcalc part of `cvtool demo` (the whole demo is tests/test_demo.py)."""
    from cvtool.cli.convcalc.command import convcalc_tour

    convcalc_tour(quick=True)
    text = capsys.readouterr().out
    for piece in ("floor(i/2)", "2i", "[122, 148, 126, 134]", "Cross-check", "all passed"):
        assert piece in text
