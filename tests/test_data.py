"""Data sources, the data module and Sketch-RNN's augmentations, on the real data in ../shared/data."""

import numpy as np
import pytest
import torch

from sketchlab.data.augment import SketchRNNAugment, drop_points, random_scale
from sketchlab.data.datamodule import PrefetchStream, SketchDataModule
from sketchlab.data.sources import PointsNpz, SketchSplits, StrokeNpz, hash_split
from sketchlab.data.strokes import scale_factor


def _count_collate(items):
    return {"n": torch.tensor([len(s) for s in items]), "first": torch.tensor(np.stack([s[0] for s in items]))}


def test_sheep_npz_matches_readme(shared_data):
    splits = StrokeNpz(str(shared_data / "sketch-rnn-datasets/aaron_sheep.npz")).load()
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [7400, 300, 300]
    assert all(s.dtype == np.float32 and s.shape[1] == 3 for s in splits["train"][:50])


def test_float64_kanji_is_cast(shared_data):
    splits = StrokeNpz(str(shared_data / "sketch-rnn-datasets/kanji.rdp200.npz")).load()
    assert splits["valid"][0].dtype == np.float32


def test_vmnist_split_is_by_drawing(shared_data):
    path = shared_data / "vectormnist/vmnist.npz"
    splits = PointsNpz(str(path)).load()
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [8475, 1125, 975]
    raw = np.load(path, allow_pickle=True)
    anchors = {s: {(int(l), int(a)) for l, a, sp in zip(raw["labels"], raw["anchor"], raw["split"]) if sp == k}
               for k, s in enumerate(("train", "valid", "test"))}
    assert not anchors["train"] & anchors["test"] and not anchors["train"] & anchors["valid"]
    assert splits.class_names == [str(d) for d in range(10)]
    # y is flipped to point down: the source stores y up
    first = raw["points"][0]
    assert splits.sketches[("train", "valid", "test")[raw["split"][0]]][0][1, 1] == pytest.approx(
        -(first[1, 1] - first[0, 1]), abs=1e-5)


def test_missing_file_error_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.npz"):
        StrokeNpz(str(tmp_path / "nothere.npz")).load()


def test_corrupt_npz_gives_clear_error(tmp_path):
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip file")
    with pytest.raises(ValueError, match="corrupt.npz.*not a valid .npz"):
        StrokeNpz(str(bad)).load()


def test_npz_without_splits_is_rejected(tmp_path):
    path = tmp_path / "nosplit.npz"
    np.savez(path, data=np.zeros(3))
    with pytest.raises(ValueError, match="no train, valid, test split"):
        StrokeNpz(str(path)).load()


def test_hash_split_is_deterministic():
    assert hash_split("abc") == hash_split("abc")
    buckets = [hash_split(str(i)) for i in range(2000)]
    assert 0.05 < buckets.count(2) / 2000 < 0.15 and 0.05 < buckets.count(1) / 2000 < 0.15


def test_datamodule_filters_normalises_and_resumes(shared_data):
    src = StrokeNpz(str(shared_data / "sketch-rnn-datasets/aaron_sheep.npz"))
    dm = SketchDataModule(src, batch_size=8, max_seq_len=100, limit=64, collate=_count_collate,
                          augment=SketchRNNAugment(), seed=3).setup()
    assert all(len(s) <= 100 for s in dm.sketches("train"))
    assert scale_factor(dm.sketches("train")) == pytest.approx(1.0, rel=1e-4)
    stream = dm.train_batches()
    for _ in range(5):
        next(stream)
    state = dm.state_dict()
    expected = [next(stream)["first"] for _ in range(3)]

    dm2 = SketchDataModule(src, batch_size=8, max_seq_len=100, limit=64, collate=_count_collate,
                           augment=SketchRNNAugment(), seed=99).setup()
    dm2.load_state_dict(state)
    stream2 = dm2.train_batches()
    for want in expected:
        torch.testing.assert_close(next(stream2)["first"], want)
    batches = list(dm.eval_batches("valid"))
    assert sum(len(b["n"]) for b in batches) == len(dm.sketches("valid"))


def test_datamodule_shards_do_not_overlap(shared_data):
    src = StrokeNpz(str(shared_data / "sketch-rnn-datasets/aaron_sheep.npz"))
    seen = []
    for rank in range(2):
        dm = SketchDataModule(src, batch_size=4, limit=40, collate=lambda items: {"ids": [id(s) for s in items]},
                              seed=0, rank=rank, world_size=2).setup()
        ids = next(dm.train_batches())["ids"]
        seen.append({next(i for i, s in enumerate(dm.sketches("train")) if id(s) == x) for x in ids})
    assert len(seen[0]) == len(seen[1]) == 4 and not seen[0] & seen[1]


def test_random_scale_bounds():
    rng = np.random.default_rng(0)
    s = np.ones((5, 3), dtype=np.float32)
    for _ in range(50):
        out = random_scale(s, rng, 0.15)
        assert np.all((out[:, :2] >= 0.85 - 1e-6) & (out[:, :2] <= 1.15 + 1e-6))
        np.testing.assert_array_equal(out[:, 2], s[:, 2])


def test_drop_points_keeps_strokes_and_total_offset():
    rng = np.random.default_rng(1)
    s = np.column_stack([np.ones(30), np.arange(30) % 3, np.zeros(30)]).astype(np.float32)
    s[9, 2] = s[29, 2] = 1
    out = drop_points(s, rng, prob=1.0)
    assert len(out) < len(s)
    assert out[:, 2].sum() == 2  # every stroke end survives
    np.testing.assert_allclose(out[:, :2].sum(0), s[:, :2].sum(0), rtol=1e-6)
    np.testing.assert_array_equal(drop_points(s, rng, prob=0.0), s)


def test_quickdraw_classes_load_from_cache_offline(tmp_path, monkeypatch):
    from sketchlab.data.sources import QuickDrawClasses

    rng = np.random.default_rng(0)
    folder = tmp_path / "quickdraw" / "sketchrnn"
    folder.mkdir(parents=True)
    for name, n in (("cat", 5), ("pig", 3)):
        arrays = {s: np.array([np.column_stack([rng.integers(-9, 9, (7, 2)), rng.integers(0, 2, 7)]).astype(np.int16)
                               for _ in range(n)] + [None], dtype=object)[:-1] for s in ("train", "valid", "test")}
        np.savez(folder / f"{name}.npz", **arrays)
    monkeypatch.setenv("SKETCHLAB_CACHE", str(tmp_path))
    monkeypatch.setenv("SKETCHLAB_OFFLINE", "1")
    splits = QuickDrawClasses(["cat", "pig"]).load()
    assert len(splits["train"]) == 8 and splits.class_names == ["cat", "pig"]
    assert list(splits.labels["valid"]) == [0] * 5 + [1] * 3
    with pytest.raises(Exception, match="dog"):  # not cached, and offline: the error names what is missing
        QuickDrawClasses(["dog"]).load()


def test_max_seq_len_auto_is_the_longest_sketch_and_reaches_collate_and_model(data_root, monkeypatch):
    from hydra import compose, initialize_config_dir

    from helpers import TINY_RNN
    from sketchlab.config import config_dir
    from sketchlab.factory import build_data
    from sketchlab.registry import build

    monkeypatch.setenv("SKETCHLAB_DATA", str(data_root))
    overrides = [o for o in TINY_RNN if not o.startswith(("data.max_seq_len", "data.limit"))]
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "data.max_seq_len=auto"])
    data = build_data(cfg)
    raw = data.source.load()
    longest = max(len(s) for split in ("train", "valid", "test") for s in raw.sketches[split])
    assert cfg.data.max_seq_len == data.max_seq_len == longest
    assert data.collate.max_seq_len == longest and build(cfg.model.net).max_seq_len == longest
    assert sum(len(data.sketches(s)) for s in ("train", "valid", "test")) == sum(
        len(raw.sketches[s]) for s in ("train", "valid", "test")) - sum(
        1 for s in ("train", "valid", "test") for x in raw.sketches[s] if len(x) < 2)


class _MemorySource:
    """Random-walk sketches held in memory: a data module without file reading."""

    def __init__(self, n: int = 40) -> None:
        rng = np.random.default_rng(0)
        self.sketches = [np.column_stack([rng.normal(size=(k, 2)), (np.arange(k) % 7 == 6)]).astype(np.float32)
                         for k in rng.integers(5, 30, size=n)]

    def load(self) -> SketchSplits:
        return SketchSplits({"train": self.sketches, "valid": self.sketches[:4], "test": self.sketches[:4]})


def _module(prefetch: int, **kwargs) -> SketchDataModule:
    return SketchDataModule(_MemorySource(), batch_size=6, max_seq_len=50, collate=_count_collate,
                            augment=SketchRNNAugment(), seed=5, prefetch=prefetch, **kwargs).setup()


def test_prefetched_stream_equals_the_synchronous_one_batch_and_state():
    sync, ahead = _module(0), _module(2)
    s_sync, s_ahead = sync.train_batches(), ahead.train_batches()
    assert isinstance(s_ahead, PrefetchStream)
    for _ in range(15):  # several epochs: the shuffle order is redrawn on the way
        a, b = next(s_sync), next(s_ahead)
        torch.testing.assert_close(a["first"], b["first"], rtol=0, atol=0)
        # the checkpointed state is that of the next batch the trainer gets, not of the thread's
        st_sync, st_ahead = sync.state_dict(), ahead.state_dict()
        assert st_sync["pos"] == st_ahead["pos"] and st_sync["rng"] == st_ahead["rng"]
        assert torch.equal(st_sync["order"], st_ahead["order"])
    state = ahead.state_dict()
    expected = [next(s_sync)["first"] for _ in range(4)]
    # a fresh module resumed from the state, prefetching, and the same module after close, synchronously
    resumed = _module(2)
    resumed.load_state_dict(state)
    got = resumed.train_batches()
    s_ahead.close()
    assert not s_ahead._thread.is_alive()
    rest = ahead.train_batches(prefetch=0)
    for want in expected:
        torch.testing.assert_close(next(got)["first"], want, rtol=0, atol=0)
        torch.testing.assert_close(next(rest)["first"], want, rtol=0, atol=0)
    got.close()


def test_prefetch_thread_errors_reach_the_trainer_and_reopening_closes_the_old_thread():
    def broken(items):
        raise RuntimeError("collate exploded")

    dm = SketchDataModule(_MemorySource(), batch_size=6, max_seq_len=50, collate=broken, prefetch=1).setup()
    stream = dm.train_batches()
    with pytest.raises(RuntimeError, match="collate exploded"):
        next(stream)
    assert not stream._thread.is_alive()
    good = _module(1)
    first = good.train_batches()
    next(first)
    second = good.train_batches()  # one producer at a time: the first thread is stopped
    assert not first._thread.is_alive() and second._thread.is_alive()
    second.close()
