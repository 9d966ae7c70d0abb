"""sketchlab-convert: SVG, QuickDraw ndjson and stroke-list JSON to a Sketch-RNN npz, with dropped inputs reported."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import REPO, SHORT, train_env
from sketchlab.cli.convert import build_parser, data_config_text, main
from sketchlab.data.convert import (
    Drawing,
    Dropped,
    convert,
    drawing_to_stroke3,
    find_inputs,
    read_drawings,
    split_counts,
    split_indices,
)
from sketchlab.data.safe_npz import load_npz
from sketchlab.data.sources import StrokeNpz
from sketchlab.data.strokes import to_polylines
from sketchlab.data.svg import SvgError, _flatten, parse_svg

SVG_HEAD = '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink">'


def svg(body: str, head: str = SVG_HEAD) -> bytes:
    return f"{head}{body}</svg>".encode()


def strokes_of(body: str, **kw) -> list[np.ndarray]:
    return parse_svg(svg(body), **kw)


def _close(a, b) -> None:
    np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), atol=1e-6)


# --- SVG elements ----------------------------------------------------------------------------------------------


def test_line_polyline_polygon_rect():
    (line,) = strokes_of('<line x1="1" y1="2" x2="5" y2="7"/>')
    _close(line, [[1, 2], [5, 7]])
    (poly,) = strokes_of('<polyline points="0,0 10,0 10,10"/>')
    _close(poly, [[0, 0], [10, 0], [10, 10]])
    (gon,) = strokes_of('<polygon points="0,0 10,0 10,10"/>')
    _close(gon, [[0, 0], [10, 0], [10, 10], [0, 0]])  # a polygon closes itself
    (rect,) = strokes_of('<rect x="1" y="2" width="3" height="4"/>')
    _close(rect, [[1, 2], [4, 2], [4, 6], [1, 6], [1, 2]])


def test_path_line_commands_absolute_and_relative_make_one_stroke_per_subpath():
    a, b = strokes_of('<path d="M0 0 L10 0 H20 V5 l -5 5 h-5 v-5 z M 30 30 l 1 1"/>')
    _close(a, [[0, 0], [10, 0], [20, 0], [20, 5], [15, 10], [10, 10], [10, 5], [0, 0]])
    _close(b, [[30, 30], [31, 31]])
    (c,) = strokes_of('<path d="m 5 5 10 0 0 10"/>')  # implicit lineto after moveto
    _close(c, [[5, 5], [15, 5], [15, 15]])


def _max_distance_to_polyline(curve: np.ndarray, poly: np.ndarray) -> float:
    a, b = poly[:-1], poly[1:]
    ab = b - a
    t = np.clip(np.einsum("pij,ij->pi", curve[:, None] - a, ab) / np.maximum((ab ** 2).sum(1), 1e-300), 0, 1)
    d = np.linalg.norm(curve[:, None] - (a + t[..., None] * ab), axis=-1)
    return float(d.min(axis=1).max())


def _cubic(p, t):
    p = np.asarray(p, dtype=float)
    t = t[:, None]
    return ((1 - t) ** 3 * p[0] + 3 * (1 - t) ** 2 * t * p[1] + 3 * (1 - t) * t ** 2 * p[2] + t ** 3 * p[3])


@pytest.mark.parametrize("tol", [2.0, 0.5, 0.05])
def test_cubic_bezier_is_flattened_within_the_tolerance_with_fewer_points_for_looser_ones(tol):
    ctrl = [[0, 0], [0, 100], [100, 100], [100, 0]]
    (line,) = strokes_of('<path d="M0 0 C 0 100 100 100 100 0"/>', tolerance=tol)
    dense = _cubic(ctrl, np.linspace(0, 1, 4001))
    _close(line[0], [0, 0])
    _close(line[-1], [100, 0])
    # every flattened vertex lies on the curve, and the curve never strays further than tol from the polyline
    assert _max_distance_to_polyline(line, dense) < 0.05
    assert _max_distance_to_polyline(dense, line) <= tol
    assert len(line) < {2.0: 16, 0.5: 30, 0.05: 90}[tol]


def test_flatten_handles_any_degree_and_degenerate_curves():
    quad = _flatten(np.array([[0.0, 0], [50, 100], [100, 0]]), 0.1)
    t = np.linspace(0, 1, 2001)[:, None]
    dense = (1 - t) ** 2 * [0, 0] + 2 * (1 - t) * t * [50, 100] + t ** 2 * [100, 0]
    assert _max_distance_to_polyline(dense, np.vstack([[0, 0], quad])) <= 0.1
    _close(_flatten(np.array([[3.0, 3], [3, 3], [3, 3], [3, 3]]), 0.1), [[3, 3]])


def test_quadratic_smooth_and_shorthand_cubic_and_arcs():
    q, = strokes_of('<path d="M0 0 Q 50 100 100 0 T 200 0"/>', tolerance=0.1)
    # T reflects the control point: the second half is the first mirrored below the axis
    assert q[:, 1].max() == pytest.approx(50, abs=0.1) and q[:, 1].min() == pytest.approx(-50, abs=0.1)
    _close(q[-1], [200, 0])
    s, = strokes_of('<path d="M0 0 C 0 50 50 50 50 0 S 100 -50 100 0"/>', tolerance=0.1)
    assert s[:, 1].max() == pytest.approx(37.5, abs=0.1) and s[:, 1].min() == pytest.approx(-37.5, abs=0.1)
    arc, = strokes_of('<path d="M 0 50 A 50 50 0 0 1 100 50"/>', tolerance=0.05)
    radius = np.hypot(arc[:, 0] - 50, arc[:, 1] - 50)
    np.testing.assert_allclose(radius, 50, atol=0.05)
    assert arc[:, 1].min() == pytest.approx(0, abs=0.05)  # sweep flag 1 goes through the top (y down)
    circle, = strokes_of('<circle cx="10" cy="20" r="5"/>', tolerance=0.01)
    np.testing.assert_allclose(np.hypot(circle[:, 0] - 10, circle[:, 1] - 20), 5, atol=0.011)
    _close(circle[0], circle[-1])
    ellipse, = strokes_of('<ellipse cx="0" cy="0" rx="20" ry="10"/>', tolerance=0.01)
    np.testing.assert_allclose((ellipse[:, 0] / 20) ** 2 + (ellipse[:, 1] / 10) ** 2, 1, atol=0.01)


def test_transforms_compose_down_the_tree():
    (p,) = strokes_of('<g transform="translate(10 20)"><g transform="scale(2)">'
                      '<line x1="1" y1="1" x2="2" y2="1" transform="rotate(90)"/></g></g>')
    # rotate(90) maps (x, y) to (-y, x); then scale 2, then translate
    _close(p, [[10 - 2, 20 + 2], [10 - 2, 20 + 4]])
    (m,) = strokes_of('<line x1="1" y1="0" x2="0" y2="1" transform="matrix(1 0 0 1 5 6) skewX(45)"/>')
    _close(m, [[6, 6], [6, 7]])
    (r,) = strokes_of('<line x1="60" y1="50" x2="70" y2="50" transform="rotate(180 50 50)"/>')
    _close(r, [[40, 50], [30, 50]])
    (sy,) = strokes_of('<line x1="1" y1="0" x2="1" y2="0.5" transform="skewY(45)"/>')
    _close(sy, [[1, 1], [1, 1.5]])


def test_viewbox_and_use_references():
    strokes = parse_svg(svg('<path id="a" d="M0 0 L 10 0"/><use href="#a" transform="translate(0 5)"/>'
                            '<use xlink:href="#a" y="7"/>',
                            head='<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
                                 'width="200" height="200" viewBox="0 0 100 100">'))
    _close(strokes[0], [[0, 0], [20, 0]])  # the viewBox maps 100 user units onto 200 px
    _close(strokes[1], [[0, 10], [20, 10]])
    _close(strokes[2], [[0, 14], [20, 14]])


def test_symbols_are_drawn_only_where_they_are_used():
    strokes = strokes_of('<symbol id="s"><path d="M 3 3 L 4 4"/></symbol><use href="#s" x="10"/>')
    assert len(strokes) == 1
    _close(strokes[0], [[13, 3], [14, 4]])


def test_tolerance_with_a_size_is_in_output_units():
    body = '<path d="M0 0 C 0 10 10 10 10 0"/>'
    fine = strokes_of(body, tolerance=0.5, size=1000)  # the 10-unit drawing will be 1000 units wide
    coarse = strokes_of(body, tolerance=0.5)
    assert len(fine[0]) > 2 * len(coarse[0])


# --- malformed and hostile SVG --------------------------------------------------------------------------------


@pytest.mark.parametrize("data, reason", [
    (b'<svg xmlns="http://www.w3.org/2000/svg"><path d="M 0 0 L 1 1"</svg>', "not well-formed XML"),
    (b"", "not well-formed XML"),
    (svg('<path d="M 0 0 L 10 10 X 5 5"/>'), "unknown path command(s) 'X'"),
    (svg('<path d="M 0 0 L 10"/>'), "malformed SVG geometry"),
    (svg('<g transform="bogus(3)"><line x1="0" y1="0" x2="1" y2="1"/></g>'), "unknown transform 'bogus'"),
    (svg(""), "no drawable elements"),
    (svg('<text x="1" y="1">hi</text>'), "<text> are not converted"),
    (b'<html xmlns="http://www.w3.org/1999/xhtml"/>', "the root element is <html>, not <svg>"),
    (svg('<g id="a"><use href="#a"/></g>'), "<use> references loop"),
])
def test_malformed_svg_is_refused_with_a_reason(data, reason):
    with pytest.raises(SvgError) as info:
        parse_svg(data)
    assert reason in str(info.value)


def test_use_bombs_are_refused_before_expansion():
    defs = ['<path id="l0" d="M0 0 L 1 1"/>'] + [
        f'<g id="l{i}">' + f'<use href="#l{i - 1}"/>' * 10 + "</g>" for i in range(1, 8)]
    with pytest.raises(SvgError, match="expand it past"):
        parse_svg(svg("<defs>" + "".join(defs) + "</defs>" + '<use href="#l7"/>'))


@pytest.mark.parametrize("doc", [
    # entity expansion ("billion laughs")
    '<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
    '<svg xmlns="http://www.w3.org/2000/svg"><text>&b;</text><line x1="0" y1="0" x2="1" y2="1"/></svg>',
    # an external entity that would read a local file
    '<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    '<svg xmlns="http://www.w3.org/2000/svg"><text>&x;</text><line x1="0" y1="0" x2="1" y2="1"/></svg>',
    # a DOCTYPE alone (an external DTD)
    '<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">'
    '<svg xmlns="http://www.w3.org/2000/svg"><line x1="0" y1="0" x2="1" y2="1"/></svg>',
])
def test_doctype_and_entity_declarations_are_refused(doc):
    with pytest.raises(SvgError, match="DOCTYPE and ENTITY declarations are refused"):
        parse_svg(doc.encode())


# --- JSON and ndjson ------------------------------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def _read_all(*paths: Path, **kw) -> list[Drawing | Dropped]:
    files, _ = find_inputs(paths)
    return list(read_drawings(files, **kw))


SQUARE = [[[0, 10, 10, 0, 0], [0, 0, 10, 10, 0]]]


def test_ndjson_quickdraw_records_plain_lists_and_bad_lines(tmp_path):
    lines = [
        json.dumps({"word": "cat", "key_id": "1", "drawing": SQUARE}),
        json.dumps(SQUARE),
        "",
        "{not json",
        json.dumps({"word": "dog", "drawing": [[[0, 1, 2], [0, 1, 2], [0, 10, 20]]]}),  # raw: times ignored
        json.dumps({"no_drawing": 1}),
        json.dumps([[[0, 1], [0]]]),
        json.dumps([[[0, "a"], [0, 1]]]),
        json.dumps([]),
        json.dumps(5),
    ]
    items = _read_all(_write(tmp_path / "things.ndjson.gz", "\n".join(lines) + "\n"))
    kept = [i for i in items if isinstance(i, Drawing)]
    dropped = {Path(d.source).name: d.reason for d in items if isinstance(d, Dropped)}
    assert [(d.label, Path(d.source).name) for d in kept] == [
        ("cat", "things.ndjson.gz:1"), ("things", "things.ndjson.gz:2"), ("dog", "things.ndjson.gz:5")]
    _close(kept[2].strokes[0], [[0, 0], [1, 1], [2, 2]])
    assert dropped == {
        "things.ndjson.gz:4": dropped["things.ndjson.gz:4"],
        "things.ndjson.gz:6": "object has no 'drawing' key (keys: no_drawing)",
        "things.ndjson.gz:7": "stroke 0 has x, y (and t) lists of different lengths",
        "things.ndjson.gz:8": "stroke 0 has non-numeric coordinates",
        "things.ndjson.gz:9": "drawing has no strokes",
        "things.ndjson.gz:10": "a drawing must be a list of strokes [[x...], [y...]] or an object with 'drawing', "
                               "got int",
    }
    assert dropped["things.ndjson.gz:4"].startswith("not valid JSON")


def test_json_lists_single_objects_and_broken_files(tmp_path):
    _write(tmp_path / "in" / "list.json", json.dumps([SQUARE, {"drawing": SQUARE, "label": "box"}, "oops"]))
    _write(tmp_path / "in" / "one.json", json.dumps({"drawing": SQUARE}))
    _write(tmp_path / "in" / "broken.json", "[[[0, 1]")
    _write(tmp_path / "in" / "empty.json", "[]")
    _write(tmp_path / "in" / "scalar.json", "3")
    items = _read_all(tmp_path / "in")
    kept = [(Path(i.source).name, i.label) for i in items if isinstance(i, Drawing)]
    assert kept == [("list.json[0]", "list"), ("list.json[1]", "box"), ("one.json", "one")]
    reasons = {Path(d.source).name: d.reason for d in items if isinstance(d, Dropped)}
    assert reasons["broken.json"].startswith("not valid JSON")
    assert reasons["empty.json"] == "holds no drawings (an empty list)"
    assert reasons["scalar.json"].startswith("expected a list of drawings")
    assert reasons["list.json[2]"].startswith("a drawing must be a list of strokes")


def test_folders_give_classes_and_ignore_other_files(tmp_path):
    _write(tmp_path / "root" / "cats" / "a.svg", svg('<line x1="0" y1="0" x2="5" y2="5"/>').decode())
    _write(tmp_path / "root" / "top.svg", svg('<line x1="0" y1="0" x2="5" y2="5"/>').decode())
    _write(tmp_path / "root" / "notes.txt", "hello")
    _write(tmp_path / "root" / ".hidden" / "b.svg", "ignored")
    files, ignored = find_inputs([tmp_path / "root"])
    assert [(f.path.name, f.label) for f in files] == [("a.svg", "cats"), ("top.svg", "root")]
    assert [Path(p).name for p in ignored] == ["notes.txt"]
    with pytest.raises(FileNotFoundError, match="input not found"):
        find_inputs([tmp_path / "nope"])


# --- stroke-3 and the split -----------------------------------------------------------------------------------


def test_drawing_to_stroke3_scales_simplifies_and_rounds():
    line = np.column_stack([np.linspace(0, 10, 11), np.zeros(11)])
    bend = np.array([[10.0, 0], [10, 5]])
    s3 = drawing_to_stroke3([line, bend], size=255, epsilon=2.0)
    assert s3.dtype == np.int16
    # the straight stroke keeps its ends only; the longest side (10) becomes 255; first row = first point
    np.testing.assert_array_equal(s3, [[0, 0, 0], [255, 0, 1], [0, 0, 0], [0, 128, 1]])
    back = to_polylines(s3)
    _close(back[1], [[255, 0], [255, 128]])
    flipped = drawing_to_stroke3([bend], size=None, epsilon=0, round_coords=False, y_up=True)
    assert flipped.dtype == np.float32
    _close(flipped, [[10, 0, 0], [0, -5, 1]])
    with pytest.raises(ValueError, match="no extent"):
        drawing_to_stroke3([np.array([[3.0, 3.0]])])
    with pytest.raises(ValueError, match="int16"):
        drawing_to_stroke3([np.array([[0.0, 0.0], [1e6, 0.0]])], size=None)


def test_split_is_seeded_reproducible_and_covers_every_item():
    a = split_indices(50, 0.1, 0.2, seed=3)
    assert {k: len(v) for k, v in a.items()} == {"train": 35, "valid": 5, "test": 10}
    assert sorted(np.concatenate(list(a.values())).tolist()) == list(range(50))
    b = split_indices(50, 0.1, 0.2, seed=3)
    assert all(np.array_equal(a[s], b[s]) for s in a)
    c = split_indices(50, 0.1, 0.2, seed=4)
    assert not np.array_equal(a["test"], c["test"])
    assert split_counts(5, 0.1, 0.1) == {"train": 3, "valid": 1, "test": 1}  # tiny sets still get a valid/test
    assert split_counts(2, 0.1, 0.1) == {"train": 1, "valid": 1, "test": 0}  # never at the cost of train
    assert split_counts(1, 0.1, 0.1) == {"train": 1, "valid": 0, "test": 0}
    with pytest.raises(ValueError, match="leave nothing to train on"):
        split_indices(10, 0.5, 0.5)


# --- end to end -----------------------------------------------------------------------------------------------


def _face(i: int) -> str:
    return svg(f'<g transform="rotate({i * 7} 50 50)"><circle cx="50" cy="50" r="{30 + i}"/>'
               f'<path d="M 35 60 Q 50 {70 + i} 65 60"/><ellipse cx="40" cy="40" rx="3" ry="5"/></g>').decode()


@pytest.fixture()
def drawings(tmp_path) -> Path:
    root = tmp_path / "drawings"
    for i in range(12):
        _write(root / "faces" / f"face_{i:02d}.svg", _face(i))
    _write(root / "faces" / "broken.svg", "<svg")
    lines = [json.dumps({"word": "zigzag", "drawing": [[[0, 10 + i, 20, 30], [0, 10, 0, 10 + i]]]}) for i in range(8)]
    _write(root / "zigzag.ndjson", "\n".join(lines + ["[[1, 2]]"]) + "\n")
    _write(root / "README.md", "about my drawings")
    return root


def test_convert_writes_a_sketch_rnn_npz_and_a_report(drawings, tmp_path):
    out = tmp_path / "mine.npz"
    report = convert([drawings], out, seed=1)
    assert report.counts == {"train": 16, "valid": 2, "test": 2}
    assert report.class_counts == {"faces": 12, "zigzag": 8}
    assert [(Path(d.source).name, d.reason.split(":")[0]) for d in report.dropped] == [
        ("broken.svg", "not well-formed XML"), ("zigzag.ndjson:9", "each stroke must be [[x...], [y...]] (simplified) or [[x...], [y...], [t...]] (raw)")]
    data = load_npz(out)  # the safe loader: only numpy arrays come back
    assert sorted(data) == sorted(["class_names", *[f"{s}{k}" for s in ("train", "valid", "test")
                                                    for k in ("", "_labels", "_sources")]])
    assert data["class_names"].tolist() == ["faces", "zigzag"]
    for split in ("train", "valid", "test"):
        assert data[split].dtype == object and all(s.dtype == np.int16 and s.shape[1] == 3 for s in data[split])
        for s in data[split]:
            xy = np.cumsum(s[:, :2], axis=0)
            assert xy.min() >= 0 and xy.max() <= 255 and s[-1, 2] == 1
    splits = StrokeNpz(str(out)).load()
    assert {s: len(v) for s, v in splits.sketches.items()} == report.counts
    saved = json.loads(report.report_path.read_text())
    assert saved["counts"] == report.counts and saved["dropped_count"] == 2
    assert saved["points_per_sketch"]["all"]["count"] == 20
    assert [Path(p).name for p in saved["ignored_files"]] == ["README.md"]
    # same inputs and seed: the same file, byte for byte in its arrays
    again = convert([drawings], tmp_path / "again.npz", seed=1)
    assert again.counts == report.counts
    other = load_npz(tmp_path / "again.npz")
    for split in ("train", "valid", "test"):
        assert data[f"{split}_sources"].tolist() == other[f"{split}_sources"].tolist()
        assert all(np.array_equal(a, b) for a, b in zip(data[split], other[split]))
    with pytest.raises(FileExistsError, match="already exists"):
        convert([drawings], out)


def test_convert_with_nothing_usable_names_the_reasons(tmp_path):
    _write(tmp_path / "bad" / "a.svg", "<svg")
    _write(tmp_path / "bad" / "b.json", "[]")
    with pytest.raises(ValueError, match=r"no drawings left to write from 2 input file\(s\) \(2 dropped: .*a.svg: "
                                         r"not well-formed XML"):
        convert([tmp_path / "bad"], tmp_path / "out.npz")
    assert not (tmp_path / "out.npz").exists()


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "convert.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_cli_converts_and_writes_a_data_config_and_a_preview(drawings, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    proc = _cli(str(drawings), "--out", "mine.npz", "--data-config", "conf/data/mine.yaml", "--preview",
                "mine.png", "--valid", "0.2", "--test", "0.2", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "wrote mine.npz: train 12, valid 4, test 4 (2 classes) from 14 file(s)" in proc.stdout
    assert "broken.svg: not well-formed XML" in proc.stdout and "report: mine.report.json" in proc.stdout
    assert (work / "mine.png").read_bytes().startswith(b"\x89PNG")
    config = (work / "conf" / "data" / "mine.yaml").read_text()
    assert f'path: "{work / "mine.npz"}"' in config and "batch_size: 12" in config
    assert "(train on it: sketchlab-train data=mine)" in proc.stdout
    # a user error is one line and exit status 2
    monkeypatch.chdir(work)
    with pytest.raises(SystemExit) as info:
        main([str(drawings), "--out", "mine.npz"])
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: mine.npz already exists; pass --overwrite to replace it\n"
    with pytest.raises(SystemExit):  # refused before converting: Hydra would not find it as data=other
        main([str(drawings), "--out", "other.npz", "--data-config", "other.yaml"])
    assert "in a data/ folder of a config directory" in capsys.readouterr().err
    assert not (work / "other.npz").exists()


@pytest.mark.slow
def test_converted_npz_trains_two_steps_through_its_data_config(drawings, tmp_path):
    work = tmp_path / "work"
    report = convert([drawings], work / "mine.npz", valid=0.2, test=0.2)
    (work / "conf" / "data").mkdir(parents=True)
    (work / "conf" / "data" / "mine.yaml").write_text(data_config_text(report, "mine"))
    tiny = ["model.net.enc_rnn_size=8", "model.net.dec_rnn_size=8", "model.net.z_size=4", "model.net.num_mixture=2",
            "data.batch_size=4", "logger=none"]
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), "data=mine", *tiny, *SHORT],
                          cwd=work, env=train_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"step 2/2: loss [0-9.]+", proc.stdout + proc.stderr)


def test_cli_arguments_are_checked():
    parser = build_parser()
    assert parser.parse_args(["a", "--out", "x.npz", "--size", "none"]).size is None
    assert parser.parse_args(["a", "--out", "x.npz", "--float"]).round_coords is False
    with pytest.raises(SystemExit):
        parser.parse_args(["a", "--out", "x.npz", "--size", "-3"])


# --- the README's commands ------------------------------------------------------------------------------------


def _readme_blocks(lang: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_readme_convert_commands_parse():
    commands = [line.split("#")[0].split() for block in _readme_blocks("bash") for line in block.splitlines()
                if line.startswith("sketchlab-convert ")]
    assert commands, "the README shows no sketchlab-convert command"
    for words in commands:
        build_parser().parse_args(words[1:])


def test_readme_hanzi_data_config_loads_the_hanzi_medians(shared_data, tmp_path):
    from hydra import compose, initialize_config_dir

    (block,) = [b for b in _readme_blocks("yaml") if "hanzi_medians.npz" in b]
    conf = tmp_path / "conf" / "data"
    conf.mkdir(parents=True)
    (conf / "hanzi.yaml").write_text(block)
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from sketchlab.config import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(REPO / "sketchlab" / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["data=hanzi", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
                                          f"paths.data_dir={shared_data}", "+data.min_seq_len=10"],
                      return_hydra_config=False)
    GlobalHydra.instance().clear()
    data = OmegaConf.to_container(cfg.data, resolve=True)
    assert data["name"] == "hanzi" and data["min_seq_len"] == 10
    from sketchlab.registry import build

    module = build(cfg.data, collate=None).setup()
    counts = {s: len(module.sketches(s)) for s in ("train", "valid", "test")}
    assert sum(counts.values()) > 9000 and min(counts.values()) > 500
