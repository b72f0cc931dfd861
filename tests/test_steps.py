"""`convcalc --steps`: the lecture's sums typed in, every written sum equal to what the backends compute,
and refusals for what cannot be written out."""

import numpy as np
import pytest
from test_convcalc import cc, fails  # tests/ is on sys.path under pytest

import cvtool_backends as registry
from cvtool.convcalc.chain import make_layer
from cvtool.convcalc.sums import conv_steps, pool_steps, sum_text, tconv_steps

LECTURE_W = "0,0,-1;1,-1,0;0,1,-1"


def layer(kind, k, s=None, p=0, d=1, op=0, ceil=False):
    return make_layer(kind, (k, k), None if s is None else (s, s), p, (d, d), (op, op), ceil_mode=ceil)


def test_the_lectures_first_sum():
    # the window the lecture's kernel sits on first, and its nine products in the lecture's order
    doc = cc("--steps", "--x", "1,1,0;2,0,0;0,0,2", "--w", LECTURE_W)
    (o,) = doc["outputs"]
    assert [(t["x"], t["w"]) for t in o["terms"]] == [(1, 0), (1, 0), (0, -1), (2, 1), (0, -1), (0, 0), (0, 0), (0, 1),
                                                      (2, -1)]
    assert sum_text(o) == "1*0 + 1*0 + 0*-1 + 2*1 + 0*-1 + 0*0 + 0*0 + 0*1 + 2*-1 = 0"


def test_the_lectures_4x4_example():
    doc = cc("--steps", "--x", "4,5,8,7;1,8,8,8;3,6,6,4;6,5,7,8", "--w", "1,4,1;1,4,3;3,3,1")
    assert [o["value"] for o in doc["outputs"]] == [122, 148, 126, 134] and doc["result"] == [[122, 148], [126, 134]]
    first = doc["outputs"][0]
    assert sum_text(first) == "4*1 + 5*4 + 8*1 + 1*1 + 8*4 + 8*3 + 3*3 + 6*3 + 6*1 = 122"
    assert first["terms"][4]["at"] == [1, 1]  # the centre tap reads x[1, 1]


def test_max_pooling_names_the_winner():
    doc = cc("--steps", "--pool", "max", "-k", "2", "--x", "1,1,2,4;5,6,7,8;3,2,1,0;1,2,3,4")
    assert doc["result"] == [[6, 8], [3, 4]]
    assert [o["winner"] for o in doc["outputs"]] == [[1, 1], [1, 3], [2, 0], [3, 3]]
    ties = cc("--steps", "--pool", "max", "-k", "2", "--x", "7,7;7,7")
    assert ties["outputs"][0]["winner"] == [0, 0]  # the first largest, as PyTorch picks it


def test_average_pooling_counts_its_padding():
    doc = cc("--steps", "--pool", "avg", "-k", "3", "-s", "2", "-p", "1", "--x", "1,2,3;4,5,6;7,8,9")
    first = doc["outputs"][0]
    assert first["sum"] == 1 + 2 + 4 + 5 and first["count"] == 9  # the padding counts (count_include_pad)
    assert doc["result"][0][0] == pytest.approx(12 / 9)


def test_transposed_convolution_stamps():
    doc = cc("--steps", "-t", "--x", "1,2;3,4", "--w", "1,1;1,1")
    assert doc["result"] == [[1, 3, 2], [4, 10, 6], [3, 7, 4]]
    centre = next(o for o in doc["outputs"] if o["out"] == [1, 1])
    assert sorted(t["from"] for t in centre["terms"]) == [[0, 0], [0, 1], [1, 0], [1, 1]]  # all four stamps overlap
    stamp = doc["stamps"][3]  # x[1, 1] = 4 lands on rows 1..2, cols 1..2
    assert stamp["x"] == 4 and [c["to"] for c in stamp["cells"]] == [[1, 1], [1, 2], [2, 1], [2, 2]]
    cropped = cc("--steps", "-t", "-s", "2", "-p", "1", "--x", "1,2;3,4", "--w", "1,2,3;4,5,6;7,8,9")
    assert cropped["output"] == [3, 3] and any(not c["kept"] for c in cropped["stamps"][0]["cells"])


@pytest.mark.parametrize("kind,kw", [("conv", dict(k=3, s=2, p=1)), ("conv", dict(k=2, d=2, p=1)),
                                     ("conv", dict(k=3, p=(0, 1, 2, 0))), ("tconv", dict(k=3, s=2, p=1, op=1)),
                                     ("tconv", dict(k=2, s=2)), ("maxpool", dict(k=3, s=2, p=1, ceil=True)),
                                     ("avgpool", dict(k=2, s=1, p=1))])
def test_every_written_sum_is_what_the_backends_compute(kind, kw):
    rng = np.random.default_rng(3)
    spec = layer(kind, **kw)
    x = rng.integers(-4, 5, (3, 3) if kind == "tconv" else (5, 6)).astype(np.float64)
    w = rng.integers(-3, 4, spec.kernel).astype(np.float64)
    be = registry.get("naive", "cpu")
    x4, w4 = x[None, None], w[None, None]
    if kind == "conv":
        doc, want = conv_steps(x, w, spec), be.conv2d(x4, w4, stride=spec.stride, padding=spec.padding,
                                                       dilation=spec.dilation)
    elif kind == "tconv":
        doc, want = tconv_steps(x, w, spec), be.conv_transpose2d(x4, w4, stride=spec.stride, padding=spec.padding,
                                                                  output_padding=spec.output_padding)
    elif kind == "maxpool":
        doc, want = pool_steps(x, spec), be.max_pool2d(x4, kernel=spec.kernel, stride=spec.stride,
                                                       padding=spec.padding, ceil_mode=spec.ceil_mode)
    else:
        doc, want = pool_steps(x, spec), be.avg_pool2d(x4, kernel=spec.kernel, stride=spec.stride, padding=spec.padding)
    got = np.zeros(want.shape[2:])
    for o in doc["outputs"]:
        got[tuple(o["out"])] = o["value"]
        if "terms" in o:  # and each written sum adds up to its value
            assert sum(t["x"] * t["w"] for t in o["terms"]) == pytest.approx(o["value"])
    np.testing.assert_allclose(got, want[0, 0], atol=1e-12)


@pytest.mark.parametrize("args,msg", [
    (["--steps", "-i", "20", "-k", "3"], "too many"),
    (["--steps", "-i", "3", "-k", "5"], "larger than the padded input"),
    (["--steps", "--pool", "max", "-k", "2", "--w", "1,2;3,4"], "no kernel weights"),
    (["--steps", "--matrix", "-k", "3"], "cannot be combined"),
    (["--steps", "-k", "9", "-i", "9"], "too large to write out"),
])
def test_what_cannot_be_written_out_is_one_line_and_exit_2(capsys, args, msg):
    assert msg in fails(capsys, *args)  # fails() runs `cvtool convcalc ARGS`
