"""sketchlab-evaluate: a trained model scored on a split, the JSON written and the test/* metrics in its run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, SHORT, TINY_ODE, TINY_RNN, run_dirs, runs_of, train


def evaluate(home: Path, data: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SKETCHLAB_OUTPUTS": str(home / "outputs"), "SKETCHLAB_DATA": str(data)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, str(REPO / "scripts" / "evaluate.py"), *overrides], cwd=home, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("model", ["sketch_rnn", "sketch_ode"])
def test_evaluate_a_run_dir_writes_json_and_logs_into_the_run(tmp_path, data_root, model):
    train(tmp_path, *(TINY_RNN if model == "sketch_rnn" else TINY_ODE), *SHORT, "logger.experiment_name=ev",
          data=data_root)
    (run_dir,) = run_dirs(tmp_path)
    out = tmp_path / "eval"
    proc = evaluate(tmp_path, data_root, f"checkpoint={run_dir}", "which=last", "max_sketches=6", f"out_dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["split"] == "test" and summary["n_sketches"] == 6 and summary["step"] == 2
    assert summary["decoding"]["mode"] == ("greedy" if model == "sketch_rnn" else "deterministic")
    metrics = summary["metrics"]
    assert {"test/loss", "test/chamfer_mean", "test/chamfer_median"} <= set(metrics)
    assert 0 < metrics["test/chamfer_median"] < 10
    c, (run,) = runs_of(tmp_path, "ev")
    assert run.data.metrics["test/chamfer_mean"] == pytest.approx(metrics["test/chamfer_mean"])
    assert summary["mlflow_run"] == run.info.run_id


def test_evaluate_by_mlflow_run_and_best_is_required(tmp_path, data_root):
    train(tmp_path, *TINY_RNN, *SHORT, "trainer.val_every=0", "logger.experiment_name=ev2", data=data_root)
    c, (run,) = runs_of(tmp_path, "ev2")
    proc = evaluate(tmp_path, data_root, f"mlflow_run={run.info.run_id}", "max_sketches=4")
    assert proc.returncode == 2 and "no artifact checkpoints/best.pt" in proc.stderr  # which=best by default
    out = tmp_path / "e"
    proc = evaluate(tmp_path, data_root, f"mlflow_run={run.info.run_id}", "which=last", "max_sketches=4",
                    "temperature=0.5", f"out_dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["checkpoint"] == f"mlflow:{run.info.run_id}/checkpoints/last.pt"
    assert summary["decoding"] == {"mode": "temperature", "temperature": 0.5}
