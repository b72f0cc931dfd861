"""`cvtool segment` through the real entry point: every source kind, odd sizes, tiles, the three
backends on real images, the ORT export cache, and every bad input (one line, others still done).

Oracle for the masks: the network run directly (NumPy reference runner) on the image padded by hand.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_dataset
from PIL import Image
from test_data import MEMBRANE  # tests/ is on sys.path under pytest
from test_data_cli import cli
from test_inference import COLORS, tiny_checkpoint

import cvtool_backends as registry
from cvtool.cli.segment import output_stems
from cvtool.data.io import read_image, read_mask, read_mask_info
from cvtool.model.checkpoint import load as load_checkpoint
from cvtool.model.inference import predict_batch, prepare
from cvtool.model.meta import ModelMeta
from cvtool.model.spec import ModelSpec


def reference_mask(ckpt_path: Path, image_path: Path) -> np.ndarray:
    """The mask computed without cvtool.cli: NumPy reference forward on the image edge-padded by hand."""
    ck = load_checkpoint(ckpt_path)
    x = prepare(read_image(image_path), ck.spec.in_channels, ck.meta.mean, ck.meta.std).x
    _, h, w = x.shape
    m = ck.spec.multiple
    xp = np.pad(x, ((0, 0), (0, -h % m), (0, -w % m)), mode="edge")
    return registry.get("numpy", "cpu").runner(ck.spec, ck.params)(xp[None])[0, :, :h, :w].argmax(0)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "m.safetensors", in_channels=1, num_classes=3)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Every format and colour mode, odd sizes down to 1x1; JPEG data so grey varies smoothly."""
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)

    def img(h, w, c=None):
        a = rng.integers(0, 256, (h, w) if c is None else (h, w, c)).astype(np.float64)
        return np.clip(a * 0.5 + np.roll(a, 1, 0) * 0.5, 0, 255).astype(np.uint8)

    Image.fromarray(img(37, 203)).save(d / "odd.png")
    Image.fromarray(img(1, 1)).save(d / "one.png")
    Image.fromarray(img(50, 60, 3)).save(d / "rgb.jpg", quality=95)
    Image.fromarray(img(20, 24, 4), "RGBA").save(d / "rgba.png")
    Image.fromarray(img(40, 30)).save(d / "gray.bmp")
    Image.fromarray(img(40, 30)).save(d / "gray.tif")
    Image.fromarray(img(33, 9, 3)).save(d / "rgb.tiff")
    return d


def check_outputs(doc: dict, n_classes: int = 3) -> None:
    """Every image: a palette mask of its size with our colours, an RGB overlay, fractions of that mask."""
    for r in doc["images"]:
        h, w = read_image(r["image"]).shape[:2]
        mask, mode, palette = read_mask_info(r["mask"])
        assert mode == "P" and mask.shape == (h, w) == tuple(r["size"]) and mask.max() < n_classes
        assert [palette[3 * i:3 * i + 3] for i in range(n_classes)] == COLORS[:n_classes]
        with Image.open(r["overlay"]) as ov:
            assert ov.mode == "RGB" and ov.size == (w, h)
        counts = np.bincount(mask.ravel(), minlength=n_classes) / mask.size
        np.testing.assert_allclose(list(r["fractions"].values()), counts)


@pytest.mark.parametrize("how", ["folder", "files", "glob"])
def test_every_source_kind_every_format(model, images, tmp_path, capsys, how):
    files = sorted(str(p) for p in images.iterdir())
    srcs = {"folder": [str(images)], "files": files, "glob": [str(images / "*.*")]}[how]
    code, out, err = cli(capsys, "segment", *srcs, "-m", str(model), "--backend", "numpy", "--out", str(tmp_path),
                         "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert sorted(r["image"] for r in doc["images"]) == files and doc["failed"] == []
    check_outputs(doc)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "gray_bmp_mask.png" in names and "gray_tif_mask.png" in names  # same stem: no overwriting
    assert len(names) == 2 * len(files)
    for r in doc["images"]:
        np.testing.assert_array_equal(read_mask(r["mask"]), reference_mask(model, Path(r["image"])))
    assert set(doc["ms_per_image"]) == {"preprocess", "inference", "postprocess"}


def test_output_stems_are_distinct():
    paths = [Path("a/x.png"), Path("b/x.png"), Path("x.jpg"), Path("y.png"), Path("x_png")]
    assert output_stems(paths) == ["x_png", "x_png_2", "x_jpg", "y", "x_png_3"]


def test_large_image_tiled_equals_untiled(model, tmp_path, capsys):
    """1000x1500 in 512-pixel tiles (ort: fast) and in one piece: the same mask; small batches of tiles; the net's
    pixels over the image's in --json. Depth 2 (margin 28): exact cores cost 3 x 372 by 4 x 420 px = 1.25x."""
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (250, 375), dtype=np.uint8)
    big = tmp_path / "big.png"
    Image.fromarray(np.kron(a, np.ones((4, 4), np.uint8))).save(big)
    masks = {}
    for tile in (512, None):
        out_dir = tmp_path / f"t{tile}"
        code, out, err = cli(capsys, "segment", str(big), "-m", str(model), "--backend", "ort", "-b", "2",
                             "--out", str(out_dir), "--json", *(["--tile", str(tile)] if tile else []))
        assert code == 0, err
        doc = json.loads(out)
        im = doc["images"][0]
        assert im["tiled"] == (tile == 512) and im["size"] == [1000, 1500]
        if tile:
            assert im["tiling"] == {"mode": "exact", "tiles": 12, "tile": [372, 420], "net_pixels": 12 * 372 * 420,
                                    "image_pixels": 1500000, "ratio": round(12 * 372 * 420 / 1.5e6, 4)}
            assert doc["forward_passes"] == 6 and doc["pixel_ratio"] == im["tiling"]["ratio"]
        else:  # whole: padded to 1000 x 1500 (multiple 4): the image's own pixels
            assert doc["forward_passes"] == 1 and doc["pixel_ratio"] == 1.0 and doc["tta_passes"] == 1
        masks[tile] = read_mask(im["mask"])
    assert (masks[512] == masks[None]).mean() >= 0.999
    assert len(np.unique(masks[512])) > 1  # not a trivial all-one-class mask


def test_small_tiles_blend_within_the_pixel_bound(model, images, tmp_path, capsys):
    """--tile 8 is raised to 4x the net's multiple (16); 37 x 203 in 16-px tiles cannot keep exact cores (margin 28),
    so they blend, at most 1.5x the image's pixels (it pays its padding to 40 x 204 as well)."""
    code, out, err = cli(capsys, "segment", str(images / "odd.png"), "-m", str(model), "--backend", "numpy",
                         "--tile", "8", "--out", str(tmp_path), "--json")
    assert code == 0 and "--tile raised to 16" in err
    t = json.loads(out)["images"][0]["tiling"]
    assert t["mode"] == "blend" and t["tile"][0] <= 16 and t["ratio"] <= 1.5 * (40 * 204) / (37 * 203)
    assert read_mask(tmp_path / "odd_mask.png").shape == (37, 203)


def test_bad_images_fail_alone(model, images, tmp_path, capsys):
    """A JPEG cut halfway, a text file, a missing file, an empty folder: each named; the rest written; exit 1."""
    src = tmp_path / "src"
    shutil.copytree(images, src)
    data = (src / "rgb.jpg").read_bytes()
    (src / "cut.jpg").write_bytes(data[: len(data) // 2])
    (src / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    code, out, err = cli(capsys, "segment", str(src), str(src / "notes.txt"), str(tmp_path / "missing.png"),
                         str(tmp_path / "empty"), "-m", str(model), "--backend", "torch", "--out", str(tmp_path / "o"))
    assert code == 1
    lines = err.strip().splitlines()
    assert len([ln for ln in lines if ln.startswith("failed: ")]) == 4
    assert any("cut.jpg: corrupt or unreadable image" in ln for ln in lines)
    assert lines[-1].startswith("error: 4 of 11 input(s) failed: ") and "cut.jpg" in lines[-1]
    written = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert len(written) == 2 * 7 and "cut_mask.png" not in written  # the seven good images
    code, out, _ = cli(capsys, "segment", str(src / "cut.jpg"), str(src / "odd.png"), "-m", str(model),
                       "--backend", "numpy", "--out", str(tmp_path / "j"), "--json")
    doc = json.loads(out)  # stdout stays pure JSON when something failed
    assert code == 1 and [f["source"] for f in doc["failed"]] == [str(src / "cut.jpg")] and len(doc["images"]) == 1


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_bad_models_and_sources(model, images, tmp_path, capsys):
    img = str(images / "odd.png")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 50)
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(model.read_bytes()[:500])
    cases = [([img, "-m", str(tmp_path / "none.safetensors")], "does not exist"),
             ([img, "-m", str(bad)], "bad.onnx"),
             ([img, "-m", str(trunc)], "trunc.safetensors"),
             ([img, "-m", img], "odd.png"),
             ([str(tmp_path / "nothing*.png"), "-m", str(model)], "pattern matches no file"),
             ([img, "-m", str(model), "--backend", "tensorflow"], "unknown backend"),
             ([img, "-m", str(model), "--backend", "numpy", "--device", "cuda"], "CUDA")]
    for args, needle in cases:
        code, out, err = cli(capsys, "segment", *args, "--out", str(tmp_path / "o"))
        assert code == 2 and needle in one_error_line(err), (args, err)


def test_model_for_other_channels(images, tmp_path, capsys):
    two = tiny_checkpoint(tmp_path / "two.safetensors", in_channels=2)
    code, out, err = cli(capsys, "segment", str(images / "odd.png"), str(images / "rgb.jpg"), "-m", str(two),
                         "--backend", "numpy", "--out", str(tmp_path / "o"))
    assert code == 1
    assert "odd.png: has 1 channel(s), the model takes 2" in err and "rgb.jpg: has 3 channel(s)" in err
    assert err.strip().splitlines()[-1] == "error: 2 of 2 input(s) failed: odd.png, rgb.jpg"


def test_all_images_failing_leave_no_empty_run_folder(model, images, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = (images / "rgb.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    code, _, err = cli(capsys, "segment", str(tmp_path / "cut.jpg"), "-m", str(model), "--backend", "numpy")
    assert code == 1 and "1 of 1 input(s) failed" in err
    assert not (tmp_path / "runs").exists()  # the claimed runs/segment/exp1 (and its parents) released
    code, _, _ = cli(capsys, "segment", str(images / "one.png"), "-m", str(model), "--backend", "numpy")
    assert code == 0 and (tmp_path / "runs/segment/exp1/one_mask.png").is_file()


def test_default_model_is_latest_runs_best(model, images, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "segment", str(images / "one.png"))
    assert code == 2 and "no trained model found under runs/train/ or runs/demo/" in one_error_line(err)
    for n in (2, 10, 9):
        (tmp_path / f"runs/train/exp{n}").mkdir(parents=True)
    (tmp_path / "runs/train/exp11").mkdir()  # newer, but holds no best checkpoint
    shutil.copy(model, tmp_path / "runs/train/exp10/best.safetensors")
    shutil.copy(model, tmp_path / "runs/train/exp2/best.safetensors")
    code, out, err = cli(capsys, "segment", str(images / "one.png"), "--backend", "numpy")
    assert code == 0, err
    assert "model: runs/train/exp10/best.safetensors (best checkpoint of the latest training run)" in err
    assert (tmp_path / "runs/segment/exp1/one_mask.png").is_file()  # default output folder


def test_ort_exports_once_and_reuses(model, images, tmp_path, capsys, monkeypatch):
    """The ort backend exports a checkpoint itself, once: keyed by the weights' content, kept in its cache folder."""
    from cvtool_backends.ort_backend import export_cache

    monkeypatch.setattr(export_cache, "CACHE", tmp_path / "cache")
    ckpt = tmp_path / "m.safetensors"
    shutil.copy(model, ckpt)
    args = ["segment", str(images / "odd.png"), "-m", str(ckpt), "--backend", "ort", "--out", str(tmp_path / "o")]
    code, _, err = cli(capsys, *args)
    (cache,) = (tmp_path / "cache").glob("*.onnx")
    assert code == 0 and f"ort: exported {cache} for {ckpt}" in err
    first = read_mask(tmp_path / "o/odd_mask.png")
    np.testing.assert_array_equal(first, reference_mask(ckpt, images / "odd.png"))
    stamp = cache.stat().st_mtime_ns
    code, _, err = cli(capsys, *args)
    assert code == 0 and f"ort: reusing {cache}" in err and cache.stat().st_mtime_ns == stamp
    # rewritten with the same bytes (and a new time stamp): the content is the key, still valid
    ckpt.write_bytes(ckpt.read_bytes())
    os.utime(ckpt, ns=(stamp + 10**9, stamp + 10**9))
    code, _, err = cli(capsys, *args)
    assert f"ort: reusing {cache}" in err
    # rewritten with other weights: exported again, and the masks follow the new weights
    tiny_checkpoint(ckpt, in_channels=1, num_classes=3, seed=7)
    code, _, err = cli(capsys, *args)
    assert code == 0 and "ort: exported" in err and len(list((tmp_path / "cache").glob("*.onnx"))) == 2
    second = read_mask(tmp_path / "o/odd_mask.png")
    np.testing.assert_array_equal(second, reference_mask(ckpt, images / "odd.png"))
    assert (first != second).any()
    # a corrupt cache is rebuilt; an unwritable place keeps the export in memory
    for f in (tmp_path / "cache").glob("*.onnx"):
        f.write_bytes(b"junk")
    code, _, err = cli(capsys, *args)
    assert code == 0 and "ort: exported" in err and read_mask(tmp_path / "o/odd_mask.png").tolist() == second.tolist()

    def refuse(path, data):
        from cvtool.errors import CvtoolError
        raise CvtoolError(f"cannot write {path}: Read-only file system")

    monkeypatch.setattr("cvtool.fsutil.atomic_write_bytes", refuse)
    for f in (tmp_path / "cache").glob("*.onnx"):
        f.unlink()
    code, _, err = cli(capsys, *args)
    assert code == 0 and "ort: exported in memory (cannot write" in err and not list((tmp_path / "cache").glob("*"))


def test_exported_onnx_runs_alone_on_every_backend(model, images, tmp_path, capsys):
    onnx_path = tmp_path / "alone" / "model.onnx"
    code, _, err = cli(capsys, "export", str(model), "-o", str(onnx_path), "--no-verify")
    assert code == 0, err
    want = reference_mask(model, images / "rgb.jpg")
    for be in ("ort", "numpy", "torch"):
        code, out, err = cli(capsys, "segment", str(images / "rgb.jpg"), "-m", str(onnx_path), "--backend", be,
                             "--out", str(tmp_path / be), "--json")
        assert code == 0, err
        assert (read_mask(tmp_path / be / "rgb_mask.png") == want).mean() >= 0.999
    assert sorted(p.name for p in onnx_path.parent.iterdir()) == ["model.onnx"]  # nothing else needed or made


# --- real images: the three backends agree ---------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A width-4 U-Net trained for a few Adam steps on membrane crops by the torch backend."""
    shared_dataset("membrane")
    from cvtool.model import checkpoint as ckpt_io
    from cvtool.model.spec import init_params
    from cvtool.train.optim import OptimConfig

    xs = np.stack([read_image(MEMBRANE / "images" / f"{i}.png")[..., 0] for i in range(8)]).astype(np.float32) / 255
    ys = (np.stack([read_mask(MEMBRANE / "masks" / f"{i}.png") for i in range(8)]) > 127).astype(np.int64)
    mean, std = float(xs.mean()), float(xs.std())
    spec = ModelSpec(in_channels=1, num_classes=2, width=4, depth=2)
    tr = registry.get("torch", "cpu").trainer(spec, init_params(spec, 0), optim=OptimConfig(name="adam"), seed=0)
    rng = np.random.default_rng(0)
    for _ in range(12):
        i, (r, c) = rng.integers(0, 8, 4), rng.integers(0, 512 - 64, 2)
        tr.step(((xs[i, None, r:r + 64, c:c + 64] - mean) / std).astype(np.float32), ys[i, r:r + 64, c:c + 64], 1e-2)
    ck = ckpt_io.Checkpoint(spec, tr.params(), ModelMeta(["background", "membrane"], COLORS[:2], [mean], [std]))
    return ckpt_io.save(ck, tmp_path_factory.mktemp("trained") / "best.safetensors")


def test_three_backends_agree_on_real_images(trained, tmp_path, capsys):
    """Logits within 1e-4 relative (of the largest logit) and masks >= 99.9% equal, on membrane images."""
    from cvtool.cli.models import open_model, runner_for

    m = open_model(trained)
    runs = {name: runner_for(registry.get(name, "cpu"), m) for name in ("numpy", "torch", "ort")}
    paths = [MEMBRANE / "images" / f"{i}.png" for i in (25, 29)]
    xs = [prepare(read_image(p), 1, m.meta.mean, m.meta.std).x for p in paths]
    logits = {k: np.stack(predict_batch(r, xs, m.spec.multiple)) for k, r in runs.items()}
    ref = logits["numpy"]
    assert 0.05 < ref.argmax(1).mean() < 0.95  # the trained net finds both classes
    for k in ("torch", "ort"):
        assert np.abs(logits[k] - ref).max() / np.abs(ref).max() <= 1e-4, k
        assert (logits[k].argmax(1) == ref.argmax(1)).mean() >= 0.999, k
    masks = {}
    for be in runs:
        code, out, err = cli(capsys, "segment", *map(str, paths), "-m", str(trained), "--backend", be,
                             "--out", str(tmp_path / be), "--json")
        assert code == 0, err
        doc = json.loads(out)
        check_outputs(doc, n_classes=2)
        assert doc["forward_passes"] == 1  # two images of one size: one batch
        masks[be] = np.stack([read_mask(tmp_path / be / f"{p.stem}_mask.png") for p in paths])
    np.testing.assert_array_equal(masks["numpy"], ref.argmax(1))
    for be in ("torch", "ort"):
        assert (masks[be] == masks["numpy"]).mean() >= 0.999, be
