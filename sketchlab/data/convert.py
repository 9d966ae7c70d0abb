"""Your own drawings to a Sketch-RNN npz: SVG files, QuickDraw ndjson and stroke-list JSON/ndjson.

Inputs (files, or folders searched recursively), by suffix:

- ``.svg``: one drawing per file (:mod:`sketchlab.data.svg`: paths, shapes, transforms, curves flattened);
- ``.ndjson`` / ``.jsonl`` (optionally ``.gz``): one drawing per line, QuickDraw's ndjson included;
- ``.json`` (optionally ``.gz``): a list of drawings, or one ``{"drawing": ...}`` object.

A drawing in JSON is a list of strokes ``[[x...], [y...]]`` (QuickDraw's "simplified" layout; a third list of
times, as in QuickDraw's raw files, is ignored), or an object holding that list as ``"drawing"`` and
optionally its class as ``"word"`` (QuickDraw), ``"label"`` or ``"class"``. Coordinates are y-down (screen)
unless ``y_up`` (which SVG never is).

Every drawing goes through the same steps: shift to the origin and scale uniformly so its longest side is
``size`` (QuickDraw's 255 by default), simplify each stroke with RDP at ``epsilon`` in those units, round to
whole numbers (``round_coords``), and store as stroke-3 offsets, the first row being the first point itself
(magenta's ``lines_to_strokes``). The drawings are split train/valid/test by a seeded shuffle. The npz has
magenta's layout (``train``/``valid``/``test`` object arrays of int16 (N, 3)) plus ``{split}_labels``,
``{split}_sources`` and ``class_names``; it is read by ``sketchlab.data.sources.StrokeNpz``.

A file or drawing that cannot be converted is left out with its name and the reason, in the
:class:`ConvertReport`; only a batch with nothing left to write is an error.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sketchlab.data.quickdraw import object_array, open_text, parse_drawing, refuse_overwrite, save_npz_atomic
from sketchlab.data.simplify import rdp
from sketchlab.data.sources import SPLITS
from sketchlab.data.strokes import from_polylines
from sketchlab.data.svg import read_svg
from sketchlab.fileio import atomic_open

SVG_SUFFIXES = (".svg",)
NDJSON_SUFFIXES = (".ndjson", ".jsonl", ".ndjson.gz", ".jsonl.gz")
JSON_SUFFIXES = (".json", ".json.gz")
LABEL_KEYS = ("word", "label", "class")

SIZE = 255.0  # QuickDraw's simplified drawings: the longest side spans 0..255
EPSILON = 2.0  # QuickDraw's RDP epsilon at that size
TOLERANCE = 0.5  # how far flattened SVG curves may stray, in the same units


@dataclass
class Drawing:
    """One drawing read from an input: its strokes ((K, 2) float x, y, y down), where it came from, its class."""

    strokes: list[np.ndarray]
    source: str
    label: str
    kind: str = "json"  # svg, ndjson or json: SVG is y-down by definition, the JSON ones may be y-up


@dataclass
class Dropped:
    """An input file, line or list item left out, and why."""

    source: str
    reason: str


def input_kind(path: Path) -> str | None:
    """``svg``, ``ndjson`` or ``json`` by the file's suffix (case-insensitive), ``None`` for anything else."""
    name = path.name.lower()
    for kind, suffixes in (("svg", SVG_SUFFIXES), ("ndjson", NDJSON_SUFFIXES), ("json", JSON_SUFFIXES)):
        if name.endswith(suffixes):
            return kind
    return None


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (*NDJSON_SUFFIXES, *JSON_SUFFIXES, *SVG_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


@dataclass
class InputFile:
    """A file to read, and the class its drawings get when they name none."""

    path: Path
    kind: str | None
    label: str


def find_inputs(inputs: Iterable[str | os.PathLike]) -> tuple[list[InputFile], list[str]]:
    """The input files named by ``inputs``, and the files found in folders that are not drawings (ignored).

    Folders are searched recursively (hidden files and folders skipped), in sorted order. A file's default
    class is its folder below the input folder (``cats/x.svg`` → ``cats``); for a file directly in the input
    folder, its name for JSON (a file per class, as QuickDraw's) and the input folder's name for SVG.
    """
    files: list[InputFile] = []
    ignored: list[str] = []
    for item in inputs:
        root = Path(item).expanduser()
        if root.is_dir():
            for path in sorted(root.rglob("*")):
                rel = path.relative_to(root)
                if not path.is_file() or any(part.startswith(".") for part in rel.parts):
                    continue
                kind = input_kind(path)
                if kind is None:
                    ignored.append(str(path))
                    continue
                folder = rel.parent.as_posix()
                label = folder if folder != "." else (root.resolve().name if kind == "svg" else _stem(path))
                files.append(InputFile(path, kind, label))
        elif root.is_file():
            kind = input_kind(root)
            files.append(InputFile(root, kind, root.resolve().parent.name if kind == "svg" else _stem(root)))
        else:
            raise FileNotFoundError(f"input not found: {root}")
    if not files and not ignored:
        raise ValueError("no inputs given")
    return files, ignored


def parse_json_drawing(obj: object, default_label: str) -> tuple[list[np.ndarray], str]:
    """Strokes and class of one decoded drawing: a list of ``[[x...], [y...]]`` strokes or ``{"drawing": ...}``."""
    label = default_label
    if isinstance(obj, dict):
        if "drawing" not in obj:
            raise ValueError(f"object has no 'drawing' key (keys: {', '.join(sorted(map(str, obj))[:8])})")
        for key in LABEL_KEYS:
            if obj.get(key) is not None:
                label = str(obj[key])
                break
        obj = obj["drawing"]
    elif not isinstance(obj, list):
        raise ValueError(f"a drawing must be a list of strokes [[x...], [y...]] or an object with 'drawing', "
                         f"got {type(obj).__name__}")
    strokes, _, _ = parse_drawing(obj)
    if not strokes:
        raise ValueError("drawing has no strokes")
    return strokes, label


def _read_ndjson(item: InputFile) -> Iterator[Drawing | Dropped]:
    lineno = 0
    try:
        with open_text(item.path) as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                source = f"{item.path}:{lineno}"
                try:
                    strokes, label = parse_json_drawing(json.loads(line), item.label)
                except ValueError as exc:  # json.JSONDecodeError is a ValueError too
                    yield Dropped(source, str(exc) if not isinstance(exc, json.JSONDecodeError)
                                  else f"not valid JSON: {exc}")
                    continue
                yield Drawing(strokes, source, label, "ndjson")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        yield Dropped(str(item.path), f"cannot read past line {lineno}: {exc}")


def _read_json(item: InputFile) -> Iterator[Drawing | Dropped]:
    try:
        with open_text(item.path) as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        yield Dropped(str(item.path), f"not valid JSON: {exc}")
        return
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        yield Dropped(str(item.path), f"cannot read it: {exc}")
        return
    if isinstance(data, dict):
        data, single = [data], True
    elif isinstance(data, list):
        single = False
    else:
        yield Dropped(str(item.path), f"expected a list of drawings or one {{\"drawing\": ...}} object, "
                                      f"got {type(data).__name__}")
        return
    if not data:
        yield Dropped(str(item.path), "holds no drawings (an empty list)")
    for i, obj in enumerate(data):
        source = str(item.path) if single else f"{item.path}[{i}]"
        try:
            strokes, label = parse_json_drawing(obj, item.label)
        except ValueError as exc:
            yield Dropped(source, str(exc))
            continue
        yield Drawing(strokes, source, label)


def read_drawings(files: Iterable[InputFile], tolerance: float = TOLERANCE,
                  size: float | None = SIZE) -> Iterator[Drawing | Dropped]:
    """Every drawing of ``files`` in order, or a :class:`Dropped` for each file, line or item that fails."""
    for item in files:
        if item.kind == "svg":
            try:
                yield Drawing(read_svg(item.path, tolerance, size), str(item.path), item.label, "svg")
            except (ValueError, OSError) as exc:  # SvgError is a ValueError
                yield Dropped(str(item.path), str(exc))
        elif item.kind == "ndjson":
            yield from _read_ndjson(item)
        elif item.kind == "json":
            yield from _read_json(item)
        else:
            yield Dropped(str(item.path), "unsupported file type: expected .svg, .ndjson, .jsonl or .json "
                                          "(optionally .gz for the JSON ones)")


def drawing_to_stroke3(strokes: list[np.ndarray], size: float | None = SIZE, epsilon: float = EPSILON,
               round_coords: bool = True, y_up: bool = False) -> np.ndarray:
    """Polylines to stroke-3: flipped if ``y_up``, fit to ``size``, RDP-simplified at ``epsilon``, rounded.

    Returns int16 rows when ``round_coords``, else float32. Raises ``ValueError`` for a drawing that cannot be
    stored (no extent to scale, offsets beyond int16).
    """
    lines = [np.asarray(s, dtype=np.float64)[:, :2].copy() for s in strokes if len(s)]
    if not lines:
        raise ValueError("drawing has no points")
    if y_up:
        for line in lines:
            line[:, 1] = -line[:, 1]
    if size is not None:
        points = np.concatenate(lines)
        origin = points.min(axis=0)
        extent = float((points.max(axis=0) - origin).max())
        if extent <= 0:
            raise ValueError("drawing has no extent to scale (all its points are at one place)")
        lines = [(line - origin) * (size / extent) for line in lines]
    if epsilon > 0:
        lines = [rdp(line, epsilon) for line in lines]
    if round_coords:
        # absolute coordinates are rounded before differencing, so rounding errors cannot accumulate
        lines = [np.round(line) for line in lines]
        lines = [line[np.concatenate([[True], np.any(np.diff(line, axis=0) != 0, axis=1)])] for line in lines]
    stroke3 = from_polylines(lines, first_offset=True)
    if not round_coords:
        return stroke3.astype(np.float32)
    if np.abs(stroke3[:, :2]).max() > np.iinfo(np.int16).max:
        raise ValueError("offsets beyond the int16 range; give a size (e.g. 255) to scale the drawing")
    return stroke3.astype(np.int16)


def split_counts(n: int, valid: float, test: float) -> dict[str, int]:
    """How many of ``n`` drawings go to each split: rounded fractions, at least one per non-zero fraction."""
    counts = {"valid": round(n * valid), "test": round(n * test)}
    for split, frac in (("valid", valid), ("test", test)):
        if frac > 0 and counts[split] == 0 and n - counts["valid"] - counts["test"] > 1:
            counts[split] = 1
    counts["train"] = n - counts["valid"] - counts["test"]
    return {s: counts[s] for s in SPLITS}


def split_indices(n: int, valid: float = 0.1, test: float = 0.1, seed: int = 0) -> dict[str, np.ndarray]:
    """Indices of ``n`` items per split: a seeded shuffle cut by :func:`split_counts`, each split in input order."""
    for name, frac in (("valid", valid), ("test", test)):
        if not 0 <= frac < 1:
            raise ValueError(f"{name} fraction must be in [0, 1), got {frac}")
    if valid + test >= 1:
        raise ValueError(f"valid + test fractions ({valid} + {test}) leave nothing to train on")
    counts = split_counts(n, valid, test)
    order = np.random.default_rng(seed).permutation(n)
    out, start = {}, 0
    for split in ("test", "valid", "train"):
        out[split] = np.sort(order[start:start + counts[split]])
        start += counts[split]
    return {s: out[s] for s in SPLITS}


def _stats(lengths: list[int]) -> dict[str, float]:
    if not lengths:
        return {"count": 0}
    arr = np.asarray(lengths)
    return {"count": int(arr.size), "min": int(arr.min()), "median": float(np.median(arr)),
            "mean": round(float(arr.mean()), 2), "p95": float(np.percentile(arr, 95)), "max": int(arr.max())}


@dataclass
class ConvertReport:
    """What :func:`convert` wrote, what it left out and why."""

    output: Path
    settings: dict[str, Any]
    counts: dict[str, int] = field(default_factory=dict)
    class_counts: dict[str, int] = field(default_factory=dict)
    points: dict[str, dict[str, float]] = field(default_factory=dict)
    files_read: int = 0
    dropped: list[Dropped] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def report_path(self) -> Path:
        """Where the JSON report goes: beside the npz, ``<name>.report.json``."""
        return self.output.with_name(self.output.stem + ".report.json")

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON values."""
        reasons = Counter(d.reason.split(":")[0].split(" (")[0] for d in self.dropped)
        return {"output": str(self.output), "settings": self.settings, "files_read": self.files_read,
                "counts": self.counts, "classes": self.class_counts, "points_per_sketch": self.points,
                "dropped_count": len(self.dropped), "dropped_by_reason": dict(reasons.most_common()),
                "dropped": [{"source": d.source, "reason": d.reason} for d in self.dropped],
                "ignored_files": self.ignored}

    def describe(self, max_dropped: int = 20) -> str:
        """A few lines for the terminal: splits, classes, points per sketch, and the dropped inputs."""
        splits = ", ".join(f"{s} {self.counts.get(s, 0)}" for s in SPLITS)
        lines = [f"wrote {self.output}: {splits} ({len(self.class_counts)} class"
                 f"{'es' if len(self.class_counts) != 1 else ''}) from {self.files_read} file(s)"]
        p = self.points.get("all", {})
        if p.get("count"):
            lines.append(f"points per sketch: min {p['min']}, median {p['median']:g}, mean {p['mean']:g}, "
                         f"95th percentile {p['p95']:g}, max {p['max']}")
        if len(self.class_counts) > 1:
            shown = sorted(self.class_counts.items(), key=lambda kv: (-kv[1], kv[0]))
            text = ", ".join(f"{k} {v}" for k, v in shown[:10])
            lines.append(f"classes: {text}" + (f", ... ({len(shown) - 10} more)" if len(shown) > 10 else ""))
        if self.dropped:
            lines.append(f"dropped {len(self.dropped)}:")
            lines.extend(f"  {d.source}: {d.reason}" for d in self.dropped[:max_dropped])
            if len(self.dropped) > max_dropped:
                lines.append(f"  ... and {len(self.dropped) - max_dropped} more in {self.report_path}")
        if self.ignored:
            lines.append(f"ignored {len(self.ignored)} file(s) that are not drawings (e.g. {self.ignored[0]})")
        lines.append(f"report: {self.report_path}")
        return "\n".join(lines)


def convert(inputs: Iterable[str | os.PathLike], output_npz: str | os.PathLike, *, size: float | None = SIZE,
            epsilon: float = EPSILON, tolerance: float = TOLERANCE, valid: float = 0.1, test: float = 0.1,
            seed: int = 0, round_coords: bool = True, y_up: bool = False, overwrite: bool = False) -> ConvertReport:
    """Convert drawings (SVG files, ndjson, JSON; files or folders) into one Sketch-RNN npz and its report.

    See the module docstring for the formats and steps. Writes ``output_npz`` and ``<name>.report.json``
    beside it (both atomically). Raises ``ValueError`` when no drawing is left to write (the message lists
    the first reasons), ``FileExistsError`` when the npz exists and not ``overwrite``.
    """
    if size is not None and not (size > 0 and math.isfinite(size)):
        raise ValueError(f"size must be a finite number > 0 (or None to keep coordinates), got {size}")
    if not (epsilon >= 0 and math.isfinite(epsilon)):
        raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon}")
    if not (tolerance > 0 and math.isfinite(tolerance)):
        raise ValueError(f"tolerance must be a finite number > 0, got {tolerance}")
    inputs = list(inputs)
    split_indices(0, valid, test, seed)  # check the fractions before reading anything
    output = Path(output_npz).expanduser()
    if output.suffix != ".npz":
        raise ValueError(f"output must be a .npz file, got {output}")
    refuse_overwrite(output, overwrite)  # before the slow part, and again when writing
    files, ignored = find_inputs(inputs)
    report = ConvertReport(output, settings={
        "inputs": [str(i) for i in inputs],
        "size": size, "epsilon": epsilon, "tolerance": tolerance, "valid": valid, "test": test, "seed": seed,
        "round": round_coords, "y_up": y_up}, ignored=ignored, files_read=len(files))

    sketches: list[np.ndarray] = []
    sources: list[str] = []
    labels: list[str] = []
    for item in read_drawings(files, tolerance, size):
        if isinstance(item, Dropped):
            report.dropped.append(item)
            continue
        try:
            stroke3 = drawing_to_stroke3(item.strokes, size, epsilon, round_coords, y_up and item.kind != "svg")
        except ValueError as exc:
            report.dropped.append(Dropped(item.source, str(exc)))
            continue
        sketches.append(stroke3)
        sources.append(item.source)
        labels.append(item.label)
    if not sketches:
        reasons = "; ".join(f"{d.source}: {d.reason}" for d in report.dropped[:3])
        raise ValueError(f"no drawings left to write from {len(files)} input file(s)"
                         + (f" ({len(report.dropped)} dropped: {reasons}{' ...' if len(report.dropped) > 3 else ''})"
                            if report.dropped else ""))

    class_names = sorted(set(labels))
    label_of = {name: i for i, name in enumerate(class_names)}
    arrays: dict[str, np.ndarray] = {}
    for split, index in split_indices(len(sketches), valid, test, seed).items():
        arrays[split] = object_array([sketches[i] for i in index])
        arrays[f"{split}_labels"] = np.array([label_of[labels[i]] for i in index], dtype=np.int16)
        arrays[f"{split}_sources"] = np.array([sources[i] for i in index], dtype=str)
        report.counts[split] = len(index)
        report.points[split] = _stats([len(sketches[i]) for i in index])
    arrays["class_names"] = np.array(class_names, dtype=str)
    report.points["all"] = _stats([len(s) for s in sketches])
    report.class_counts = dict(sorted(Counter(labels).items()))
    save_npz_atomic(arrays, output, overwrite)
    with atomic_open(report.report_path, "w") as fh:
        json.dump(report.to_dict(), fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    return report
