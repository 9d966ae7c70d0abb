"""Rasterise a grid of stroke-3 sketches with Pillow, anti-aliased by supersampling."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from sketchlab.render.grid import Cell, as_sketch_list, fit_polylines, make_grid, parse_colors


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError):  # Pillow built without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def _fit_caption(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: float) -> str:
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "\u2026") > width:
        text = text[:-1]
    return text + "\u2026"


def render_png(sketches: Sequence[Cell], *, cols: int | None = None, cell_size: int = 128,
               margin: float = 8, line_width: float = 2.0, color: str | Sequence[str] = "black",
               captions: Sequence[str | None] | None = None, caption_height: int = 16,
               supersample: int = 4) -> Image.Image:
    """A grid of sketches as an RGB image on white, ``cell_size`` pixels per cell.

    The size is exactly ``(cols * cell_size, rows * cell_size)`` with ``rows = ceil(n / cols)`` and
    ``cols`` defaulting to ``ceil(sqrt(n))``; with ``captions`` each row is ``caption_height`` taller
    (the caption band sits under the cells). Strokes are drawn ``supersample`` times larger and
    downsampled with LANCZOS for anti-aliasing. Other options as :func:`render_svg`.
    """
    cells = as_sketch_list(sketches)
    grid = make_grid(len(cells), cols, cell_size, captions, caption_height)
    palette = parse_colors(color)
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    s = int(supersample)
    big = Image.new("RGB", (grid.width * s, grid.height * s), "white")
    draw = ImageDraw.Draw(big)
    width = max(1, round(line_width * s))
    radius = width / 2
    for index, sketch in enumerate(cells):
        x0, y0 = grid.origin(index)
        for order, line in enumerate(fit_polylines(sketch, grid.cell_size, margin, line_width, index)):
            fill = palette[order % len(palette)]
            points = [((x0 + x) * s, (y0 + y) * s) for x, y in line]
            if len(points) > 1:
                draw.line(points, fill=fill, width=width, joint="curve")
            # Pillow's wide lines end flat: add round caps (and one-point strokes' dots) by hand
            for x, y in {points[0], points[-1]}:
                draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill)
    image = big.resize((grid.width, grid.height), Image.Resampling.LANCZOS) if s > 1 else big
    if captions is not None:
        # text is drawn at the final resolution: sharper than downsampled text
        font = _font(max(6, round(0.7 * grid.caption_height)))
        draw = ImageDraw.Draw(image)
        for index, caption in enumerate(captions):
            if not caption:
                continue
            x0, y0 = grid.origin(index)
            text = _fit_caption(str(caption), font, grid.cell_size - 2)
            # centre by bounding box: the bitmap fallback font does not support text anchors
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            x = x0 + (grid.cell_size - (right - left)) / 2 - left
            y = y0 + grid.cell_size + (grid.caption_height - (bottom - top)) / 2 - top
            draw.text((x, y), text, fill="black", font=font)
    return image
