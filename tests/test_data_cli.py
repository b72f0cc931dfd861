"""`cvtool data synth` and `cvtool data check` through the real entry point (one-line errors, exit codes)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import cli, shared_dataset
from test_data import MEMBRANE, bad_dataset  # tests/ is on sys.path under pytest

from cvtool.data import check_dataset, open_datasets
from cvtool.data.synth import CLASSES, SynthDataset


def test_synth_written_to_disk_reads_back_equal(tmp_path, capsys):
    code, out, err = cli(capsys, "data", "synth", "--out", str(tmp_path), "-n", "6", "--size", "40", "--seed", "5",
                         "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["n"] == 6 and doc["classes"] == CLASSES and abs(sum(doc["pixel_fractions"]) - 1) < 1e-9
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [f"{i:05d}.png" for i in range(6)]
    assert json.loads((tmp_path / "classes.json").read_text())["classes"] == CLASSES
    tr, va, info = open_datasets(str(tmp_path), val_split=0)
    assert info.classes == CLASSES and info.in_channels == 3 and len(tr) == 6 and len(va) == 0
    ref = SynthDataset(6, 40, seed=5)
    for i in range(6):
        s = tr[i]
        np.testing.assert_array_equal(s.image, ref[int(s.name)].image)
        np.testing.assert_array_equal(s.mask, ref[int(s.name)].mask)
    st = check_dataset(tr)
    np.testing.assert_allclose(st.fractions(), doc["pixel_fractions"])
    code, _, err = cli(capsys, "data", "synth", "--out", str(tmp_path), "-n", "2")
    assert code == 2 and "already holds a dataset" in err  # no silent mixing of two data sets


@pytest.mark.parametrize("kind", ["value", "size", "missing", "corrupt"])
def test_check_bad_dataset_exits_2_with_one_line(tmp_path, capsys, kind):
    name = bad_dataset(tmp_path, kind)
    code, out, err = cli(capsys, "data", "check", str(tmp_path))
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and name in lines[0]


def test_check_json_on_a_good_folder(tmp_path, capsys):
    bad_dataset(tmp_path, "missing")
    (tmp_path / "images" / "im3.png").unlink()  # now every image has its mask
    code, out, _ = cli(capsys, "data", "check", str(tmp_path), "--val-split", "0.25", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["format"] == "folder" and (doc["n_train"], doc["n_val"]) == (2, 1)
    for part in ("train", "val"):
        fr = [c["fraction"] for c in doc[part]["classes"]]
        assert [c["name"] for c in doc[part]["classes"]] == ["a", "b", "c"] and abs(sum(fr) - 1) < 1e-9
        assert doc[part]["pixels"] == doc[f"n_{part}"] * 12 * 16


def test_check_membrane_table(capsys):
    shared_dataset("membrane")
    code, out, _ = cli(capsys, "data", "check", str(MEMBRANE))
    assert code == 0 and "24 train + 6 val" in out and "binary 0/255 masks mapped to 0/1" in out
    assert "foreground" in out and "0.782" in out  # cell interior share of the training pixels


def test_check_missing_folder(capsys, tmp_path):
    code, _, err = cli(capsys, "data", "check", str(tmp_path / "nope"))
    assert code == 2 and "no such dataset folder" in err and len(err.strip().splitlines()) == 1
