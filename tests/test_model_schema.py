"""Model metadata is checked once, against cvtool/model/schema.py, where a checkpoint or an ONNX export is opened:
a file with a wrong type, a value out of range or parts that disagree is one line naming the field, exit 2."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import cli
from PIL import Image
from test_inference import tiny_checkpoint

from cvtool.bounds import Bound
from cvtool.errors import DataError
from cvtool.model import checkpoint as ckpt_io
from cvtool.model.schema import Fields, Flag, Items, Maybe, Num, Text, check, validate_meta


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------- the checker on literal schemas

SMALL = Fields({"n": Num(Bound(lo=1, integer=True)), "tags": Items(Text(("a", "b")), min_len=1),
                "rgb": Items(Num(Bound(lo=0, hi=255, integer=True)), length=3), "on": Flag(), "note": Maybe(Text())},
               required=("n",), closed=True)


@pytest.mark.parametrize("doc, field, problem", [
    ({"n": "3"}, "n", "must be a whole number at least 1, got a string"),
    ({"n": True}, "n", "must be a whole number at least 1, got true/false"),
    ({"n": 0}, "n", "must be a whole number at least 1, got 0"),
    ({"n": math.nan}, "n", "must be a whole number at least 1, got nan"),
    ({}, "n", "is missing"),
    ({"n": 1, "tags": []}, "tags", "must hold at least 1 values, got 0"),
    ({"n": 1, "tags": ["a", "c"]}, "tags[1]", "must be one of a, b, got 'c'"),
    ({"n": 1, "rgb": [0, 999, 0]}, "rgb[1]", "must be a whole number from 0 to 255, got 999"),
    ({"n": 1, "rgb": [0, 0]}, "rgb", "must hold 3 values, got 2"),
    ({"n": 1, "on": 1}, "on", "must be true or false, got 1"),
    ({"n": 1, "note": 5}, "note", "must be a string, got 5"),
    ({"n": 1, "extra": 1}, "extra", "is not a field this version knows"),
    ([1], "", "must be an object, got a list"),
])
def test_check_names_the_first_field_that_does_not_fit(doc, field, problem):
    with pytest.raises(ValueError) as e:
        check(doc, SMALL, "")
    assert e.value.args == (field, problem)


def test_values_that_fit_pass():
    check({"n": 2, "tags": ["b"], "rgb": [0, 128, 255], "on": False, "note": None}, SMALL, "")


# ---------------------------------------------------------------- real files, each corrupted in one field

def edited(meta: dict, path: str, value) -> dict:
    """meta with the field at path ('normalization.std.0') set to value; value DELETE removes it."""
    meta = copy.deepcopy(meta)
    *parents, last = path.split(".")
    node = meta
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    key = int(last) if isinstance(node, list) else last
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return meta


DELETE = object()

CORRUPT = [  # (field to change, new value, what the message names)
    ("spec.width", "16", "spec.width"),  # was: a TypeError deep inside, or "could not convert string to float"
    ("spec.in_channels", 2.5, "spec.in_channels"),
    ("spec.depth", 99, "spec.depth"),
    ("spec.activation", "swish", "spec.activation"),
    ("spec.num_classes", 300, "spec.num_classes"),
    ("colors.1", [999, 0, 0], "colors[1][0]"),  # was: OverflowError: 999 out of bounds for uint8
    ("colors.0", "red", "colors[0]"),
    ("normalization.std.0", 0.0, "normalization.std[0]"),  # was: masks of NaN, RuntimeWarnings
    ("normalization.std.0", math.nan, "normalization.std[0]"),
    ("normalization.mean.0", math.inf, "normalization.mean[0]"),
    ("normalization.mean", [0.5, 0.5], "normalization.mean"),  # 2 values for 1 input channel
    ("classes", ["a", "b"], "classes"),  # 2 names for 3 outputs: was: classes silently dropped from the fractions
    ("classes.0", 5, "classes[0]"),
    ("colors", [[0, 0, 0], [1, 1, 1]], "colors"),
    ("preprocess", {"scale": "x"}, "preprocess.scale"),
    ("preprocess", {"tta": "rotate"}, "preprocess.tta"),
    ("spec", DELETE, "spec"),
    ("train_state", {"config": {"lr": "fast"}}, "train_state.config.lr"),
]


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> tuple[Path, dict]:
    path = tiny_checkpoint(tmp_path_factory.mktemp("good") / "good.safetensors", in_channels=1, num_classes=3, depth=1)
    return path, ckpt_io.read_meta(path)


def write_checkpoint(good: Path, meta: dict, dest: Path) -> Path:
    from safetensors.numpy import load_file, save_file

    save_file(load_file(str(good)), str(dest), metadata={ckpt_io.META_KEY: json.dumps(meta)})
    return dest


@pytest.mark.parametrize("field, value, named", CORRUPT, ids=[f"{f}={'deleted' if v is DELETE else repr(v)}"[:40] for f, v, _ in CORRUPT])
def test_a_checkpoint_with_a_bad_field_is_refused_naming_it(capsys, tmp_path, good, field, value, named):
    path = write_checkpoint(good[0], edited(good[1], field, value), tmp_path / "bad.safetensors")
    with pytest.raises(DataError) as e:
        ckpt_io.read_meta(path)
    assert f"metadata field {named} " in e.value.message and e.value.message.startswith(str(path)), e.value.message
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    for args in (["segment", str(image), "--model", str(path), "--backend", "numpy", "--out", str(tmp_path / "o")],
                 ["convcalc", "--model", str(path)]):
        code, _, err = cli(capsys, *args)
        line = one_line(err)
        assert code == 2 and f"metadata field {named} " in line, line
    assert not (tmp_path / "o").exists()  # refused before any output


def test_the_good_checkpoint_passes(good):
    assert validate_meta(good[1], "good") is good[1]


@pytest.mark.parametrize("field, value, named", [CORRUPT[0], CORRUPT[5], CORRUPT[7], CORRUPT[11]],
                         ids=["width", "colour", "std", "classes"])
def test_an_onnx_export_with_a_bad_field_is_refused_naming_it(capsys, tmp_path, good, field, value, named):
    import onnx

    from cvtool_backends.onnx_format.export import META_KEY, read_meta

    out = tmp_path / "m.onnx"
    code, _, err = cli(capsys, "export", str(good[0]), "-o", str(out), "--no-verify")
    assert code == 0, err
    model = onnx.load(str(out))
    meta = edited(read_meta(model), field, value)
    for p in model.metadata_props:
        if p.key == META_KEY:
            p.value = json.dumps(meta)
    onnx.save(model, str(out))
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    for backend in ("ort", "numpy"):
        code, _, err = cli(capsys, "segment", str(image), "--model", str(out), "--backend", backend,
                           "--out", str(tmp_path / "o"))
        line = one_line(err)
        assert code == 2 and f"metadata field {named} " in line and str(out) in line, line
    code, _, err = cli(capsys, "export", str(good[0]), "-o", str(out), "--verify-only")
    assert code == 2 and f"metadata field {named} " in one_line(err)
