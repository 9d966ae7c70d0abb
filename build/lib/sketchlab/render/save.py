"""Write a grid of sketches to disk, as SVG or PNG by the file's suffix."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sketchlab.fileio import atomic_open
from sketchlab.render.grid import Cell
from sketchlab.render.raster import render_png
from sketchlab.render.svg import render_svg

SUFFIXES = (".svg", ".png")


def save_grid(sketches: Sequence[Cell], path: str | os.PathLike, **options: Any) -> Path:
    """Render ``sketches`` with :func:`render_svg` or :func:`render_png` (by suffix) and write ``path``.

    ``options`` go to the renderer (``cols``, ``cell_size``, ``captions``...; ``supersample`` is PNG-only).
    Parent folders are created; the file is written to a temporary name and renamed, so a reader never
    sees half a file. Returns the path.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"cannot save a sketch grid as {path.name!r}: the suffix must be one of {SUFFIXES}")
    # render before touching the disk so a rendering error leaves nothing behind
    if suffix == ".svg":
        payload = render_svg(sketches, **options).encode("utf-8")
    else:
        payload = render_png(sketches, **options)
    with atomic_open(path, "wb") as handle:
        if isinstance(payload, bytes):
            handle.write(payload)
        else:
            payload.save(handle, format="PNG")
    return path
