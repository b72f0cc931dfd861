"""The lite0 encoder's ImageNet weights: the package's file read without unpickling, names mapped explicitly, every
shape checked (a misfit named in one line, exit 2), grey input folded into the stem, and the real test of the
mapping: the encoder with its _fc head labels oxford_pets3 photos as ImageNet cats and dogs, on numpy and torch.

Oracles: ImageNet's labels (cats are classes 281-285, dogs 151-268), torch.nn.functional for the fold, and
torch's own run of the same graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import shared_dataset  # tests/ is on sys.path under pytest

from cvtool.cli.weights import default_weights, read_weights
from cvtool.errors import CvtoolError, DataError, UsageError
from cvtool.model import lite0, pretrained
from cvtool.model.spec import ModelSpec
from cvtool_backends.numpy_fast.model import forward
from cvtool_backends.torch_backend.model import SpecNet

CATS, DOGS = range(281, 286), range(151, 269)  # ImageNet-1k: tabby .. Egyptian cat; Chihuahua .. Mexican hairless


@pytest.fixture(scope="module")
def sd() -> dict[str, np.ndarray]:
    return read_weights(None)[0]


def test_the_packages_file_is_efficientnet_lite0(sd):
    assert default_weights().name == "efficientnet-lite0-57934424.pth"
    assert len(sd) == 296 and sd["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    p = pretrained.map_weights(sd, 3)
    assert p.keys() == pretrained.encoder_shapes(3).keys()
    np.testing.assert_array_equal(p["enc.b3.dw.weight"], sd["_blocks.3._depthwise_conv.weight"])
    np.testing.assert_array_equal(p["enc.stem.bn.running_var"], sd["_bn0.running_var"])
    assert pretrained.source_name("enc.b12.bn0.weight") == "_blocks.12._bn0.weight"


def test_a_misfit_is_named(sd):
    wrong = dict(sd, **{"_blocks.7._depthwise_conv.weight": np.zeros((480, 1, 5, 5), np.float32)})
    with pytest.raises(UsageError, match=r"'_blocks.7._depthwise_conv.weight' has shape \(480, 1, 5, 5\), "
                                         r"EfficientNet-Lite0 needs \(480, 1, 3, 3\)"):
        pretrained.map_weights(wrong, 3)
    with pytest.raises(UsageError, match="'_blocks.16._bn0.weight' is not part of EfficientNet-Lite0"):
        pretrained.map_weights(dict(sd, **{"_blocks.16._bn0.weight": np.ones(8)}), 3)
    with pytest.raises(UsageError, match=r"'_blocks.3._bn1.bias' is missing \(1 of"):
        pretrained.map_weights({k: v for k, v in sd.items() if k != "_blocks.3._bn1.bias"}, 3)
    with pytest.raises(UsageError, match="3 \\(RGB\\) or 1 \\(grey\\)"):
        pretrained.map_weights(sd, 4)
    headless = {k: v for k, v in sd.items() if not k.startswith(("_fc", "_conv_head", "_bn1."))}
    assert pretrained.map_weights(headless, 3).keys() == pretrained.map_weights(sd, 3).keys()  # the head is optional


def test_grey_is_folded_into_the_stem(sd):
    """The stem on a grey image copied into R, G, B = the folded stem on the grey image (TF SAME pads)."""
    g = np.random.default_rng(0).standard_normal((1, 1, 32, 32))
    w3 = torch.from_numpy(sd["_conv_stem.weight"].astype(np.float64))
    w1 = torch.from_numpy(pretrained.map_weights(sd, 1)["enc.stem.conv.weight"].astype(np.float64))
    assert tuple(w1.shape) == (32, 1, 3, 3)
    pad = lambda t: F.pad(torch.from_numpy(t), (0, 1, 0, 1))  # noqa: E731
    np.testing.assert_allclose(F.conv2d(pad(g), w1, stride=2), F.conv2d(pad(np.repeat(g, 3, 1)), w3, stride=2),
                               rtol=1e-6, atol=1e-6)
    spec = ModelSpec(encoder="lite0", depth=5, in_channels=1, num_classes=2)
    p = pretrained.pretrained_params(spec, sd, seed=0)
    assert p.keys() == spec.param_shapes().keys()
    np.testing.assert_array_equal(p["enc.stem.conv.weight"], w1.numpy().astype(np.float32))
    assert pretrained.normalization(1) == ([127 / 255], [128 / 255])


def test_files_are_read_without_pickles(sd, tmp_path):
    from safetensors.numpy import save_file

    st = tmp_path / "lite0.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, str(st))
    again, name = read_weights(st)
    assert name == str(st) and all(np.array_equal(again[k], sd[k]) for k in sd if "num_batches" not in k)
    assert pretrained.map_weights(again, 3).keys() == pretrained.map_weights(sd, 3).keys()
    evil = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "payload": DataError("not a tensor")}, evil)  # an object torch must not unpickle
    with pytest.raises(DataError, match="evil.pth is not a readable torch state dict"):
        read_weights(evil)
    with pytest.raises(CvtoolError, match="does not exist"):
        read_weights(tmp_path / "absent.pth")
    with pytest.raises(UsageError, match="not a state dict file"):
        read_weights(tmp_path / "weights.npz")


def _pets(n_per_breed: int) -> tuple[np.ndarray, list[str]]:
    from PIL import Image

    root = shared_dataset("oxford_pets3") / "images"
    names = []
    for breed in ("Abyssinian", "american_bulldog", "Bengal"):  # cat, dog, cat
        files = sorted(root.glob(f"{breed}_*.png"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
        names += [p.stem for p in files[:n_per_breed]]
    xs = [np.asarray(Image.open(root / f"{n}.png").convert("RGB").resize((224, 224), Image.BILINEAR), np.float32)
          for n in names]
    x = (np.stack(xs).transpose(0, 3, 1, 2) / 255 - pretrained.MEAN) / pretrained.STD  # (x - 127) / 128
    return x.astype(np.float32), names


@pytest.mark.slow
def test_the_pretrained_encoder_tells_cats_from_dogs(sd):
    x, names = _pets(7)
    p = pretrained.map_weights(sd, 3, head=True)
    nodes = lite0.classifier_graph(3)
    feats, _ = forward(nodes, {k: v.copy() for k, v in p.items()}, x, training=False, keep=False)
    net = SpecNet(ModelSpec(encoder="lite0", depth=5), nodes).eval()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in p.items() if not k.startswith("fc.")}, strict=False)
    with torch.no_grad():
        feats_t = net(torch.from_numpy(x)).numpy()
    assert np.abs(feats - feats_t).max() < 1e-4 * np.abs(feats_t).max()
    top = pretrained.classify(feats, p["fc.weight"], p["fc.bias"]).argmax(1)
    top_t = pretrained.classify(feats_t, p["fc.weight"], p["fc.bias"]).argmax(1)
    assert top.tolist() == top_t.tolist()
    species = ["dog" if k in DOGS else "cat" if k in CATS else f"class {k}" for k in top]
    assert species == ["dog" if n.startswith("american_bulldog") else "cat" for n in names], list(zip(names, species))


def test_the_encoder_learning_rate_reaches_exactly_the_pretrained_parameters():
    """--encoder-lr scales the parameters the ImageNet weights start (all 240 of lite0's encoder), none of the
    decoder's, and nothing of a U-Net (its encoder starts random: enc0.*, not enc.*)."""
    from cvtool.model.pretrained import encoder_shapes
    from cvtool.model.spec import ModelSpec, init_params
    from cvtool.train.optim import OptimConfig, lr_scale

    cfg = OptimConfig(encoder_lr=0.1)
    lite = init_params(ModelSpec(encoder="lite0", depth=5, in_channels=3, num_classes=2), 0)
    scaled = {k for k in lite if lr_scale(k, cfg) == 0.1}
    assert scaled == set(encoder_shapes(3)) and len(scaled) == 240 and len(lite) > len(scaled)
    unet = init_params(ModelSpec(in_channels=3, num_classes=2), 0)
    assert all(lr_scale(k, cfg) == 1.0 for k in unet)


def test_a_configured_lite0_run_takes_the_plans_encoder_lr_and_a_unet_refuses_one(capsys, monkeypatch, tmp_path):
    """--epochs with --encoder lite0: the encoder at LITE0_ENCODER_LR and its BatchNorm frozen (LITE0_FROZEN_BN: what
    the plan measured), --encoder-lr and --trained-bn win; either on a U-Net from scratch has nothing to act on: one
    line, exit 2."""
    from conftest import cli

    from cvtool.train.plan import LITE0_ENCODER_LR, LITE0_FROZEN_BN

    seen = []

    def capture(cfg, *a, **k):
        seen.append((cfg.encoder_lr, cfg.frozen_bn))
        raise UsageError("captured")

    monkeypatch.setattr("cvtool.train.loop.train", capture)
    for i, (extra, want) in enumerate((([], (LITE0_ENCODER_LR, LITE0_FROZEN_BN)), (["--trained-bn"], (0.1, False)),
                                       (["--encoder-lr", "0.5", "--frozen-bn"], (0.5, True)))):
        code, _, err = cli(capsys, "train", "--epochs", "1", "--encoder", "lite0", "--backend", "numpy",
                           "--out", str(tmp_path / f"run{i}"), *extra)
        assert (code, err.strip()) == (2, "error: captured"), err
        assert seen[-1] == want
    for extra in (["--encoder", "unet"], []):
        for flag in (["--encoder-lr", "0.5"], ["--frozen-bn"]):
            code, _, err = cli(capsys, "train", "--epochs", "1", *flag, "--backend", "numpy", *extra)
            assert code == 2 and "U-Net from scratch" in err and len(err.strip().splitlines()) <= 2, err
    assert len(seen) == 3
