"""Every tool finds the same MLflow store: a flag, else $MLFLOW_TRACKING_URI, else <outputs>/mlflow.db.

One tiny training goes to a store named only by the environment variable; sample, evaluate, runs and
`make ui` must then find it (and its run) through the same variable, with nothing in outputs/.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from helpers import REPO, SHORT, TINY_RNN, run_dirs


def _env(home: Path, data: Path, store: str | None) -> dict[str, str]:
    env = {**os.environ, "SKETCHLAB_OUTPUTS": str(home / "outputs"), "SKETCHLAB_DATA": str(data),
           "HYDRA_FULL_ERROR": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    if store is not None:
        env["MLFLOW_TRACKING_URI"] = store
    return env


def _run(home: Path, env: dict[str, str], script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / script), *args], cwd=home, env=env,
                          capture_output=True, text=True, timeout=600)


def test_train_sample_evaluate_and_runs_use_the_environment_store(tmp_path, data_root):
    store = f"sqlite:///{tmp_path / 'shared-store' / 'mlflow.db'}"
    (tmp_path / "shared-store").mkdir()
    env = _env(tmp_path, data_root, store)

    proc = _run(tmp_path, env, "train.py", *TINY_RNN, *SHORT, "logger.experiment_name=envstore",
                "logger.connect_timeout=120")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "outputs" / "mlflow.db").exists()  # nothing went to the default store
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("envstore").experiment_id])
    run_id = run.info.run_id
    # the run folder is gone: sample and evaluate must fetch the checkpoint from the store
    (run_dir,) = run_dirs(tmp_path)
    shutil.rmtree(run_dir)

    proc = _run(tmp_path, env, "sample.py", f"mlflow_run={run_id}", "n=2", "interpolations=0", "metrics=false",
                "formats=[png]", f"out_dir={tmp_path / 'samples'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    artifacts = [a.path for a in client.list_artifacts(run_id, "samples")]
    assert artifacts, "sample did not log into the run it found through MLFLOW_TRACKING_URI"

    proc = _run(tmp_path, env, "evaluate.py", f"mlflow_run={run_id}", "which=last", "max_sketches=3",
                f"out_dir={tmp_path / 'eval'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["mlflow_run"] == run_id
    assert "test/chamfer_mean" in client.get_run(run_id).data.metrics

    proc = _run(tmp_path, env, "runs.py", "-e", "envstore")
    assert proc.returncode == 0 and run_id[:8] in proc.stdout, proc.stdout + proc.stderr

    # a flag beats the variable: the same run is not in another store
    other = f"sqlite:///{tmp_path / 'other.db'}"
    proc = _run(tmp_path, env, "evaluate.py", f"mlflow_run={run_id}", f"tracking_uri={other}", "which=last")
    assert proc.returncode == 2 and run_id in proc.stderr, proc.stderr[-2000:]


def _fake_venv(tmp_path: Path) -> Path:
    """A venv whose `mlflow` prints its arguments, so `make ui` shows the store it would open."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    mlflow = venv / "bin" / "mlflow"
    mlflow.write_text('#!/bin/sh\necho "$@"\n')
    mlflow.chmod(mlflow.stat().st_mode | stat.S_IEXEC)
    (venv / ".installed").touch()  # newer than setup.cfg: make installs nothing
    return venv


def test_make_ui_opens_the_same_store(tmp_path):
    if shutil.which("make") is None:
        import pytest
        pytest.skip("make is not installed")
    venv = _fake_venv(tmp_path)
    env = {**os.environ, "SKETCHLAB_OUTPUTS": str(tmp_path / "outs")}
    env.pop("MLFLOW_TRACKING_URI", None)
    args = ["make", "-s", "-C", str(REPO), "ui", f"VENV={venv}", "PORT=5123"]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"--backend-store-uri sqlite:///{tmp_path / 'outs' / 'mlflow.db'}" in proc.stdout
    assert "--port 5123" in proc.stdout
    env["MLFLOW_TRACKING_URI"] = "sqlite:////somewhere/else.db"
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert "--backend-store-uri sqlite:////somewhere/else.db" in proc.stdout, proc.stdout + proc.stderr
