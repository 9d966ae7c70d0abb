"""Stroke5Collate against a transcription of magenta's DataLoader.pad_batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import random_sketches
from sketchlab.data.stroke5 import Stroke5Collate


def magenta_pad_batch(batch: list[np.ndarray], max_len: int) -> np.ndarray:
    """utils.DataLoader.pad_batch, line by line (fill, then shift right by one for the start token)."""
    result = np.zeros((len(batch), max_len + 1, 5), dtype=float)
    for i, s in enumerate(batch):
        n = len(s)
        result[i, 0:n, 0:2] = s[:, 0:2]
        result[i, 0:n, 3] = s[:, 2]
        result[i, 0:n, 2] = 1 - result[i, 0:n, 3]
        result[i, n:, 4] = 1
        result[i, 1:, :] = result[i, :-1, :]
        result[i, 0, :] = 0
        result[i, 0, 2] = 1
    return result


def _sketches(lengths=(3, 6, 1)) -> list[np.ndarray]:
    return random_sketches(lengths, seed=0, pen_prob=0.3)


@pytest.mark.parametrize("lengths", [(3, 6, 1), (8, 2)])
def test_matches_magenta_pad_batch(lengths):
    sketches = _sketches(lengths)
    out = Stroke5Collate(8)(sketches)
    assert out["strokes"].dtype == torch.float32 and out["lengths"].dtype == torch.int64
    assert out["strokes"].shape == (len(lengths), 9, 5)
    np.testing.assert_array_equal(out["strokes"].numpy(), magenta_pad_batch(sketches, 8).astype(np.float32))
    assert out["lengths"].tolist() == list(lengths)


def test_layout_of_one_sketch():
    s = np.array([[1, 2, 0], [3, 4, 1], [5, 6, 1]], dtype=np.float32)
    rows = Stroke5Collate(5)([s])["strokes"][0].numpy()
    np.testing.assert_array_equal(rows[0], [0, 0, 1, 0, 0])  # S_0
    np.testing.assert_array_equal(rows[1:4], [[1, 2, 1, 0, 0], [3, 4, 0, 1, 0], [5, 6, 0, 1, 0]])
    np.testing.assert_array_equal(rows[4:], [[0, 0, 0, 0, 1]] * 2)  # the last point stays pen-up


def test_a_sketch_of_max_len_points_gets_no_end_row():
    s = _sketches((4,))[0]
    rows = Stroke5Collate(4)([s])["strokes"][0].numpy()
    assert rows.shape == (5, 5) and rows[:, 4].sum() == 0


def test_pad_to_batch_pads_to_the_longest_sketch():
    sketches = _sketches((3, 6, 1))
    out = Stroke5Collate(250, pad_to="batch")(sketches)
    assert out["strokes"].shape == (3, 7, 5)
    np.testing.assert_array_equal(out["strokes"].numpy(), magenta_pad_batch(sketches, 6).astype(np.float32))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="more than max_seq_len=4"):
        Stroke5Collate(4)(_sketches((5,)))
    with pytest.raises(ValueError, match=r"stroke-3 \(N, 3\)"):
        Stroke5Collate(4)([np.zeros((3, 5), dtype=np.float32)])
    with pytest.raises(ValueError, match="empty"):
        Stroke5Collate(4)([])
    with pytest.raises(ValueError, match="pad_to"):
        Stroke5Collate(4, pad_to="longest")
