"""What validation (and `segment` on images like them) runs the net on, per shared dataset: the plan's scale and
depth, and net pixels / image pixels over the validation split, counted by cvtool.model.inference.net_pixels
(the layout segment_logits runs). No training, no timing: the figures do not depend on the machine's load.

    python benchmarks/val_pixels.py [--datasets membrane,oxford_pets3,...] [--depth 5] [--json FILE]

--depth D counts the layout a depth-D net would get on the same images (the issue's depth-5 case).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))  # appended: a PYTHONPATH's cvtool wins

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"
DATASETS = ["membrane", "oxford_pets3", "busi_ultrasound", "crackforest", "msrc_v2", "ph2", "ccp"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--root", type=Path, default=Path("/work/shared/datasets") if not SHARED.is_dir() else SHARED)
    ap.add_argument("--depth", type=int, default=None)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()

    from cvtool.data import open_datasets
    from cvtool.data.fingerprint import dataset_fingerprint
    from cvtool.data.io import read_image
    from cvtool.data.memory import scaled_hw
    from cvtool.model.inference import TTA, net_pixels
    from cvtool.model.spec import ModelSpec
    from cvtool.train.plan import propose

    rows = []
    cache = Path("runs/.cache/fingerprints.json")
    for name in a.datasets.split(","):
        train_ds, val_ds, info = open_datasets(str(a.root / name), seed=0)
        fp = dataset_fingerprint(train_ds, val_ds, list(info.notes), cache)
        p = propose(fp, device="cpu", budget=300)
        depth = a.depth or p.depth
        spec = ModelSpec(in_channels=train_ds.in_channels, num_classes=len(train_ds.classes), width=p.width,
                         depth=depth)
        net = img = 0
        for it in val_ds.items:
            hw = scaled_hw(read_image(it.image).shape[:2], p.scale)
            net += net_pixels(hw, spec)
            img += hw[0] * hw[1]
        row = {"dataset": name, "scale": p.scale, "crop": p.crop, "batch": p.batch_size, "depth": depth,
               "val_images": len(val_ds), "net_pixels": net, "image_pixels": img, "ratio": round(net / img, 3),
               "tta": p.tta, "tta_passes": TTA[p.tta]}
        rows.append(row)
        print(" | ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
