"""Quick, Draw! ndjson (raw or simplified) to a Sketch-RNN style stroke-3 npz.

Google publishes each class as ndjson, one drawing per line, in two flavours:

- **raw**: ``drawing`` = list of strokes ``[[x...], [y...], [t_ms...]]`` in float screen coordinates;
- **simplified**: ``drawing`` = list of strokes ``[[x...], [y...]]``, integers in a 0–255 box,
  made from raw by :func:`simplify_raw`.

:func:`convert` turns such files into the npz layout of the official ``sketchrnn/<class>.npz``
files (``train``/``valid``/``test`` object arrays of int16 (N, 3) stroke-3) plus labels, key ids and
class names, splitting by ``md5(key_id) % 10`` (0 test, 1 valid, else train).
"""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from sketchlab.data.simplify import rdp, resample
from sketchlab.data.sources import SPLITS, hash_split
from sketchlab.data.strokes import from_polylines
from sketchlab.fileio import atomic_open

FORMATS = ("raw", "simplified", "auto")
NDJSON_SUFFIXES = (".ndjson", ".ndjson.gz")

# Google's documented raw → simplified preprocessing constants.
SIMPLIFIED_SIZE = 255.0
RESAMPLE_SPACING = 1.0
RDP_EPSILON = 2.0


@dataclass
class QuickDrawRecord:
    """One Quick, Draw! drawing. ``strokes`` are (K, 2) float arrays of absolute x, y (y down)."""

    word: str
    key_id: str
    strokes: list[np.ndarray]
    fmt: str
    countrycode: str = ""
    recognized: bool | None = None
    timestamp: str = ""
    times: list[np.ndarray] | None = None  # per-stroke ms since the first point (raw only)


def _check_fmt(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown QuickDraw format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _stroke_format(stroke: object) -> str:
    if not isinstance(stroke, list) or len(stroke) not in (2, 3) or not all(isinstance(c, list) for c in stroke):
        raise ValueError("each stroke must be [[x...], [y...]] (simplified) or [[x...], [y...], [t...]] (raw)")
    return "raw" if len(stroke) == 3 else "simplified"


def parse_drawing(drawing: object, fmt: str = "auto") -> tuple[list[np.ndarray], list[np.ndarray] | None, str]:
    """Strokes of a QuickDraw-style ``drawing`` (``[[x...], [y...]]`` or ``[[x...], [y...], [t...]]`` each).

    Returns (K, 2) float arrays of x, y per stroke, the per-stroke times (raw drawings only, else ``None``)
    and the detected flavour. Raises ``ValueError`` saying what is wrong with which stroke.
    """
    _check_fmt(fmt)
    if not isinstance(drawing, list):
        raise ValueError("drawing must be a list of strokes")
    found = {_stroke_format(stroke) for stroke in drawing}
    if len(found) > 1:
        raise ValueError("drawing mixes raw [x, y, t] and simplified [x, y] strokes")
    detected = found.pop() if found else (fmt if fmt != "auto" else "simplified")
    if fmt != "auto" and detected != fmt:
        raise ValueError(f"expected a {fmt} drawing but its strokes look {detected}")
    strokes, times = [], []
    for i, stroke in enumerate(drawing):
        try:
            columns = [np.asarray(c, dtype=np.float64) for c in stroke]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"stroke {i} has non-numeric coordinates") from exc
        if any(c.ndim != 1 or len(c) != len(columns[0]) for c in columns):
            raise ValueError(f"stroke {i} has x, y (and t) lists of different lengths")
        if len(columns[0]) == 0:
            raise ValueError(f"stroke {i} is empty")
        if not all(np.all(np.isfinite(c)) for c in columns):
            raise ValueError(f"stroke {i} has NaN or infinite values")
        strokes.append(np.column_stack(columns[:2]))
        if detected == "raw":
            times.append(columns[2])
    return strokes, (times if detected == "raw" else None), detected


def parse_record(obj: object, fmt: str = "auto") -> QuickDrawRecord:
    """A decoded ndjson object as a :class:`QuickDrawRecord`; ``fmt`` checks (or detects) raw vs simplified."""
    _check_fmt(fmt)
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in ("word", "key_id", "drawing") if k not in obj]
    if missing:
        raise ValueError(f"record lacks {', '.join(missing)}")
    key_id = str(obj["key_id"])
    if not key_id.isdigit():
        raise ValueError(f"key_id must be a decimal integer, got {key_id!r}")
    strokes, times, detected = parse_drawing(obj["drawing"], fmt)
    recognized = obj.get("recognized")
    return QuickDrawRecord(
        word=str(obj["word"]),
        key_id=key_id,
        strokes=strokes,
        fmt=detected,
        countrycode=str(obj.get("countrycode", "")),
        recognized=None if recognized is None else bool(recognized),
        timestamp=str(obj.get("timestamp", "")),
        times=times,
    )


def open_text(path: Path):
    """A text handle on ``path``, gunzipped when its first bytes say gzip (whatever its name)."""
    with open(path, "rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    if gzipped:
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def read_ndjson(path: str | os.PathLike, fmt: str = "auto") -> Iterator[QuickDrawRecord]:
    """Records of a QuickDraw ndjson file (plain or gzip, detected from the content); blank lines are skipped.

    Any unreadable line raises ``ValueError`` naming the file and the line number.
    """
    _check_fmt(fmt)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"QuickDraw file not found: {path}")
    lineno = 0
    try:
        with open_text(path) as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    yield parse_record(json.loads(line), fmt)
                except ValueError as exc:  # json.JSONDecodeError is a ValueError too
                    raise ValueError(f"{path}:{lineno}: bad QuickDraw record: {exc}") from exc
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read past line {lineno}: {exc}") from exc


def find_inputs(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """The ndjson files named by ``inputs``: files as given, folders expanded to their ``*.ndjson(.gz)`` (sorted)."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(NDJSON_SUFFIXES))
            if not found:
                raise FileNotFoundError(f"no .ndjson or .ndjson.gz files in folder {path}")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"QuickDraw input not found: {path}")
    if not files:
        raise ValueError("no QuickDraw inputs given")
    return files


def simplify_raw(
    strokes: Sequence[np.ndarray],
    size: float = SIMPLIFIED_SIZE,
    spacing: float = RESAMPLE_SPACING,
    epsilon: float = RDP_EPSILON,
) -> list[np.ndarray]:
    """Google's raw → simplified preprocessing, returning (K, 2) float arrays of whole numbers.

    1. shift so the minimum x and y are 0; 2. scale uniformly so the larger extent is ``size``;
    3. resample each stroke every ``spacing`` units; 4. RDP with ``epsilon``; then round to ints.
    Checked against Google's files: rounding last, half to even (Python's ``round``), reproduces
    them best; rounding before RDP or half up match far fewer drawings exactly. A stroke that
    never moves keeps two identical points, as Google's files never hold one-point strokes.
    Extra columns (e.g. raw timestamps) are ignored.
    """
    lines = [np.asarray(s, dtype=np.float64)[:, :2] for s in strokes if len(s)]
    if not lines:
        return []
    points = np.concatenate(lines)
    origin = points.min(axis=0)
    extent = float((points - origin).max())
    scale = size / extent if extent > 0 else 1.0
    out = []
    for line in lines:
        simplified = np.round(rdp(resample((line - origin) * scale, spacing), epsilon))
        if len(simplified) == 1:
            simplified = np.repeat(simplified, 2, axis=0)
        out.append(simplified)
    return out


def record_to_stroke3(record: QuickDrawRecord) -> np.ndarray:
    """int16 stroke-3 of a record, as magenta's ``lines_to_strokes``: the first row is the first point itself.

    Absolute coordinates are rounded before differencing, so rounding errors cannot accumulate.
    """
    lines = [np.round(s) for s in record.strokes]
    stroke3 = from_polylines(lines, first_offset=True)
    if len(stroke3) and np.abs(stroke3[:, :2]).max() > np.iinfo(np.int16).max:
        raise ValueError(f"drawing {record.key_id} has offsets beyond the int16 range; simplify it first")
    return stroke3.astype(np.int16)


def split_of(key_id: str) -> str:
    """``train``/``valid``/``test`` by ``md5`` of the decimal key_id string (0 → test, 1 → valid)."""
    return SPLITS[hash_split(key_id)]


@dataclass
class ConvertSummary:
    """What :func:`convert` wrote and what it left out."""

    output: Path
    counts: dict[str, int]
    class_names: list[str]
    duplicates: int = 0
    unrecognized: int = 0
    over_cap: int = 0
    empty: int = 0
    simplified_raw: int = 0
    per_class: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        splits = ", ".join(f"{s} {self.counts[s]}" for s in SPLITS)
        skipped = [f"{n} {what}" for n, what in ((self.duplicates, "duplicate key_ids"),
                                                 (self.unrecognized, "unrecognized"),
                                                 (self.over_cap, "over the per-class cap"),
                                                 (self.empty, "empty")) if n]
        text = f"wrote {self.output}: {splits} ({len(self.class_names)} classes"
        text += f", {self.simplified_raw} raw drawings simplified)" if self.simplified_raw else ")"
        return text + (f"; skipped {', '.join(skipped)}" if skipped else "")


def refuse_overwrite(output: Path, overwrite: bool) -> None:
    """Raise ``FileExistsError`` when ``output`` exists and ``overwrite`` is off."""
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} already exists; pass overwrite=True (--overwrite) to replace it")


def save_npz_atomic(arrays: dict[str, np.ndarray], output: Path, overwrite: bool) -> None:
    """Write through a temporary file in the same folder, so readers never see a half-written npz."""
    refuse_overwrite(output, overwrite)
    with atomic_open(output, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def object_array(items: list[np.ndarray]) -> np.ndarray:
    """A 1-d object array holding ``items`` (ragged sketches), the layout of magenta's npz splits."""
    # Built element by element: np.array(list_of_arrays) would stack equal-length sketches into one 3-D array.
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


def convert(
    inputs: Iterable[str | os.PathLike],
    output_npz: str | os.PathLike,
    simplify: bool | None = None,
    fmt: str = "auto",
    recognized_only: bool = False,
    max_per_class: int | None = None,
    overwrite: bool = False,
) -> ConvertSummary:
    """Convert QuickDraw ndjson files (or folders of them) to one Sketch-RNN style npz.

    ``simplify``: ``None`` simplifies raw drawings and keeps simplified ones as they are; ``True``
    runs :func:`simplify_raw` on every drawing; ``False`` on none (raw coordinates are only rounded).
    ``max_per_class`` keeps the first drawings of each class in input order (after the
    ``recognized_only`` filter); a key_id seen twice is kept once. Sketches are ordered by
    (class, key_id), and class labels index the sorted ``class_names``.
    """
    _check_fmt(fmt)
    if max_per_class is not None and max_per_class < 1:
        raise ValueError(f"max_per_class must be a positive integer, got {max_per_class}")
    output = Path(output_npz).expanduser()
    refuse_overwrite(output, overwrite)  # before the slow part, and again when writing
    files = find_inputs(inputs)

    kept: list[tuple[str, int, str, np.ndarray]] = []  # word, key_id, split, stroke-3
    seen: set[str] = set()
    per_class: Counter[str] = Counter()
    summary = ConvertSummary(output=output, counts={}, class_names=[])
    for path in files:
        for record in read_ndjson(path, fmt):
            if record.key_id in seen:
                summary.duplicates += 1
                continue
            seen.add(record.key_id)
            if recognized_only and record.recognized is not True:
                summary.unrecognized += 1
                continue
            if max_per_class is not None and per_class[record.word] >= max_per_class:
                summary.over_cap += 1
                continue
            if not record.strokes:
                summary.empty += 1
                continue
            if simplify or (simplify is None and record.fmt == "raw"):
                summary.simplified_raw += record.fmt == "raw"
                record = replace(record, strokes=simplify_raw(record.strokes))
            per_class[record.word] += 1
            kept.append((record.word, int(record.key_id), split_of(record.key_id), record_to_stroke3(record)))
    if not kept:
        raise ValueError(f"no drawings left to write from {len(files)} input file(s)")

    kept.sort(key=lambda item: (item[0], item[1]))
    class_names = sorted(per_class)
    label_of = {name: i for i, name in enumerate(class_names)}
    buckets: dict[str, list[tuple[str, int, str, np.ndarray]]] = {s: [] for s in SPLITS}
    for item in kept:
        buckets[item[2]].append(item)
    arrays: dict[str, np.ndarray] = {}
    for split, items in buckets.items():
        arrays[split] = object_array([s3 for *_, s3 in items])
        arrays[f"{split}_labels"] = np.array([label_of[w] for w, *_ in items], dtype=np.int16)
        arrays[f"{split}_key_ids"] = np.array([k for _, k, *_ in items], dtype=np.int64)
    arrays["class_names"] = np.array(class_names)
    save_npz_atomic(arrays, output, overwrite)

    summary.counts = {s: len(buckets[s]) for s in SPLITS}
    summary.class_names = class_names
    summary.per_class = dict(per_class)
    return summary
