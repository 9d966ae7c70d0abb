"""Render a grid of stroke-3 sketches as one SVG document, one ``<path>`` per stroke."""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import escape

import numpy as np

from sketchlab.render.grid import Cell, as_sketch_list, fit_polylines, make_grid, parse_colors


def _path_data(line: np.ndarray) -> str:
    # a one-point stroke becomes a zero-length segment, which a round cap draws as a dot
    if len(line) == 1:
        line = np.concatenate([line, line])
    coords = [f"{x:.2f},{y:.2f}" for x, y in line]
    return f"M{coords[0]} L" + " ".join(coords[1:])


def _fit_caption(text: str, width: float, font_size: float) -> str:
    # SVG can't measure text without a renderer: assume ~0.6 em per character, as in common sans fonts
    limit = max(1, int(width / (0.6 * font_size)))
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def render_svg(sketches: Sequence[Cell], *, cols: int | None = None, cell_size: int = 128,
               margin: float = 8, line_width: float = 2.0, color: str | Sequence[str] = "black",
               captions: Sequence[str | None] | None = None, caption_height: int = 16) -> str:
    """A grid of sketches as an SVG document (a string), white background, in pixel units.

    Each sketch is fitted into its ``cell_size`` cell inside ``margin`` pixels, aspect ratio kept.
    ``color`` is one colour or a sequence cycled over the strokes in drawing order (e.g.
    ``STROKE_ORDER_PALETTE``). ``None`` or empty sketches leave blank cells; non-finite rows are dropped.
    With ``captions`` (one per sketch, ``None`` for none) each row gets a ``caption_height`` band under
    its cells; see ``sketchlab.render.grid`` for the canvas size.
    """
    cells = as_sketch_list(sketches)
    grid = make_grid(len(cells), cols, cell_size, captions, caption_height)
    palette = parse_colors(color)
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{grid.width}" height="{grid.height}" '
        f'viewBox="0 0 {grid.width} {grid.height}">',
        f'<rect x="0" y="0" width="{grid.width}" height="{grid.height}" fill="#ffffff"/>',
        f'<g fill="none" stroke-width="{line_width:g}" stroke-linecap="round" stroke-linejoin="round">',
    ]
    for index, sketch in enumerate(cells):
        x0, y0 = grid.origin(index)
        out.append(f'<g class="cell" data-index="{index}" transform="translate({x0},{y0})">')
        for order, line in enumerate(fit_polylines(sketch, grid.cell_size, margin, line_width, index)):
            out.append(f'<path d="{_path_data(line)}" stroke="{palette[order % len(palette)]}"/>')
        out.append("</g>")
    out.append("</g>")
    if captions is not None:
        font_size = 0.7 * grid.caption_height
        out.append(f'<g font-family="sans-serif" font-size="{font_size:g}" fill="#000000" text-anchor="middle">')
        for index, caption in enumerate(captions):
            if not caption:
                continue
            x0, y0 = grid.origin(index)
            text = _fit_caption(str(caption), grid.cell_size, font_size)
            baseline = y0 + grid.cell_size + 0.8 * grid.caption_height
            out.append(f'<text x="{x0 + grid.cell_size / 2:g}" y="{baseline:g}">{escape(text)}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"

