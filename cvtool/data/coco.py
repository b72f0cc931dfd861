"""COCO JSON instance labels, as CVAT, Label Studio and Roboflow export them, read as a segmentation dataset.

Layouts (detected in this order):
- DIR/annotations/*.json (instances_*.json when there are any: COCO's own captions/keypoints files are not
  masks) with images in DIR/images/<split>, DIR/<split> (COCO's train2017/), DIR/images or DIR: CVAT, COCO;
- DIR/_annotations.coco.json or DIR/<split>/_annotations.coco.json, images beside it: Roboflow;
- DIR/result.json (Label Studio), annotations.json, coco.json, instances*.json or *.coco*.json, images in
  DIR/images or DIR.
A file's split comes from its name or folder (train, val / valid, test); see labels.choose_split.

Classes: class 0 is the background; every category is a class, 1..n in the order of the category ids (a category
named "background" is class 0). A category that only groups others (the supercategory of another, with no
annotation of its own: Roboflow's first category names the dataset) is dropped, with a note. Segmentations:
polygons, RLE with compressed (string) or uncompressed (list) counts; iscrowd regions are ignored (255); how
overlaps resolve: cvtool.data.labels. An annotation with no segmentation (a box only) is refused.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from cvtool.data.folder import Item
from cvtool.data.io import open_pil, read_json
from cvtool.data.labels import (
    LabelDataset,
    LabelItem,
    Labels,
    Shape,
    choose_split,
    label_views,
    split_name,
    unique_names,
)
from cvtool.data.loader import DataInfo
from cvtool.errors import DataError

COCO_HINT = ("a COCO export holds \"images\" (id, file_name, width, height), \"annotations\" (image_id, "
             "category_id, segmentation) and \"categories\" (id, name); re-export it from the labelling tool")
ROOT_NAMES = ("result.json", "annotations.json", "coco.json")
SLACK = 1.0  # pixels a polygon vertex may lie beyond the image (tools clip at the border, give or take rounding)


def coco_files(root: Path) -> list[tuple[Path, str, list[Path]]]:
    """(annotation file, its split name, the folders its images may be in) for each COCO file of root's layout."""
    ann = root / "annotations"
    if ann.is_dir():
        files = sorted(ann.glob("*.json"))
        inst = [p for p in files if p.stem.startswith("instances")]
        out = []
        for p in inst or files:
            sub = p.stem.split("_", 1)[1] if "_" in p.stem else p.stem  # instances_train2017 -> train2017
            out.append((p, split_name(sub), [root / "images" / sub, root / sub, root / "images", root]))
        if out:
            return out
    rf = [p for p in [root / "_annotations.coco.json", *sorted(root.glob("*/_annotations.coco.json"))] if p.is_file()]
    if rf:
        return [(p, split_name(p.parent.name) if p.parent != root else "", [p.parent, p.parent / "images"])
                for p in rf]
    named = [p for p in sorted(root.glob("*.json")) if p.name in ROOT_NAMES or p.stem.startswith("instances")
             or ".coco" in p.name]
    return [(p, split_name(p.stem.removeprefix("instances")), [root / "images", root]) for p in named]


def load_json(path: Path) -> dict:
    doc = read_json(path, "annotations", COCO_HINT)
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) or not isinstance(doc.get("categories"),
                                                                                             list):
        raise DataError(f"{path}: not a COCO annotation file (no \"images\" and \"categories\" lists)", hint=COCO_HINT)
    if not isinstance(doc.get("annotations", []), list):
        raise DataError(f"{path}: \"annotations\" must be a list", hint=COCO_HINT)
    return doc


def _field(path: Path, what: str, entry, key: str, kind):
    v = entry.get(key) if isinstance(entry, dict) else None
    ok = isinstance(v, kind) and not isinstance(v, bool) and (kind is not int or v > 0 or key.endswith("id"))
    if not ok:
        raise DataError(f"{path}: {what} has no valid \"{key}\" (got {json.dumps(v)[:40]})", hint=COCO_HINT)
    return v


def categories(docs: list[tuple[Path, dict]]) -> tuple[dict[int, int], list[str], list[str]]:
    """{category id: class}, the class names (0 = background) and notes, from the categories of all files."""
    cats: dict[int, tuple[str, str | None, Path]] = {}
    for path, doc in docs:
        for k, c in enumerate(doc["categories"]):
            cid = _field(path, f"categories[{k}]", c, "id", int)
            name = _field(path, f"categories[{k}]", c, "name", str).strip()
            if cid in cats and cats[cid][0] != name:
                raise DataError(f"{path}: category {cid} is '{name}' but {cats[cid][2]} calls it '{cats[cid][0]}'",
                                hint="export every split from one project, with the same categories")
            cats.setdefault(cid, (name, c.get("supercategory"), path))
    used = {a.get("category_id") for _, doc in docs for a in doc.get("annotations", [])
            if isinstance(a, dict) and isinstance(a.get("category_id"), int)}
    parents = {sup for _, sup, _ in cats.values()}
    notes, dropped = [], [cid for cid, (n, _, _) in cats.items() if n in parents and cid not in used]
    if dropped:
        notes.append("categories only grouping others, without annotations, dropped: "
                     + ", ".join(f"{cats[c][0]} (id {c})" for c in dropped))
    keep = sorted(c for c in cats if c not in dropped)
    bg = [c for c in keep if cats[c][0].lower() == "background"]
    names, mapping = ["background"], {c: 0 for c in bg}
    for c in keep:
        if c not in mapping:
            if cats[c][0] in names:
                raise DataError(f"{cats[c][2]}: two categories are named '{cats[c][0]}'",
                                hint="give each category its own name")
            mapping[c] = len(names)
            names.append(cats[c][0])
    if bg:
        notes.append(f"category 'background' (id {bg[0]}) is class 0")
    return mapping, names, notes


def find_image(file_name: str, bases: list[Path]) -> Path | None:
    rel = Path(file_name.replace("\\", "/"))
    for cand in [b / rel for b in bases] + [b / rel.name for b in bases]:
        if cand.is_file():
            return cand
    return None


def _polygons(path: Path, what: str, seg: list, H: int, W: int, skipped: list[int]) -> list[list[float]]:
    polys = []
    for p in seg:
        if not isinstance(p, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                              and math.isfinite(v) for v in p) or len(p) % 2:
            raise DataError(f"{path}: {what}: a polygon must be a flat list [x1, y1, x2, y2, ...] of numbers",
                            hint=COCO_HINT)
        if len(p) < 6:  # fewer than 3 points covers no pixel (and pycocotools reads 4 numbers as a box)
            skipped[0] += 1
            continue
        for x, y in zip(p[0::2], p[1::2]):
            if not (-SLACK <= x <= W + SLACK and -SLACK <= y <= H + SLACK):
                raise DataError(f"{path}: {what} reaches ({x:g}, {y:g}), outside the {W}x{H} image",
                                hint="fix the label in the labelling tool (every point inside the image)")
        polys.append(p)
    return polys


def _rle(path: Path, what: str, seg: dict, H: int, W: int) -> dict:
    size, counts = seg.get("size"), seg.get("counts")
    if list(size or []) != [H, W]:
        raise DataError(f"{path}: {what}: RLE size {size} is not the image's [height, width] [{H}, {W}]",
                        hint=COCO_HINT)
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts) or sum(counts) != H * W:
            raise DataError(f"{path}: {what}: uncompressed RLE counts must be non-negative integers summing to "
                            f"{H}x{W} = {H * W} pixels (got {sum(c for c in counts if isinstance(c, int))})",
                            hint=COCO_HINT)
    elif not isinstance(counts, str):
        raise DataError(f"{path}: {what}: RLE \"counts\" must be a string or a list of integers", hint=COCO_HINT)
    return {"size": [H, W], "counts": counts}


def _image_hw(path: Path, what: str, im: dict, img: Path) -> tuple[int, int]:
    """(H, W) as the JSON gives it; the file's own when it gives neither (some hand-made exports leave them out)."""
    if im.get("height") is None and im.get("width") is None:
        with open_pil(img) as f:
            return f.size[1], f.size[0]
    return _field(path, what, im, "height", int), _field(path, what, im, "width", int)


def _known(key, table: dict) -> bool:
    return not isinstance(key, (list, dict)) and key in table


def _fixed(lab: Labels) -> Callable[[tuple[int, int]], Labels]:
    """A COCO file states each image's labels at its own size: the same labels whatever size is asked."""
    return lambda hw: lab


def parse_file(path: Path, doc: dict, bases: list[Path], cat_class: dict[int, int],
               skipped: list[int]) -> list[tuple[Path, Path, Labels]]:
    """(image file, its base folder, its labels) for every image of one COCO file, in file order."""
    images: dict[Any, Any] = {}  # image id -> its file and size
    shapes: dict[Any, list] = {}  # image id -> its painted regions
    for k, im in enumerate(doc["images"]):
        what = f"images[{k}]"
        iid = im.get("id") if isinstance(im, dict) else None
        if iid is None or isinstance(iid, (list, dict, bool)):
            raise DataError(f"{path}: {what} has no valid \"id\"", hint=COCO_HINT)
        fn = _field(path, what, im, "file_name", str)
        if iid in images:
            raise DataError(f"{path}: image id {iid} appears twice ('{images[iid][0]}', '{fn}')", hint=COCO_HINT)
        img = find_image(fn, bases)
        if img is None:
            raise DataError(f"{path}: image '{fn}' is not in {' or '.join(str(b) for b in bases if b.is_dir())}",
                            hint="export the images with the labels (the file_name of each image is looked for "
                                 "beside the annotation file or in images/)")
        images[iid], shapes[iid] = (fn, _image_hw(path, what, im, img), img), []
    known = ", ".join(map(str, sorted(cat_class)))
    for k, a in enumerate(doc.get("annotations", [])):
        if not isinstance(a, dict):
            raise DataError(f"{path}: annotations[{k}] is not an object", hint=COCO_HINT)
        what = f"annotation {a.get('id', f'[{k}]')}"
        if not _known(a.get("image_id"), images):
            raise DataError(f"{path}: {what} is on image_id {a.get('image_id')}, which is not in \"images\"",
                            hint=COCO_HINT)
        fn, (H, W), _ = images[a["image_id"]]
        what += f" (image '{fn}')"
        if not _known(a.get("category_id"), cat_class):
            raise DataError(f"{path}: {what} has category_id {a.get('category_id')}, an unknown category "
                            f"(\"categories\" has ids {known})", hint="export the labels with their categories")
        seg = a.get("segmentation")
        region: Any
        if isinstance(seg, dict):
            region = _rle(path, what, seg, H, W)
        elif isinstance(seg, list) and seg:
            region = _polygons(path, what, seg, H, W, skipped)
            if not region:
                continue
        else:
            raise DataError(f"{path}: {what} has no segmentation (a box only?): a segmentation dataset needs "
                            f"polygons or masks", hint="label with polygons or masks, or export them")
        shapes[a["image_id"]].append(Shape(cat_class[a["category_id"]], region, bool(a.get("iscrowd"))))
    out = []
    for iid, (fn, hw, img) in images.items():
        base = next((b for b in bases if img.is_relative_to(b)), img.parent)
        out.append((img, base, Labels(shapes[iid], hw, path)))
    return out


def open_coco(root: Path, files: list[tuple[Path, str, list[Path]]], *, val_split: float,
              seed: int) -> tuple[LabelDataset, LabelDataset, DataInfo]:
    docs = [(p, load_json(p)) for p, _, _ in files]
    cat_class, names, notes = categories(docs)
    where = " and ".join(str(p) for p, _, _ in files)
    if len(names) < 2:
        raise DataError(f"{where}: no categories to learn (\"categories\" lists none besides a background)",
                        hint=COCO_HINT)
    skipped = [0]
    flat = [(split, *r) for (p, split, bases), (_, doc) in zip(files, docs)
            for r in parse_file(p, doc, bases, cat_class, skipped)]  # (split, image, base folder, labels)
    if not flat:
        raise DataError(f"{where}: no images", hint=COCO_HINT)
    if not any(lab.shapes for *_, lab in flat):  # training on it would learn 'all background'
        raise DataError(f"{where}: no annotations on any of the {len(flat)} images",
                        hint="export the labels too (the annotations list is empty)")
    groups: dict[str, list[LabelItem]] = {}
    for (split, img, _, lab), name in zip(flat, unique_names([r[1] for r in flat], [r[2] for r in flat])):
        groups.setdefault(split, []).append(LabelItem(Item(name, img, lab.source), _fixed(lab)))
    sp = choose_split(groups, val_split, seed, " and ".join(str(p.relative_to(root)) for p, split, _ in files
                                                            if split in ("train", "val")))
    train, val, C, image_notes_ = label_views(root, "COCO", sp.train, sp.val, names, check_size=True)
    empty = sum(not lab.shapes for *_, lab in flat)
    crowd = sum(s.crowd for *_, lab in flat for s in lab.shapes)
    notes = [f"COCO {', '.join(str(p.relative_to(root)) for p, _, _ in files)}: {len(names) - 1} categories -> "
             f"classes 1..{len(names) - 1} (0 = background); overlaps: larger instances first, smaller on top",
             *notes, *sp.notes, *image_notes_]
    if crowd:
        notes.append(f"{crowd} crowd regions (iscrowd) ignored (255) where no instance covers them")
    if empty:
        notes.append(f"{empty} images without annotations: all background")
    if skipped[0]:
        notes.append(f"{skipped[0]} polygons with fewer than 3 points skipped")
    info = DataInfo("coco", str(root), list(names), list(train.colors), C, len(train), len(val), sp.how, notes,
                    description=f"COCO {root}: {len(names)} classes, {'RGB' if C == 3 else 'grayscale'}")
    return train, val, info


__all__ = ["coco_files", "open_coco", "load_json", "COCO_HINT"]
