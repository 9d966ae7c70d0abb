import pytest
import torch
from omegaconf import OmegaConf

from sketchlab.registry import ConfigError, build, check_targets, components


def test_build_sketchlab_and_torch_targets():
    aug = build({"_target_": "sketchlab.data.augment.SketchRNNAugment", "random_scale_factor": 0.1})
    assert aug.random_scale_factor == 0.1
    opt = build({"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.5})([torch.nn.Parameter(torch.zeros(1))])
    assert opt.param_groups[0]["lr"] == 0.5


def test_foreign_target_is_refused():
    with pytest.raises(ConfigError, match="only components under sketchlab, torch"):
        build({"_target_": "os.system", "command": "echo hi"})
    # nested targets are checked too, before anything is built
    with pytest.raises(ConfigError, match="outer.inner"):
        check_targets(OmegaConf.create({"outer": {"inner": {"_target_": "subprocess.run"}}}))


def test_unknown_target_lists_valid_choices():
    with pytest.raises(ConfigError) as err:
        build({"_target_": "sketchlab.data.augment.SketchRNNAugmnt"})
    message = str(err.value)
    assert "does not exist" in message and "sketchlab.data.augment.SketchRNNAugment" in message


def test_components_lists_public_classes():
    names = components()
    assert "sketchlab.data.datamodule.SketchDataModule" in names
    assert "sketchlab.engine.trainer.Trainer" in names


def test_node_without_target():
    with pytest.raises(ConfigError, match="no _target_"):
        build(OmegaConf.create({"lr": 1}))
