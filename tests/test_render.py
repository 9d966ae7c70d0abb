"""Rendering sketch grids: canvas sizes, where the ink lands, SVG structure, saving, junk input."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from sketchlab.render import (
    STROKE_ORDER_PALETTE,
    fit_polylines,
    interpolation_rows,
    pair_rows,
    render_png,
    render_svg,
    save_grid,
)

SVG = "{http://www.w3.org/2000/svg}"
DARK = 128  # a pixel channel below this counts as ink


def hline(length: float = 10.0) -> np.ndarray:
    """One horizontal stroke: after fitting it runs through the cell's centre row."""
    return np.array([[0, 0, 0], [length, 0, 1]], dtype=np.float32)


def square() -> np.ndarray:
    return np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [-10, 0, 0], [0, -10, 1]], dtype=np.float32)


def two_strokes() -> np.ndarray:
    return np.array([[0, 0, 0], [5, 5, 1], [3, 0, 0], [0, 4, 1]], dtype=np.float32)


def ink(image: Image.Image) -> np.ndarray:
    """Boolean mask of dark pixels."""
    return np.asarray(image.convert("L")) < DARK


def paths(svg: str) -> list[ET.Element]:
    return list(ET.fromstring(svg).iter(f"{SVG}path"))


@pytest.mark.parametrize(("n", "cols", "size"), [
    (1, None, (128, 128)),
    (4, None, (256, 256)),
    (5, None, (384, 256)),  # ceil(sqrt(5)) = 3 columns, 2 rows
    (7, 2, (256, 512)),
    (3, 5, (640, 128)),     # more columns than sketches: the row is still cols wide
])
def test_png_size_is_cols_by_rows_cells(n, cols, size):
    assert render_png([square()] * n, cols=cols).size == size


def test_png_size_with_cell_size_and_caption_band():
    image = render_png([square()] * 5, cols=2, cell_size=64, captions=["a", None, "c", "d", "e"], caption_height=20)
    assert image.size == (2 * 64, 3 * (64 + 20))
    assert image.mode == "RGB"


def test_horizontal_line_inks_the_centre_row_only():
    mask = ink(render_png([hline()], cell_size=128, margin=8, line_width=2))
    assert mask[64, 20:108].all() or mask[63, 20:108].all()
    for corner in (mask[:16, :16], mask[:16, -16:], mask[-16:, :16], mask[-16:, -16:]):
        assert not corner.any()
    # fitted to the margins: the line spans the cell, ending inside the margin + half the line width
    columns = np.flatnonzero(mask.any(axis=0))
    assert 8 <= columns.min() <= 11 and 116 <= columns.max() <= 119


def test_each_sketch_lands_in_its_own_cell():
    mask = ink(render_png([hline(), None, None, hline()], cols=2, cell_size=64))
    assert mask[:64, :64].any() and mask[64:, 64:].any()
    assert not mask[:64, 64:].any() and not mask[64:, :64].any()


def test_render_is_anti_aliased():
    grey = np.asarray(render_png([np.array([[0, 0, 0], [10, 7, 1]], np.float32)]).convert("L"))
    assert ((grey > 10) & (grey < 245)).sum() > 20  # intermediate greys along a diagonal's edges


def test_stroke_order_palette_colours_strokes():
    pixels = np.asarray(render_png([two_strokes()], color=STROKE_ORDER_PALETTE, supersample=1)).reshape(-1, 3)
    colours = {tuple(p) for p in pixels}
    assert (0x1F, 0x77, 0xB4) in colours and (0xFF, 0x7F, 0x0E) in colours
    assert (0, 0, 0) not in colours


def test_svg_parses_with_one_path_per_stroke():
    svg = render_svg([square(), two_strokes(), None, np.zeros((0, 3))], cols=2, line_width=3)
    root = ET.fromstring(svg)
    assert root.get("width") == "256" and root.get("height") == "256"
    assert len(paths(svg)) == 1 + 2
    assert all(p.get("stroke") == "#000000" for p in paths(svg))


def test_svg_points_stay_inside_their_cell_margins():
    svg = render_svg([square(), square()], cols=2, cell_size=100, margin=10, line_width=2)
    for path in paths(svg):
        # coordinates are cell-local; the cell group carries the translation
        numbers = [float(v) for v in path.get("d").replace("M", " ").replace("L", " ").replace(",", " ").split()]
        assert min(numbers) >= 11 - 1e-6 and max(numbers) <= 89 + 1e-6
    cells = [g for g in ET.fromstring(svg).iter(f"{SVG}g") if g.get("class") == "cell"]
    assert [g.get("transform") for g in cells] == ["translate(0,0)", "translate(100,0)"]


def test_svg_captions_are_escaped_text_under_the_cells():
    svg = render_svg([square(), square()], captions=["a<b & c", None], caption_height=16)
    root = ET.fromstring(svg)
    assert root.get("height") == str(128 + 16)
    assert [t.text for t in root.iter(f"{SVG}text")] == ["a<b & c"]


def test_svg_stroke_palette_cycles():
    svg = render_svg([two_strokes()], color=["red", "#00ff00"])
    assert [p.get("stroke") for p in paths(svg)] == ["#ff0000", "#00ff00"]


@pytest.mark.parametrize("suffix", [".png", ".svg", ".PNG"])
def test_save_grid_writes_decodable_files(tmp_path, suffix):
    path = tmp_path / "deep" / "er" / f"grid{suffix}"
    assert save_grid([square()] * 3, path, cols=3, cell_size=32) == path
    assert path.stat().st_size > 0
    if suffix.lower() == ".png":
        with Image.open(path) as image:
            assert image.size == (96, 32)
    else:
        assert len(paths(path.read_text())) == 3
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left behind


def test_save_grid_rejects_other_suffixes(tmp_path):
    with pytest.raises(ValueError, match="suffix"):
        save_grid([square()], tmp_path / "grid.jpg")
    assert not any(tmp_path.iterdir())


def test_save_grid_replaces_an_existing_file(tmp_path):
    path = tmp_path / "grid.png"
    save_grid([square()], path, cell_size=32)
    save_grid([square()] * 2, path, cell_size=32, cols=2)
    with Image.open(path) as image:
        assert image.size == (64, 32)


DEGENERATE = {
    "empty": np.zeros((0, 3), np.float32),
    "flat empty": np.zeros(0),
    "single point": np.array([[5, 5, 1]], np.float32),
    "zero extent": np.array([[3, 3, 0], [0, 0, 0], [0, 0, 1]], np.float32),
    "nan and inf rows": np.array([[np.nan, 0, 0], [0, 0, 0], [10, np.inf, 1], [10, 0, 1], [0, np.nan, np.nan]]),
    "huge": np.array([[0, 0, 0], [1e30, 0, 0], [0, 1e30, 1]]),
    "overflowing": np.array([[1e308, 0, 0], [1e308, 0, 0], [0, 1e308, 1], [-1e308, -1e308, 1]]),
    "all junk": np.full((4, 3), np.nan),
}


@pytest.mark.parametrize("name", list(DEGENERATE))
def test_degenerate_sketches_render(name):
    sketch = DEGENERATE[name]
    image = render_png([sketch], cell_size=64)
    assert image.size == (64, 64)
    svg = render_svg([sketch], cell_size=64)
    for path in paths(svg):
        assert "nan" not in path.get("d") and "inf" not in path.get("d")


def test_single_point_is_a_dot_in_the_centre():
    mask = ink(render_png([DEGENERATE["single point"]], cell_size=64, line_width=4))
    rows, cols = np.nonzero(mask)
    assert len(rows) > 0
    assert abs(rows.mean() - 31.5) < 1 and abs(cols.mean() - 31.5) < 1
    assert len(paths(render_svg([DEGENERATE["single point"]]))) == 1


def test_empty_sketch_is_an_empty_cell():
    assert not ink(render_png([np.zeros((0, 3))])).any()
    assert paths(render_svg([np.zeros((0, 3))])) == []


def test_junk_row_keeps_the_stroke_break():
    # the NaN row ended the first stroke: the two strokes must stay two paths
    sketch = np.array([[0, 0, 0], [5, 0, 0], [np.nan, 1, 1], [0, 5, 0], [5, 0, 1]])
    assert len(fit_polylines(sketch, 128, 8, 2)) == 2


def test_bad_input_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="stroke-5"):
        render_png([np.zeros((4, 5))])
    with pytest.raises(ValueError, match="wrap it in a list"):
        render_png(square())
    with pytest.raises(ValueError, match="at least one"):
        render_svg([])
    with pytest.raises(ValueError, match="captions"):
        render_png([square()] * 2, captions=["one"])
    with pytest.raises(ValueError, match="cols"):
        render_png([square()], cols=0)
    with pytest.raises(ValueError, match="colour"):
        render_svg([square()], color="not-a-colour")
    with pytest.raises(ValueError, match="no room"):
        render_png([square()], cell_size=16, margin=8)


def test_pair_rows_puts_original_then_reconstruction():
    originals, reconstructions = [hline(), square()], [square(), hline()]
    cells, cols = pair_rows(originals, reconstructions)
    assert cols == 2 and cells == [originals[0], reconstructions[0], originals[1], reconstructions[1]]
    assert render_png(cells, cols=cols, cell_size=32).size == (64, 64)
    assert pair_rows(originals, reconstructions, pairs_per_row=2)[1] == 4
    with pytest.raises(ValueError, match="reconstructions"):
        pair_rows(originals, reconstructions[:1])


def test_interpolation_rows_pad_short_rows_with_blanks():
    cells, cols = interpolation_rows([[hline()] * 5, [square()] * 3])
    assert cols == 5 and len(cells) == 10 and cells[8] is None and cells[9] is None
    mask = ink(render_png(cells, cols=cols, cell_size=32))
    assert mask.shape == (64, 160)
    assert mask[32:, :96].any() and not mask[32:, 96:].any()
    with pytest.raises(ValueError, match="interpolations"):
        interpolation_rows([])


def test_real_sheep_has_ink_inside_the_margins(shared_data):
    path = shared_data / "sketch-rnn-datasets/aaron_sheep.npz"
    sketch = np.load(path, allow_pickle=True, encoding="latin1")["test"][0]
    cell, margin = 128, 10
    mask = ink(render_png([sketch], cell_size=cell, margin=margin, line_width=2))
    assert mask.sum() > 200
    rows, cols = np.nonzero(mask)
    # fit reaches the margin along the longer side; +-1 px of anti-aliasing spill
    assert rows.min() >= margin - 1 and cols.min() >= margin - 1
    assert rows.max() <= cell - margin and cols.max() <= cell - margin
    assert min(rows.min(), cols.min()) <= margin + 1 or max(rows.max(), cols.max()) >= cell - margin - 2
    svg_paths = paths(render_svg([sketch]))
    assert len(svg_paths) == int((sketch[:, 2] == 1).sum())
