"""A real dataset exported as a labelling tool would (COCO JSON, RLE), read back by cvtool: are the masks the same,
and what does rasterising cost next to reading the PNG masks? Side by side, in one run.

    python benchmarks/label_formats.py [--data ../shared/datasets/oxford_pets3] [--rounds 3] [--markdown FILE]

The export (in a temp folder; images are symlinks to the dataset's, nothing is copied): one COCO annotation per
class present in an image, an RLE (compressed counts) of that class's pixels, and the ignored pixels (255) as an
iscrowd RLE; category ids 1..K-1 for classes 1..K-1 (class 0 is the background). Read back, every mask must equal
the folder reader's, pixel for pixel. Timed (median of --rounds, each over every image): producing the class-index
masks, from the PNGs (read_mask + the value map) and from the JSON (pycocotools decode + the overlap rule); opening
the dataset (the JSON parsed and checked, against the PNG headers and masks scanned).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import info as machine_info  # noqa: E402
from cvtool.data import open_datasets  # noqa: E402
from cvtool.data.io import IGNORE, read_mask  # noqa: E402


def export_coco(src: Path, dst: Path, limit: int | None = None) -> tuple[int, int]:
    """COCO JSON (RLE) of the folder dataset src (its first `limit` images) in dst/annotations/instances_default.json
    + dst/images (symlinks). Returns (images, annotations)."""
    from pycocotools import mask as coco_mask

    train, _, info = open_datasets(str(src), val_split=0.0)
    (dst / "images").mkdir(parents=True)
    (dst / "annotations").mkdir()
    images, anns = [], []
    for i in range(len(train) if limit is None else min(limit, len(train))):
        it = train.items[i]
        m = train.value_map(read_mask(it.mask, train.source.colour))
        (dst / "images" / it.image.name).symlink_to(it.image.resolve())
        images.append({"id": i + 1, "file_name": it.image.name, "height": m.shape[0], "width": m.shape[1]})
        for k in [*range(1, len(info.classes)), IGNORE]:
            where = m == k
            if where.any():
                rle = coco_mask.encode(np.asfortranarray(where.astype(np.uint8)))
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1 if k == IGNORE else k,
                             "iscrowd": int(k == IGNORE), "area": int(where.sum()),
                             "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")}})
    cats = [{"id": k, "name": n} for k, n in enumerate(info.classes) if k > 0]
    doc = {"images": images, "annotations": anns, "categories": cats}
    (dst / "annotations" / "instances_default.json").write_text(json.dumps(doc))
    return len(images), len(anns)


def timed(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "oxford_pets3"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--markdown", help="append the report to this file")
    a = ap.parse_args()
    src = Path(a.data)
    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / "coco"
        n_img, n_ann = export_coco(src, dst)
        folder, _, finfo = open_datasets(str(src), val_split=0.0)
        coco, _, cinfo = open_datasets(str(dst), val_split=0.0)
        assert cinfo.format == "coco" and cinfo.classes == finfo.classes, (cinfo.classes, finfo.classes)
        by_name = {folder.items[i].name: i for i in range(len(folder))}
        differ = total = 0
        for j in range(len(coco)):
            i = by_name[coco.items[j].name]
            want = folder.value_map(read_mask(folder.items[i].mask, folder.source.colour))
            got = coco.mask(j)
            differ += int((want != got).sum())
            total += want.size
        png = timed(lambda: [folder.value_map(read_mask(it.mask, folder.source.colour)) for it in folder.items],
                    a.rounds)
        rle = timed(lambda: [coco.mask(j) for j in range(len(coco))], a.rounds)
        open_png = timed(lambda: open_datasets(str(src), val_split=0.0), a.rounds)
        open_coco = timed(lambda: open_datasets(str(dst), val_split=0.0), a.rounds)
    m = machine_info()
    lines = [f"## Labelling tools' formats: a real dataset as COCO RLE, read back ({m['date']})", "",
             f"`python benchmarks/label_formats.py --data {a.data} --rounds {a.rounds}`; {m['cpu']}, {m['cores']} "
             f"cores, shared with other work (1-min load {m['load_1min']:.1f}); medians of {a.rounds} rounds.", "",
             f"{src.name}: {n_img} images, {len(finfo.classes)} classes, exported as {n_ann} COCO annotations "
             f"(one RLE per class and image, 255 as iscrowd). Read back: {differ} of {total} pixels differ from the "
             f"PNG masks.", "",
             "| what | PNG masks (folder) | COCO JSON (RLE) | COCO / PNG |", "|---|---|---|---|",
             f"| class-index masks, every image | {png * 1e3 / n_img:.2f} ms/image | {rle * 1e3 / n_img:.2f} ms/image "
             f"| {rle / png:.2f} |",
             f"| open_datasets (scan / parse) | {open_png:.2f} s | {open_coco:.2f} s | {open_coco / open_png:.2f} |", ""]
    text = "\n".join(lines)
    print(text)
    if a.markdown:
        with open(a.markdown, "a") as f:
            f.write(text + "\n")
    if differ:
        sys.exit(1)


if __name__ == "__main__":
    main()
