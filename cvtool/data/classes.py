"""What a dataset says its classes are: classes.json (names, colours, the ignore colour) or classes.txt, read and
checked (cvtool/data/folder.py applies them to the masks)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cvtool.data.io import read_json
from cvtool.errors import DataError

CLASSES_HINT = ('accepted: classes.json as ["bg", "cat", ...] or {"classes": [...], "colors": [[r, g, b], ...]} '
                '(optionally "ignore_color": [r, g, b]); or classes.txt with one class name a line')


@dataclass(frozen=True)
class ClassSpec:
    """What classes.json / classes.txt says. colors: one (r, g, b) per class or None."""

    path: Path
    names: list[str]
    colors: list[tuple[int, int, int]] | None = None
    ignore_color: tuple[int, int, int] | None = None


def _short(x) -> str:
    t = json.dumps(x)
    return t if len(t) <= 40 else t[:37] + "..."


def _class_names(path: Path, names) -> list[str]:
    if not isinstance(names, list):
        raise DataError(f"{path}: \"classes\" must be a list of class names, got {_short(names)}", hint=CLASSES_HINT)
    if not names:
        raise DataError(f"{path}: no class names", hint=CLASSES_HINT)
    for k, n in enumerate(names):
        if not isinstance(n, str) or not n.strip():
            raise DataError(f"{path}: class {k} is {_short(n)}, expected a name (a non-empty string)",
                            hint=CLASSES_HINT)
    names = [n.strip() for n in names]
    dup = next((n for k, n in enumerate(names) if n in names[:k]), None)
    if dup is not None:
        raise DataError(f"{path}: class name '{dup}' appears twice (each class needs its own name)",
                        hint=CLASSES_HINT)
    return names


def _color(path: Path, what: str, c) -> tuple[int, int, int]:
    if isinstance(c, str) and len(c) == 7 and c[0] == "#":
        try:
            return (int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16))
        except ValueError:
            pass
    elif (isinstance(c, list) and len(c) == 3
          and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in c)):
        return tuple(c)
    raise DataError(f"{path}: {what} is {_short(c)}, expected [r, g, b] with values 0..255 (or \"#rrggbb\")",
                    hint=CLASSES_HINT)


def read_classes_json(path: Path) -> ClassSpec | None:
    """classes.json as a list of names, or {"classes": [...], "colors": [[r, g, b], ...], "ignore_color": [r, g, b]}
    (colors and ignore_color optional; other keys ignored). None when the file is absent; DataError when malformed."""
    if not path.is_file():
        if path.exists():
            raise DataError(f"{path}: not a file", hint=CLASSES_HINT)
        return None
    doc = read_json(path, "classes", CLASSES_HINT)
    if isinstance(doc, list):
        return ClassSpec(path, _class_names(path, doc))
    if not isinstance(doc, dict):
        raise DataError(f"{path}: expected a list of class names or an object with \"classes\", got {_short(doc)}",
                        hint=CLASSES_HINT)
    if "classes" not in doc:
        keys = ", ".join(map(str, doc)) or "none"
        raise DataError(f"{path}: no \"classes\" list (keys found: {keys})", hint=CLASSES_HINT)
    names = _class_names(path, doc["classes"])
    colors = doc.get("colors")
    if colors is not None:
        if not isinstance(colors, list):
            raise DataError(f"{path}: \"colors\" must be a list of [r, g, b], got {_short(colors)}", hint=CLASSES_HINT)
        if len(colors) != len(names):
            raise DataError(f"{path}: {len(colors)} colors for {len(names)} classes, expected one [r, g, b] per class",
                            hint=CLASSES_HINT)
        colors = [_color(path, f"colors[{k}]", c) for k, c in enumerate(colors)]
    ignore = doc.get("ignore_color")
    if ignore is not None:
        if colors is None:
            raise DataError(f"{path}: \"ignore_color\" needs \"colors\" (one [r, g, b] per class)",
                            hint=CLASSES_HINT)
        ignore = _color(path, "ignore_color", ignore)
    return ClassSpec(path, names, colors, ignore)


def read_classes_txt(path: Path) -> ClassSpec | None:
    """classes.txt: one class name a line (blank lines skipped). None when the file is absent."""
    if not path.is_file():
        return None
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read classes ({e})", hint=CLASSES_HINT) from None
    return ClassSpec(path, _class_names(path, [ln.strip() for ln in lines if ln.strip()]))


def read_classes(root: Path) -> ClassSpec | None:
    """root/classes.json, else root/classes.txt, else None."""
    spec = read_classes_json(root / "classes.json")
    return spec if spec is not None else read_classes_txt(root / "classes.txt")
