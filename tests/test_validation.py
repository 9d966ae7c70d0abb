"""The typed config checks: what they accept (and convert), and errors that name the key."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from sketchlab.data.datamodule import SketchDataModule
from sketchlab.engine.trainer import Trainer
from sketchlab.validation import (ConfigValueError, check_bool, check_choice, check_device, check_float, check_int,
                                  check_subset)


def test_check_int_accepts_exact_integers_only():
    assert check_int(5, "k") == 5
    assert check_int(1e3, "k") == 1000            # Hydra reads 1e3 as a float
    assert check_int("7", "k") == 7               # ${oc.env:...} yields strings
    assert check_int(None, "k", optional=True) is None
    for bad in ("abc", 1.5, True, None, [1]):
        with pytest.raises(ConfigValueError, match="^k must be an integer"):
            check_int(bad, "k")
    with pytest.raises(ConfigValueError, match=r"^k must be an integer >= 1 or null, got 0$"):
        check_int(0, "k", min=1, optional=True)
    with pytest.raises(ConfigValueError, match=r">= 0 and <= 3, got 4"):
        check_int(4, "k", min=0, max=3)


def test_check_float_bounds():
    assert check_float(2, "t", above=0) == 2.0
    for bad in (0, -1, float("nan"), float("inf"), "warm", False):
        with pytest.raises(ConfigValueError, match="^t must be a number > 0"):
            check_float(bad, "t", above=0)
    assert check_float(0, "g", min=0, optional=True) == 0.0


def test_check_bool_choice_subset():
    assert check_bool(False, "b") is False
    with pytest.raises(ConfigValueError, match="^b must be true or false, got 'no'$"):
        check_bool("no", "b")
    assert check_choice(32, "trainer.precision", ("32", "bf16")) == "32"
    with pytest.raises(ConfigValueError, match="^which must be one of 'last', 'best', got 'bset'$"):
        check_choice("bset", "which", ("last", "best"))
    assert check_subset(OmegaConf.create(["svg"]), "formats", ("png", "svg")) == ["svg"]
    assert check_subset("png", "formats", ("png", "svg")) == ["png"]
    for bad in ([], ["gif"], 3):
        with pytest.raises(ConfigValueError, match="^formats must be a non-empty list"):
            check_subset(bad, "formats", ("png", "svg"))


def test_check_device():
    assert check_device("auto", "device") == "auto" and check_device("cpu", "device") == "cpu"
    with pytest.raises(ConfigValueError, match="^trainer.device must be auto, cpu, cuda"):
        check_device("gpu", "trainer.device")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigValueError, match="CUDA is not available"):
            check_device("cuda:0", "trainer.device")


@pytest.mark.parametrize("kwargs, message", [
    ({"max_steps": "abc"}, "trainer.max_steps must be an integer >= 0, got 'abc'"),
    ({"val_every": -1}, "trainer.val_every must be an integer >= 0, got -1"),
    ({"val_batches": 0}, "trainer.val_batches must be an integer >= 1 or null, got 0"),
    ({"grad_clip": -1.0}, "trainer.grad_clip must be a number >= 0 or null, got -1.0"),
    ({"grad_clip_mode": "elementwise"}, "trainer.grad_clip_mode must be one of 'norm', 'value'"),
    ({"precision": 16}, "trainer.precision must be one of '32', 'bf16', got 16"),
    ({"threads": "many"}, "trainer.threads must be an integer >= 0 or null"),
    ({"progress": "yes"}, "trainer.progress must be true or false"),
])
def test_trainer_names_the_bad_key(kwargs, message):
    with pytest.raises(ConfigValueError) as info:
        Trainer(**kwargs)
    assert str(info.value).startswith(message)


def test_trainer_normalises_values():
    trainer = Trainer(max_steps=1e3, precision=32, device="cpu")
    assert trainer.max_steps == 1000 and isinstance(trainer.max_steps, int) and trainer.precision == "32"


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": -3}, "data.batch_size must be an integer >= 1, got -3"),
    ({"batch_size": "big"}, "data.batch_size must be an integer >= 1, got 'big'"),
    ({"max_seq_len": 0}, "data.max_seq_len must be an integer >= 1, got 0"),
    ({"min_seq_len": 300}, "data.min_seq_len (300) must not exceed data.max_seq_len (250)"),
    ({"limit": 0}, "data.limit must be an integer >= 1 or null, got 0"),
    ({"eval_batch_size": 2.5}, "data.eval_batch_size must be an integer >= 1 or null, got 2.5"),
    ({"normalize": "false"}, "data.normalize must be true or false, got 'false'"),
])
def test_data_module_names_the_bad_key(kwargs, message):
    with pytest.raises(ConfigValueError) as info:
        SketchDataModule(source=None, **kwargs)
    assert str(info.value).startswith(message)
