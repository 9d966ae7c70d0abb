"""Shared test helpers: random stroke-3 sketches, and running the command-line tools as a user does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


def train(tmp_path: Path, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "SKETCHLAB_OUTPUTS": str(tmp_path / "outputs"), "HYDRA_FULL_ERROR": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
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
