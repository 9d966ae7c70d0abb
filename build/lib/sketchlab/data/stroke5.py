"""Batches for Sketch-RNN: stroke-3 sketches to padded stroke-5 with magenta's start token."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sketchlab.data.strokes import to_stroke5

#: Magenta's ``S_0``, prepended to every sketch.
START_TOKEN = np.array([0, 0, 1, 0, 0], dtype=np.float32)
PAD_MODES = ("max_seq_len", "batch")


class Stroke5Collate:
    """Magenta's ``DataLoader.pad_batch``: ``{"strokes": (B, L + 1, 5), "lengths": (B,)}``.

    Row 0 is the start token ``(0, 0, 1, 0, 0)``, rows ``1..N`` the sketch's points (each keeps its
    own pen state: the last point is pen-up, ``p2 = 1``, not end-of-sketch) and the rest
    ``(0, 0, 0, 0, 1)``. A sketch of exactly ``L`` points therefore gets no end-of-sketch row, as in
    magenta. ``lengths`` are the point counts ``N``.

    ``pad_to="max_seq_len"`` pads every batch to ``L = max_seq_len`` (magenta; the loss is a mean over
    ``B x L``, so this fixes its scale); ``"batch"`` pads to the longest sketch of the batch (faster,
    but the loss scale then depends on the batch).
    """

    def __init__(self, max_seq_len: int, pad_to: str = "max_seq_len") -> None:
        if max_seq_len < 1:
            raise ValueError(f"max_seq_len must be positive, got {max_seq_len}")
        if pad_to not in PAD_MODES:
            raise ValueError(f"pad_to must be one of {', '.join(PAD_MODES)}, got '{pad_to}'")
        self.max_seq_len = max_seq_len
        self.pad_to = pad_to

    def __call__(self, items: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        if len(items) == 0:
            raise ValueError("cannot collate an empty list of sketches")
        sketches = [np.asarray(s, dtype=np.float32) for s in items]
        for i, s in enumerate(sketches):
            if s.ndim != 2 or s.shape[1] != 3:
                raise ValueError(f"sketch {i} must be stroke-3 (N, 3), got shape {s.shape}")
            if len(s) > self.max_seq_len:
                raise ValueError(f"sketch {i} has {len(s)} points, more than max_seq_len={self.max_seq_len}")
        length = self.max_seq_len if self.pad_to == "max_seq_len" else max(len(s) for s in sketches)
        strokes = np.empty((len(sketches), length + 1, 5), dtype=np.float32)
        strokes[:, 0] = START_TOKEN
        for i, s in enumerate(sketches):
            strokes[i, 1:] = to_stroke5(s, length)
        return {"strokes": torch.from_numpy(strokes),
                "lengths": torch.tensor([len(s) for s in sketches], dtype=torch.int64)}
