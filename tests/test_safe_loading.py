"""No file the platform reads can run code: crafted datasets and checkpoints are refused, nothing runs."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import REPO, SHORT, TINY_RNN, train
from sketchlab.data.safe_npz import UnsafeFileError, load_npz
from sketchlab.data.sources import PointsNpz, StrokeNpz
from sketchlab.engine.checkpoint import load_checkpoint, save_checkpoint


class Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def evil_npz(path: Path, marker: Path, key: str = "train", **arrays: np.ndarray) -> Path:
    """An npz whose object array ``key`` is a pickle calling os.system, beside ordinary arrays."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": (1,)})
    pickle.dump(Payload(marker), buf, protocol=3)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{key}.npy", buf.getvalue())
        for name, arr in arrays.items():
            member = io.BytesIO()
            np.save(member, arr, allow_pickle=True)
            z.writestr(f"{name}.npy", member.getvalue())
    return path


def good_sketches(n: int = 4) -> np.ndarray:
    rng = np.random.default_rng(0)
    items = [np.column_stack([rng.normal(size=(6, 2)), np.r_[np.zeros(5), 1]]).astype(np.float32) for _ in range(n)]
    out = np.empty(n, dtype=object)
    out[:] = items
    return out


def test_a_pickled_payload_in_a_dataset_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "PWNED"
    path = evil_npz(tmp_path / "evil.npz", marker, valid=good_sketches(), test=good_sketches())
    with pytest.raises(UnsafeFileError, match=r"evil.npz \(array 'train'\).*posix.system|evil.npz.*os.system"):
        load_npz(path)
    with pytest.raises(UnsafeFileError):
        StrokeNpz(str(path)).load()
    points = evil_npz(tmp_path / "points.npz", marker, key="points", split=np.zeros(1, dtype=np.int64))
    with pytest.raises(UnsafeFileError):
        PointsNpz(str(points)).load()
    assert not marker.exists()


def test_the_benchmark_loader_is_safe_too(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import bench_sketch_ode
    finally:
        sys.path.pop(0)
    marker = tmp_path / "PWNED"
    path = evil_npz(tmp_path / "v.npz", marker, key="points", split=np.zeros(1, dtype=np.int64))
    with pytest.raises(UnsafeFileError):
        bench_sketch_ode.load_sketches(str(path), 2, np.random.default_rng(0))
    assert not marker.exists()


def test_real_datasets_read_the_same_as_numpy(shared_data):
    for path in sorted(shared_data.glob("*/*.npz")):
        ours = load_npz(path)
        ref = np.load(path, allow_pickle=True, encoding="latin1")  # trusted files, for comparison only
        assert sorted(ours) == sorted(ref.files)
        for key in ref.files:
            a, b = ours[key], ref[key]
            assert a.dtype == b.dtype and a.shape == b.shape, (path, key)
            if a.dtype == object:
                assert all(np.array_equal(x, y) for x, y in zip(a, b)), (path, key)
            else:
                assert np.array_equal(a, b), (path, key)


def crafted_checkpoint(path: Path, marker: Path, hidden: bool) -> Path:
    """A torch.save file with a payload: alone (foreign file) or hidden in a valid-looking checkpoint."""
    state = {"model": {"w": torch.ones(2)}, "step": 3, "extra": Payload(marker)} if hidden else Payload(marker)
    torch.save(state, path)
    return path


@pytest.mark.parametrize("hidden", [False, True])
def test_a_crafted_checkpoint_is_refused_and_never_runs(tmp_path, hidden):
    marker = tmp_path / "PWNED"
    path = crafted_checkpoint(tmp_path / "last.pt", marker, hidden)
    with pytest.raises(ValueError, match="refusing to load checkpoint .*last.pt.*could run code"):
        load_checkpoint(path)
    with pytest.raises(ValueError, match="refusing"):
        load_checkpoint(tmp_path)  # the run-directory form
    assert not marker.exists()


def test_a_real_checkpoint_round_trips_with_rng_and_data_state(tmp_path):
    from sketchlab.engine.checkpoint import rng_state, set_rng_state

    np.random.seed(3)
    state = {"model": {"w": torch.ones(2)}, "step": 1, "rng": rng_state(), "best_val": float("inf"),
             "config": {"a": {"b": [1, 2]}, "c": None}, "data": {"order": torch.arange(5), "pos": 2,
                                                              "rng": np.random.default_rng(1).bit_generator.state}}
    expected = np.random.random(3)
    loaded = load_checkpoint(save_checkpoint(tmp_path / "last.pt", state))
    set_rng_state(loaded["rng"])
    np.testing.assert_array_equal(np.random.random(3), expected)
    assert loaded["config"] == state["config"] and loaded["data"]["rng"] == state["data"]["rng"]


def test_stale_temporary_files_of_a_killed_write_are_removed(tmp_path):
    (tmp_path / ".last.pt.abc123").write_bytes(b"half a checkpoint")
    save_checkpoint(tmp_path / "last.pt", {"model": {}, "step": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def run_sample(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SKETCHLAB_OUTPUTS": str(tmp_path / "outputs")}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, str(REPO / "scripts" / "sample.py"), *overrides], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_command_line_tools_refuse_crafted_files(tmp_path, shared_data):
    marker = tmp_path / "PWNED"
    ckpt = crafted_checkpoint(tmp_path / "last.pt", marker, hidden=True)
    proc = run_sample(tmp_path, f"checkpoint={ckpt}")
    assert proc.returncode != 0 and "refusing to load checkpoint" in proc.stderr
    proc = train(tmp_path, *TINY_RNN, *SHORT, f"resume={ckpt}", check=False)
    assert proc.returncode != 0 and "refusing to load checkpoint" in proc.stderr
    data = evil_npz(tmp_path / "evil.npz", marker, valid=good_sketches(), test=good_sketches())
    proc = train(tmp_path, *TINY_RNN, *SHORT, f"data.source.path={data}", check=False)
    assert proc.returncode != 0 and "refusing to load" in proc.stderr
    assert not marker.exists()


@pytest.mark.parametrize("bad, message", [
    (lambda s: s.T.copy(), "looks transposed"),
    (lambda s: np.where(np.arange(len(s))[:, None] == 2, np.nan, s), "NaN or infinite"),
    (lambda s: np.column_stack([s[:, :2], np.full(len(s), 2.0)]), r"pen values \[2.0\]"),
])
def test_bad_sketches_are_named(tmp_path, bad, message):
    sketches = good_sketches()
    broken = sketches.copy()
    broken[1] = bad(sketches[1])
    np.savez(tmp_path / "d.npz", train=broken, valid=sketches, test=sketches)
    with pytest.raises(ValueError, match=rf"d.npz: train\[1\].*{message}"):
        StrokeNpz(str(tmp_path / "d.npz")).load()


def test_an_empty_split_after_filtering_is_an_error(tmp_path):
    from sketchlab.data.datamodule import SketchDataModule

    sketches = good_sketches()
    np.savez(tmp_path / "d.npz", train=sketches, valid=sketches[:0], test=sketches)
    with pytest.raises(ValueError, match="the valid split .* is empty after filtering.*data.max_seq_len"):
        SketchDataModule(StrokeNpz(str(tmp_path / "d.npz")), batch_size=2).setup()


def test_a_path_override_never_downloads_the_configs_dataset(tmp_path):
    source = StrokeNpz(str(tmp_path / "mine.npz"), url="https://example.invalid/aaron_sheep.npz")
    with pytest.raises(FileNotFoundError, match="mine.npz.*data.source.path.*paths.data_dir"):
        source.load()
