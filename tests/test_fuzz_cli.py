"""A guard that finds the next bad input: the commands driven with generated option values (NaN, infinities,
negatives, 0, huge, garbage strings) and generated files (truncated PNGs, files of the wrong type, PNG headers that
lie about their size, checkpoints with garbage metadata, datasets with one bad file).

Whatever they get, no run may end in exit 70 (a bug) or print a traceback, an exit >= 2 must say `error: ...`, and
nothing outside the run's --out may change (the one exception: runs/.cache, cvtool's fingerprint cache). The fast
tier runs a few deterministic examples per command; the slow tier many random ones.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_inference import tiny_checkpoint
from test_train_cli import write_dataset

NUMBERS = ["nan", "inf", "-inf", "-1", "0", "-0", "1e309", "1e-320", "99999999999999999999", "2147483648", "100000", "abc", "",
           "0x10", "1", "2", "0.5", "16"]
FAST = settings(max_examples=4, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
MANY = settings(max_examples=60, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# ---------------------------------------------------------------- generated files

def png_bytes(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def lying_png(width: int, height: int) -> bytes:
    """A PNG signature and an IHDR (with a correct CRC) claiming width x height, then one empty IDAT and IEND."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


GOOD_PNG = png_bytes(np.arange(64, dtype=np.uint8).reshape(8, 8))
image_files = st.one_of(
    st.just(GOOD_PNG),
    st.integers(0, len(GOOD_PNG) - 1).map(lambda n: GOOD_PNG[:n]),  # truncated
    st.just(b"this is a text file, not an image\n"),  # the wrong type
    st.builds(lying_png, st.sampled_from([0, 1, 60000, 2**31 - 1]), st.sampled_from([1, 60000, 2**31 - 1])),
    st.binary(max_size=64),
)
json_values = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(), st.text(max_size=4),
                        st.lists(st.integers(-5, 300), max_size=4), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                                    max_size=2))
META_FIELDS = ["spec.width", "spec.depth", "spec.in_channels", "spec.num_classes", "spec.activation", "classes",
               "classes.0", "colors", "colors.0", "colors.0.1", "normalization.mean", "normalization.std.0",
               "preprocess", "format", "train_state"]


def set_field(meta: dict, path: str, value) -> dict:
    meta = json.loads(json.dumps(meta))
    *parents, last = path.split(".")
    node = meta
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[int(last) if isinstance(node, list) else last] = value
    return meta


@st.composite
def model_files(draw, good: Path) -> tuple[str, bytes | dict]:
    """('good', b'') | ('meta', garbage metadata) | ('bytes', a corrupt .safetensors) | ('onnx', a corrupt .onnx)."""
    kind = draw(st.sampled_from(["good", "meta", "meta", "bytes", "onnx"]))
    if kind == "meta":
        from cvtool.model import checkpoint as ckpt_io

        meta = json.loads(json.dumps(_META_CACHE.setdefault(str(good), ckpt_io.read_meta(good))))
        return kind, set_field(meta, draw(st.sampled_from(META_FIELDS)), draw(json_values))
    if kind == "bytes":
        data = good.read_bytes()
        return kind, data[:draw(st.integers(0, len(data) - 1))]
    if kind == "onnx":
        return kind, draw(st.binary(max_size=64))
    return kind, b""


_META_CACHE: dict[str, dict] = {}


def write_model(kind: str, payload, good: Path, where: Path) -> Path:
    if kind == "good":
        return good
    if kind == "meta":
        from safetensors.numpy import load_file, save_file

        dest = where / "model.safetensors"
        save_file(load_file(str(good)), str(dest), metadata={"cvtool": json.dumps(payload)})
        return dest
    dest = where / ("model.onnx" if kind == "onnx" else "model.safetensors")
    dest.write_bytes(payload)
    return dest


# ---------------------------------------------------------------- the workspace and its snapshot

@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("fuzz")
    return {"root": root, "model": tiny_checkpoint(root / "good.safetensors", in_channels=1, num_classes=3, depth=1),
            "data": write_dataset(root / "data", 10, 24), "n": [0]}


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root but the runs' --out folders and cvtool's own cache: path -> sha256."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[0] not in ("out", "runs")}


def run_guarded(capsys, ws: dict, args: list[str]) -> int:
    before = snapshot(ws["root"])
    code, out, err = cli(capsys, *map(str, args))
    assert code != 70 and "Traceback" not in err and "Traceback" not in out, (args, err)
    if code >= 2:
        assert any(line.startswith("error: ") for line in err.splitlines()), (args, err)
    assert snapshot(ws["root"]) == before, f"{args} changed files outside --out"
    return code


def fresh(ws: dict) -> tuple[Path, Path]:
    """(a new folder for this example's input files, this example's --out, not yet created)."""
    ws["n"][0] += 1
    k = ws["n"][0]
    inputs = ws["root"] / "inputs" / str(k)
    shutil.rmtree(ws["root"] / "inputs", ignore_errors=True)
    inputs.mkdir(parents=True)
    return inputs, ws["root"] / "out" / str(k)


def bad_dataset(ws: dict, where: Path, victim: int, part: str, data: bytes) -> Path:
    """A copy of the workspace's dataset with one image or mask replaced by `data`."""
    dest = where / "data"
    shutil.copytree(ws["data"], dest)
    files = sorted((dest / part).iterdir())
    files[victim % len(files)].write_bytes(data)
    return dest


# ---------------------------------------------------------------- the commands

number = st.sampled_from(NUMBERS)
sizes = st.sampled_from(["16", "8", "0", "-1", "nan", "abc", "17", "100000", "99999999999999999999", "16,0", ""])


convcalc_modes = st.sampled_from([[], ["--matrix"], ["--steps"], ["--same"], ["--verify", "--backend", "numpy"],
                                  ["--backward"], ["--backward", "--lr"], ["-t", "--output-padding"]])


def _convcalc(capsys, ws, data):
    mode = list(data.draw(convcalc_modes))
    if mode[-1:] in (["--lr"], ["--output-padding"]):
        mode.append(data.draw(number))
    fresh(ws)
    padding = data.draw(st.sampled_from(["0", "1", "-1", "same", "nan", "99999999999"]))
    run_guarded(capsys, ws, ["convcalc", "-i", data.draw(sizes), "-k", data.draw(number), "-s", data.draw(number),
                             "-p", padding, *mode])


def _segment(capsys, ws, data):
    inputs, out = fresh(ws)
    image = inputs / data.draw(st.sampled_from(["a.png", "b.jpg", "c.tif"]))
    image.write_bytes(data.draw(image_files))
    model = write_model(*data.draw(model_files(ws["model"])), ws["model"], inputs)
    run_guarded(capsys, ws, ["segment", image, "--model", model, "--backend", "numpy", "--out", out,
                             "--tile", data.draw(number), "--batch-size", data.draw(number),
                             "--alpha", data.draw(number)])


def _data_check(capsys, ws, data):
    inputs, out = fresh(ws)
    folder = bad_dataset(ws, inputs, data.draw(st.integers(0, 9)), data.draw(st.sampled_from(["images", "masks"])),
                         data.draw(image_files))
    run_guarded(capsys, ws, ["data", "check", folder, "--val-split", data.draw(number), "--seed", data.draw(number)])


def _train_plan(capsys, ws, data):
    inputs, out = fresh(ws)
    folder = bad_dataset(ws, inputs, data.draw(st.integers(0, 9)), data.draw(st.sampled_from(["images", "masks"])),
                         data.draw(image_files))
    run_guarded(capsys, ws, ["train", "--data", folder, "--plan", "--backend", "numpy", "--workers", "1",
                             "--time", data.draw(number), "--img-size", data.draw(sizes), "--lr", data.draw(number),
                             "--seed", data.draw(number), "--batch-size", data.draw(number), "--out", out])


def _export(capsys, ws, data):
    inputs, out = fresh(ws)
    model = write_model(*data.draw(model_files(ws["model"])), ws["model"], inputs)
    name = data.draw(st.sampled_from(["m.onnx", "m"]))
    run_guarded(capsys, ws, ["export", model, "-o", out / name, "--opset", data.draw(number), "--no-verify"])


def _bench(capsys, ws, data):
    fresh(ws)
    op = data.draw(st.sampled_from([[], ["--op", "conv2d", "-c"], ["--op", "max_pool2d", "-c"]]))
    op = op + [data.draw(number)] if op else ["--model", "default", "--width", data.draw(number)]
    run_guarded(capsys, ws, ["bench", "--backend", "numpy", "--sizes", data.draw(sizes), "--batch-sizes",
                             data.draw(sizes), "--min-time", data.draw(st.sampled_from(["0", "0.01", "nan", "-1",
                                                                                        "inf"])),
                             "--warmup", data.draw(st.sampled_from(["1", "0", "-1", "nan"])), "--gemm-size",
                             data.draw(st.sampled_from(["0", "16", "-1", "99999999"])), *op])


COMMANDS = {"convcalc": _convcalc, "segment": _segment, "data check": _data_check, "train --plan": _train_plan,
            "export": _export, "bench": _bench}


def guarded_command(capsys, workspace, monkeypatch, command, data):
    monkeypatch.chdir(workspace["root"])
    COMMANDS[command](capsys, workspace, data)


def tier(how: settings):
    return pytest.mark.parametrize("command", COMMANDS)(how(given(data=st.data())(guarded_command)))


test_no_input_ends_in_a_bug_or_touches_other_files = tier(FAST)
test_many_inputs_end_in_no_bug_and_touch_no_other_files = pytest.mark.slow(tier(MANY))
