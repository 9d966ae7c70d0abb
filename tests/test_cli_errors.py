"""User errors end in one ``error:`` line naming what to fix (exit status 2); bugs keep their traceback.

Each case runs the real command line; all fail before any training starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, TINY_RNN, client, train
from sketchlab.cli.errors import UserError, entry_point, format_error, hydra_task, user_error_message
from sketchlab.validation import ConfigValueError


def run_script(script: str, cwd: Path, *args: str, full_error: bool = False) -> subprocess.CompletedProcess:
    """``python scripts/<script>.py args...`` as a user runs it, outputs kept under ``cwd``."""
    env = {**os.environ, "SKETCHLAB_OUTPUTS": str(cwd / "outputs"), "HYDRA_FULL_ERROR": "1" if full_error else "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, str(REPO / "scripts" / f"{script}.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def sample(tmp_path: Path, *overrides: str, full_error: bool = False) -> subprocess.CompletedProcess:
    return run_script("sample", tmp_path, f"out_dir={tmp_path / 'samples'}", "log_to_mlflow=false", *overrides,
                      full_error=full_error)


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The one ``error:`` line of a user error (after checking the exit status and that no traceback shows)."""
    assert proc.returncode == 2, f"exit {proc.returncode}:\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture
def run_without_best(tmp_path: Path) -> Path:
    """A run directory holding only checkpoints/last.pt (a run that never validated)."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"not read: the error comes first")
    return run


# -- sketchlab-train ----------------------------------------------------------------------------------

def test_train_non_integer_max_steps(tmp_path, shared_data):
    line = error_line(train(tmp_path, *TINY_RNN, "trainer.max_steps=abc", "trainer.threads=1", check=False))
    assert line == "error: trainer.max_steps must be an integer >= 0, got 'abc'"


def test_train_negative_batch_size(tmp_path):
    line = error_line(train(tmp_path, "data.batch_size=-3", check=False))
    assert line == "error: data.batch_size must be an integer >= 1, got -3"


def test_train_unknown_group_choice_lists_the_options(tmp_path):
    proc = train(tmp_path, "model=nope", check=False)
    assert "model/nope" in error_line(proc)
    assert "sketch_rnn" in proc.stderr and "sketch_ode" in proc.stderr  # the choices that exist


def test_train_unknown_key_and_unparsable_override(tmp_path):
    proc = train(tmp_path, "trainer.max_step=5", check=False)
    assert "trainer.max_step" in error_line(proc)
    assert "trainer.max_steps=[" in error_line(train(tmp_path, "trainer.max_steps=[", check=False))


def test_train_key_a_component_does_not_take(tmp_path):
    proc = train(tmp_path, "+data.bach_size=8", check=False)
    assert "bach_size" in error_line(proc) and "full_key: data" in proc.stderr


def test_train_user_error_in_a_sweep_fails_the_job(tmp_path):
    proc = train(tmp_path, "-m", "data.batch_size=-1,-2", "logger=none", check=False)
    assert "data.batch_size must be an integer >= 1" in error_line(proc)
    assert "job 0 (" in proc.stdout and "job 1 (" in proc.stdout  # each failed job says so in its log


def test_train_full_error_shows_the_traceback(tmp_path):
    proc = run_script("train", tmp_path, "data.batch_size=-3", full_error=True)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "ConfigValueError: data.batch_size must be" in proc.stderr


# -- sketchlab-sample ---------------------------------------------------------------------------------

def test_sample_which_typo_lists_the_choices(tmp_path, run_without_best):
    line = error_line(sample(tmp_path, f"checkpoint={run_without_best}", "which=bset"))
    assert line == "error: which must be one of 'last', 'best', got 'bset'"


def test_sample_best_without_best_checkpoint_is_an_error(tmp_path, run_without_best):
    line = error_line(sample(tmp_path, f"checkpoint={run_without_best}", "which=best"))
    assert "no best.pt in" in line and "which=last" in line


def test_sample_best_with_a_checkpoint_file_is_an_error(tmp_path, run_without_best):
    line = error_line(sample(tmp_path, f"checkpoint={run_without_best / 'checkpoints' / 'last.pt'}", "which=best"))
    assert "which=best" in line and "is a file" in line


def test_sample_missing_checkpoint(tmp_path):
    line = error_line(sample(tmp_path, f"checkpoint={tmp_path / 'nowhere'}"))
    assert "no checkpoint at" in line and "nowhere" in line


def test_sample_mlflow_run_without_best_checkpoint(tmp_path):
    (tmp_path / "outputs").mkdir()
    c = client(tmp_path)
    run = c.create_run(c.create_experiment("e"))
    c.set_terminated(run.info.run_id)
    line = error_line(sample(tmp_path, f"mlflow_run={run.info.run_id}", "which=best"))
    assert f"MLflow run {run.info.run_id} has no artifact checkpoints/best.pt" in line and "which=last" in line
    assert "no MLflow run 'nope'" in error_line(sample(tmp_path, "mlflow_run=nope"))


@pytest.mark.parametrize("override, expected", [
    ("temperature=0", "temperature must be a number > 0, got 0"),
    ("n=-1", "n must be an integer >= 1, got -1"),
    ("interp_method=cubic", "interp_method must be one of 'slerp', 'lerp', got 'cubic'"),
    ("split=validation", "split must be one of 'train', 'valid', 'test', got 'validation'"),
    ("formats=[png,jpg]", "formats must be a non-empty list of items from 'png', 'svg', got ['png', 'jpg']"),
    ("device=gpu", "device must be auto, cpu, cuda or cuda:<index>, got 'gpu'"),
])
def test_sample_bad_values_name_the_key(tmp_path, run_without_best, override, expected):
    assert error_line(sample(tmp_path, f"checkpoint={run_without_best}", override)) == f"error: {expected}"


def test_sample_full_error_shows_the_traceback(tmp_path, run_without_best):
    proc = sample(tmp_path, f"checkpoint={run_without_best}", "which=bset", full_error=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "which must be one of" in proc.stderr


# -- sketchlab-runs -----------------------------------------------------------------------------------

def test_runs_unknown_sweep_id(tmp_path):
    proc = run_script("runs", tmp_path, "--outputs", str(tmp_path / "outputs"), "--sweep", "0123abcd")
    assert "0123abcd" in error_line(proc)


# -- the wrapper itself ---------------------------------------------------------------------------------

def test_user_errors_print_one_line_and_exit_2(capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    @entry_point
    def main() -> None:
        raise ConfigValueError("trainer.max_steps must be an integer >= 0, got 'abc'")

    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: trainer.max_steps must be an integer >= 0, got 'abc'\n"
    assert "HYDRA_FULL_ERROR" not in os.environ  # set only while main runs


def test_bugs_keep_their_traceback(monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    @entry_point
    def main() -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    with pytest.raises(RuntimeError):
        main()


def test_what_counts_as_a_user_error():
    import numpy as np
    import torch

    from sketchlab.data.download import DownloadError
    from sketchlab.engine.trainer import TrainingDiverged
    from sketchlab.models.latent import latent_path

    def raised(fn):
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            return exc
        raise AssertionError("no exception")

    # a ValueError from inside numpy is a bug; one raised by sketchlab code is a message for the user
    assert user_error_message(raised(lambda: np.reshape(np.zeros(3), (2, 2)))) is None
    assert "at least 2 steps" in user_error_message(raised(lambda: latent_path(torch.zeros(2), torch.zeros(2), 1)))
    assert user_error_message(FileNotFoundError("no checkpoint at x")) == "no checkpoint at x"
    assert user_error_message(AssertionError("internal")) is None
    assert user_error_message(RuntimeError("CUDA out of memory")) is None
    assert user_error_message(TrainingDiverged("loss became NaN")) == "loss became NaN"
    assert user_error_message(DownloadError("could not download u: offline")) == "could not download u: offline"
    assert user_error_message(KeyError("x")) is None


def test_hydra_task_turns_user_errors_into_picklable_user_errors():
    import pickle

    @hydra_task
    def task(cfg):
        raise ConfigValueError("n must be an integer >= 1, got 0")

    with pytest.raises(UserError) as info:
        task(None)
    assert isinstance(info.value.__cause__, ConfigValueError)
    assert str(pickle.loads(pickle.dumps(info.value))) == "n must be an integer >= 1, got 0"


def test_format_error_indents_details():
    assert format_error("Could not find 'model/nope'\n\nAvailable options in 'model':\n\tsketch_ode\n") == (
        "error: Could not find 'model/nope'\n  Available options in 'model':\n    sketch_ode")



def test_a_bad_optimizer_value_is_a_user_error(tmp_path):
    proc = train(tmp_path, "optim.lr=-1", "trainer.max_steps=1", "logger=none", check=False)
    assert proc.returncode == 2 and "optim: Invalid learning rate: -1" in proc.stderr
    assert "Traceback" not in proc.stderr
