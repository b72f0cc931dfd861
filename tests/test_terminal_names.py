"""Names reach the terminal inert (issue 22): rich markup in a class or file name prints as itself, control
characters and ANSI escapes (a downloaded model's class names) as visible \\xNN text, the bytes of a file name
that is not UTF-8 as \\xNN. The helper by literal cases, then segment, data check and train end to end.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import cli
from PIL import Image
from test_inference import tiny_checkpoint

from cvtool.cli.output import safe
from cvtool.model import checkpoint as ckpt_io

HOSTILE = ["bg", "bad[/]name", "clear\x1b[2Jscreen", "[bold red]loud"]  # markup error, ANSI clear, a style


@pytest.mark.parametrize("text,shown,plain", [
    ("bad[/]name", "bad\\[/]name", "bad[/]name"),
    ("a\x1b[2Jb", "a\\x1b[2Jb", "a\\x1b[2Jb"),  # "[2J" is no markup tag: rich leaves it
    ("bell\x07", "bell\\x07", "bell\\x07"),
    ("two\nlines\ttab", "two\\x0alines\\x09tab", "two\\x0alines\\x09tab"),
    ("c1\x9b31m", "c1\\x9b31m", "c1\\x9b31m"),
    ("del\x7f", "del\\x7f", "del\\x7f"),
    (os.fsdecode(b"bad\xff.png"), "bad\\xff.png", "bad\\xff.png"),
    ("caf\u00e9 \u732b", "caf\u00e9 \u732b", "caf\u00e9 \u732b"),  # printable Unicode stays as it is
])
def test_safe_by_literal_cases(text, shown, plain):
    assert safe(text) == shown
    assert safe(text, markup=False) == plain


def test_safe_text_prints_as_itself_through_rich():
    from rich.console import Console

    buf = io.StringIO()
    con = Console(file=buf, force_terminal=True, color_system=None, width=200)
    for name in HOSTILE:
        con.print(f"class {safe(name)} done")
    printed = buf.getvalue()
    assert "\x1b" not in printed  # no escape sequence of the name's (and no style from "[bold red]")
    assert printed.splitlines() == ["class bg done", "class bad[/]name done", "class clear\\x1b[2Jscreen done",
                                    "class [bold red]loud done"]


@pytest.fixture(scope="module")
def hostile_model(tmp_path_factory) -> Path:
    path = tiny_checkpoint(tmp_path_factory.mktemp("model") / "m.safetensors", in_channels=1, num_classes=4)
    ck = ckpt_io.load(path)
    ck.meta.classes[:] = HOSTILE  # as a shared model's metadata could hold them
    return ckpt_io.save(ck, path)


@pytest.fixture(autouse=True)
def wide(monkeypatch):
    """Fresh consoles 250 columns wide: a table cell holds a whole name instead of wrapping or cutting it."""
    from cvtool.cli import output

    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setattr(output, "_out", None)
    monkeypatch.setattr(output, "_err", None)


def assert_inert(*texts: str) -> None:
    for t in texts:
        assert "\x1b" not in t and "Traceback" not in t and "internal error" not in t, t


def test_segment_prints_hostile_class_and_file_names_inert(hostile_model, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    names = ["x[red]y.png", "e\x1b[2Jz.png", os.fsdecode(b"bad\xff.png")]
    for i, name in enumerate(names):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (16, 20), dtype=np.uint8)).save(src / name)
    (src / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    code, out, err = cli(capsys, "segment", str(src), "-m", str(hostile_model), "--backend", "numpy",
                         "--out", str(tmp_path / "o"))
    assert code == 1, err  # cut.png fails alone, after the others were written and printed
    assert_inert(out, err)
    assert "x[red]y.png" in out and "e\\x1b[2Jz.png" in out and "bad\\xff.png" in out
    assert "bad[/]name" in out or "clear\\x1b[2Jscreen" in out or "[bold red]loud" in out  # the fractions' names
    assert len(list((tmp_path / "o").iterdir())) == 6
    code, out, err = cli(capsys, "segment", str(src / names[2]), "-m", str(hostile_model), "--backend", "numpy",
                         "--out", str(tmp_path / "j"), "--json")
    assert code == 0 and json.loads(out)["images"][0]["fractions"].keys() == set(HOSTILE)


def hostile_dataset(root: Path, n: int = 8) -> Path:
    """A folder dataset whose classes.json holds HOSTILE and whose file names hold markup, an escape, bad bytes."""
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    stems = [b"x[red]y", b"e\x1b[2Jz", b"bad\xff", b"ok"]
    rng = np.random.default_rng(0)
    for i in range(n):
        name = os.fsdecode(stems[i % len(stems)] + b"%d.png" % i)
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(root / "images" / name)
        m = np.zeros((16, 16), np.uint8)
        m[2:8, 2:8], m[9:14, 9:14], m[0, 8:] = 1, 2, 3
        Image.fromarray(m).save(root / "masks" / name)
    (root / "classes.json").write_text(json.dumps(HOSTILE))
    return root


def test_data_check_prints_hostile_names_inert_and_names_bad_bytes(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the fingerprint cache goes to runs/.cache here
    data = hostile_dataset(tmp_path / "d")
    code, out, err = cli(capsys, "data", "check", str(data))
    assert code == 0, err
    assert_inert(out, err)
    assert "bad[/]name" in out and "clear\\x1b[2Jscreen" in out and "[bold red]loud" in out
    os.remove(data / "masks" / os.fsdecode(b"bad\xff2.png"))  # an image without its mask: the error names it
    code, out, err = cli(capsys, "data", "check", str(data))
    assert code == 2 and err.strip() == (f"error: {data}/images/bad\\xff2.png: image without a mask "
                                         "(no mask file named 'bad\\xff2.*')"), err


def test_train_prints_hostile_names_inert(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = hostile_dataset(tmp_path / "d")
    code, out, err = cli(capsys, "train", "--data", str(data), "--epochs", "1", "--batch-size", "2", "--img-size", "16",
                         "--width", "4", "--depth", "1", "--workers", "1", "--backend", "numpy", "--out", "run")
    assert code == 0, err
    assert_inert(out, err)
    assert "bad[/]name" in out and "clear\\x1b[2Jscreen" in out and "[bold red]loud" in out  # the IoU table
    assert "classes bg, bad[/]name, clear\\x1b[2Jscreen, [bold red]loud" in err  # the data line


@pytest.mark.slow  # the plan measures its step time: about 4 s of CPU
def test_train_plan_prints_hostile_names_inert(tmp_path, capsys, monkeypatch):
    """The plan's reasons name classes (focus on rare ones): its table escapes them too."""
    monkeypatch.chdir(tmp_path)
    data = hostile_dataset(tmp_path / "d")
    code, out, err = cli(capsys, "train", "--data", str(data), "--plan", "--backend", "numpy", "--workers", "1")
    assert code == 0, err
    assert_inert(out, err)
    assert "bad[/]name, clear\\x1b[2Jscreen, [bold red]loud" in out


def test_plot_labels_show_hostile_names_inert(tmp_path):
    """A class name with an ESC in curves.png's legend: drawn as \\x1b text, so matplotlib has no glyph to warn about
    on the terminal ("Glyph 27 missing from font")."""
    import warnings

    from cvtool.plot import line_chart

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        line_chart(tmp_path / "c.png", [1, 2], {"loss": [1.0, 0.5]}, {f"IoU {n}": [0.1, 0.2] for n in HOSTILE},
                   title="run \x1b[2J", titles=["a\x07", "b"])
    assert (tmp_path / "c.png").stat().st_size > 0
