"""Grid geometry shared by the SVG and PNG renderers: cleaning sketches, fitting them into cells, layouts.

A grid is a flat sequence of cells filled row by row, ``cols`` per row; a cell is a stroke-3 sketch or
``None`` (left blank). Every cell is ``cell_size`` pixels square; with captions each row also gets a
``caption_height`` band under its cells, so the canvas is
``(cols * cell_size, rows * (cell_size + caption_height))`` and ``(cols * cell_size, rows * cell_size)``
without them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import ImageColor

from sketchlab.data.strokes import to_polylines

#: A stroke-3 array-like (numpy array, nested list or CPU tensor), or ``None`` for a blank cell.
Cell = Any

#: Distinct colours (matplotlib's tab10) for colouring strokes by order: ``color=STROKE_ORDER_PALETTE``.
STROKE_ORDER_PALETTE: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)


@dataclass(frozen=True)
class Grid:
    """The geometry of a grid of ``n`` cells: where each cell and its caption band lie on the canvas."""

    n: int
    cols: int
    rows: int
    cell_size: int
    caption_height: int  # 0 without captions

    @property
    def width(self) -> int:
        return self.cols * self.cell_size

    @property
    def height(self) -> int:
        return self.rows * (self.cell_size + self.caption_height)

    def origin(self, index: int) -> tuple[int, int]:
        """Top-left pixel of cell ``index``."""
        row, col = divmod(index, self.cols)
        return col * self.cell_size, row * (self.cell_size + self.caption_height)


def make_grid(n: int, cols: int | None, cell_size: int, captions: Sequence[str | None] | None,
              caption_height: int) -> Grid:
    """Validate the layout options and return the grid geometry (``cols`` defaults to ``ceil(sqrt(n))``)."""
    if n == 0:
        raise ValueError("no sketches to render: the grid needs at least one cell")
    if cols is None:
        cols = math.ceil(math.sqrt(n))
    if not isinstance(cols, (int, np.integer)) or cols < 1:
        raise ValueError(f"cols must be a positive integer, got {cols!r}")
    if not isinstance(cell_size, (int, np.integer)) or cell_size < 1:
        raise ValueError(f"cell_size must be a positive integer, got {cell_size!r}")
    if captions is not None:
        if len(captions) != n:
            raise ValueError(f"got {len(captions)} captions for {n} sketches")
        if caption_height < 1:
            raise ValueError(f"caption_height must be positive when captions are given, got {caption_height}")
    return Grid(n=n, cols=int(cols), rows=math.ceil(n / cols), cell_size=int(cell_size),
                caption_height=int(caption_height) if captions is not None else 0)


def as_sketch_list(sketches: Sequence[Cell]) -> list[Cell]:
    """The cells as a list; a lone (N, 3) array is refused, since iterating it would yield its rows."""
    if isinstance(sketches, np.ndarray) and sketches.ndim == 2:
        raise ValueError(f"expected a sequence of sketches, got one {sketches.shape} array: wrap it in a list")
    return list(sketches)


def finite_stroke3(sketch: Cell, index: int = 0) -> np.ndarray:
    """A float64 (N, 3) copy of ``sketch`` without non-finite rows (``None`` or empty gives 0 rows).

    A dropped row that ended a stroke passes its pen lift to the previous kept row, so junk in the
    middle of a decoder's output does not join two strokes into one.
    """
    if sketch is None:
        return np.zeros((0, 3))
    if hasattr(sketch, "detach"):  # a torch tensor, possibly on GPU or requiring grad
        sketch = sketch.detach().cpu().numpy()
    array = np.asarray(sketch, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 3))
    if array.ndim != 2 or array.shape[1] != 3:
        hint = " (stroke-5? convert with sketchlab.data.strokes.to_stroke3)" if array.shape[-1] == 5 else ""
        raise ValueError(f"sketch {index} must be a stroke-3 (N, 3) array, got shape {array.shape}{hint}")
    ok = np.isfinite(array).all(axis=1)
    if ok.all():
        return array.copy()
    kept = np.flatnonzero(ok)
    out = array[kept]
    lifted_junk = np.flatnonzero(~ok & (np.nan_to_num(array[:, 2]) > 0.5))
    previous = np.searchsorted(kept, lifted_junk) - 1
    out[previous[previous >= 0], 2] = 1.0
    return out


def fit_polylines(sketch: Cell, cell_size: int, margin: float, line_width: float,
                  index: int = 0) -> list[np.ndarray]:
    """The sketch's strokes as polylines in cell pixels, scaled to fit inside the margins, centred.

    The aspect ratio is kept. The inset is ``margin + line_width / 2`` so the ink, not just the path,
    stays inside the margin. A zero-extent sketch (a single point, or all points equal) lands on the
    centre; non-finite points (offsets so huge their sum overflows) are dropped.
    """
    inset = margin + line_width / 2
    if margin < 0 or line_width <= 0:
        raise ValueError(f"margin must be >= 0 and line_width > 0, got margin={margin}, line_width={line_width}")
    if 2 * inset >= cell_size:
        raise ValueError(f"margin={margin} and line_width={line_width} leave no room in a {cell_size}px cell")
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is expected junk, handled below
        lines = [line[np.isfinite(line).all(axis=1)] for line in to_polylines(finite_stroke3(sketch, index))]
        lines = [line for line in lines if len(line)]
        if not lines:
            return []
        points = np.concatenate(lines)
        spread = np.ptp(points, axis=0)
    if not np.isfinite(spread).all():
        # extent overflows float64 (points near +-1e308): shrink first, only the shape matters
        biggest = np.abs(points).max()
        lines = [line / biggest for line in lines]
        points = points / biggest
    low = points.min(axis=0)
    extent = points.max(axis=0) - low
    size = float(extent.max())
    scale = (cell_size - 2 * inset) / size if size > 0 else 0.0
    centre = low + extent / 2
    return [(line - centre) * scale + cell_size / 2 for line in lines]


def parse_colors(color: str | Sequence[str]) -> list[str]:
    """One colour or a per-stroke cycle of colours, as ``#rrggbb`` strings (both SVG and Pillow read them)."""
    names = [color] if isinstance(color, str) else list(color)
    if not names:
        raise ValueError("color must be a colour or a non-empty sequence of colours")
    out = []
    for name in names:
        try:
            rgb = ImageColor.getrgb(name)
        except (ValueError, AttributeError) as error:
            raise ValueError(f"unknown colour {name!r}") from error
        out.append("#{:02x}{:02x}{:02x}".format(*rgb[:3]))
    return out


def pair_rows(originals: Sequence[Cell], reconstructions: Sequence[Cell],
              pairs_per_row: int = 1) -> tuple[list[Cell], int]:
    """Interleave originals and reconstructions so the grid reads original | reconstruction.

    Returns ``(cells, cols)`` for the renderers: ``render_png(*pair_rows(x, y))`` would misplace
    ``cols``, so use ``cells, cols = pair_rows(x, y); render_png(cells, cols=cols)``.
    """
    originals, reconstructions = list(originals), list(reconstructions)
    if len(originals) != len(reconstructions):
        raise ValueError(f"got {len(originals)} originals but {len(reconstructions)} reconstructions")
    if pairs_per_row < 1:
        raise ValueError(f"pairs_per_row must be >= 1, got {pairs_per_row}")
    cells = [cell for pair in zip(originals, reconstructions) for cell in pair]
    return cells, 2 * pairs_per_row


def interpolation_rows(sequences: Sequence[Sequence[Cell]]) -> tuple[list[Cell], int]:
    """One grid row per interpolation (endpoints included); shorter rows are padded with blank cells.

    Returns ``(cells, cols)`` with ``cols`` the longest interpolation's length.
    """
    rows = [list(sequence) for sequence in sequences]
    if not rows or not any(rows):
        raise ValueError("no interpolations to lay out")
    cols = max(len(row) for row in rows)
    return [cell for row in rows for cell in row + [None] * (cols - len(row))], cols
