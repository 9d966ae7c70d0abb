"""Shared test helpers: random stroke-3 sketches, and running the command-line tools as a user does."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
from mlflow.tracking import MlflowClient


def random_sketches(lengths=(5, 9, 3, 7), seed: int = 0, pen_prob: float = 0.25) -> list[np.ndarray]:
    """Random stroke-3 sketches of the given lengths (normal offsets, random pen lifts, last row lifts)."""
    rng = np.random.default_rng(seed)
    out = []
    for n in lengths:
        s = np.column_stack([rng.normal(size=(n, 2)), rng.random(n) < pen_prob]).astype(np.float32)
        s[-1, 2] = 1
        out.append(s)
    return out


REPO = Path(__file__).resolve().parents[1]

TINY_RNN = ["model=sketch_rnn", "model.net.enc_rnn_size=16", "model.net.dec_rnn_size=24", "model.net.z_size=8",
            "model.net.num_mixture=3", "model.collate.pad_to=batch", "data=sheep", "data.batch_size=8",
            "data.limit=48", "data.max_seq_len=120"]
TINY_ODE = ["model=sketch_ode", "data=vmnist", "data.batch_size=4", "data.limit=16", "augment=none"]
SHORT = ["trainer.max_steps=2", "trainer.val_every=2", "trainer.val_batches=1", "trainer.log_every=1",
         "trainer.ckpt_every=2", "trainer.progress=false", "visualize.n=2"]


_TEMPLATE_STORE: Path | None = None


def _template_store() -> Path:
    """An empty MLflow sqlite store, made once per test session (its schema migrations take seconds)."""
    global _TEMPLATE_STORE
    if _TEMPLATE_STORE is None:
        folder = tempfile.mkdtemp(prefix="sketchlab-store-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        db = Path(folder) / "mlflow.db"
        MlflowClient(f"sqlite:///{db}").search_experiments()
        _TEMPLATE_STORE = db
    return _TEMPLATE_STORE


def train_env(tmp_path: Path, data: Path | None = None, fresh_store: bool = False) -> dict[str, str]:
    """The environment of a training subprocess: outputs under ``tmp_path``, data from ``data`` when given.

    Its default store ``outputs/mlflow.db`` starts as a copy of an empty store, unless ``fresh_store``:
    creating each one anew cost every training several seconds (alembic's migrations). The tests of
    creating a store (races, timing) ask for a fresh one.
    """
    env = {**os.environ, "SKETCHLAB_OUTPUTS": str(tmp_path / "outputs"), "HYDRA_FULL_ERROR": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    if data is not None:
        env["SKETCHLAB_DATA"] = str(data)
    store = tmp_path / "outputs" / "mlflow.db"
    if not fresh_store and not store.exists():
        store.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_template_store(), store)
    return env


def train(tmp_path: Path, *overrides: str, check: bool = True, data: Path | None = None,
          fresh_store: bool = False) -> subprocess.CompletedProcess:
    """Run ``scripts/train.py`` in ``tmp_path`` (made if missing; data root ``data``: the ``data_root`` fixture)."""
    env = train_env(tmp_path, data, fresh_store)
    tmp_path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), *overrides], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"training failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def client(tmp_path: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")


def runs_of(tmp_path: Path, experiment: str):
    c = client(tmp_path)
    exp = c.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment}"
    return c, c.search_runs([exp.experiment_id])


def run_dirs(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "outputs" / "runs").glob("*/*"))


# -- self-made data, for machines without ../shared/data -------------------------------------------

def _object_array(items: list[np.ndarray]) -> np.ndarray:
    """A 1-d object array of ragged arrays, as the real npz files hold (np.array would try to stack them)."""
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


def _offsets(strokes: list[np.ndarray]) -> np.ndarray:
    """Absolute polylines to int16 stroke-3 (the first row an offset from the origin, pen lift on stroke ends)."""
    xy = np.concatenate(strokes)
    lift = np.concatenate([np.arange(len(s)) == len(s) - 1 for s in strokes])
    out = np.column_stack([np.diff(np.round(xy), axis=0, prepend=0.0), lift])
    return out.astype(np.int16)


def sheep_like(rng: np.random.Generator) -> np.ndarray:
    """A sheep-ish stroke-3 sketch in pixel units: a woolly body loop, a head loop and four legs (30-60 rows)."""
    t = np.linspace(0, 2 * np.pi, int(rng.integers(16, 34)))
    wool = 1 + 0.12 * rng.standard_normal(len(t))
    body = np.column_stack([110 * wool * np.cos(t), 70 * wool * np.sin(t)]) + rng.normal(0, 10, 2)
    th = np.linspace(0, 2 * np.pi, int(rng.integers(6, 12)))
    head = np.column_stack([-140 + 30 * np.cos(th), -50 + 25 * np.sin(th)])
    legs = [np.array([[x, 60.0], [x + rng.normal(0, 5), 110 + rng.normal(0, 8)]]) for x in (-60, -25, 30, 65)]
    return _offsets([body, head, *legs])


def digit_like(rng: np.random.Generator) -> np.ndarray:
    """A VectorMNIST-style drawing: float32 (N, 4) rows x, y (up), t, pen_lift, one or two strokes within +-10."""
    n = int(rng.integers(10, 30))
    t = np.linspace(0, 1, n)
    x = 6 * np.sin(2 * np.pi * t * rng.uniform(0.5, 1.0)) + rng.normal(0, 0.3, n)
    y = 8 - 16 * t + rng.normal(0, 0.3, n)
    lift = np.zeros(n)
    lift[-1] = 1
    if rng.random() < 0.3:  # a second, short stroke
        lift[n // 2] = 1
    return np.column_stack([x, y, t, lift]).astype(np.float32)


def make_data_root(root: Path, seed: int = 0) -> Path:
    """A small stand-in for ../shared/data with the same layout and formats, for the files the tests train on.

    ``sketch-rnn-datasets/aaron_sheep.npz``: int16 stroke-3 object arrays train/valid/test (64/16/16), as
    David Ha's file; ``vectormnist/vmnist.npz``: ``points`` (float32 x, y, t, pen_lift), ``labels`` and a
    ``split`` column (32/8/8), as the VectorMNIST npz read by ``data=vmnist``.
    """
    rng = np.random.default_rng(seed)
    (root / "sketch-rnn-datasets").mkdir(parents=True, exist_ok=True)
    np.savez_compressed(root / "sketch-rnn-datasets" / "aaron_sheep.npz",
                        **{split: _object_array([sheep_like(rng) for _ in range(n)])
                           for split, n in (("train", 64), ("valid", 16), ("test", 16))})
    (root / "vectormnist").mkdir(parents=True, exist_ok=True)
    split = np.repeat(np.array([0, 1, 2], dtype=np.int8), [32, 8, 8])
    np.savez_compressed(root / "vectormnist" / "vmnist.npz",
                        points=_object_array([digit_like(rng) for _ in split]),
                        labels=(np.arange(len(split)) % 10).astype(np.int8), split=split)
    return root


def train_steps(model: Any, batch: dict, steps: int, lr: float = 3e-3,
                record: Callable[[dict], Any] = lambda out: out["loss"]) -> list[float]:
    """``steps`` Adam steps of ``model.loss(batch, step)`` on one batch; ``record(out)`` of each step, as floats."""
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        out = model.loss(batch, step)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(float(record(out).detach()))
    return losses
