"""`train --encoder/--weights` checked before any training (a bad weights file: one line naming the tensor, exit 2,
nothing written), and a lite0 checkpoint through `segment` (whole image and tiles alike) carrying its weights and
the normalisation of its encoder's ImageNet training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import cli  # tests/ is on sys.path under pytest
from PIL import Image
from test_train_cli import ARGS, write_dataset

from cvtool.cli.weights import read_weights


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> str:
    return str(write_dataset(tmp_path_factory.mktemp("shapes"), 8, 32))


@pytest.fixture(scope="module")
def bad_weights(tmp_path_factory):
    from safetensors.numpy import save_file

    root = tmp_path_factory.mktemp("w")
    sd = {k: v for k, v in read_weights(None)[0].items() if "num_batches" not in k}
    save_file({**sd, "_blocks.5._project_conv.weight": np.zeros((80, 240, 3, 3), np.float32)},
              str(root / "wrong.safetensors"))
    torch.save({"_conv_stem.weight": torch.zeros(1), "note": ValueError("an object")}, root / "evil.pth")
    return root


BAD = [(["--encoder", "resnet"], "unknown --encoder 'resnet'"),
       (["--encoder", "unet", "--weights", "none"], "--weights is for the lite0 encoder"),
       (["--encoder", "lite0", "--weights", "W/wrong.safetensors"],
        "tensor '_blocks.5._project_conv.weight' has shape (80, 240, 3, 3), EfficientNet-Lite0 needs (80, 240, 1, 1)"),
       (["--encoder", "lite0", "--weights", "W/evil.pth"], "is not a readable torch state dict"),
       (["--encoder", "lite0", "--weights", "W/absent.pth"], "does not exist"),
       (["--encoder", "lite0", "--weights", "W/weights.npz"], "not a state dict file")]


@pytest.mark.parametrize("extra,words", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_encoder_options_exit_2_with_one_line(extra, words, shapes, bad_weights, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    extra = [a.replace("W/", f"{bad_weights}/") for a in extra]
    code, out, err = cli(capsys, "train", "--data", shapes, *ARGS, *extra)
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], err
    assert not (tmp_path / "runs").exists()  # nothing written


@pytest.mark.slow
def test_a_lite0_checkpoint_segments_alike_on_numpy_and_ort(tmp_path, capsys):
    """The checkpoint holds the ImageNet-started weights and the TF normalisation; segment pads a 70 x 90 image to
    96 x 96 (the multiple 32) and labels it the same on the reference and on ONNX Runtime (through an export)."""
    from cvtool.cli.weights import encoder_start
    from cvtool.model import checkpoint as ckpt_io
    from cvtool.model.meta import ModelMeta
    from cvtool.model.spec import ModelSpec

    spec = ModelSpec(encoder="lite0", depth=5, num_classes=2, width=4)
    start = encoder_start("lite0", None)
    mean, std = start.normalization(3)
    path = ckpt_io.save(ckpt_io.Checkpoint(spec, start.params(spec, 0), ModelMeta(["bg", "fg"], [[0, 0, 0], [9, 9, 9]],
                                                                                  mean, std)), tmp_path / "l.safetensors")
    back = ckpt_io.load(path)
    assert back.meta.mean == [127 / 255] * 3 and back.meta.std == [128 / 255] * 3
    np.testing.assert_array_equal(back.params["enc.b3.dw.weight"], read_weights(None)[0]["_blocks.3._depthwise_conv.weight"])
    img = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(img)
    masks = {}
    for be in ("numpy", "ort"):
        code, _, err = cli(capsys, "segment", str(img), "--model", str(path), "--backend", be, "--out",
                           str(tmp_path / be), "--json")
        assert code == 0, err
        masks[be] = np.asarray(Image.open(tmp_path / be / "img_mask.png"))
    assert masks["numpy"].shape == (70, 90) and np.array_equal(masks["numpy"], masks["ort"])


@pytest.mark.slow
def test_a_lite0_run_resumes_and_trains_on_numpy(shapes, tmp_path, capsys):
    """A lite0 checkpoint (ImageNet encoder, TF normalisation) trains on through `train --resume` on the NumPy
    reference: the loop takes the spec and normalisation from the file, and the weights it writes have moved."""
    from cvtool.cli.weights import encoder_start
    from cvtool.model import checkpoint as ckpt_io
    from cvtool.model.meta import ModelMeta
    from cvtool.model.spec import ModelSpec

    spec = ModelSpec(encoder="lite0", depth=5, num_classes=4, width=2)
    start = encoder_start("lite0", None)
    mean, std = start.normalization(3)
    config = {"data": shapes, "epochs": 0, "batch_size": 2, "img_size": 32, "lr": 1e-3, "val_split": 0.25,
              "width": 2, "depth": 5, "backend": "numpy"}
    ck = ckpt_io.Checkpoint(spec, start.params(spec, 0), ModelMeta(["background", "circle", "square", "triangle"],
                                                                   [[0, 0, 0]] * 4, mean, std),
                            train_state={"config": config, "run": {"epoch": 0, "step": 0}})
    path = ckpt_io.save(ck, tmp_path / "start.safetensors")
    code, _, err = cli(capsys, "train", "--resume", str(path), "--epochs", "1", "--backend", "numpy", "--workers", "1",
                       "--out", str(tmp_path / "run"), "--json")
    assert code == 0, err
    out = ckpt_io.load(tmp_path / "run" / "last.safetensors")
    assert out.spec == spec  # the loop keeps the normalisation (in float32)
    np.testing.assert_allclose([out.meta.mean, out.meta.std], [mean, std], rtol=1e-7)
    moved = np.abs(out.params["enc.b3.dw.weight"] - ck.params["enc.b3.dw.weight"]).max()
    assert 0 < moved < 0.1  # trained a little, from the ImageNet weights


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[str, str]:
    """10 colour and 10 grayscale 160 x 160 images (the shapes set at 160 px): crops of 160 carry lite0's stride."""
    root = tmp_path_factory.mktemp("photos")
    rgb = write_dataset(root / "rgb", 10, 160)
    grey = root / "grey"
    for sub in ("images", "masks"):
        (grey / sub).mkdir(parents=True)
    for f in sorted((rgb / "images").iterdir()):
        Image.open(f).convert("L").save(grey / "images" / f.name)
        (grey / "masks" / f.name).write_bytes((rgb / "masks" / f.name).read_bytes())
    (grey / "classes.json").write_text((rgb / "classes.json").read_text())
    return str(rgb), str(grey)


@pytest.mark.slow  # three plans, each timing its step on torch (lite0 ~20 s of it)
def test_the_plan_chooses_the_encoder_and_says_why(photos, capsys):
    """No --encoder: colour and grayscale images whose crops carry stride 32 get the ImageNet lite0 (depth 5, the
    weights' normalisation); --encoder unet is the user's and says so."""
    rgb, grey = photos
    plans = {}
    for name, args in (("rgb", [rgb]), ("grey", [grey]), ("given", [rgb, "--encoder", "unet"])):
        code, out, err = cli(capsys, "train", "--data", *args, "--plan", "--backend", "torch", "--time", "120",
                             "--json")
        assert code == 0, err
        plans[name] = json.loads(out)["plan"]
    p = plans["rgb"]
    assert (p["encoder"], p["depth"]) == ("lite0", 5) and "seven shared" in p["reasons"]["encoder"]
    assert p["mean"] == [127 / 255] * 3 and p["std"] == [128 / 255] * 3  # what the ImageNet weights expect
    assert plans["grey"]["encoder"] == "lite0" and plans["grey"]["mean"] == [127 / 255]  # one channel, folded stem
    assert plans["given"]["encoder"] == "unet" and "encoder" in plans["given"]["given"]
