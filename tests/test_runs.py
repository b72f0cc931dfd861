"""Auto-numbered run folders are claimed atomically, and the default model is the newest one trained."""

import os
import subprocess
import sys
import time
from pathlib import Path

from cvtool.cli.models import latest_checkpoint
from cvtool.fsutil import next_run_dir, release_if_empty


def test_next_run_dir_claims_distinct_folders_across_processes(tmp_path):
    code = "import sys; from cvtool.fsutil import next_run_dir; print(next_run_dir(sys.argv[1]))"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "runs")], stdout=subprocess.PIPE, text=True)
             for _ in range(8)]
    got = sorted(p.communicate()[0].strip() for p in procs)
    assert all(p.returncode == 0 for p in procs)
    assert len(set(got)) == 8  # no two processes got the same folder
    assert sorted(Path(g).name for g in got) == sorted(f"exp{i}" for i in range(1, 9))
    assert all(Path(g).is_dir() for g in got)


def test_release_removes_only_empty_claims(tmp_path):
    a = next_run_dir(tmp_path)
    b = next_run_dir(tmp_path)
    (b / "best.safetensors").write_bytes(b"x")
    release_if_empty(a)
    release_if_empty(b)
    assert not a.exists() and (b / "best.safetensors").exists()
    assert next_run_dir(tmp_path).name == "exp1"  # the released number is free again


def test_latest_checkpoint_finds_the_demo_model(tmp_path):
    runs = tmp_path / "runs"
    old = runs / "train" / "exp3" / "best.safetensors"
    demo = runs / "demo" / "exp1" / "train" / "best.safetensors"
    for p in (old, demo):
        p.parent.mkdir(parents=True)
        p.write_bytes(b"x")
    os.utime(old, (time.time() - 100, time.time() - 100))
    assert latest_checkpoint(runs / "train") == demo  # the model `make demo` just trained
    os.utime(old, (time.time() + 100, time.time() + 100))
    assert latest_checkpoint(runs / "train") == old
