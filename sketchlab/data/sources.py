"""Dataset sources: files on disk (or downloaded) read into train/valid/test lists of stroke-3 arrays.

Every source returns sketches in one convention: stroke-3 float32 rows ``(dx, dy, pen_lift)``,
y pointing down (image coordinates). Sources whose files have y pointing up flip it on load.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch

from sketchlab.data.safe_npz import load_npz
from sketchlab.data.strokes import points_to_stroke3

SPLITS = ("train", "valid", "test")


@dataclass
class SketchSplits:
    """Sketches per split, with optional integer labels and their names."""

    sketches: dict[str, list[np.ndarray]]
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    class_names: list[str] | None = None

    def __getitem__(self, split: str) -> list[np.ndarray]:
        return self.sketches[split]


def _resolve(path: str | os.PathLike, url: str | None) -> Path:
    """The file at ``path``; if it is missing and ``url`` is that very file's download, the downloaded copy.

    A path whose name differs from the url's file is a user's own file: it is never replaced by the
    config's default download (that would train on another dataset under the wrong name).
    """
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if url and p.name == Path(urlparse(url).path).name:
        from sketchlab.data.download import fetch

        return fetch(url, filename=p.name)
    raise FileNotFoundError(
        f"dataset file not found: {p}. Point data.source.path at it, or paths.data_dir=... (or the environment "
        "variable SKETCHLAB_DATA) at the folder that holds the datasets."
    )


def _check_sketch(arr: np.ndarray, path: Path, split: str, i: int, pen_column: int = 2,
                  stroke3: bool = True) -> np.ndarray:
    """An (N, 3) stroke-3 array (``stroke3``) or (N, >=3) point array of finite numbers with pen lifts in
    {0, 1}, or an error naming the sketch."""
    arr = np.asarray(arr)
    where = f"{path}: {split}[{i}]"
    if arr.ndim == 2 and ((arr.shape[1] < 3 <= arr.shape[0]) or (stroke3 and arr.shape[0] == 3 != arr.shape[1])):
        raise ValueError(f"{where} has shape {arr.shape}: it looks transposed; sketches must be (N, 3) rows "
                         "of (dx, dy, pen_lift)")
    if arr.ndim != 2 or arr.shape[1] < 3 or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{where} is not an (N, 3) stroke array (shape {arr.shape}, dtype {arr.dtype})")
    if not np.isfinite(arr).all():
        raise ValueError(f"{where} holds NaN or infinite values (row {int(np.argwhere(~np.isfinite(arr))[0, 0])})")
    pen = arr[:, pen_column]
    bad = np.unique(pen[(pen != 0) & (pen != 1)])
    if bad.size:
        raise ValueError(f"{where} has pen values {bad[:5].tolist()}; the pen column must be 0 (down) or 1 (lifted)")
    return arr


def _flip_y(sketches: list[np.ndarray]) -> list[np.ndarray]:
    out = []
    for s in sketches:
        s = s.copy()
        s[:, 1] = -s[:, 1]
        out.append(s)
    return out


@dataclass
class StrokeNpz:
    """A Sketch-RNN style npz: ``train``/``valid``/``test`` object arrays of stroke-3 sketches.

    Works for David Ha's sketch-rnn-datasets (old latin1 pickles too), the per-class QuickDraw
    ``sketchrnn/*.npz`` files and files written by ``scripts/convert_quickdraw.py``
    (which add ``{split}_labels`` and ``class_names``).
    """

    path: str
    url: str | None = None
    y_up: bool = False

    def load(self) -> SketchSplits:
        path = _resolve(self.path, self.url)
        data = load_npz(path)
        missing = [s for s in SPLITS if s not in data]
        if missing:
            raise ValueError(f"{path} has no {', '.join(missing)} split(s); keys are {sorted(data)}")
        sketches = {s: [_check_sketch(a, path, s, i)[:, :3].astype(np.float32) for i, a in enumerate(data[s])]
                    for s in SPLITS}
        if self.y_up:
            sketches = {s: _flip_y(v) for s, v in sketches.items()}
        labels = {s: np.asarray(data[f"{s}_labels"], dtype=np.int64) for s in SPLITS if f"{s}_labels" in data}
        names = [str(n) for n in data["class_names"]] if "class_names" in data else None
        return SketchSplits(sketches, labels, names)


def hash_split(key: str, valid_every: int = 10) -> int:
    """Deterministic split of a group key: ``md5 % 10`` = 0 → test (2), 1 → valid (1), else train (0)."""
    bucket = int(hashlib.md5(key.encode()).hexdigest(), 16) % valid_every
    return {0: 2, 1: 1}.get(bucket, 0)


@dataclass
class PointsNpz:
    """An npz of absolute point arrays (``points``: object array of (N, ≥3) rows, pen_lift last).

    The layout of VectorMNIST, UNIPEN, Omniglot strokes, hanzi medians and the GW handwriting in
    ``../shared/data``. The split comes from an int column (0 train, 1 valid, 2 test) when the file
    has one, else from hashing a group column (writer, page, drawing) so groups never straddle splits.

    ``random_split`` (a train fraction) replaces both with the original SketchODE's split
    (``GenericDM.setup``): ``torch.utils.data.random_split`` of all samples, seeded by ``split_seed``,
    into ``int(n · fraction)`` train and the rest valid; the test split is the valid one, as the
    original's ``test_dataloader`` returns the validation loader. It ignores groups: on VectorMNIST
    copies of one drawing land on both sides.
    """

    path: str
    url: str | None = None
    y_up: bool = True
    points_key: str = "points"
    split_key: str | None = "split"
    group_key: str | None = None
    label_key: str | None = "labels"
    xy_columns: tuple[int, int] = (0, 1)
    random_split: float | None = None
    split_seed: int = 1234

    def _split_indices(self, data: dict[str, np.ndarray], n: int, path: Path) -> dict[str, list[int]]:
        """Which samples (by row) go to each split."""
        if self.random_split is not None:
            if not 0 < self.random_split < 1:
                raise ValueError(f"data.source.random_split is the train fraction, in (0, 1); got {self.random_split}")
            n_train = int(n * self.random_split)
            if n_train == 0 or n_train == n:
                raise ValueError(f"data.source.random_split={self.random_split} of {n} samples leaves a split empty")
            train, valid = torch.utils.data.random_split(range(n), [n_train, n - n_train],
                                                         generator=torch.Generator().manual_seed(self.split_seed))
            return {"train": list(train.indices), "valid": list(valid.indices), "test": list(valid.indices)}
        if self.split_key and self.split_key in data:
            split_ids = np.asarray(data[self.split_key], dtype=np.int64)
        elif self.group_key and self.group_key in data:
            split_ids = np.array([hash_split(str(g)) for g in data[self.group_key]])
        else:
            raise ValueError(f"{path}: no split column '{self.split_key}' and no group column "
                             f"'{self.group_key}' to split by; keys are {sorted(data)}")
        if len(split_ids) != n or not np.isin(split_ids, range(len(SPLITS))).all():
            raise ValueError(f"{path}: the split column must hold one of 0 (train), 1 (valid), 2 (test) per sample")
        return {split: np.flatnonzero(split_ids == k).tolist() for k, split in enumerate(SPLITS)}

    def load(self) -> SketchSplits:
        path = _resolve(self.path, self.url)
        data = load_npz(path)
        if self.points_key not in data:
            raise ValueError(f"{path} has no '{self.points_key}' array; keys are {sorted(data)}")
        points = data[self.points_key]
        index = self._split_indices(data, len(points), path)
        cx, cy = self.xy_columns
        converted: dict[int, np.ndarray] = {}
        for i in sorted({i for rows in index.values() for i in rows}):
            pts = _check_sketch(points[i], path, self.points_key, i, pen_column=-1, stroke3=False).astype(np.float64)
            xyp = np.column_stack([pts[:, cx], -pts[:, cy] if self.y_up else pts[:, cy], pts[:, -1]])
            converted[i] = points_to_stroke3(xyp)
        sketches = {split: [converted[i] for i in index[split]] for split in SPLITS}
        labels, names = {}, None
        if self.label_key and self.label_key in data:
            raw = np.asarray(data[self.label_key])
            names = sorted({str(v) for v in raw})
            lookup = {n: k for k, n in enumerate(names)}
            labels = {s: np.array([lookup[str(raw[i])] for i in index[s]], dtype=np.int64) for s in SPLITS}
        return SketchSplits(sketches, labels, names)


@dataclass
class QuickDrawClasses:
    """Public QuickDraw classes in Sketch-RNN format (70k/2.5k/2.5k each), downloaded once into the cache."""

    classes: list[str]

    def load(self) -> SketchSplits:
        from sketchlab.data.download import fetch_quickdraw

        if not self.classes:
            raise ValueError("QuickDrawClasses needs at least one class name, e.g. data.source.classes=[cat]")
        parts = [StrokeNpz(str(fetch_quickdraw(name, "sketchrnn"))).load() for name in self.classes]
        sketches = {s: [x for p in parts for x in p.sketches[s]] for s in SPLITS}
        labels = {s: np.concatenate([np.full(len(p.sketches[s]), k, dtype=np.int64) for k, p in enumerate(parts)])
                  for s in SPLITS}
        return SketchSplits(sketches, labels, list(self.classes))
