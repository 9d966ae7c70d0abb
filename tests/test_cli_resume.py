"""One training is one MLflow run: same seed, same run; stop signals, kills and resume= lose nothing."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import REPO, SHORT, TINY_RNN, run_dirs, runs_of, train, train_env

LOG_EVERY_STEP = ["trainer.log_every=1", "trainer.val_every=0", "trainer.progress=false", "visualize.enabled=false",
                  "trainer.threads=1"]


def losses(tmp_path: Path, experiment: str) -> dict[str, list[tuple[int, float]]]:
    c, runs = runs_of(tmp_path, experiment)
    return {r.info.run_id: [(m.step, m.value) for m in sorted(c.get_metric_history(r.info.run_id, "train/loss"),
                                                              key=lambda m: (m.step, m.timestamp))] for r in runs}


def test_same_seed_gives_identical_losses_in_two_processes(tmp_path, data_root):
    args = [*TINY_RNN, *LOG_EVERY_STEP, "trainer.max_steps=5", "logger.experiment_name=seed"]
    train(tmp_path / "a", *args, data=data_root)
    train(tmp_path / "b", *args, data=data_root)
    train(tmp_path / "c", *args, "seed=1", data=data_root)
    (a,), (b,), (c,) = (list(losses(tmp_path / d, "seed").values()) for d in "abc")
    assert [s for s, _ in a] == [1, 2, 3, 4, 5]
    assert a == b  # exact float equality, process after process
    assert a != c


def test_provenance_is_recorded(tmp_path, data_root):
    train(tmp_path, *TINY_RNN, *SHORT, "logger.experiment_name=prov", data=data_root)
    _, (run,) = runs_of(tmp_path, "prov")
    tags = run.data.tags
    assert len(tags["mlflow.source.git.commit"]) == 40 and tags["sketchlab.git.dirty"] in ("true", "false")
    for pkg in ("torch", "numpy", "hydra-core", "mlflow", "torchdiffeq", "torchcde", "sketchlab"):
        assert tags[f"sketchlab.version.{pkg}"] not in ("", "missing")
    assert tags["sketchlab.device"] == "cpu" and tags["sketchlab.cpu"]
    # what the fused recurrences' steps ran on: the C++ kernels (cpp-avx512, say) or the Python steps (and why)
    assert tags["sketchlab.step_kernels"].startswith(("cpp-", "python ("))


def _wait_for_steps(tmp_path: Path, experiment: str, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        try:
            hist = list(losses(tmp_path, experiment).values())
            if hist and len(hist[0]) >= n:
                return
        except Exception:  # the store may not exist yet
            pass
        time.sleep(0.2)
    raise AssertionError(f"training logged fewer than {n} steps in {timeout} s")


def _start(tmp_path: Path, *overrides: str, data: Path | None = None) -> subprocess.Popen:
    env = train_env(tmp_path, data)
    tmp_path.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, str(REPO / "scripts" / "train.py"), *overrides], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_stopped_and_resumed_training_is_one_run_equal_to_a_straight_one(tmp_path, data_root, signum):
    args = [*TINY_RNN, *LOG_EVERY_STEP, "trainer.max_steps=60", "trainer.ckpt_every=10", "logger.experiment_name=k"]
    proc = _start(tmp_path / "stopped", *args, data=data_root)
    _wait_for_steps(tmp_path / "stopped", "k", 15, proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    c, (run,) = runs_of(tmp_path / "stopped", "k")
    if signum == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
        assert run.info.status == "KILLED"
    else:
        assert run.info.status == "RUNNING"  # nothing can mark it: the resume will
    (run_dir,) = run_dirs(tmp_path / "stopped")
    if signum == signal.SIGTERM:  # a stop leaves no temporary file behind; a SIGKILL that lands in a
        # checkpoint write leaves its temporary file (nothing runs after SIGKILL): the resume removes it
        assert not list((run_dir / "checkpoints").glob(".*"))

    train(tmp_path / "stopped", f"resume={run_dir}", data=data_root)  # the stored config is enough
    assert not list((run_dir / "checkpoints").glob(".*"))
    c, (resumed,) = runs_of(tmp_path / "stopped", "k")  # still one run
    assert resumed.info.run_id == run.info.run_id and resumed.info.status == "FINISHED"
    train(tmp_path / "straight", *args, data=data_root)
    (stopped_history,) = losses(tmp_path / "stopped", "k").values()
    (straight_history,) = losses(tmp_path / "straight", "k").values()
    assert [s for s, _ in stopped_history] == list(range(1, 61))  # every step once
    assert stopped_history == straight_history


def test_resume_refuses_changed_training_settings_unless_asked(tmp_path, data_root):
    train(tmp_path, *TINY_RNN, *SHORT, "logger.experiment_name=o", data=data_root)
    (run_dir,) = run_dirs(tmp_path)
    proc = train(tmp_path, f"resume={run_dir}", "optim.lr=0.5", "trainer.max_steps=3", check=False, data=data_root)
    assert proc.returncode != 0 and "optim.lr: 0.001 in the checkpoint, 0.5 now" in proc.stderr
    assert "resume_overrides=[optim.lr]" in proc.stderr
    train(tmp_path, f"resume={run_dir}", "optim.lr=0.5", "resume_overrides=[optim.lr]", "trainer.max_steps=3",
          data=data_root)
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    assert state["step"] == 3 and state["optimizer"]["param_groups"][0]["initial_lr"] == 0.5
    c, (run,) = runs_of(tmp_path, "o")
    assert run.data.tags["sketchlab.resume_override.optim.lr"] == "0.001 -> 0.5"
    assert run.info.status == "FINISHED"


def test_resume_by_mlflow_run_id_goes_on_in_that_run(tmp_path, data_root):
    train(tmp_path, *TINY_RNN, *SHORT, "logger.experiment_name=m", data=data_root)
    c, (run,) = runs_of(tmp_path, "m")
    train(tmp_path, f"resume=mlflow:{run.info.run_id}", "trainer.max_steps=3", data=data_root)
    c, (again,) = runs_of(tmp_path, "m")
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert [m.step for m in c.get_metric_history(run.info.run_id, "train/loss")] == [1, 2, 3]
