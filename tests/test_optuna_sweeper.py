"""``hydra/sweeper=optuna``: search space, pruning hook, study continuation, and a real search end to end."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import optuna
import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from helpers import REPO, SHORT, TINY_RNN, client, train
from sketchlab.cli.optuna_sweeper import (PLUGIN_MODULE, OptunaSweeper, TrialReporter, override_value,
                                          register_plugin, search_space)
from sketchlab.cli.runs import comparison_rows
from sketchlab.tracking.study import PRUNED_AT_ATTR, STUDY_FILE, StudyRecord
from sketchlab.validation import ConfigValueError
from test_engine import parts, quiet

SPACE = ["optim.lr=tag(log,interval(1e-4,1e-2))", "model.net.dec_model=choice(lstm,layer_norm)"]
# tiny trainings that validate twice (steps 2 and 4), so a pruned trial visibly stops halfway
SEARCH = [*TINY_RNN, *SHORT, "trainer.max_steps=4", "logger.experiment_name=search", "logger.connect_timeout=120",
          "hydra/sweeper=optuna", "hydra.sweeper.study_name=s", "hydra.sweeper.sampler.name=random"]
PRUNE_ALL = ["hydra.sweeper.pruner.name=threshold", "+hydra.sweeper.pruner.kwargs.upper=-1e9"]  # at the first report


def test_search_space_from_sweep_grammar():
    space, keys, fixed = search_space([
        "a.lr=tag(log,interval(1e-4,1e-2))", "b=choice(lstm,hyper)", "c=1,2", "d=range(2,10,4)",
        "e=tag(int,interval(1,8))", "f=interval(0.25,1.0)", "trainer.max_steps=4", "+g=choice(x,y)",
        "trainer.max_steps=5", "f=0.5"])  # a later override of a key wins
    assert space == {"a.lr": FloatDistribution(1e-4, 1e-2, log=True), "b": CategoricalDistribution(["lstm", "hyper"]),
                     "c": CategoricalDistribution([1, 2]), "d": IntDistribution(2, 6, step=4),
                     "e": IntDistribution(1, 8), "g": CategoricalDistribution(["x", "y"])}
    assert keys["g"] == "+g" and keys["a.lr"] == "a.lr"
    assert fixed == ["trainer.max_steps=5", "f=0.5"]
    with pytest.raises(ConfigValueError, match="config group"):
        search_space(["x=choice([1,2],[3])"])


@pytest.mark.parametrize("value", [0.0031622776601683794, 1e-05, 7, True, False, "lstm", "layer_norm", "a b",
                                   "it's", "null", "1", "x,y", "back\\slash'", "tail\\"])
def test_sampled_values_read_back_exactly(value):
    (override,) = OverridesParser.create().parse_overrides([f"k={override_value(value)}"])
    assert override.value() == value and type(override.value()) is type(value)


def test_should_stop_ends_training_after_that_validation(data_root, tmp_path):
    model, data, opt, sched = parts(data_root)
    seen = []

    def stop_at_second(step, losses):
        seen.append((step, sorted(losses)))
        return len(seen) == 2

    result = quiet(max_steps=10, val_every=2, val_batches=1, ckpt_every=0).fit(
        model, data, opt, sched, ckpt_dir=tmp_path, should_stop=stop_at_second)
    assert result.stopped_early and result.step == 4 and [s for s, _ in seen] == [2, 4]
    assert "loss" in seen[0][1]
    assert torch.load(tmp_path / "last.pt", weights_only=True)["step"] == 4  # checkpoints disabled, yet kept
    result = quiet(max_steps=2, val_every=2, val_batches=1).fit(model, data, opt, sched, should_stop=lambda s, v: False)
    assert not result.stopped_early and result.step == 2


def test_trial_reporter_marks_a_pruned_trial(tmp_path):
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask({"x": FloatDistribution(0, 1)})
    keep = TrialReporter(storage, "s", trial._trial_id, {"name": "threshold", "kwargs": {"upper": 10.0}})
    assert keep(2, {"loss": 3.0}) is False and keep.pruned_at is None
    prune = TrialReporter(storage, "s", trial._trial_id, {"name": "threshold", "kwargs": {"upper": 1.0}})
    assert prune(4, {"loss": 3.0}) is True and prune.pruned_at == 4
    (fresh,) = study.get_trials()
    assert fresh.intermediate_values == {2: 3.0, 4: 3.0} and fresh.user_attrs[PRUNED_AT_ATTR] == 4


def test_study_continues_only_with_the_same_space_and_reseeds(tmp_path):
    def study(space, db="o.db", seed=3):
        s = OptunaSweeper(storage=str(tmp_path / db), study_name="s", seed=seed)
        s.config = OmegaConf.create({})
        return s._study(search_space(space)[0])

    space = search_space(SPACE)[0]
    first = study(SPACE)
    before = first.ask(space)
    first.tell(before, 1.0)
    again = study(SPACE)  # the same study; its sampler's seed moved past the trial it has
    after = again.ask(space)
    assert len(again.trials) == 2 and after.number == 1
    assert after.params == study(SPACE, "other.db", seed=4).ask(space).params != before.params
    with pytest.raises(ConfigValueError, match="another space.*model.net.dec_model"):
        study([SPACE[0], "model.net.dec_model=choice(lstm,hyper)"])


def test_sweeper_is_a_hydra_plugin():
    from hydra.core.plugins import Plugins
    from hydra.core.singleton import Singleton
    from hydra.plugins.sweeper import Sweeper

    register_plugin()
    assert f"{PLUGIN_MODULE}.OptunaSweeper" in {f"{c.__module__}.{c.__name__}" for c in
                                                Plugins.instance().discover(Sweeper)}
    Singleton.set_state(Singleton.get_state())  # what a joblib launcher does in its process: plugins rescanned
    assert OptunaSweeper in Plugins.instance().discover(Sweeper)
    assert sys.modules[PLUGIN_MODULE].OptunaSweeper is OptunaSweeper


def test_trials_are_listed_complete_then_pruned_then_failed():
    def run(name, state, loss, status="FINISHED"):
        tags = {"sketchlab.optuna_trial": name[-1], "sketchlab.trial_state": state} if state else {}
        return SimpleNamespace(info=SimpleNamespace(run_id=name * 8, run_name=name, status=status),
                               data=SimpleNamespace(params={"sweep_trial.number": name[-1]}, tags=tags,
                                                    metrics={"val/best_loss": loss} if loss else {}))

    runs = [run("t0", "pruned", 0.5), run("t1", "complete", 2.0), run("t2", "failed", None, "FAILED"),
            run("t3", "complete", 1.0)]
    header, rows = comparison_rows(runs, "val/best_loss")
    assert header[:5] == ["run_id", "name", "status", "trial", "state"] and "sweep_trial.number" not in header
    assert [(r[1], r[4]) for r in rows] == [("t3", "complete"), ("t1", "complete"), ("t0", "pruned"),
                                            ("t2", "failed")]


def _sweep_runs(tmp_path, parent_id):
    c = client(tmp_path)
    parent = c.get_run(parent_id)
    children = c.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    return c, parent, children


def _parents(tmp_path):
    c = client(tmp_path)
    exp = c.get_experiment_by_name("search")
    return c.search_runs([exp.experiment_id], filter_string="tags.`sketchlab.role` = 'sweep'",
                         order_by=["attributes.start_time ASC"])


@pytest.mark.slow
def test_search_logs_trials_prunes_and_continues(tmp_path, data_root):
    # the store exists before the sweep's start-up check, whose timeout a busy machine's store creation can exceed
    (tmp_path / "outputs").mkdir()
    client(tmp_path).search_experiments()
    # 1. two trials, no pruning: complete children, the best on the parent
    train(tmp_path, "-m", *SEARCH, *SPACE, "hydra.sweeper.n_trials=2", "hydra.sweeper.pruner.name=none",
          data=data_root)
    (parent,) = _parents(tmp_path)
    c, parent, children = _sweep_runs(tmp_path, parent.info.run_id)
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    assert {r.data.tags["sketchlab.trial_state"] for r in children} == {"complete"}
    assert sorted(r.data.tags["sketchlab.optuna_trial"] for r in children) == ["0", "1"]
    assert all(r.info.run_name.startswith(f"#{r.data.tags['sketchlab.optuna_trial']} lr=") for r in children)
    best = min(children, key=lambda r: r.data.metrics["val/best_loss"])
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["optuna/best_value"] == pytest.approx(best.data.metrics["val/best_loss"])
    assert parent.data.params["best.optim.lr"] == best.data.params["optim.lr"]
    assert parent.data.params["best.model.net.dec_model"] == best.data.params["model.net.dec_model"]
    assert parent.data.metrics["optuna/n_complete"] == 2 and parent.data.metrics["optuna/n_pruned"] == 0
    assert parent.data.params["swept_keys"] == "optim.lr,model.net.dec_model"
    plots = {a.path for a in c.list_artifacts(parent.info.run_id, "optuna")}
    assert {"optuna/optimization_history.png", "optuna/param_importances.png"} <= plots
    listing = subprocess.run([sys.executable, str(REPO / "scripts" / "runs.py"), "--sweep", "latest", "--outputs",
                              str(tmp_path / "outputs")], capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert "state" in lines[1] and lines[3].startswith(best.info.run_id[:8]) and "complete" in lines[3]

    # 2. the same study continued, under a pruner that stops every trial at its first report
    train(tmp_path, "-m", *SEARCH, *SPACE, "hydra.sweeper.n_trials=1", *PRUNE_ALL, data=data_root)
    first, second = _parents(tmp_path)
    c, second, (pruned,) = _sweep_runs(tmp_path, second.info.run_id)
    assert pruned.info.status == "FINISHED" and pruned.data.tags["sketchlab.trial_state"] == "pruned"
    assert pruned.data.tags["sketchlab.optuna_trial"] == "2"
    assert [m.step for m in c.get_metric_history(pruned.info.run_id, "train/loss")] == [1, 2]  # stopped at 2 of 4
    assert [m.step for m in c.get_metric_history(pruned.info.run_id, "val/loss")] == [2]
    assert second.data.metrics["optuna/n_pruned"] == 1 and second.data.metrics["optuna/n_complete"] == 2
    assert second.data.metrics["optuna/sweep_trials"] == 1
    assert second.data.metrics["optuna/best_value"] == parent.data.metrics["optuna/best_value"]
    record = StudyRecord.read(second.data.tags["sketchlab.sweep_dir"])
    assert record.trials == [2] and (tmp_path / "outputs" / "optuna.db").is_file()
    study = optuna.load_study(study_name="s", storage=record.storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    listing = subprocess.run([sys.executable, str(REPO / "scripts" / "runs.py"), "--sweep", "latest", "--outputs",
                              str(tmp_path / "outputs")], capture_output=True, text=True, timeout=120)
    assert "pruned" in listing.stdout.splitlines()[3]
    assert STUDY_FILE in {p.name for p in (tmp_path / "outputs" / "multirun").glob("*/*/*")}
