"""The README's main command, end to end: `cvtool demo --quick` in a real subprocess."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import cvtool_backends as registry
from cvtool.data.io import read_image
from cvtool.model import checkpoint as ckpt_io
from cvtool.model.inference import segment_logits


@pytest.mark.slow
def test_demo_quick_runs_every_step_and_backends_agree(tmp_path):
    root = tmp_path / "demo"
    env = {**os.environ, "COLUMNS": "200"}
    r = subprocess.run([sys.executable, "-m", "cvtool", "demo", "--quick", "--out", str(root)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    for step in ("convcalc", "train", "segment", "export", "bench"):
        assert f"$ cvtool {step}" in r.stdout
    assert "all passed" in r.stdout  # the convcalc --verify step
    assert (root / "train" / "best.safetensors").is_file()
    assert (root / "model.onnx").is_file()
    masks_torch = sorted((root / "segment-torch").glob("*_mask.png"))
    masks_ort = sorted((root / "segment-ort").glob("*_mask.png"))
    assert len(masks_torch) == len(masks_ort) == 3
    ck = ckpt_io.load(root / "train" / "best.safetensors")
    run = registry.get("numpy", "cpu").runner(ck.spec, ck.params)  # an oracle neither segment run used
    for a, b in zip(masks_torch, masks_ort):  # the trained model, torch vs the exported ONNX in ORT
        ma, mb = np.asarray(Image.open(a)), np.asarray(Image.open(b))
        assert ma.shape == mb.shape == (160, 160)
        assert (ma == mb).mean() >= 0.999
        img = read_image(root / "images" / "images" / a.name.replace("_mask.png", ".png"))
        want = segment_logits(run, img, ck.spec, ck.meta.mean, ck.meta.std, scale=ck.meta.scale, tta=ck.meta.tta).argmax(0)
        assert (ma == want).mean() >= 0.999  # two identical wrong masks would not pass this
