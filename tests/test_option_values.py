"""Numeric options: finite and in range (cvtool/bounds.py), refused with one line naming the option and exit 2;
and sizes whose arrays cannot fit in memory refused before anything is allocated (cvtool/footprint.py)."""

from __future__ import annotations

import math
import tracemalloc

import pytest
from conftest import cli

from cvtool import footprint
from cvtool.bounds import COUNT, FRACTION, OPEN_FRACTION, POSITIVE, SEED, Bound, check
from cvtool.errors import UsageError
from cvtool.model.footprint import unet_needs
from cvtool.model.spec import ModelSpec


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------- the rule

@pytest.mark.parametrize("bound, inside, outside", [
    (POSITIVE, [1e-300, 5e-3, 1e300], [0, 0.0, -1e-9, math.nan, math.inf, -math.inf]),
    (FRACTION, [0, 0.0, 0.5, 1], [-1e-12, 1.0000001, math.nan]),
    (OPEN_FRACTION, [1e-9, 0.999], [0, 1, math.nan]),
    (COUNT, [1, 2**31 - 1], [0, -1, 2**31, 1.5, math.inf, True]),  # said "a whole number at least 1 (at most 2**31 - 1)"
    (SEED, [0, 2**32 - 1], [-1, 2**32, math.nan]),
    (Bound(lo=0, hi=6, integer=True), [0, 3, 6, 4.0], [7, -1, 2.5]),
])
def test_bound_holds_what_it_says(bound, inside, outside):
    assert all(bound.holds(v) for v in inside), [v for v in inside if not bound.holds(v)]
    assert not any(bound.holds(v) for v in outside), [v for v in outside if bound.holds(v)]


def test_check_names_the_option_the_range_and_the_value():
    assert check("--lr", 0.5, POSITIVE) == 0.5 and check("--lr", None, POSITIVE) is None
    with pytest.raises(UsageError) as e:
        check("--lr", math.inf, POSITIVE)
    assert e.value.message == "--lr must be a finite number greater than 0, got inf" and e.value.exit_code == 2
    with pytest.raises(UsageError) as e:
        check("--tile", 0, COUNT)
    assert e.value.message == "--tile must be a whole number at least 1 (at most 2**31 - 1), got 0"
    with pytest.raises(UsageError) as e:
        check("--seed", -1, SEED)
    assert e.value.message == "--seed must be a whole number from 0 to 4294967295, got -1"


# ---------------------------------------------------------------- every command's numeric options

BAD = [
    (["train", "--lr", "inf"], "--lr"),  # was: "diverged", exit 3
    (["train", "--lr", "nan"], "--lr"),
    (["train", "--time", "nan", "--plan", "--data", "nowhere"], "--time"),  # was: ValueError, exit 70
    (["train", "--time", "inf"], "--time"),  # was: OverflowError
    (["train", "--time", "0"], "--time"),
    (["train", "--seed", "-1"], "--seed"),  # was: ValueError, exit 70
    (["train", "--workers", "-1"], "--workers"),  # was: RuntimeError from torch.set_num_threads, exit 70
    (["train", "--batch-size", "0"], "--batch-size"),
    (["train", "--img-size", "-8"], "--img-size"),
    (["train", "--weight-decay", "nan"], "--weight-decay"),
    (["train", "--warmup", "1"], "--warmup"),
    (["train", "--val-split", "1"], "--val-split"),
    (["train", "--dice", "-inf"], "--dice"),
    (["train", "--scale", "nan"], "--scale"),
    (["train", "--elastic", "inf"], "--elastic"),
    (["train", "--depth", "7"], "--depth"),
    (["train", "--epochs", "0"], "--epochs"),
    (["segment", "x.png", "--alpha", "nan"], "--alpha"),
    (["segment", "x.png", "--alpha", "1.5"], "--alpha"),
    (["segment", "x.png", "--tile", "0"], "--tile"),
    (["segment", "x.png", "--batch-size", "-3"], "--batch-size"),
    (["bench", "--min-time", "inf"], "--min-time"),
    (["bench", "--threads", "0"], "--threads"),
    (["bench", "--seed", "-5"], "--seed"),
    (["bench", "--rounds", "0"], "--rounds"),
    (["bench", "--gemm-size", "-1"], "--gemm-size"),
    (["bench", "--sizes", "0,16"], "--sizes"),
    (["bench", "--op", "conv2d", "-c", "0"], "--channels"),
    (["convcalc", "-i", "5", "-k", "3", "--backward", "--lr", "nan"], "--lr"),
    (["convcalc", "-i", "0", "-k", "3"], "input size"),
    (["convcalc", "-i", "8", "-c", "0", "--chain", "conv k3"], "--channels"),
    (["convcalc", "-i", "5", "-k", "3", "--matrix", "--seed", "-1"], "--seed"),
    (["data", "synth", "--out", "d", "-n", "0"], "--n"),
    (["data", "synth", "--out", "d", "-n", "1", "--size", "7"], "--size"),
    (["data", "check", "synth", "--val-split", "nan"], "--val-split"),
    (["export", "m.safetensors", "-o", "m.onnx", "--opset", "0"], "--opset"),
    (["val", "m.safetensors", "d", "--alpha", "nan"], "--alpha"),
    (["val", "m.safetensors", "d", "--seed", "-1"], "--seed"),
    (["val", "m.safetensors", "d", "--val-split", "inf"], "--val-split"),
    (["val", "m.safetensors", "d", "--worst", "-1"], "--worst"),
]


@pytest.mark.parametrize("args, flag", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_a_number_out_of_range_is_one_line_and_exit_2(capsys, tmp_path, monkeypatch, args, flag):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, *args)
    line = one_line(err)
    assert code == 2 and flag in line and "internal error" not in line, line
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


# ---------------------------------------------------------------- memory

def test_meminfo_and_cgroup_are_read_in_bytes(tmp_path, monkeypatch):
    (tmp_path / "meminfo").write_text("MemTotal:       24683568 kB\nMemAvailable:    1000 kB\nHugePages_Total:       0\n")
    assert footprint._meminfo(str(tmp_path / "meminfo")) == {"MemTotal": 24683568 * 1024, "MemAvailable": 1024000,
                                                     "HugePages_Total": 0}
    assert footprint._meminfo(str(tmp_path / "absent")) == {}
    (tmp_path / "memory.max").write_text("max\n")
    assert footprint._cgroup_left(str(tmp_path)) is None
    (tmp_path / "memory.max").write_text("5000\n")
    (tmp_path / "memory.current").write_text("1200\n")
    assert footprint._cgroup_left(str(tmp_path)) == 3800
    monkeypatch.setattr(footprint, "_meminfo", lambda: {"MemAvailable": 10_000})
    monkeypatch.setattr(footprint, "_cgroup_left", lambda: None)
    assert footprint.available_bytes() == 10_000
    monkeypatch.setattr(footprint, "_cgroup_left", lambda: 3800)
    assert footprint.available_bytes() == 3800  # a container's limit below the machine's free memory wins
    monkeypatch.setattr(footprint, "_meminfo", lambda: {})
    monkeypatch.setattr(footprint, "_cgroup_left", lambda: None)
    assert footprint.available_bytes() > 0  # the physical memory, from sysconf


def test_array_sizes_do_not_overflow():
    assert footprint.array("x", (2, 3, 4), 8).bytes == 192
    assert footprint.array("x", (10**12, 10**12), 8).bytes == 8 * 10**24  # Python ints: no wrap-around
    assert footprint.size_text(894 * footprint.GiB) == "894 GiB" and footprint.size_text(1536) == "1.5 KiB"


def test_unet_training_needs_count_every_layer_output_by_hand():
    # width 2, depth 1, no norm, 1 x 1 x 4 x 4: enc0 conv1/act1/conv2/act2 2x4x4 each (128), pool0 2x2x2 (8),
    # mid four of 4x2x2 (64), up0 2x4x4 (32), cat0 4x4x4 (64), dec0 four of 2x4x4 (128); the head is the logits
    spec = ModelSpec(in_channels=1, num_classes=2, width=2, depth=1, norm="none")
    needs = {n.what: n.bytes for n in unet_needs(spec, 1, 4, 4, training=True)}
    # weights: conv 1->2 (18 + 2), 2->2 (36 + 2), 2->4 (72 + 4), 4->4 (144 + 4), up 4->2 2x2 (32 + 2),
    # 4->2 (72 + 2), 2->2 (36 + 2), head 2->2 1x1 (4 + 2): 434 values, drawn in float64
    assert needs == {"the weights of a width-2 depth-1 U-Net (unet encoder)": 8 * 434, "the input batch 1x1x4x4": 64,
                     "the logits 1x2x4x4": 128,
                     "the activations kept for the backward pass": 4 * (128 + 8 + 64 + 32 + 64 + 128),
                     "the largest activation's gradient": 4 * 64}
    infer = {n.what: n.bytes for n in unet_needs(spec, 1, 4, 4, itemsize=8)}
    assert infer["the largest layer output"] == 8 * 64  # cat0, 4 x 4 x 4


def test_layer_shapes_follow_the_formulas_on_the_lite0_graph():
    """Strided, SAME-padded and depthwise convolutions: the logits come out at the input's size, and the stride-32
    bottom at 224 / 32 = 7 (EfficientNet-Lite0's last feature map)."""
    from cvtool.model.spec import trace

    spec = ModelSpec(in_channels=3, num_classes=2, depth=5, encoder="lite0")
    shapes = {t.name: t.out_shape for t in trace(spec, (224, 224))}
    assert shapes[spec.graph()[-1].name] == (2, 224, 224)
    assert min(h for _, h, _ in shapes.values()) == 7
    need = {n.what: n.bytes for n in unet_needs(spec, 2, 224, 224, training=True)}  # trace's shapes, every layer
    assert need["the activations kept for the backward pass"] == 2 * 4 * sum(
        math.prod(s) for k, s in shapes.items() if k != spec.graph()[-1].name)


def test_require_compares_with_the_memory_given():
    needs = [footprint.Need("a", 600), footprint.Need("b", 500)]
    assert footprint.require(needs, doing="x", available=1100) == 1100
    with pytest.raises(UsageError) as e:
        footprint.require(needs, doing="work", hint="smaller", available=1099)
    assert e.value.message == ("work needs at least 1.07 KiB of memory for its arrays (a alone is 600 bytes), more "
                               "than the 1.07 KiB available here") and e.value.hint == "smaller"


HUGE = [
    ["train", "--img-size", "100000", "--epochs", "1"],  # was: MemoryError 74.5 GiB, exit 70
    ["train", "--data", "synth", "--img-size", "100000", "--plan"],
    ["convcalc", "-i", "1000000000000", "-k", "3", "--matrix"],  # was: ValueError: array is too big
    ["convcalc", "-i", "1000000000000", "-k", "3", "--steps"],
    ["convcalc", "-i", "1000000000000", "--backward", "--activation", "relu"],
    ["convcalc", "-i", "100000", "-k", "3", "--verify"],  # was: MemoryError 447 GiB
    ["bench", "--sizes", "100000"],  # was: MemoryError 112 GiB
    ["bench", "--op", "conv2d", "-c", "100000"],  # was: MemoryError 671 GiB
    ["bench", "--gemm-size", "1000000"],
    ["bench", "--model", "default", "--width", "100000"],  # was: MemoryError drawing the weights
    ["data", "synth", "--out", "big", "-n", "1", "--size", "1000000"],
]


@pytest.mark.parametrize("args", HUGE, ids=[" ".join(a) for a in HUGE])
def test_arrays_that_cannot_fit_are_refused_before_allocation(capsys, tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    tracemalloc.start()
    try:
        code, out, err = cli(capsys, *args)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    line = one_line(err)
    assert code == 2 and ("memory" in line or "too large" in line or "too many" in line), line
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB allocated before the refusal"
    assert list(tmp_path.iterdir()) == []


def test_the_limit_is_this_machine_s_memory_not_a_fixed_size(capsys, monkeypatch):
    """--verify at 512 px takes about 30 MB: run with 20 MB 'available' it is refused, naming what it needs."""
    monkeypatch.setattr(footprint, "available_bytes", lambda: 20 * 2**20)
    code, _, err = cli(capsys, "convcalc", "-i", "512", "-k", "3", "--verify", "--backend", "numpy")
    line = one_line(err)
    assert code == 2 and "more than the 20 MiB available here" in line and "--verify at 512x512" in line, line
