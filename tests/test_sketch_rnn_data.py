"""Sketch-RNN's data path against magenta: Stroke5Collate vs DataLoader.pad_batch, drop_points vs augment_strokes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import random_sketches
from sketchlab.data.augment import SketchRNNAugment, drop_points
from sketchlab.data.stroke5 import Stroke5Collate
from sketchlab.data.strokes import clean


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


# magenta's augment_strokes merges a pen-down point into the previous kept row only when it is the 4th or a
# later point of its stroke (``count > 2``) and is not a stroke end; with prob = 1 every such point merges.
THREE_STROKES = np.array([[1, 0, 0], [2, 0, 0], [3, 0, 0], [4, 0, 0], [5, 0, 0], [6, 1, 1],  # 6 points
                          [1, 1, 0], [1, 2, 0], [1, 3, 1],                                   # 3 points
                          [1, 1, 0], [2, 2, 0], [3, 3, 0], [4, 4, 0], [5, 5, 0], [6, 6, 0], [7, 7, 1]],
                         dtype=np.float32)
ALL_DROPPED = np.array([[1, 0, 0], [2, 0, 0], [3 + 4 + 5, 0, 0], [6, 1, 1],
                        [1, 1, 0], [1, 2, 0], [1, 3, 1],
                        [1, 1, 0], [2, 2, 0], [3 + 4 + 5 + 6, 3 + 4 + 5 + 6, 0], [7, 7, 1]], dtype=np.float32)


def test_drop_points_keeps_the_first_three_points_of_each_stroke_and_its_end():
    out = drop_points(THREE_STROKES, np.random.default_rng(0), prob=1.0)
    np.testing.assert_array_equal(out, ALL_DROPPED)
    np.testing.assert_array_equal(drop_points(THREE_STROKES, np.random.default_rng(0), prob=0.0), THREE_STROKES)


def test_sketch_rnn_augment_drops_points_as_magenta():
    augment = SketchRNNAugment(random_scale_factor=0.0, augment_stroke_prob=1.0)  # scale factors exactly 1
    np.testing.assert_array_equal(augment(THREE_STROKES, np.random.default_rng(0)), ALL_DROPPED)


def test_offsets_are_clipped_at_magentas_limit_of_1000():
    """DataLoader.preprocess: ``np.minimum(data, 1000)``, ``np.maximum(data, -1000)`` (large gaps removed)."""
    s = np.array([[1500, -2000, 0], [999.5, -1000, 0], [-1000.5, 1000, 1]], dtype=np.float64)
    out = clean(s)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[1000, -1000, 0], [999.5, -1000, 0], [-1000, 1000, 1]])
