"""The training entry point end to end, as a user runs it: data on disk, real models, MLflow store on disk."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from helpers import REPO, SHORT, TINY_ODE, TINY_RNN, run_dirs, runs_of, train, train_env


@pytest.mark.parametrize("model", ["sketch_rnn", "sketch_ode"])
def test_two_step_training_writes_mlflow_run(tmp_path, data_root, model):
    train(tmp_path, *(TINY_RNN if model == "sketch_rnn" else TINY_ODE), *SHORT, "logger.experiment_name=t",
          data=data_root)
    c, runs = runs_of(tmp_path, "t")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["model.name"] == model and "optim.lr" in run.data.params
    assert [m.step for m in c.get_metric_history(run.info.run_id, "train/loss")] == [1, 2]
    assert "val/loss" in run.data.metrics
    artifacts = {a.path for a in c.list_artifacts(run.info.run_id)}
    assert {"hydra", "checkpoints", "config_resolved.yaml", "images"} <= artifacts
    assert {a.path for a in c.list_artifacts(run.info.run_id, "checkpoints")} >= {"checkpoints/last.pt"}
    (run_dir,) = run_dirs(tmp_path)
    assert (run_dir / "checkpoints" / "last.pt").is_file() and (run_dir / ".hydra" / "config.yaml").is_file()


def test_resume_continues_the_same_run_from_saved_step(tmp_path, data_root):
    train(tmp_path, *TINY_RNN, *SHORT, "logger.experiment_name=r", data=data_root)
    (first,) = run_dirs(tmp_path)
    train(tmp_path, "trainer.max_steps=4", f"resume={first}", data=data_root)
    state = torch.load(first / "checkpoints" / "last.pt", weights_only=False)
    assert state["step"] == 4  # the run's own folder goes on
    c, (run,) = runs_of(tmp_path, "r")
    assert [m.step for m in c.get_metric_history(run.info.run_id, "train/loss")] == [1, 2, 3, 4]
    assert run.info.status == "FINISHED" and "sketchlab.resumed_at.2" in run.data.tags
    # the run's command is still the one that started it (what reference tables print)
    assert "logger.experiment_name=r" in run.data.tags["sketchlab.overrides"]
    assert run.data.tags["sketchlab.resumed_with.2"] == f"trainer.max_steps=4 resume={first}"
    # the training time goes on from the checkpoint's; the reference table reads it, not the run's span, which
    # holds the gap between the two processes (here their start-up; between sessions, a night)
    times = c.get_metric_history(run.info.run_id, "train/time_s")
    assert [m.step for m in times] == [1, 2, 3, 4] and all(a.value < b.value for a, b in zip(times, times[1:]))
    sys.path.insert(0, str(REPO / "scripts"))
    from reference_results import training_minutes

    assert training_minutes(run) == times[-1].value / 60
    assert times[-1].value < (run.info.end_time - run.info.start_time) / 1000


def test_sweep_makes_parent_with_children(tmp_path, data_root):
    train(tmp_path, "-m", *TINY_RNN, *SHORT, "logger.experiment_name=s", "optim.lr=0.001,0.0005", data=data_root)
    c, runs = runs_of(tmp_path, "s")
    parents = [r for r in runs if r.data.tags.get("sketchlab.role") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == 2 and len(runs) == 3
    assert sorted(r.data.params["optim.lr"] for r in children) == ["0.0005", "0.001"]
    assert sorted(r.info.run_name for r in children) == ["lr=0.0005", "lr=0.001"]
    assert parents[0].info.run_name.startswith("sweep s ") and parents[0].data.params["swept_keys"] == "optim.lr"
    assert "val/best_loss" in parents[0].data.metrics
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "runs.py"), "--sweep", "latest", "--outputs",
                           str(tmp_path / "outputs"), "--plot", str(tmp_path / "curves.png")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "lr=0.001" in proc.stdout and (tmp_path / "curves.png").stat().st_size > 5000
    assert all(r.info.status == "FINISHED" for r in children)


@pytest.mark.slow
def test_parallel_sweep_with_joblib_on_fresh_store(tmp_path, data_root):
    train(tmp_path, "-m", "launcher=joblib", "hydra.launcher.n_jobs=2", *TINY_RNN, *SHORT,
          "logger.experiment_name=j", "seed=1,2", data=data_root, fresh_store=True)
    _, runs = runs_of(tmp_path, "j")
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)


def test_bad_override_gives_clear_error(tmp_path):
    proc = train(tmp_path, "trainer.max_stepz=3", check=False)
    assert proc.returncode != 0 and "max_stepz" in proc.stderr
    proc = train(tmp_path, "model=sketch_rnnn", check=False)
    assert proc.returncode != 0 and "sketch_rnn" in proc.stderr and "Available options" in proc.stderr


def test_missing_dataset_gives_clear_error(tmp_path):
    proc = train(tmp_path, *TINY_RNN, *SHORT, "data.source.path=/nonexistent/sheep.npz", "data.source.url=null",
                 check=False)
    assert proc.returncode != 0 and "dataset file not found: /nonexistent/sheep.npz" in proc.stderr


def test_corrupt_dataset_gives_clear_error(tmp_path):
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(b"garbage" * 100)
    proc = train(tmp_path, *TINY_RNN, *SHORT, f"data.source.path={bad}", check=False)
    assert proc.returncode != 0 and "not a valid .npz" in proc.stderr


@pytest.mark.slow
def test_torchrun_two_processes_log_once(tmp_path, data_root):
    env = train_env(tmp_path, data_root)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           str(REPO / "scripts" / "train.py"), *TINY_RNN, *SHORT, "logger.experiment_name=ddp"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    _, runs = runs_of(tmp_path, "ddp")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # rank 1 logs nothing
    assert len(run_dirs(tmp_path)) == 1  # and keeps no run folder of its own


def test_test_split_is_scored_with_the_best_weights_at_the_end(tmp_path, data_root):
    train(tmp_path, *TINY_RNN, *SHORT, "test_at_end=true", "logger.experiment_name=te", data=data_root)
    c, (run,) = runs_of(tmp_path, "te")
    assert {"test/loss", "test/recon", "test/kl"} <= set(run.data.metrics)
    assert run.data.tags["sketchlab.test_weights"] == "best.pt"
