"""Drawing sketches: grids of stroke-3 sketches as SVG documents or anti-aliased PNG images.

Typical use::

    image = render_png(sketches, cols=8)                 # PIL image, e.g. for MLflow
    save_grid(sketches, "out/samples.svg", cols=8)       # .svg or .png by suffix
    cells, cols = pair_rows(originals, reconstructions)  # original | reconstruction rows
    cells, cols = interpolation_rows(interpolations)     # one row per interpolation
"""

from sketchlab.render.grid import STROKE_ORDER_PALETTE, fit_polylines, interpolation_rows, pair_rows
from sketchlab.render.raster import render_png
from sketchlab.render.save import save_grid
from sketchlab.render.svg import render_svg

__all__ = [
    "STROKE_ORDER_PALETTE",
    "fit_polylines",
    "interpolation_rows",
    "pair_rows",
    "render_png",
    "render_svg",
    "save_grid",
]
