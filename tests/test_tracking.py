"""The MLflow logger on its own: a run with params, per-step metrics, artifacts and images."""

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from sketchlab.cli.runs import comparison_rows, main as runs_main
from sketchlab.tracking.loggers import MLflowLogger, flatten, sweep_parent_id, write_sweep_parent


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": "x"}) == {"a.b": 1, "a.c.d": [1, 2], "e": "x"}


def test_mlflow_logger_writes_a_complete_run(tmp_path):
    logger = MLflowLogger("unit", outputs_dir=tmp_path, run_name="r1", tags={"k": "v"})
    assert logger.tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    logger.log_params({"model.z": 128, "optim.lr": 0.001})
    logger.log_metrics({"train/loss": 1.5, "bad": float("nan")}, step=1)
    logger.log_metrics({"train/loss": 1.0}, step=2)
    (tmp_path / "note.txt").write_text("hello")
    logger.log_artifact(tmp_path / "note.txt")
    logger.log_image(Image.fromarray(np.full((8, 8, 3), 255, np.uint8)), "samples", step=2)
    logger.finish()

    client = MlflowClient(logger.tracking_uri)
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "r1" and run.data.tags["k"] == "v"
    assert run.data.params == {"model.z": "128", "optim.lr": "0.001"}
    assert [m.value for m in client.get_metric_history(logger.run_id, "train/loss")] == [1.5, 1.0]
    assert "bad" not in run.data.metrics  # non-finite values are not sent
    artifacts = {a.path for a in client.list_artifacts(logger.run_id)}
    assert "note.txt" in artifacts and "images" in artifacts
    # artifacts live under the outputs folder, not the working directory
    assert str(tmp_path.resolve()) in run.info.artifact_uri


def test_runs_cli_lists_and_compares(tmp_path, capsys):
    for lr in (0.1, 0.01):
        logger = MLflowLogger("cmp", outputs_dir=tmp_path, run_name=f"lr={lr}")
        logger.log_params({"optim.lr": lr, "seed": 0})
        logger.log_metrics({"val/best_loss": lr * 10}, step=1)
        logger.finish()
    assert runs_main(["--outputs", str(tmp_path)]) == 0
    assert "cmp" in capsys.readouterr().out
    assert runs_main(["--outputs", str(tmp_path), "-e", "cmp", "--csv", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert out.index("lr=0.01") < out.index("lr=0.1")  # sorted by the metric, best first
    assert "optim.lr" in out and "seed" not in out  # only params that differ are shown
    assert (tmp_path / "t.csv").read_text().count("\n") == 3
    with pytest.raises(SystemExit, match="no MLflow experiment named 'nope'"):
        runs_main(["--outputs", str(tmp_path), "-e", "nope"])


def test_sweep_marker_round_trip(tmp_path):
    assert sweep_parent_id(tmp_path) is None
    write_sweep_parent(tmp_path / "sweep", "abc123")
    assert sweep_parent_id(tmp_path / "sweep") == "abc123"


def test_comparison_rows_handles_missing_metrics():
    class R:  # the shape of an mlflow Run, enough for the table
        def __init__(self, rid, metrics):
            self.info = type("I", (), {"run_id": rid, "run_name": rid, "status": "FINISHED"})()
            self.data = type("D", (), {"params": {"p": rid}, "metrics": metrics})()

    header, rows = comparison_rows([R("a", {}), R("b", {"val/best_loss": 1.0})], "val/best_loss")
    assert [r[1] for r in rows] == ["b", "a"] and header[:3] == ["run_id", "name", "status"]
    assert "trained" not in header  # no run logged its training time
    header, rows = comparison_rows([R("a", {"train/time_s": 90.0}), R("b", {"val/best_loss": 1.0})], "val/best_loss")
    assert header[3] == "trained" and [r[3] for r in rows] == ["", "1.5 min"]


def test_every_tool_resolves_the_store_the_same_way(tmp_path, monkeypatch):
    import subprocess
    import sys

    from helpers import REPO
    from sketchlab.tracking.loggers import MLflowLogger, resolve_tracking_uri

    env_store = f"sqlite:///{tmp_path / 'env' / 'mlflow.db'}"
    (tmp_path / "env").mkdir()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, tmp_path / "out") == f"sqlite:///{(tmp_path / 'out' / 'mlflow.db').resolve()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env_store)
    assert resolve_tracking_uri(None, tmp_path / "out") == env_store
    assert resolve_tracking_uri("sqlite:///flag.db", tmp_path / "out") == "sqlite:///flag.db"
    logger = MLflowLogger(experiment_name="env-store", outputs_dir=tmp_path / "out", run_name="r")
    logger.finish()
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "runs.py"), "-e", "env-store",
                           "--outputs", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "r" in proc.stdout, proc.stderr


def test_run_names_say_what_differs():
    from pathlib import Path

    from sketchlab.tracking.naming import child_run_name, short_names, single_run_name, swept_keys

    swept = swept_keys(["model.net.dec_model=lstm,hyper", "optim.lr=1e-3,3e-4", "data.batch_size=8", "seed=0"])
    assert swept == ["model.net.dec_model", "optim.lr"]
    assert child_run_name(["model.net.dec_model=hyper", "optim.lr=3e-4", "data.batch_size=8", "seed=0"],
                          swept) == "dec_model=hyper,lr=3e-4"
    assert short_names(["model.net.dropout", "data.dropout", "seed"]) == {
        "model.net.dropout": "net.dropout", "data.dropout": "data.dropout", "seed": "seed"}
    assert single_run_name("sketch_rnn", "sheep", Path("outputs/runs/2026-11-24/20-05-02-740575")) == \
        "sketch_rnn-sheep-200502"


def test_experiments_are_marked_as_model_training(tmp_path):
    from sketchlab.tracking.loggers import MLflowLogger

    logger = MLflowLogger(experiment_name="kind", outputs_dir=tmp_path, run_name="r")
    logger.finish()
    exp = logger.client.get_experiment(logger.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
