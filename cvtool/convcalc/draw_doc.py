"""--draw: the layer drawn (cvtool/convcalc/draw.py) and written to a file; the document says what was written."""

from __future__ import annotations

from cvtool.convcalc.chain import LayerSpec
from cvtool.convcalc.draw import render, write


def draw_doc(spec: LayerSpec, hw: tuple[int, int], path: str) -> dict:
    images, lay = render(spec, hw)
    written = write(path, images, lay)
    return {"mode": "draw", "file": str(written), "frames": len(images), "size": list(lay.size), "title": lay.title,
            "notes": lay.notes}


__all__ = ["draw_doc"]
