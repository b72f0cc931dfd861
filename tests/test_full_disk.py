"""A full disk (issue 22): every writer (masks, overlays, checkpoints, CSV, JSON, ONNX, plots) leaves no partial
file and keeps the previous good one, and the command says in one line which path could not be written (exit 2,
not 70). The disk fills in the middle of a write: each patched writer puts half a file down, then raises ENOSPC.
"""

from __future__ import annotations

import errno
import json
import pathlib
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from conftest import cli, one_line
from test_inference import tiny_checkpoint

from cvtool.data.io import write_mask_png, write_overlay_png
from cvtool.errors import WriteError

FULL = "No space left on device"


def half_then_full(path) -> None:
    with open(path, "wb") as f:
        f.write(b"half a file")
    raise OSError(errno.ENOSPC, FULL)


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def full_png(monkeypatch):
    from PIL import Image

    monkeypatch.setattr(Image.Image, "save", lambda self, fp, *a, **k: half_then_full(fp))


@pytest.fixture
def full_bytes(monkeypatch):
    monkeypatch.setattr(pathlib.Path, "write_bytes", lambda self, data: half_then_full(self))


def test_mask_and_overlay_keep_the_previous_file(tmp_path, monkeypatch):
    mask = np.array([[0, 1], [2, 1]], np.uint8)
    write_mask_png(tmp_path / "a_mask.png", mask, [(0, 0, 0), (255, 0, 0), (0, 255, 0)])
    write_overlay_png(tmp_path / "a_overlay.png", np.zeros((2, 2, 3), np.uint8), mask, [(0, 0, 0)] * 3)
    before = files(tmp_path)
    from PIL import Image

    monkeypatch.setattr(Image.Image, "save", lambda self, fp, *a, **k: half_then_full(fp))
    for name, write in (("a_mask.png", lambda p: write_mask_png(p, mask * 0, [(0, 0, 0)] * 3)),
                        ("a_overlay.png", lambda p: write_overlay_png(p, np.ones((2, 2, 3), np.uint8), mask,
                                                                      [(9, 9, 9)] * 3))):
        with pytest.raises(WriteError) as e:
            write(tmp_path / name)
        assert e.value.message == f"cannot write {tmp_path / name}: {FULL}" and e.value.exit_code == 2
        assert e.value.hint == f"free space on that disk or write elsewhere; the earlier {name} is kept"
    assert files(tmp_path) == before  # the good files as they were, no temp file beside them


def test_segment_on_a_full_disk_is_one_line_naming_the_mask(tmp_path, capsys, full_png):
    model = tiny_checkpoint(tmp_path / "m.safetensors", in_channels=1, num_classes=3)
    img = tmp_path / "in" / "a.png"
    img.parent.mkdir()
    img.write_bytes(_png_bytes(np.arange(64, dtype=np.uint8).reshape(8, 8)))
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "segment", str(img), "-m", str(model), "--backend", "numpy", "--out", str(out))
    assert code == 2 and stdout == "", err
    assert one_line(err).startswith(f"error: cannot write {out / 'a_mask.png'}: {FULL}")
    assert list(out.iterdir()) == []  # no partial mask, no temp file


def _png_bytes(a: np.ndarray) -> bytes:
    """A PNG written without Pillow's Image.save (which the full disk patches)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w = a.shape
    raw = b"".join(b"\0" + a[r].tobytes() for r in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_train_on_a_full_disk_keeps_no_partial_checkpoint(tmp_path, capsys, monkeypatch):
    from safetensors import SafetensorError

    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a checkpoint")
        raise SafetensorError(FULL)  # what safetensors raises there: not an OSError

    monkeypatch.setattr(safetensors.numpy, "save_file", full)
    run = tmp_path / "run"
    code, stdout, err = cli(capsys, "train", "--backend", "numpy", "--epochs", "1", "--synth-images", "8",
                            "--batch-size", "4", "--img-size", "16", "--width", "4", "--depth", "1", "--workers", "1",
                            "--out", str(run))
    assert code == 2 and stdout == "" and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]  # after the data and model lines, and the bar
    assert last.startswith(f"error: cannot write {run}/") and f".safetensors: {FULL}" in last, err
    assert not run.exists()  # no partial checkpoint, no temp file: the folder it claimed is released


def test_csv_keeps_the_previous_file(tmp_path, monkeypatch):
    from cvtool.train.records import write_metrics

    history = [{"epoch": 1, "mean_iou": 0.5}]
    write_metrics(tmp_path, history)
    before = files(tmp_path)
    monkeypatch.setattr(pathlib.Path, "write_bytes", lambda self, data: half_then_full(self))  # the disk fills midway
    with pytest.raises(WriteError, match=f"cannot write {tmp_path / 'metrics.csv'}: {FULL}"):
        write_metrics(tmp_path, history + [{"epoch": 2, "mean_iou": 0.6}])
    assert files(tmp_path) == before


def test_json_keeps_the_previous_file_and_data_synth_names_it(tmp_path, capsys, monkeypatch):
    out = tmp_path / "d"
    code, _, err = cli(capsys, "data", "synth", "--out", str(out), "-n", "2", "--size", "16")
    assert code == 0, err
    before = (out / "classes.json").read_bytes()
    monkeypatch.setattr(pathlib.Path, "write_bytes", lambda self, data: half_then_full(self))
    code, stdout, err = cli(capsys, "data", "synth", "--out", str(out), "-n", "2", "--size", "16", "--seed", "1",
                            "--force")
    assert code == 2 and stdout == ""
    assert one_line(err) == (f"error: cannot write {out / 'classes.json'}: {FULL} (hint: free space on that disk or "
                             "write elsewhere; the earlier classes.json is kept)")
    assert (out / "classes.json").read_bytes() == before and json.loads(before)["source"]["seed"] == 0
    assert sorted(p.name for p in out.iterdir()) == ["classes.json", "images", "masks"]


def test_export_on_a_full_disk_keeps_the_earlier_onnx(tmp_path, capsys, monkeypatch):
    model = tiny_checkpoint(tmp_path / "m.safetensors", in_channels=1, num_classes=3)
    onnx_path = tmp_path / "model.onnx"
    code, _, err = cli(capsys, "export", str(model), "-o", str(onnx_path), "--no-verify")
    assert code == 0, err
    before = files(tmp_path)
    monkeypatch.setattr(pathlib.Path, "write_bytes", lambda self, data: half_then_full(self))
    code, stdout, err = cli(capsys, "export", str(model), "-o", str(onnx_path), "--no-verify")
    assert code == 2 and stdout == "" and one_line(err).startswith(f"error: cannot write {onnx_path}: {FULL}")
    assert files(tmp_path) == before


def test_plot_keeps_the_previous_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from cvtool.plot import line_chart

    line_chart(tmp_path / "curves.png", [1, 2], {"loss": [1.0, 0.5]}, {"mIoU": [0.1, 0.2]})
    before = files(tmp_path)
    monkeypatch.setattr(Figure, "savefig", lambda self, fname, *a, **k: half_then_full(fname))
    with pytest.raises(WriteError, match=f"cannot write {tmp_path / 'curves.png'}: {FULL}"):
        line_chart(tmp_path / "curves.png", [1, 2, 3], {"loss": [1.0, 0.5, 0.2]}, {"mIoU": [0.1, 0.2, 0.3]})
    assert files(tmp_path) == before


def test_json_on_stdout_to_a_full_disk_is_one_line(tmp_path, capsys, monkeypatch):
    """`cvtool ... --json > file` where the disk fills: the system's error, one line, exit 2 (not an internal error)."""
    import sys

    def full(text):
        raise OSError(errno.ENOSPC, FULL)

    monkeypatch.setattr(sys.stdout, "write", full)
    code, _, err = cli(capsys, "convcalc", "-i", "5", "-k", "3", "--json")
    assert code == 2 and one_line(err) == f"error: cannot write the output: {FULL}"
