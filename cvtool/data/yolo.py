"""YOLO segmentation labels (Ultralytics, Roboflow's YOLO export) read as a segmentation dataset.

Each image has a label file found by Ultralytics' rule: the last 'images' folder of its path becomes 'labels'
and the suffix '.txt' (images/train/a.jpg -> labels/train/a.txt). A line is one instance:
`class x1 y1 x2 y2 ...`, at least 3 points, coordinates normalised to 0..1 by the image's width and height.
An image without a label file is all background. Rasterised like COCO polygons (cvtool.data.labels).

Layouts: data.yaml (or another *.yaml with "names") whose train / val / test give image folders or .txt lists,
relative to its "path" or to the yaml's folder (Roboflow's "../train/images" is also looked for beside the yaml);
without one, DIR/images/<split>/ + DIR/labels/<split>/ (Ultralytics), DIR/<split>/images + DIR/<split>/labels
(Roboflow), or DIR/images + DIR/labels split by --val-split. Class names from data.yaml "names" (a list or
{index: name}), else DIR/classes.txt, else class0, class1, ...; YOLO class c is cvtool class c + 1 (0: background;
a class named "background" is class 0).

data.yaml is read with PyYAML's safe_load: exports hold flow lists, quoted names, {index: name} maps and nested
sections (Roboflow's "roboflow:"), more of YAML than a small parser of our own would read correctly.
"""

from __future__ import annotations

import math
from pathlib import Path

from cvtool.data.classes import read_classes_txt
from cvtool.data.folder import Item
from cvtool.data.io import is_image_file
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
from cvtool.errors import DataError, UsageError

YOLO_HINT = ("YOLO segmentation: images/ and labels/ (one .txt per image, a line per instance: class x1 y1 x2 y2 "
             "... normalised to 0..1), class names in data.yaml")
SLACK = 1e-3  # normalised coordinates a vertex may lie beyond 0..1 (float rounding in exports); clipped
SPLITS = ("train", "val", "valid", "test")


def read_yaml(path: Path) -> dict:
    try:
        import yaml
    except ImportError:
        raise UsageError(f"reading {path.name} needs PyYAML, which is not installed",
                         hint="install it: pip install pyyaml") from None
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        raise DataError(f"{path}: not valid YAML ({getattr(e, 'problem', None) or e}{at})", hint=YOLO_HINT) from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})", hint=YOLO_HINT) from None
    if not isinstance(doc, dict):
        raise DataError(f"{path}: expected a mapping (names:, train:, val:), got {type(doc).__name__}", hint=YOLO_HINT)
    return doc


def find_yaml(root: Path) -> Path | None:
    """root/data.yaml, else the first root/*.yaml or *.yml that names classes."""
    if (root / "data.yaml").is_file():
        return root / "data.yaml"
    for p in sorted([*root.glob("*.yaml"), *root.glob("*.yml")]):
        try:
            if any(ln.startswith("names") for ln in p.read_text(errors="replace").splitlines()):
                return p
        except OSError:
            continue
    return None


def yaml_names(path: Path, doc: dict) -> list[str]:
    names = doc.get("names")
    if isinstance(names, dict) and all(isinstance(k, int) for k in names):
        if sorted(names) != list(range(len(names))):
            raise DataError(f"{path}: \"names\" indices {sorted(names)} are not 0..{len(names) - 1}", hint=YOLO_HINT)
        names = [names[k] for k in range(len(names))]
    if not isinstance(names, list) or not names or not all(isinstance(n, (str, int)) for n in names):
        raise DataError(f"{path}: \"names\" must be a list of class names or {{index: name}}", hint=YOLO_HINT)
    names = [str(n).strip() for n in names]
    nc = doc.get("nc")
    if nc is not None and nc != len(names):
        raise DataError(f"{path}: nc is {nc} but \"names\" lists {len(names)} classes", hint=YOLO_HINT)
    return names


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last 'images' folder of the path -> 'labels', the suffix -> .txt."""
    parts = list(image.parts)
    k = max((i for i, p in enumerate(parts[:-1]) if p == "images"), default=None)
    if k is None:
        return image.with_suffix(".txt")
    parts[k] = "labels"
    return Path(*parts).with_suffix(".txt")


def list_images(src: Path, bases: list[Path]) -> list[Path]:
    """Image files of a folder (recursively) or of a .txt list: one path a line, relative to the list's folder or
    to one of bases (data.yaml's path, its folder), whichever holds the file."""
    if src.is_dir():
        return sorted(p for p in src.rglob("*") if is_image_file(p))
    try:
        lines = [ln.strip() for ln in src.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{src}: cannot read the image list ({e})", hint=YOLO_HINT) from None
    out = []
    for p in map(Path, lines):
        cands = [p] if p.is_absolute() else [src.parent / p, *(b / p for b in bases)]
        out.append(next((c for c in cands if c.is_file()), cands[0]))  # a missing one: read_image names it
    return out


def yaml_bases(path: Path, doc: dict) -> list[Path]:
    """The folders data.yaml's relative paths may start from: its "path" (relative to the yaml's folder), the folder."""
    here = path.parent
    return ([Path(str(doc["path"])) if Path(str(doc["path"])).is_absolute() else here / str(doc["path"])]
            if doc.get("path") else []) + [here]


def yaml_sources(path: Path, doc: dict) -> dict[str, list[Path]] | None:
    """split -> image folders / lists named by data.yaml; None when its train entry is missing or not found."""
    here, bases = path.parent, yaml_bases(path, doc)
    out: dict[str, list[Path]] = {}
    for key in ("train", "val", "test"):
        entries = doc.get(key)
        entries = [entries] if isinstance(entries, str) else entries if isinstance(entries, list) else []
        for e in map(str, entries):
            cands = [b / e for b in bases] + [here / Path(*[p for p in Path(e).parts if p != ".."])]
            found = next((c for c in cands if c.exists()), None)
            if found is None:
                if key == "train":
                    return None
                continue
            out.setdefault(key, []).append(found)
    return out if out.get("train") else None


def layout_sources(root: Path) -> dict[str, list[Path]]:
    """split ('' for none) -> image folders of the standard layouts, {} when root has none."""
    img, lab = root / "images", root / "labels"
    if img.is_dir() and lab.is_dir():
        subs = [d for d in sorted(img.iterdir()) if d.is_dir() and split_name(d.name)]
        if subs:
            out: dict[str, list[Path]] = {}
            for d in subs:
                out.setdefault(split_name(d.name), []).append(d)
            return out
        return {"": [img]}
    out = {}
    for s in SPLITS:
        if (root / s / "images").is_dir() and (root / s / "labels").is_dir():
            out.setdefault(split_name(s), []).append(root / s / "images")
    return out


def is_yolo(root: Path) -> bool:
    return bool(layout_sources(root)) or find_yaml(root) is not None


def read_label_file(path: Path, K: int | None) -> list[tuple[int, list[float]]]:
    """(YOLO class, normalised flat polygon) per line; DataError naming file and line for anything else."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read labels ({e})", hint=YOLO_HINT) from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            vals = [float(v) for v in parts]
        except ValueError:
            raise DataError(f"{path}:{n}: expected numbers (class x1 y1 x2 y2 ...), got '{line.strip()[:40]}'",
                            hint=YOLO_HINT) from None
        c, xy = vals[0], vals[1:]
        if not c.is_integer() or c < 0:
            raise DataError(f"{path}:{n}: class {parts[0]} is not a class index (0, 1, 2, ...)", hint=YOLO_HINT)
        if K is not None and c >= K:
            raise DataError(f"{path}:{n}: class {int(c)} is an unknown category (the names list {K}: 0..{K - 1})",
                            hint="add the class to data.yaml \"names\", or fix the label")
        if len(xy) == 4:
            raise DataError(f"{path}:{n}: 'class cx cy w h' is a YOLO detection box, not a polygon",
                            hint="export YOLO segmentation (polygons), not detection")
        if len(xy) < 6 or len(xy) % 2:
            raise DataError(f"{path}:{n}: {len(xy)} coordinates; a polygon needs x y pairs, at least 3 points",
                            hint=YOLO_HINT)
        bad = next((v for v in xy if not (math.isfinite(v) and -SLACK <= v <= 1 + SLACK)), None)
        if bad is not None:
            raise DataError(f"{path}:{n}: coordinate {parts[1 + xy.index(bad)]} is outside the image "
                            f"(normalised coordinates are 0..1)", hint="fix the label, or export normalised polygons")
        out.append((int(c), [min(max(v, 0.0), 1.0) for v in xy]))
    return out


def _labels(polys: list[tuple[int, list[float]]], cls_of: list[int], path: Path):
    def at(hw: tuple[int, int]) -> Labels:
        H, W = hw
        shapes = [Shape(cls_of[c], [[v * (W if k % 2 == 0 else H) for k, v in enumerate(p)]]) for c, p in polys]
        return Labels(shapes, hw, path)
    return at


def named_classes(root: Path, ypath: Path | None, doc: dict) -> tuple[list[str] | None, str | None]:
    """(YOLO class names, the file naming them): data.yaml's names, else classes.txt, else (None, None)."""
    if ypath is not None and "names" in doc:
        return yaml_names(ypath, doc), ypath.name
    spec = read_classes_txt(root / "classes.txt")
    return (spec.names, "classes.txt") if spec is not None else (None, None)


def class_map(names: list[str]) -> tuple[list[int], list[str]]:
    """(cvtool class of each YOLO class, cvtool's class names): c -> c + 1 after the background, which a class
    named 'background' is."""
    cls_of, classes = [], ["background"]
    for n in names:
        if n.lower() == "background":
            cls_of.append(0)
        else:
            cls_of.append(len(classes))
            classes.append(n)
    return cls_of, classes


def open_yolo(root: Path, *, val_split: float, seed: int) -> tuple[LabelDataset, LabelDataset, DataInfo]:
    ypath = find_yaml(root)
    doc = read_yaml(ypath) if ypath is not None else {}
    sources = yaml_sources(ypath, doc) if ypath is not None else None
    how = f"{ypath.name} train/val" if sources and ypath is not None else "folders"
    sources = sources or layout_sources(root)
    if not sources:
        raise DataError(f"{ypath or root}: found no images (looked for images/ + labels/, "
                        f"{'/'.join(SPLITS)}/images + labels)", hint=YOLO_HINT)
    names, where = named_classes(root, ypath, doc)
    bases = yaml_bases(ypath, doc) if ypath is not None else [root]
    images = {s: [(img, src) for src in srcs for img in list_images(src, bases)] for s, srcs in sources.items()}
    parsed = {s: [(img, src, label_path(img)) for img, src in lst] for s, lst in images.items()}
    polys = {lp: read_label_file(lp, None if names is None else len(names))
             for lst in parsed.values() for _, _, lp in lst if lp.is_file()}
    flat = [(s, img, src, lp) for s, lst in parsed.items() for img, src, lp in lst]
    if not flat:
        raise DataError(f"{root}: no images in {', '.join(str(p) for ps in sources.values() for p in ps)}",
                        hint=YOLO_HINT)
    if not any(polys.values()):  # training on it would learn 'all background'
        img, lp = flat[0][1], flat[0][3]
        raise DataError(f"{root}: none of the {len(flat)} images has a label (no label file, or empty ones: "
                        f"{img.name} pairs with {lp})", hint=YOLO_HINT)
    if names is None:
        top = max((c for ps in polys.values() for c, _ in ps), default=0)
        names = [f"class{k}" for k in range(top + 1)]
    cls_of, classes = class_map(names)
    stems = unique_names([img for _, img, _, _ in flat], [src for _, _, src, _ in flat])
    groups: dict[str, list[LabelItem]] = {}
    for (s, img, _, lp), name in zip(flat, stems):
        groups.setdefault(s, []).append(LabelItem(Item(name, img, lp), _labels(polys.get(lp, []), cls_of, lp)))
    sp = choose_split(groups, val_split, seed, how)
    train, val, C, image_notes_ = label_views(root, "YOLO", sp.train, sp.val, classes, check_size=False)
    notes = [f"YOLO labels: {len(names)} classes"
             + (f" named in {where}" if where else f" (no data.yaml or classes.txt: named class0..class{len(names) - 1})")
             + f" -> classes 1..{len(classes) - 1} (0 = background); overlaps: larger instances first, smaller on top",
             *sp.notes, *image_notes_]
    if n := sum(not lp.is_file() for _, _, _, lp in flat):
        notes.append(f"{n} images without a label file: all background")
    if n := sum(lp.is_file() and not polys[lp] for _, _, _, lp in flat):
        notes.append(f"{n} empty label files: all background")
    info = DataInfo("yolo", str(root), classes, list(train.colors), C, len(train), len(val), sp.how, notes,
                    description=f"YOLO {root}: {len(classes)} classes, {'RGB' if C == 3 else 'grayscale'}")
    return train, val, info


__all__ = ["open_yolo", "is_yolo", "find_yaml", "read_yaml", "label_path", "read_label_file", "YOLO_HINT"]
