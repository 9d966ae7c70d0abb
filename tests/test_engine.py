"""The training loop with a real (tiny) Sketch-RNN on the sheep drawings (or their self-made stand-in), in process."""

from __future__ import annotations

import time

import pytest
import torch

from sketchlab.data.augment import SketchRNNAugment
from sketchlab.data.datamodule import SketchDataModule
from sketchlab.data.sources import StrokeNpz
from sketchlab.data.stroke5 import Stroke5Collate
from sketchlab.engine.schedules import magenta_decay
from sketchlab.engine.trainer import Trainer, TrainingDiverged
from sketchlab.models.sketch_rnn import SketchRNN


def parts(data_root, seed=0):
    torch.manual_seed(seed)
    data = SketchDataModule(StrokeNpz(str(data_root / "sketch-rnn-datasets/aaron_sheep.npz")), batch_size=6,
                            max_seq_len=80, limit=36, augment=SketchRNNAugment(), seed=seed,
                            collate=Stroke5Collate(max_seq_len=80, pad_to="batch")).setup()
    model = SketchRNN(enc_rnn_size=8, dec_rnn_size=12, z_size=4, num_mixture=2, max_seq_len=80)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    return model, data, opt, magenta_decay(opt)


def quiet(device: str = "cpu", **kw) -> Trainer:
    return Trainer(progress=False, device=device, **{"log_every": 1, **kw})


class Recorder:
    def __init__(self):
        self.metrics = []

    def log_metrics(self, metrics, step):
        self.metrics.append((step, dict(metrics)))


def test_resume_is_exact(data_root, tmp_path):
    model, data, opt, sched = parts(data_root)
    quiet(max_steps=4, val_every=0, ckpt_every=2).fit(model, data, opt, sched, ckpt_dir=tmp_path / "a")
    straight = {k: v.clone() for k, v in model.state_dict().items()}

    model, data, opt, sched = parts(data_root)
    quiet(max_steps=2, val_every=0, ckpt_every=2).fit(model, data, opt, sched, ckpt_dir=tmp_path / "b")
    model, data, opt, sched = parts(data_root, seed=123)  # fresh objects: everything must come from the file
    result = quiet(max_steps=4, val_every=0, ckpt_every=2).fit(model, data, opt, sched, ckpt_dir=tmp_path / "c",
                                                               resume=tmp_path / "b")
    assert result.step == 4
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, straight[key], rtol=0, atol=0, msg=key)
    assert opt.param_groups[0]["lr"] == pytest.approx((1e-3 - 1e-5) * 0.9999**4 + 1e-5)


def test_training_time_adds_up_over_resumes_without_the_gap(data_root, tmp_path):
    from sketchlab.engine.checkpoint import load_checkpoint, save_checkpoint

    model, data, opt, sched = parts(data_root)
    quiet(max_steps=2, val_every=0, ckpt_every=2).fit(model, data, opt, sched, ckpt_dir=tmp_path / "a")
    state = load_checkpoint(tmp_path / "a")
    assert 0 < state["train_time_s"] < 60
    state["train_time_s"] = 1000.0  # as if the first segment had trained for 1,000 s, then sat idle
    save_checkpoint(tmp_path / "b" / "last.pt", state)
    model, data, opt, sched = parts(data_root)
    rec = Recorder()
    t0 = time.perf_counter()
    quiet(max_steps=4, val_every=0, ckpt_every=4).fit(model, data, opt, sched, logger=rec, ckpt_dir=tmp_path / "c",
                                                      resume=tmp_path / "b")
    second = time.perf_counter() - t0
    times = [m["train/time_s"] for s, m in rec.metrics if "train/time_s" in m]
    assert len(times) == 2 and 1000 < times[0] < times[1] < 1000 + second
    assert times[1] <= load_checkpoint(tmp_path / "c")["train_time_s"] < 1000 + second


def test_logs_train_and_val_metrics_with_steps(data_root):
    model, data, opt, sched = parts(data_root)
    rec = Recorder()
    seen = []
    quiet(max_steps=3, val_every=3, val_batches=1).fit(model, data, opt, sched, logger=rec,
                                                       on_validation=lambda m, step: seen.append(step))
    steps = [s for s, m in rec.metrics if "train/loss" in m]
    assert steps == [1, 2, 3]
    val = [m for s, m in rec.metrics if "val/loss" in m]
    assert len(val) == 1 and {"val/kl", "val/recon"} <= set(val[0]) and seen == [3]
    assert all({"train/lr", "train/grad_norm", "train/kl_weight"} <= set(m) for s, m in rec.metrics if "train/loss" in m)


def test_metrics_of_a_step_are_flushed_before_its_checkpoint(data_root, tmp_path, monkeypatch):
    # A kill right after a checkpoint resumes after its step, and the resumed run never logs that step's
    # metrics again: they must be out of the logger's queue (in the store or its spool) before the file exists.
    import sketchlab.engine.trainer as trainer_module

    events = []

    class FlushingRecorder(Recorder):
        def __init__(self):
            super().__init__()
            self.queued = []

        def log_metrics(self, metrics, step):
            self.queued.append(step)

        def flush(self):
            self.metrics += [(s, {}) for s in self.queued]
            self.queued = []
            events.append(("flush", max((s for s, _ in self.metrics), default=0)))

    real_save = trainer_module.save_checkpoint

    def save(path, state):
        events.append(("checkpoint", state["step"], [s for s in rec.queued]))
        return real_save(path, state)

    monkeypatch.setattr(trainer_module, "save_checkpoint", save)
    model, data, opt, sched = parts(data_root)
    rec = FlushingRecorder()
    quiet(max_steps=4, val_every=0, ckpt_every=2).fit(model, data, opt, sched, logger=rec, ckpt_dir=tmp_path)
    checkpoints = [e for e in events if e[0] == "checkpoint"]
    assert [e[1] for e in checkpoints] == [2, 4]
    assert all(queued == [] for _, _, queued in checkpoints)  # nothing of the step still waiting in the queue
    assert events.index(("flush", 2)) < events.index(checkpoints[0])


def test_nan_stops_with_clear_message_and_no_checkpoint(data_root, tmp_path):
    model, data, opt, sched = parts(data_root)
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


def test_bf16_autocast_trains(data_root):
    model, data, opt, sched = parts(data_root)
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
def test_trains_on_gpu_with_bf16(data_root):
    model, data, opt, sched = parts(data_root)
    rec = Recorder()
    quiet("cuda", max_steps=2, val_every=2, val_batches=1, precision="bf16").fit(model, data, opt, sched, logger=rec)
    assert next(model.parameters()).is_cuda
    assert all(torch.isfinite(torch.tensor(m["train/loss"])) for _, m in rec.metrics if "train/loss" in m)


def test_resume_with_another_model_size_is_refused(data_root, tmp_path):
    model, data, opt, sched = parts(data_root)
    quiet(max_steps=1, val_every=0, ckpt_every=1).fit(model, data, opt, sched, ckpt_dir=tmp_path)
    other = SketchRNN(enc_rnn_size=8, dec_rnn_size=16, z_size=4, num_mixture=2, max_seq_len=80)
    opt = torch.optim.Adam(other.parameters())
    with pytest.raises(ValueError, match="cannot resume from .*does not fit this model"):
        quiet(max_steps=2, val_every=0).fit(other, data, opt, resume=tmp_path)


class PoisonedBatches(SketchRNN):
    """A Sketch-RNN whose loss is NaN for one particular batch (the first one seen at ``poison_step``)."""

    def __init__(self, poison_step: int, always: bool = False, **kw):
        super().__init__(**kw)
        self.poison_step, self.always, self.poison = poison_step, always, None

    def loss(self, batch, step=0):
        out = super().loss(batch, step)
        key = float(batch["strokes"].sum()) if "strokes" in batch else float(next(iter(batch.values())).sum())
        if step == self.poison_step and self.poison is None:
            self.poison = key
        if self.always and step >= self.poison_step or key == self.poison:
            out = {**out, "loss": out["loss"] * float("nan")}
        return out


def poisoned(data_root, poison_step, always=False):
    model, data, _, _ = parts(data_root)
    torch.manual_seed(0)
    model = PoisonedBatches(poison_step, always, enc_rnn_size=8, dec_rnn_size=12, z_size=4, num_mixture=2,
                            max_seq_len=80)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    return model, data, opt, magenta_decay(opt)


def test_rewind_skips_the_bad_batch_lowers_lr_and_logs_each_step_once(data_root, tmp_path):
    model, data, opt, sched = poisoned(data_root, poison_step=3)
    rec = Recorder()
    result = quiet(max_steps=6, val_every=0, ckpt_every=2, on_nan="rewind", rewind_lr_factor=0.5).fit(
        model, data, opt, sched, logger=rec, ckpt_dir=tmp_path)
    assert result.rewinds == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
    train_steps = [s for s, m in rec.metrics if "train/loss" in m]
    assert train_steps == [1, 2, 3, 4, 5, 6]  # steps 3.. replayed after the rewind to step 2, logged once
    assert [(s, m["train/rewinds"]) for s, m in rec.metrics if "train/rewinds" in m] == [(4, 1)]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * ((1e-3 - 1e-5) * 0.9999**6 + 1e-5))
    assert torch.load(tmp_path / "last.pt", weights_only=False)["step"] == 6


def test_rewind_gives_up_after_max_rewinds(data_root):
    model, data, opt, sched = poisoned(data_root, poison_step=1, always=True)
    with pytest.raises(TrainingDiverged, match="after 2 rewinds"):
        quiet(max_steps=5, val_every=0, ckpt_every=1, on_nan="rewind", max_rewinds=2).fit(model, data, opt, sched)


def test_no_checkpoint_is_written_after_a_nan_and_the_error_names_the_good_one(data_root, tmp_path):
    model, data, opt, sched = poisoned(data_root, poison_step=2)
    with pytest.raises(TrainingDiverged, match=f"NaN/inf at or before step 3.*{tmp_path / 'last.pt'}"):
        quiet(max_steps=6, val_every=0, ckpt_every=1, log_every=100).fit(model, data, opt, sched, ckpt_dir=tmp_path)
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values())


class SignalAt(SketchRNN):
    """Sends this process a signal during a given step, as a scheduler would."""

    def __init__(self, step: int, signum: int, **kw):
        super().__init__(**kw)
        self.at, self.signum = step, signum

    def loss(self, batch, step=0):
        if step == self.at:
            import os

            os.kill(os.getpid(), self.signum)
        return super().loss(batch, step)


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_stop_signal_writes_a_checkpoint_at_the_current_step(data_root, tmp_path, signame):
    import signal

    from sketchlab.engine.trainer import Preempted

    _, data, _, _ = parts(data_root)
    model = SignalAt(2, getattr(signal, signame), enc_rnn_size=8, dec_rnn_size=12, z_size=4, num_mixture=2,
                     max_seq_len=80)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Preempted, match=f"{signame} at step 3") as info:
        quiet(max_steps=10, val_every=0, ckpt_every=100).fit(model, data, opt, ckpt_dir=tmp_path)
    assert info.value.checkpoint == tmp_path / "last.pt"
    assert torch.load(tmp_path / "last.pt", weights_only=False)["step"] == 3
    assert signal.getsignal(signal.SIGTERM) is before  # handlers are put back


def test_kept_hparams_win_over_the_checkpoint(data_root, tmp_path):
    model, data, opt, sched = parts(data_root)
    quiet(max_steps=2, val_every=0, ckpt_every=2).fit(model, data, opt, sched, ckpt_dir=tmp_path)
    model, data, _, _ = parts(data_root)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.5)
    sched = magenta_decay(opt)
    quiet(max_steps=3, val_every=0).fit(model, data, opt, sched, resume=tmp_path / "last.pt",
                                        keep_hparams={"lr", "weight_decay"})
    group = opt.param_groups[0]
    assert group["weight_decay"] == 0.5
    assert group["lr"] == pytest.approx((5e-4 - 1e-5) * 0.9999**3 + 1e-5)

    model, data, _, _ = parts(data_root)  # without keep_hparams the checkpoint's values come back
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.5)
    quiet(max_steps=3, val_every=0).fit(model, data, opt, magenta_decay(opt), resume=tmp_path / "last.pt")
    assert opt.param_groups[0]["weight_decay"] == 0


def test_deterministic_mode_trains_and_is_switched_off_again(data_root):
    model, data, opt, sched = parts(data_root)
    rec = Recorder()
    try:
        quiet(max_steps=2, val_every=0, deterministic=True).fit(model, data, opt, sched, logger=rec)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        quiet(max_steps=0, val_every=0).fit(*parts(data_root))  # a default trainer turns it off
    assert not torch.are_deterministic_algorithms_enabled()
    assert len([m for _, m in rec.metrics if "train/loss" in m]) == 2
