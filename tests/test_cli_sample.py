"""``sketchlab-sample`` on 2-step checkpoints of both models: files, image sizes, metrics and MLflow."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from helpers import REPO, SHORT, TINY_ODE, TINY_RNN, run_dirs, runs_of, train
from sketchlab.cli.sample import run_sampling
from sketchlab.config import config_dir


@pytest.fixture(scope="module", params=["sketch_rnn", "sketch_ode"])
def trained(request, tmp_path_factory, data_root):
    """A 2-step training run of each model (its folder, MLflow run id and model name)."""
    tmp = tmp_path_factory.mktemp(request.param)
    train(tmp, *(TINY_RNN if request.param == "sketch_rnn" else TINY_ODE), *SHORT, "logger.experiment_name=s",
          data=data_root)
    _, runs = runs_of(tmp, "s")
    (run_dir,) = run_dirs(tmp)
    return tmp, run_dir, runs[0].info.run_id, request.param


def sample_cfg(overrides):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("sample", overrides=overrides)


def test_sample_from_checkpoint_writes_grids_and_metrics(trained, tmp_path):
    _, run_dir, _, model = trained
    out = tmp_path / "samples"
    cfg = sample_cfg([f"checkpoint={run_dir}", f"out_dir={out}", "n=4", "interpolations=2", "interp_steps=3",
                      "metric_batches=1", "distance_sketches=4", "cell_size=64", "log_to_mlflow=false"])
    summary = run_sampling(cfg)
    expected = {"samples", "reconstructions", "interpolations"} | ({"dense_reconstructions"} if model == "sketch_ode"
                                                                  else set())
    for name in expected:
        for fmt in ("png", "svg"):
            path = out / f"{name}.{fmt}"
            assert path.is_file() and path.stat().st_size > 0, path
    assert Image.open(out / "samples.png").size == (2 * 64, 2 * 64)           # 4 samples, 2 columns
    assert Image.open(out / "reconstructions.png").size == (4 * 64, 2 * 64)   # 2 pairs a row
    assert Image.open(out / "interpolations.png").size == (5 * 64, 2 * 64)    # a, 3 steps, b
    assert (out / "samples.svg").read_text().startswith("<?xml") or "<svg" in (out / "samples.svg").read_text()
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert summary["step"] == 2 and {"loss", "point_distance"} <= set(metrics)
    if model == "sketch_ode":
        assert "recon_xy" in metrics


def test_sample_from_mlflow_run_logs_into_it(trained, tmp_path):
    home, _, run_id, _ = trained
    out = tmp_path / "from_mlflow"
    cfg = sample_cfg([f"mlflow_run={run_id}", f"paths.output_dir={home / 'outputs'}", f"out_dir={out}", "n=2",
                      "interpolations=1", "interp_steps=2", "metrics=false", "formats=[png]"])
    summary = run_sampling(cfg)
    assert summary["checkpoint"] == f"mlflow:{run_id}/checkpoints/last.pt"  # not the deleted temporary copy
    c, runs = runs_of(home, "s")
    logged = {a.path for a in c.list_artifacts(run_id, f"samples/{out.name}")}
    assert f"samples/{out.name}/samples.png" in logged
    # the training run already held its per-validation image grids
    assert any(a.path.startswith("images/") and a.path.endswith(".png") for a in c.list_artifacts(run_id, "images"))


def test_sample_cli_errors_are_clear(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "sample.py"), f"out_dir={tmp_path}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "checkpoint=<file or run dir> or mlflow_run=<run id>" in proc.stderr
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "sample.py"), f"checkpoint={tmp_path / 'none'}",
                           f"out_dir={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "no checkpoint at" in proc.stderr


def test_spread_picks_evenly_through_the_split():
    from sketchlab.sampling import spread

    items = [f"s{i}" for i in range(10)]
    assert spread(items, 3) == ["s0", "s4", "s9"]  # numpy rounds 4.5 to even
    assert spread(items, 20) == items and spread(items, 0) == [] and spread([], 3) == []
