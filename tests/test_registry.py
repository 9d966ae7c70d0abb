"""The registry builds only allowed components; each bypass the audit found is refused before it runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from helpers import train
from sketchlab.config import config_dir
from sketchlab.registry import ConfigError, build, check_hydra_config, check_target, check_targets, components

EXEC = "torch.fx.graph_module._exec_with_source"


def _touch_src(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


def _compose(*overrides: str, name: str = "train"):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose(name, overrides=list(overrides), return_hydra_config=True)


def test_build_sketchlab_and_torch_targets():
    aug = build({"_target_": "sketchlab.data.augment.SketchRNNAugment", "random_scale_factor": 0.1})
    assert aug.random_scale_factor == 0.1
    opt = build({"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.5})([torch.nn.Parameter(torch.zeros(1))])
    assert opt.param_groups[0]["lr"] == 0.5
    sched = build({"_target_": "torch.optim.lr_scheduler.StepLR", "_partial_": True, "step_size": 3})(opt)
    assert sched.step_size == 3
    net = build({"_target_": "torch.nn.Sequential", "_args_": [{"_target_": "torch.nn.Linear", "in_features": 2,
                                                                 "out_features": 1}]})
    assert isinstance(net[0], torch.nn.Linear)


def test_foreign_target_is_refused():
    with pytest.raises(ConfigError, match="(?s)'os.system'.*outside the allowed namespaces.*torch.optim"):
        build({"_target_": "os.system", "command": "echo hi"})
    # nested targets are checked too, before anything is built
    with pytest.raises(ConfigError, match="outer.inner"):
        check_targets(OmegaConf.create({"outer": {"inner": {"_target_": "subprocess.run"}}}))


def test_unknown_target_lists_valid_choices():
    with pytest.raises(ConfigError) as err:
        build({"_target_": "sketchlab.data.augment.SketchRNNAugmnt"})
    message = str(err.value)
    assert "does not exist" in message and "sketchlab.data.augment.SketchRNNAugment" in message
    with pytest.raises(ConfigError, match="torch.optim.AdamW"):
        check_target("torch.optim.AdamWW")


def test_components_lists_public_classes():
    names = components()
    assert "sketchlab.data.datamodule.SketchDataModule" in names
    assert "sketchlab.engine.trainer.Trainer" in names
    assert not [n for n in names if n.startswith(("sketchlab.cli.", "sketchlab.registry."))]
    assert not [n for n in names if any(p.startswith("_") for p in n.split("."))]


def test_node_without_target():
    with pytest.raises(ConfigError, match="no _target_"):
        build(OmegaConf.create({"lr": 1}))


@pytest.mark.parametrize("target", [
    "sketchlab.cli.train.main",                       # entry points are not components
    "sketchlab.engine.checkpoint.load_checkpoint",    # torch.load of a config-named file runs code
    "sketchlab.registry.build",
    "sketchlab.data.sources._load_npz",               # private names, at any level
    "torch.optim._functional.adam",
    "torch.optim.Optimizer.__init__",
    "torch.optim.lr_scheduler.Optimizer",             # an optimizer reached through the scheduler module
    "torch.nn.functional.relu",                       # torch.nn but not a Module class
    "torch.nn.functional.torch.fx.GraphModule",       # a Module, but reached through an attribute chain
    "torch.hub.load",
    "torch.load",
])
def test_near_misses_are_refused(target):
    with pytest.raises(ConfigError, match="Allowed: public sketchlab classes"):
        check_target(target, "x")


def test_exec_with_source_from_config_is_refused(tmp_path):
    marker = tmp_path / "marker"
    with pytest.raises(ConfigError, match=f"(?s)'{EXEC}'.*public dotted name"):
        build({"_target_": EXEC, "_convert_": "all", "src": _touch_src(marker), "globals": {}})
    # nested inside an allowed component's kwargs, as a command-line override would put it
    cfg = _compose(f"+augment.evil={{_target_:{EXEC},_convert_:all,src:\"{_touch_src(marker)}\",globals:{{}}}}")
    with pytest.raises(ConfigError, match=f"config 'augment.evil' has _target_ '{EXEC}'"):
        build(cfg.augment)
    assert not marker.exists()


def test_torch_hub_local_is_refused(tmp_path):
    marker = tmp_path / "marker"
    (tmp_path / "hubconf.py").write_text(f"{_touch_src(marker)}\ndef m():\n    return 1\n")
    with pytest.raises(ConfigError, match="'torch.hub.load'"):
        build({"_target_": "torch.hub.load", "repo_or_dir": str(tmp_path), "model": "m", "source": "local"})
    assert not marker.exists()


def test_interpolated_target_is_checked_resolved(tmp_path):
    marker, src = tmp_path / "marker", tmp_path / "src"
    src.write_text("x")
    cfg = OmegaConf.create({"evil": "shutil.copyfile",
                            "node": {"_target_": "${evil}", "src": str(src), "dst": str(marker)}})
    with pytest.raises(ConfigError, match="config 'node' has _target_ 'shutil.copyfile'"):
        build(cfg.node)  # a sub-node, resolved against its root
    # a whole kwarg interpolated from a node elsewhere in the config
    cfg = OmegaConf.create({"evil": {"_target_": "shutil.copyfile", "src": str(src), "dst": str(marker)},
                            "node": {"_target_": "sketchlab.data.augment.SketchRNNAugment", "x": "${evil}"}})
    with pytest.raises(ConfigError, match="config 'node.x' has _target_ 'shutil.copyfile'"):
        build(cfg.node)
    assert not marker.exists()


def test_escaped_interpolation_cannot_smuggle_a_target(tmp_path):
    marker, src = tmp_path / "marker", tmp_path / "src"
    src.write_text("x")
    smuggled = f"${{oc.create:{{_target_: shutil.copyfile, src: '{src}', dst: '{marker}'}}}}"
    node = OmegaConf.create({"_target_": "sketchlab.data.augment.SketchRNNAugment", "evil": "\\" + smuggled})
    with pytest.raises(ConfigError, match="holds an interpolation"):
        build(node)
    # the same through a kwarg (train() passes the configured tags to the logger this way)
    with pytest.raises(ConfigError, match="<kwargs>.tags.x"):
        build({"_target_": "sketchlab.tracking.loggers.NullLogger"}, tags={"x": smuggled})
    assert not marker.exists()


def test_target_and_args_must_be_literals():
    with pytest.raises(ConfigError, match="must be a dotted name"):
        build({"_target_": {"nested": "os.system"}})
    with pytest.raises(ConfigError, match="must be a list"):
        build({"_target_": "torch.nn.Linear", "_args_": "12"})
    with pytest.raises(ConfigError, match="from the config node"):
        build({"_target_": "torch.nn.Identity"}, _target_="os.system")


def test_sub_nodes_resolve_against_their_root():
    cfg = _compose("sched=cosine", "trainer.max_steps=7")
    opt = build(cfg.optim)([torch.nn.Parameter(torch.zeros(1))])
    sched = build(cfg.sched)(opt)  # total_steps: ${trainer.max_steps} lives outside cfg.sched
    assert isinstance(sched, torch.optim.lr_scheduler.LambdaLR)


@pytest.mark.parametrize("override,match", [
    ("+hydra.callbacks.evil._target_=shutil.copyfile", "hydra.callbacks.evil"),
    ("hydra.callbacks.mlflow_sweep._target_=sketchlab.tracking.loggers.NullLogger", "not a subclass"),
    ("hydra.launcher._target_=shutil.copyfile", "installed Hydra launcher plugin"),
    ("+hydra.launcher.evil={_target_:shutil.copyfile}", "hydra.launcher.evil"),
    ("hydra.sweeper._target_=hydra._internal.core_plugins.basic_launcher.BasicLauncher", "sweeper plugin"),
    ("hydra.job_logging.handlers.console.class=zipfile.ZipFile", "logging factories"),
    ("hydra.job_logging.handlers.console.stream=ext://antigravity", "ext://sys.stdout"),
])
def test_hydra_side_targets_are_checked(override, match):
    with pytest.raises(ConfigError, match=match):
        check_hydra_config(_compose(override))


def test_hydra_side_defaults_pass():
    for overrides in ([], ["launcher=joblib"]):
        check_hydra_config(_compose(*overrides))
    check_hydra_config(_compose(name="sample"))


# End to end: the command line as a user (or an attacker) types it; nothing may run.

def _assert_refused(proc, *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout[-2000:]
    for needle in needles:
        assert needle in proc.stderr, proc.stderr[-3000:]


def test_cli_refuses_exec_with_source(tmp_path):
    marker = tmp_path / "marker"
    proc = train(tmp_path, f"+augment.evil={{_target_:{EXEC},_convert_:all,src:\"{_touch_src(marker)}\",globals:{{}}}}",
                 "trainer.threads=1", check=False)
    _assert_refused(proc, f"config 'augment.evil' has _target_ '{EXEC}'", "Allowed:")
    assert not marker.exists()


def test_cli_refuses_foreign_callback(tmp_path):
    marker, src = tmp_path / "marker", tmp_path / "src"
    src.write_text("x")
    proc = train(tmp_path, f"+hydra.callbacks.evil={{_target_:shutil.copyfile,src:'{src}',dst:'{marker}'}}",
                 check=False)
    _assert_refused(proc, "hydra.callbacks.evil", "shutil.copyfile")
    assert not marker.exists()


def test_cli_refuses_foreign_launcher_and_its_nested_targets(tmp_path):
    marker, src = tmp_path / "marker", tmp_path / "src"
    src.write_text("x")
    proc = train(tmp_path, "-m", "seed=1,2", f"+hydra.launcher.evil={{_target_:shutil.copyfile,src:'{src}',"
                 f"dst:'{marker}'}}", check=False)
    _assert_refused(proc, "hydra.launcher.evil", "shutil.copyfile")
    proc = train(tmp_path, "-m", "seed=1,2", "hydra.launcher._target_=shutil.copyfile", check=False)
    _assert_refused(proc, "hydra.launcher", "installed Hydra launcher plugin")
    assert not marker.exists()


def test_cli_refuses_logging_factory(tmp_path):
    marker = tmp_path / "marker"
    # logging's dictConfig calls any class named as a handler; ZipFile(mode="w") creates the file
    proc = train(tmp_path, "hydra.job_logging.handlers.console.class=zipfile.ZipFile",
                 "~hydra.job_logging.handlers.console.stream", "~hydra.job_logging.handlers.console.formatter",
                 f"+hydra.job_logging.handlers.console.file={marker}", "+hydra.job_logging.handlers.console.mode=w",
                 check=False)
    _assert_refused(proc, "hydra.job_logging.handlers.console.class", "zipfile.ZipFile")
    assert not marker.exists()
