"""Every config group choice and experiment composes, resolves and names only buildable targets."""

from __future__ import annotations

import importlib.util
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from sketchlab.cli.optuna_sweeper import register_plugin
from sketchlab.config import config_dir
from sketchlab.registry import build, check_hydra_config, check_targets

CONF = config_dir()
register_plugin()  # as sketchlab-train does: experiments may choose hydra/sweeper=optuna
GROUPS = ["model", "data", "augment", "optim", "sched", "trainer", "logger", "launcher", "paths"]
OPTIONAL_PLUGINS = {("launcher", "slurm"): "hydra_plugins.hydra_submitit_launcher"}


def _choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


def _compose(overrides: list[str]):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def _check(cfg) -> None:
    check_hydra_config(cfg)  # callbacks, launcher, sweeper, logging: what Hydra builds itself
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    check_targets(cfg)


@pytest.mark.parametrize("group,choice", [(g, c) for g in GROUPS for c in _choices(g)])
def test_group_choice_composes(group: str, choice: str):
    plugin = OPTIONAL_PLUGINS.get((group, choice))
    if plugin and importlib.util.find_spec(plugin) is None:
        pytest.skip(f"{plugin} is an optional extra (pip install -e '.[slurm]')")
    cfg = _compose([f"{group}={choice}"])
    _check(cfg)


@pytest.mark.parametrize("name", _choices("experiment"))
def test_experiment_composes(name: str):
    cfg = _compose([f"experiment={name}"])
    _check(cfg)
    assert cfg.logger.experiment_name


@pytest.mark.parametrize("sched", _choices("sched"))
@pytest.mark.parametrize("optim", _choices("optim"))
def test_partial_optim_and_sched_build(optim: str, sched: str):
    cfg = _compose([f"optim={optim}", f"sched={sched}"])
    optimizer = build(cfg.optim)([torch.nn.Parameter(torch.zeros(1))])
    assert isinstance(optimizer, torch.optim.Optimizer)
    assert isinstance(build(cfg.sched)(optimizer), torch.optim.lr_scheduler.LRScheduler)


def test_every_group_has_choices():
    for group in GROUPS + ["experiment"]:
        assert _choices(group), f"conf/{group}/ is empty"


def test_model_data_combinations_resolve():
    for model in _choices("model"):
        for data in _choices("data"):
            cfg = _compose([f"model={model}", f"data={data}"])
            assert OmegaConf.select(cfg, "model.collate._target_"), (model, data)
            _check(cfg)


def test_bad_group_choice_lists_options():
    with pytest.raises(Exception, match="(?s)Could not find 'model/nonexistent'.*sketch_rnn"):
        _compose(["model=nonexistent"])


def test_unknown_key_is_rejected():
    with pytest.raises(Exception, match="trainer.max_stepz"):
        _compose(["trainer.max_stepz=3"])
