"""Schedules and checkpoint files (the training loop itself is tested with the real models)."""

import math
import subprocess
import sys

import pytest
import torch

from sketchlab.engine.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from sketchlab.memory import has_glibc_malloc
from sketchlab.engine.schedules import constant, magenta_decay, warmup_cosine


def _opt(lr=1e-3):
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def test_magenta_decay_formula_and_state_round_trip():
    opt = _opt()
    sched = magenta_decay(opt, decay_rate=0.9, min_lr=1e-5)
    for _ in range(7):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx((1e-3 - 1e-5) * 0.9**7 + 1e-5)
    opt2 = _opt()
    sched2 = magenta_decay(opt2, decay_rate=0.9, min_lr=1e-5)
    sched2.load_state_dict(sched.state_dict())
    opt2.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx((1e-3 - 1e-5) * 0.9**8 + 1e-5)
    with pytest.raises(ValueError):
        magenta_decay(_opt(), min_lr=1.0)


def test_cosine_and_constant():
    opt = _opt(1.0)
    sched = warmup_cosine(opt, total_steps=10, warmup_steps=2, min_lr=0.1)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(0.1) and all(a >= b - 1e-12 for a, b in zip(lrs[1:], lrs[2:]))
    opt = _opt(0.3)
    sched = constant(opt)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == 0.3


def test_checkpoint_atomic_and_clear_errors(tmp_path):
    path = save_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt", {"model": {"w": torch.ones(2)}, "step": 5})
    assert resolve_checkpoint(tmp_path / "run") == path
    assert load_checkpoint(tmp_path / "run")["step"] == 5
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temp files left behind
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint .*bad.pt"):
        load_checkpoint(bad)
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a sketchlab checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resolve_checkpoint(tmp_path / "nowhere")
    assert math.isfinite(load_checkpoint(path)["step"])


def test_trainer_defaults_are_the_configs_defaults():
    import inspect

    from omegaconf import OmegaConf

    from sketchlab.config import config_dir
    from sketchlab.engine.trainer import Trainer

    conf = OmegaConf.load(config_dir() / "trainer" / "default.yaml")
    defaults = {k: p.default for k, p in inspect.signature(Trainer).parameters.items()}
    shared = [k for k in conf if k in defaults and not OmegaConf.is_interpolation(conf, k)]
    assert len(shared) >= 10
    assert {k: conf[k] for k in shared} == {k: defaults[k] for k in shared}


def test_threads_auto_is_one_on_a_cpu():
    from sketchlab.engine.trainer import Trainer

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        Trainer(device="cpu", threads="auto")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


_FAULTS_OF_A_REUSED_BUFFER = """
import resource, sys, torch
from sketchlab.memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory() is True
faults = []
for _ in range(20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(2**24).fill_(1)  # 64 MiB, freed at once
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(f > 1000 for f in faults[-10:]))
"""


@pytest.mark.skipif(not has_glibc_malloc(), reason="glibc's malloc only")
def test_keep_freed_memory_lets_a_step_reuse_the_pages_of_the_last_one():
    # in a fresh process each (the setting is process-wide and the pattern depends on the heap's history)
    def faulting_rounds(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", _FAULTS_OF_A_REUSED_BUFFER, mode], check=True,
                             capture_output=True, text=True)
        return int(out.stdout)

    # 64 MiB are 16,384 pages: glibc serves such a buffer from a fresh mmap, first-touched every time;
    # kept, the heap settles within a few rounds (5-7 seen; the pattern varies with the heap's history)
    # and then reuses its pages
    assert faulting_rounds("default") == 10
    assert faulting_rounds("keep") <= 2


_BREAK_AFTER_FREEING_OVER_2_GIB = """
import ctypes, sys, torch
from sketchlab.memory import keep_freed_memory
assert keep_freed_memory() is True
libc = ctypes.CDLL("libc.so.6")
libc.sbrk.restype = ctypes.c_void_p
start = libc.sbrk(0)
try:
    buffer = torch.empty(2**31 + 2**28, dtype=torch.uint8)  # 2.25 GiB of address space, never touched
except RuntimeError:
    print("no memory")
    sys.exit()
del buffer
print(libc.sbrk(0) - start)
"""


@pytest.mark.skipif(not has_glibc_malloc(), reason="glibc's malloc only")
def test_keep_freed_memory_keeps_more_than_2_gib_freed_at_once():
    # A magenta-size step frees over 2 GiB at once; mallopt's largest positive trim threshold (2 GiB)
    # would hand it back to the kernel, and the next step would first-touch it all again.
    out = subprocess.run([sys.executable, "-c", _BREAK_AFTER_FREEING_OVER_2_GIB], check=True,
                         capture_output=True, text=True).stdout.strip()
    if out == "no memory":
        pytest.skip("this machine would not give 2.25 GiB of address space")
    assert int(out) > 2**31  # the program break stayed up (trimmed, it would be back within a few pages)


def test_trainer_keep_freed_memory_is_on_for_a_cpu_and_checked(monkeypatch):
    import sketchlab.engine.trainer as trainer_mod
    from sketchlab.validation import ConfigValueError

    calls = []
    monkeypatch.setattr(trainer_mod, "allocator_keep_freed_memory", lambda: calls.append(1) or True)
    assert trainer_mod.Trainer(device="cpu").keeps_freed_memory and calls == [1]
    assert not trainer_mod.Trainer(device="cpu", keep_freed_memory=False).keeps_freed_memory and calls == [1]
    with pytest.raises(ConfigValueError, match="trainer.keep_freed_memory must be auto, true or false, got 'yes'"):
        trainer_mod.Trainer(device="cpu", keep_freed_memory="yes")
