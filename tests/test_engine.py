"""The training loop with a real (tiny) Sketch-RNN on real sheep drawings, in process."""

from __future__ import annotations

import pytest
import torch

from sketchlab.data.augment import SketchRNNAugment
from sketchlab.data.datamodule import SketchDataModule
from sketchlab.data.sources import StrokeNpz
from sketchlab.data.stroke5 import Stroke5Collate
from sketchlab.engine.schedules import magenta_decay
from sketchlab.engine.trainer import Trainer, TrainingDiverged
from sketchlab.models.sketch_rnn import SketchRNN


def parts(shared_data, seed=0):
    torch.manual_seed(seed)
    data = SketchDataModule(StrokeNpz(str(shared_data / "sketch-rnn-datasets/aaron_sheep.npz")), batch_size=6,
                            max_seq_len=80, limit=36, augment=SketchRNNAugment(), seed=seed,
                            collate=Stroke5Collate(max_seq_len=80, pad_to="batch")).setup()
    model = SketchRNN(enc_rnn_size=8, dec_rnn_size=12, z_size=4, num_mixture=2, max_seq_len=80)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    return model, data, opt, magenta_decay(opt)


def quiet(device: str = "cpu", **kw) -> Trainer:
    return Trainer(progress=False, device=device, log_every=1, **kw)


class Recorder:
    def __init__(self):
        self.metrics = []

    def log_metrics(self, metrics, step):
        self.metrics.append((step, dict(metrics)))


def test_resume_is_exact(shared_data, tmp_path):
    model, data, opt, sched = parts(shared_data)
    quiet(max_steps=4, val_every=0, ckpt_every=2).fit(model, data, opt, sched, ckpt_dir=tmp_path / "a")
    straight = {k: v.clone() for k, v in model.state_dict().items()}

    model, data, opt, sched = parts(shared_data)
    quiet(max_steps=2, val_every=0, ckpt_every=2).fit(model, data, opt, sched, ckpt_dir=tmp_path / "b")
    model, data, opt, sched = parts(shared_data, seed=123)  # fresh objects: everything must come from the file
    result = quiet(max_steps=4, val_every=0, ckpt_every=2).fit(model, data, opt, sched, ckpt_dir=tmp_path / "c",
                                                               resume=tmp_path / "b")
    assert result.step == 4
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, straight[key], rtol=0, atol=0, msg=key)
    assert opt.param_groups[0]["lr"] == pytest.approx((1e-3 - 1e-5) * 0.9999**4 + 1e-5)


def test_logs_train_and_val_metrics_with_steps(shared_data):
    model, data, opt, sched = parts(shared_data)
    rec = Recorder()
    seen = []
    quiet(max_steps=3, val_every=3, val_batches=1).fit(model, data, opt, sched, logger=rec,
                                                       on_validation=lambda m, step: seen.append(step))
    steps = [s for s, m in rec.metrics if "train/loss" in m]
    assert steps == [1, 2, 3]
    val = [m for s, m in rec.metrics if "val/loss" in m]
    assert len(val) == 1 and {"val/kl", "val/recon"} <= set(val[0]) and seen == [3]
    assert all({"train/lr", "train/grad_norm", "train/kl_weight"} <= set(m) for s, m in rec.metrics if "train/loss" in m)


def test_nan_stops_with_clear_message_and_no_checkpoint(shared_data, tmp_path):
    model, data, opt, sched = parts(shared_data)
    with torch.no_grad():
        model.output.bias.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="NaN/inf at or before step 1.*No checkpoint was written"):
        quiet(max_steps=3, val_every=0, ckpt_every=1).fit(model, data, opt, sched, ckpt_dir=tmp_path)
    assert not (tmp_path / "last.pt").exists()


def test_value_and_norm_clipping():
    params = [torch.nn.Parameter(torch.zeros(3))]
    params[0].grad = torch.tensor([5.0, -0.5, -7.0])
    quiet(grad_clip=1.0, grad_clip_mode="value")._clip(params)
    torch.testing.assert_close(params[0].grad, torch.tensor([1.0, -0.5, -1.0]))
    params[0].grad = torch.tensor([3.0, 4.0, 0.0])
    norm = quiet(grad_clip=1.0, grad_clip_mode="norm")._clip(params)
    assert float(norm) == pytest.approx(5.0) and float(params[0].grad.norm()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="grad_clip_mode"):
        Trainer(grad_clip_mode="elementwise")


def test_bf16_autocast_trains(shared_data):
    model, data, opt, sched = parts(shared_data)
    rec = Recorder()
    quiet(max_steps=2, val_every=2, val_batches=1, precision="bf16").fit(model, data, opt, sched, logger=rec)
    losses = [m["train/loss"] for _, m in rec.metrics if "train/loss" in m]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="precision"):
        Trainer(precision="fp8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            Trainer(device="cuda")


@pytest.mark.gpu
def test_trains_on_gpu_with_bf16(shared_data):
    model, data, opt, sched = parts(shared_data)
    rec = Recorder()
    quiet("cuda", max_steps=2, val_every=2, val_batches=1, precision="bf16").fit(model, data, opt, sched, logger=rec)
    assert next(model.parameters()).is_cuda
    assert all(torch.isfinite(torch.tensor(m["train/loss"])) for _, m in rec.metrics if "train/loss" in m)


def test_resume_with_another_model_size_is_refused(shared_data, tmp_path):
    model, data, opt, sched = parts(shared_data)
    quiet(max_steps=1, val_every=0, ckpt_every=1).fit(model, data, opt, sched, ckpt_dir=tmp_path)
    other = SketchRNN(enc_rnn_size=8, dec_rnn_size=16, z_size=4, num_mixture=2, max_seq_len=80)
    opt = torch.optim.Adam(other.parameters())
    with pytest.raises(ValueError, match="cannot resume from .*does not fit this model"):
        quiet(max_steps=2, val_every=0).fit(other, data, opt, resume=tmp_path)
