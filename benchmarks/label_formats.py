"""A real dataset exported as labelling tools export it (COCO RLE, COCO polygons, YOLO polygons), read back by cvtool:
are the masks the same, and what does drawing them cost next to reading the PNG masks? Side by side, in one run.

    python benchmarks/label_formats.py [--data ../shared/datasets/oxford_pets3] [--rounds 3] [--markdown FILE]

The exports (in a temp folder; images are symlinks to the dataset's, nothing is copied) hold, per image and class
1..K-1 present: COCO RLE, one compressed RLE of the class's pixels; COCO polygons and YOLO, one polygon traced
along the pixel edges (outline(): every boundary loop, holes included, in one polygon whose even-odd fill is the
class's pixels exactly). The ignored pixels (255) are an iscrowd RLE in both COCO exports; YOLO has no way to say
'ignore', so they read back as background there. Read back, every mask must equal the folder reader's (YOLO: with
255 -> 0), pixel for pixel. Timed (median of --rounds, each over every image): producing the class-index masks, from
the PNGs (read_mask + the value map) and from each export (the rasterisation and the overlap rule), in turn.
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

FORMATS = ("rle", "polygons", "yolo")


def loops(where: np.ndarray) -> list[np.ndarray]:
    """The boundary loops of a bool (H, W) region along the pixel edges: (n, 2) integer (x, y) corners, each pixel
    square walked the same way round so that shared edges cancel; straight runs kept as their two ends."""
    p = np.pad(where, 1)
    inside = p[1:-1, 1:-1]
    step: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for (dy, dx), (a, b) in {(-1, 0): ((1, 0), (0, 0)), (1, 0): ((0, 1), (1, 1)), (0, -1): ((0, 0), (0, 1)),
                             (0, 1): ((1, 1), (1, 0))}.items():  # neighbour outside -> that edge, start to end
        ys, xs = np.nonzero(inside & ~p[1 + dy:p.shape[0] - 1 + dy, 1 + dx:p.shape[1] - 1 + dx])
        for x, y in zip(xs.tolist(), ys.tolist()):
            step.setdefault((x + a[0], y + a[1]), []).append((x + b[0], y + b[1]))
    out = []
    while step:
        start = next(iter(step))
        loop, cur = [start], start
        while True:
            nxt = step[cur].pop()
            if not step[cur]:
                del step[cur]
            if nxt == start:
                break
            loop.append(nxt)
            cur = nxt
        v = np.array(loop)
        d = np.roll(v, -1, axis=0) - v
        out.append(v[(d != np.roll(d, 1, axis=0)).any(axis=1)])  # corners only
    return out


def outline(where: np.ndarray) -> list[float]:
    """One polygon (flat x1, y1, x2, y2, ...) whose even-odd fill is exactly `where`: its loops joined to the first
    one's first corner by L-shaped paths walked there and back along grid lines (they cover no pixel centre and
    change no parity): how an exporter stores holes and pieces in a single polygon."""
    ls = loops(where)
    ax, ay = (int(v) for v in ls[0][0])
    pts = [*map(tuple, ls[0].tolist()), (ax, ay)]
    for loop in ls[1:]:
        x, y = (int(v) for v in loop[0])
        pts += [(x, ay), (x, y), *map(tuple, loop[1:].tolist()), (x, y), (x, ay), (ax, ay)]
    return [float(c) for xy in pts for c in xy]


def export(src: Path, dst: Path, fmt: str, limit: int | None = None) -> tuple[int, int]:
    """The folder dataset src (its first `limit` images) as `fmt` in dst, images symlinked. (images, labels)."""
    from pycocotools import mask as coco_mask

    train, _, info = open_datasets(str(src), val_split=0.0)
    (dst / "images").mkdir(parents=True)
    images, anns, n_labels = [], [], 0
    for i in range(len(train) if limit is None else min(limit, len(train))):
        it = train.items[i]
        m = train.value_map(read_mask(it.mask, train.source.colour))
        H, W = m.shape
        (dst / "images" / it.image.name).symlink_to(it.image.resolve())
        images.append({"id": i + 1, "file_name": it.image.name, "height": H, "width": W})
        lines = []
        for k in [*range(1, len(info.classes)), IGNORE]:
            where = m == k
            if not where.any() or (fmt == "yolo" and k == IGNORE):
                continue
            if fmt == "yolo":
                xy = np.array(outline(where)).reshape(-1, 2) / [W, H]
                lines.append(" ".join([str(k - 1), *(f"{v:.6f}" for v in xy.ravel())]))
                continue
            if fmt == "rle" or k == IGNORE:
                rle = coco_mask.encode(np.asfortranarray(where.astype(np.uint8)))
                seg = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
            else:
                seg = [outline(where)]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1 if k == IGNORE else k,
                         "iscrowd": int(k == IGNORE), "area": int(where.sum()), "segmentation": seg})
        if fmt == "yolo":
            (dst / "labels").mkdir(exist_ok=True)
            (dst / "labels" / f"{it.image.stem}.txt").write_text("".join(ln + "\n" for ln in lines))
            n_labels += len(lines)
    if fmt == "yolo":
        (dst / "data.yaml").write_text(json.dumps({"names": info.classes[1:]}) + "\n")  # JSON is YAML
        return len(images), n_labels
    (dst / "annotations").mkdir()
    cats = [{"id": k, "name": n} for k, n in enumerate(info.classes) if k > 0]
    (dst / "annotations" / "instances_default.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": cats}))
    return len(images), len(anns)


def timed(fns: dict[str, object], rounds: int) -> dict[str, float]:
    """Median seconds of each fn, the fns run in turn within each round (a busy moment hurts all alike)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "oxford_pets3"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--markdown", help="append the report to this file")
    a = ap.parse_args()
    src = Path(a.data)
    folder, _, finfo = open_datasets(str(src), val_split=0.0)
    want = {it.name: folder.value_map(read_mask(it.mask, folder.source.colour)) for it in folder.items}
    fns = {"png": lambda: [folder.value_map(read_mask(it.mask, folder.source.colour)) for it in folder.items]}
    rows, failed = [], False
    with tempfile.TemporaryDirectory() as tmp:
        made = {}
        for fmt in FORMATS:
            dst = Path(tmp) / fmt
            n_img, n_lab = export(src, dst, fmt)
            ds, _, info = open_datasets(str(dst), val_split=0.0)
            assert info.classes[1:] == finfo.classes[1:], (info.classes, finfo.classes)
            differ = sum(int((ds.mask(j) != (np.where(want[it.name] == IGNORE, 0, want[it.name]) if fmt == "yolo"
                                             else want[it.name])).sum()) for j, it in enumerate(ds.items))
            failed |= differ > 0
            size = sum(p.stat().st_size for p in dst.rglob("*") if p.is_file() and not p.is_symlink())
            made[fmt] = (n_lab, size, differ)
            fns[fmt] = lambda ds=ds: [ds.mask(j) for j in range(len(ds))]
        t = timed(fns, a.rounds)
    png = t["png"]
    for fmt, (n_lab, size, differ) in made.items():
        rows.append(f"| {fmt} | {n_lab} | {size / 2**20:.1f} MiB | {differ} | {t[fmt] * 1e3 / len(want):.2f} ms/image "
                    f"| {t[fmt] / png:.2f} |")
    m = machine_info()
    total = sum(v.size for v in want.values())
    lines = [f"## Labelling tools' formats: a real dataset exported and read back ({m['date']})", "",
             f"`python benchmarks/label_formats.py --data {a.data} --rounds {a.rounds}`; {m['cpu']}, {m['cores']} "
             f"cores, shared with other work (1-min load {m['load_1min']:.1f}); medians of {a.rounds} rounds.", "",
             f"{src.name}: {len(want)} images, {len(finfo.classes)} classes, {total} pixels; the PNG masks: "
             f"{png * 1e3 / len(want):.2f} ms/image (read_mask + value map).", "",
             "| export | labels | files | pixels differing | masks drawn | / PNG |", "|---|---|---|---|---|---|",
             *rows, ""]
    text = "\n".join(lines)
    print(text)
    if a.markdown:
        with open(a.markdown, "a") as f:
            f.write(text + "\n")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
