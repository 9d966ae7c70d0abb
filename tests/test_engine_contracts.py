"""What the training loop promises beyond "it runs": exact validation means, train mode after the
validation callback, and best.pt holding the best validated step. Tiny Sketch-RNNs on the sheep data."""

from __future__ import annotations

import math

import pytest
import torch

from sketchlab.data.datamodule import SketchDataModule
from sketchlab.data.sources import StrokeNpz
from sketchlab.data.stroke5 import Stroke5Collate
from sketchlab.engine.trainer import Trainer
from sketchlab.models.sketch_rnn import SketchRNN

SIZES = dict(enc_rnn_size=8, dec_rnn_size=12, z_size=4, num_mixture=2, max_seq_len=80)


def sheep(data_root, eval_batch_size: int = 6) -> SketchDataModule:
    """16 sketches a split, padded to max_seq_len so that a sketch's loss does not depend on its batch."""
    return SketchDataModule(StrokeNpz(str(data_root / "sketch-rnn-datasets/aaron_sheep.npz")), batch_size=6,
                            eval_batch_size=eval_batch_size, max_seq_len=80, limit=16,
                            collate=Stroke5Collate(max_seq_len=80, pad_to="max_seq_len")).setup()


def quiet(**kw) -> Trainer:
    return Trainer(progress=False, device="cpu", **{"log_every": 0, **kw})


class Recorder:
    def __init__(self):
        self.metrics: list[tuple[int, dict[str, float]]] = []

    def log_metrics(self, metrics, step):
        self.metrics.append((step, dict(metrics)))

    def val_losses(self) -> dict[int, float]:
        return {step: m["val/loss"] for step, m in self.metrics if "val/loss" in m}


def test_validation_is_the_mean_over_sketches_when_the_last_batch_is_smaller(data_root):
    data = sheep(data_root, eval_batch_size=5)
    valid = data.sketches("valid")
    assert len(valid) % 5 != 0  # the last batch is smaller: a mean of batch means would differ
    torch.manual_seed(0)
    # unconditional: no sampled z, so in eval mode a sketch's loss is a deterministic function of the sketch
    model = SketchRNN(conditional=False, **SIZES)
    rec = Recorder()
    quiet(max_steps=1, val_every=1, ckpt_every=0).fit(model, data, torch.optim.Adam(model.parameters()), logger=rec)

    model.eval()
    with torch.no_grad():
        per_sketch = [model.loss(data.collate([s]), step=0) for s in valid]
    expected = {k: sum(float(out[k]) for out in per_sketch) / len(valid) for k in ("loss", "recon", "pen_ce")}
    (logged,) = [m for _, m in rec.metrics if "val/loss" in m]
    for key, value in expected.items():
        assert logged[f"val/{key}"] == pytest.approx(value, rel=1e-5), key


class TrainingModeRecorder(SketchRNN):
    """Records, for each loss computed with gradients (a training step), whether the model was in train mode."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.train_steps: list[tuple[int, bool]] = []

    def loss(self, batch, step=0):
        if torch.is_grad_enabled():
            self.train_steps.append((step, self.training))
        return super().loss(batch, step)


def test_training_goes_on_in_train_mode_after_a_callback_that_switches_to_eval(data_root):
    data = sheep(data_root)
    torch.manual_seed(0)
    model = TrainingModeRecorder(**SIZES)
    seen = []

    def render(m, step):  # as the sample renderer: draws in eval mode and leaves it so
        m.eval()
        seen.append(step)

    quiet(max_steps=5, val_every=2, val_batches=1, ckpt_every=0).fit(
        model, data, torch.optim.Adam(model.parameters()), on_validation=render)
    assert seen == [2, 4, 5]
    # dropout and the unmasked pen loss must be on for every step, also those after a validation
    assert model.train_steps == [(step, True) for step in range(5)]


class WorseningValidation(SketchRNN):
    """Validation loss plus a penalty that is lowest at step 3, so the best validated step is the second one."""

    def loss(self, batch, step=0):
        out = super().loss(batch, step)
        if not self.training:
            out = {**out, "loss": out["loss"] + 10.0 * abs(step - 3)}
        return out


def test_best_checkpoint_keeps_the_step_with_the_lowest_validation_loss(data_root, tmp_path):
    data = sheep(data_root)
    torch.manual_seed(0)
    model = WorseningValidation(**SIZES)
    rec = Recorder()
    quiet(max_steps=8, val_every=2, val_batches=1, ckpt_every=2).fit(
        model, data, torch.optim.Adam(model.parameters()), logger=rec, ckpt_dir=tmp_path)
    val = rec.val_losses()
    assert sorted(val) == [2, 4, 6, 8] and min(val, key=val.get) == 4  # worse again after step 4
    best = torch.load(tmp_path / "best.pt", weights_only=False)
    last = torch.load(tmp_path / "last.pt", weights_only=False)
    assert best["step"] == 4 and last["step"] == 8
    assert best["best_val"] == pytest.approx(min(val.values())) == last["best_val"]
    assert math.isfinite(best["best_val"])
    # best.pt holds the weights of step 4, not those trained on afterwards
    assert any(not torch.equal(best["model"][k], v) for k, v in last["model"].items())
