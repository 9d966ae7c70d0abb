"""One training loop for every sketch model, on CPU or GPU, single process or torchrun/DDP."""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sketchlab.engine.evaluation import loss_sums, to_device
from sketchlab.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from sketchlab.engine.runtime import DistInfo, init_distributed, pick_device, seed_everything, set_deterministic
from sketchlab.memory import keep_freed_memory as allocator_keep_freed_memory  # a parameter has its name
from sketchlab.models.base import SketchModel
from sketchlab.validation import ConfigValueError, check_bool, check_choice, check_device, check_float, check_int

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class _LossModule(nn.Module):
    """Exposes ``model.loss`` as ``forward`` so DistributedDataParallel can hook gradient sync onto it."""

    def __init__(self, model: SketchModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        return self.model.loss(batch, step)


@dataclass
class TrainResult:
    step: int
    best_val: float
    last_val: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None
    rewinds: int = 0
    stopped_early: bool = False  # ``should_stop`` ended the run before ``max_steps`` (``step`` is where)


class Trainer:
    """Runs optimisation steps with validation, checkpoints and logging.

    ``precision="bf16"`` autocasts the forward pass to bfloat16 (on GPUs that support it; the loss
    itself is computed in float32 by the models). ``grad_clip_mode`` is ``"norm"`` (global norm) or
    ``"value"`` (element-wise, as magenta's Sketch-RNN). ``val_every``/``ckpt_every``/``log_every``
    are in steps; 0 disables. ``threads`` sets torch's CPU threads (None or 0: torch's default; ``auto``: 1 on
    a CPU, where these small-op loops run fastest on one thread, torch's default on a GPU).
    ``keep_freed_memory`` (``auto``: on a CPU) makes glibc reuse freed memory rather than hand it back
    (:func:`~sketchlab.memory.keep_freed_memory`), sparing each step the page faults of its buffers.
    Bad values raise :class:`~sketchlab.validation.ConfigValueError` naming the ``trainer.*`` key.

    A checkpoint is only written from finite weights whose losses since the previous one were all
    finite. On a NaN/inf loss the run stops (``on_nan="stop"``) or, with ``on_nan="rewind"``, goes back
    to the last good state, multiplies the learning rate by ``rewind_lr_factor``, skips the offending
    batch and goes on, at most ``max_rewinds`` times. SIGTERM/SIGINT write a checkpoint at the current
    step and raise :class:`Preempted`. ``deterministic`` turns on ``torch.use_deterministic_algorithms``.
    """

    def __init__(self, max_steps: int = 10000, val_every: int = 500, log_every: int = 50, ckpt_every: int = 500,
                 val_batches: int | None = None, grad_clip: float | None = 1.0, grad_clip_mode: str = "norm",
                 precision: str | int = "32", device: str = "auto", progress: bool = True,
                 seed: int = 0, threads: int | str | None = "auto", on_nan: str = "stop", max_rewinds: int = 3,
                 rewind_lr_factor: float = 0.5, deterministic: bool = False,
                 keep_freed_memory: bool | str = "auto") -> None:
        # the keys users write (conf/trainer/*.yaml is the `trainer` node), so errors name what to fix
        self.max_steps = check_int(max_steps, "trainer.max_steps", min=0)
        self.val_every = check_int(val_every, "trainer.val_every", min=0)
        self.log_every = check_int(log_every, "trainer.log_every", min=0)
        self.ckpt_every = check_int(ckpt_every, "trainer.ckpt_every", min=0)
        self.val_batches = check_int(val_batches, "trainer.val_batches", min=1, optional=True)
        self.grad_clip = check_float(grad_clip, "trainer.grad_clip", min=0, optional=True)
        self.grad_clip_mode = check_choice(grad_clip_mode, "trainer.grad_clip_mode", ("norm", "value"))
        self.precision = check_choice(precision, "trainer.precision", ("32", "bf16"))
        self.device = pick_device(check_device(device, "trainer.device"))
        if str(threads) == "auto":
            # our models are loops of small ops (RNN steps, ODE stages): on a CPU, threads only add sync cost.
            # Measured with the quickstart on a busy 2-core machine: 122 sketches/s on 1 thread, 8.4 on 2.
            threads = 1 if self.device.type == "cpu" else None
        threads = check_int(threads, "trainer.threads", min=0, optional=True)
        if threads:
            torch.set_num_threads(threads)
        if keep_freed_memory == "auto":
            keep_freed_memory = self.device.type == "cpu"
        if not isinstance(keep_freed_memory, bool):
            raise ConfigValueError(f"trainer.keep_freed_memory must be auto, true or false, got {keep_freed_memory!r}")
        self.keeps_freed_memory = keep_freed_memory and allocator_keep_freed_memory()
        if self.precision == "bf16" and self.device.type == "cpu":
            log.warning("trainer.precision=bf16 on a CPU: autocast to bfloat16 is usually slower there than float32")
        self.progress = check_bool(progress, "trainer.progress")
        self.seed = check_int(seed, "trainer.seed")
        self.dist = DistInfo()
        self.on_nan = check_choice(on_nan, "trainer.on_nan", ("stop", "rewind"))
        self.max_rewinds = check_int(max_rewinds, "trainer.max_rewinds", min=0)
        self.rewind_lr_factor = check_float(rewind_lr_factor, "trainer.rewind_lr_factor", above=0, max=1)
        self.deterministic = check_bool(deterministic, "trainer.deterministic")

    # -- pieces -----------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _clip(self, params: Iterable[torch.Tensor]) -> torch.Tensor | None:
        if not self.grad_clip:
            return None
        if self.grad_clip_mode == "value":
            torch.nn.utils.clip_grad_value_(params, self.grad_clip)
            return None
        return torch.nn.utils.clip_grad_norm_(params, self.grad_clip)

    @torch.no_grad()
    def validate(self, model: SketchModel, data: Any, split: str = "valid") -> dict[str, float]:
        """Mean of each loss entry over the split (weighted by batch size), model in eval mode."""
        was_training = model.training
        model.eval()
        sums, count = loss_sums(model, data.eval_batches(split, self.val_batches), self.device, self._step,
                                self._autocast)
        model.train(was_training)
        if self.dist.world_size > 1:
            keys = sorted(sums)
            t = torch.tensor([sums[k] for k in keys] + [count], dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(t)
            sums, count = dict(zip(keys, t[:-1].tolist())), int(t[-1])
        return {k: v / max(count, 1) for k, v in sums.items()}

    def _checkpoint_state(self, model, optimizer, scheduler, data, step, best_val, extra) -> dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "data": data.state_dict() if hasattr(data, "state_dict") else None,
                "step": step, "best_val": best_val, "rng": rng_state(), **extra}

    def _restore(self, state: dict[str, Any], model: SketchModel, optimizer: torch.optim.Optimizer,
                 scheduler: Any, data: Any, keep_hparams: Collection[str] = (), keep_schedule: bool = False,
                 source: Any = "checkpoint") -> None:
        """Load a checkpoint's states into the live objects.

        ``keep_hparams`` names optimizer hyper-parameters (param-group keys such as ``lr`` or
        ``weight_decay``) whose freshly configured values win over the checkpoint's; with
        ``keep_schedule`` the freshly built schedule's settings win too. Without them a resumed run
        silently trains with the old values (the optimizer state dict carries its param groups).
        """
        fresh_groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
        fresh_sched = _schedule_settings(scheduler) if scheduler is not None else None
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise ValueError(f"cannot resume from {source}: the checkpoint does not fit this model/optimizer "
                             f"config (resume with the settings it was trained with). {exc}") from exc
        _move_optimizer_state(optimizer, self.device)
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        for group, fresh in zip(optimizer.param_groups, fresh_groups):
            for key in keep_hparams:
                if key in fresh:
                    group[key] = fresh[key]
        if scheduler is not None and (keep_schedule or "lr" in keep_hparams):
            _apply_schedule_settings(scheduler, fresh_sched, lrs=[g["lr"] for g in fresh_groups]
                                     if "lr" in keep_hparams else None, settings=keep_schedule)
        if state.get("data") is not None and hasattr(data, "load_state_dict"):
            data.load_state_dict(state["data"])
        set_rng_state(state["rng"])

    # -- the loop ---------------------------------------------------------------------------------
    def fit(self, model: SketchModel, data: Any, optimizer: torch.optim.Optimizer,
            scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, logger: Any = None,
            ckpt_dir: str | Path | None = None, resume: str | Path | dict[str, Any] | None = None,
            on_validation: Callable[[SketchModel, int], None] | None = None,
            checkpoint_extra: dict[str, Any] | None = None, keep_hparams: Collection[str] = (),
            keep_schedule: bool = False,
            should_stop: Callable[[int, dict[str, float]], bool] | None = None) -> TrainResult:
        """Train ``model`` until ``max_steps``; ``resume`` continues a checkpoint (file, run dir or loaded state).

        The optimizer must already hold ``model``'s parameters; the model is moved to the device here.
        ``keep_hparams``/``keep_schedule``: see :meth:`_restore`. ``should_stop(step, val losses)`` is called
        on the main process after each validation; when it returns True the run ends at that step, with a
        checkpoint, and the result has ``stopped_early`` (e.g. a hyper-parameter search pruning a trial).
        """
        self.dist = init_distributed(self.device)
        set_deterministic(self.deterministic)
        is_main = self.dist.is_main
        model.to(self.device)
        _move_optimizer_state(optimizer, self.device)
        ckpt_dir = Path(ckpt_dir) if ckpt_dir else None
        extra = dict(checkpoint_extra or {})
        start, best_val = 0, math.inf
        # wall time spent in fit() over all segments of the run (resumes add to it; idle time between them
        # doesn't count), kept in the checkpoint and logged as train/time_s
        trained_before, fit_t0 = 0.0, time.perf_counter()
        if resume is not None and not isinstance(resume, dict):
            state = load_checkpoint(resume, map_location=self.device)
        else:
            state = resume
        if state is not None:
            self._restore(state, model, optimizer, scheduler, data, keep_hparams, keep_schedule,
                          source=resume if not isinstance(resume, dict) else "the checkpoint")
            start, best_val = int(state["step"]), float(state.get("best_val", math.inf))
            trained_before = float(state.get("train_time_s", 0.0))
            log.info("resumed at step %d", start)
        else:
            # the training stream (dropout, augmentation draws) differs per rank; the weights don't
            seed_everything(self.seed + self.dist.rank)
        self._step = start

        runner: nn.Module = _LossModule(model)
        if self.dist.world_size > 1:
            runner = nn.parallel.DistributedDataParallel(
                runner, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        logger = logger if (logger is not None and is_main) else None

        from tqdm.auto import tqdm

        bar = tqdm(total=self.max_steps, initial=start, disable=not (self.progress and is_main),
                   dynamic_ncols=True, desc="train")
        sums: dict[str, torch.Tensor] = {}
        bad = torch.zeros((), dtype=torch.bool, device=self.device)
        n_acc, t0 = 0, time.perf_counter()
        data_wait = 0.0  # seconds the steps since the last log spent waiting for their batch
        last_val: dict[str, float] = {}
        validated_at = -1  # best.pt only ever holds weights that were validated at its step
        last_ckpt: Path | None = None
        best_ckpt: Path | None = None
        batches = data.train_batches()
        params = [p for p in model.parameters() if p.requires_grad]
        rewind = self.on_nan == "rewind"
        # what a rewind goes back to: a copy, since state dicts hold references to the live tensors
        good = copy.deepcopy(self._checkpoint_state(model, optimizer, scheduler, data, start, best_val, {})) \
            if rewind else None
        good_scale, lr_scale, rewinds = 1.0, 1.0, 0
        skip_steps: set[int] = set()
        logged_upto = start  # a rewind replays steps: each step's metrics are logged once
        stopped_early = False
        model.train()

        def train_time() -> float:
            return trained_before + time.perf_counter() - fit_t0

        def log_metrics(metrics: dict[str, float], step: int, force: bool = False) -> None:
            if logger is not None and (force or step > logged_upto):
                logger.log_metrics(metrics, step)

        def diverged(step: int) -> TrainingDiverged:
            where = ", ".join(str(p) for p in (last_ckpt, best_ckpt) if p) or None
            return TrainingDiverged(
                f"loss became NaN/inf at or before step {step}; stopping. "
                + (f"Checkpoints written from finite weights and losses: {where} (best.pt has the lowest "
                   "validation loss and is the safer restart). " if where else "No checkpoint was written. ")
                + "Try a lower learning rate (optim.lr), gradient clipping (trainer.grad_clip), trainer.precision=32, "
                  "or trainer.on_nan=rewind.")

        def check_finite(step: int) -> None:
            if bool(bad):
                raise diverged(step)

        with _StopSignals() as stop:
            try:
                step = start
                while step < self.max_steps:
                    self._step = step
                    wait0 = time.perf_counter()
                    batch = next(batches)
                    if step in skip_steps:  # the batch that made this step diverge before a rewind
                        skip_steps.discard(step)
                        batch = next(batches)
                    data_wait += time.perf_counter() - wait0
                    batch = to_device(batch, self.device)
                    with self._autocast():
                        out = runner(batch, step)
                    loss = out["loss"]
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    grad_norm = self._clip(params)
                    if rewind and not (torch.isfinite(loss) and (grad_norm is None or torch.isfinite(grad_norm))):
                        rewinds += 1
                        if rewinds > self.max_rewinds:
                            raise TrainingDiverged(f"loss or gradient became NaN/inf at step {step + 1} after "
                                                   f"{self.max_rewinds} rewinds (trainer.max_rewinds); stopping")
                        lr_scale *= self.rewind_lr_factor
                        log.warning("non-finite loss at step %d: rewinding to step %d with lr x%g (rewind %d of %d)",
                                    step + 1, good["step"], lr_scale, rewinds, self.max_rewinds)
                        log_metrics({"train/rewinds": rewinds, "train/rewind_lr_scale": lr_scale}, step + 1,
                                    force=True)
                        skip_steps.add(step)
                        _close(batches)  # a prefetching stream must stop before its state is replaced
                        self._restore(copy.deepcopy(good), model, optimizer, scheduler, data)
                        _scale_lr(optimizer, scheduler, lr_scale / good_scale)
                        batches = data.train_batches()
                        step, best_val = int(good["step"]), float(good["best_val"])
                        sums, n_acc, t0, data_wait = {}, 0, time.perf_counter(), 0.0
                        bar.reset(total=self.max_steps)
                        bar.update(step)
                        continue
                    optimizer.step()
                    if scheduler is not None:
                        scheduler.step()
                    bad |= ~torch.isfinite(loss.detach())
                    for key, value in out.items():
                        v = value.detach().float()
                        sums[key] = sums[key] + v if key in sums else v
                    if grad_norm is not None:
                        sums["grad_norm"] = sums.get("grad_norm", 0) + grad_norm.detach().float()
                    n_acc += 1
                    step = done = step + 1
                    bar.update(1)

                    if self.log_every and (done % self.log_every == 0 or done == self.max_steps):
                        check_finite(done)
                        elapsed = time.perf_counter() - t0
                        metrics = {f"train/{k}": float(v) / n_acc for k, v in sums.items()}
                        metrics["train/lr"] = optimizer.param_groups[0]["lr"]
                        metrics["train/steps_per_s"] = n_acc / max(elapsed, 1e-9)
                        # time a step waited for its batch (~0 when the prefetch thread keeps ahead)
                        metrics["train/data_wait_ms"] = 1000 * data_wait / n_acc
                        metrics["train/time_s"] = train_time()
                        bar.set_postfix(loss=f"{metrics['train/loss']:.4f}")
                        if not (self.progress and is_main):  # without a bar, the console and train.log get a line
                            log.info("step %d/%d: loss %.4f, lr %.3g, %.2f steps/s", done, self.max_steps,
                                     metrics["train/loss"], metrics["train/lr"], metrics["train/steps_per_s"])
                        log_metrics(metrics, done)
                        sums, n_acc, t0, data_wait = {}, 0, time.perf_counter(), 0.0

                    if self.val_every and (done % self.val_every == 0 or done == self.max_steps):
                        check_finite(done)
                        last_val, validated_at = self.validate(model, data), done
                        if not all(math.isfinite(v) for v in last_val.values()):
                            raise TrainingDiverged(
                                f"validation loss is not finite at step {done} ({last_val}) while the training "
                                "loss is: check the valid split of the data for bad values")
                        best_val = min(best_val, last_val.get("loss", math.inf))
                        log_metrics({f"val/{k}": v for k, v in last_val.items()}, done)
                        if on_validation is not None and is_main:
                            on_validation(model, done)
                        model.train()
                        stopped_early = self._ask_stop(should_stop, done, last_val)

                    stopping = stop.requested(self.dist.world_size, self.device)
                    # a run stopped early keeps its last step, as one that reaches max_steps
                    periodic = (self.ckpt_every and (done % self.ckpt_every == 0 or done == self.max_steps)
                                or stopped_early)
                    writes = (ckpt_dir is not None and is_main) or rewind
                    if (periodic or stopping) and writes and not bool(bad) and _finite(params):
                        state = self._checkpoint_state(model, optimizer, scheduler, data, done, best_val,
                                                       {**extra, "train_time_s": train_time()})
                        if ckpt_dir is not None and is_main:
                            if logger is not None and hasattr(logger, "flush"):
                                # metrics up to a checkpoint reach the store (or the spool) before it: a run
                                # killed right after writing it resumes after this step and never logs the
                                # step's metrics again, so they must not still be queued then
                                logger.flush()
                            last_ckpt = save_checkpoint(ckpt_dir / "last.pt", state)
                            if validated_at == done and last_val.get("loss", math.inf) <= best_val:
                                best_ckpt = save_checkpoint(ckpt_dir / "best.pt", state)
                        if rewind:
                            good, good_scale = copy.deepcopy(state), lr_scale
                    elif (periodic or stopping) and writes:
                        check_finite(done)
                        raise diverged(done)  # finite losses but non-finite weights
                    logged_upto = max(logged_upto, done)
                    if stopping:
                        raise Preempted(stop.signum, done, last_ckpt)
                    if stopped_early:
                        log.info("stopped at step %d of %d: asked to after validation", done, self.max_steps)
                        break
                check_finite(step if stopped_early else self.max_steps)
            finally:
                _close(batches)  # stops a prefetch thread; the data state is that of the next batch
                bar.close()
        return TrainResult(step=step if stopped_early else max(self.max_steps, start), best_val=best_val,
                           last_val=last_val, checkpoint=last_ckpt, rewinds=rewinds, stopped_early=stopped_early)

    def _ask_stop(self, should_stop: Callable[[int, dict[str, float]], bool] | None, step: int,
                  val: dict[str, float]) -> bool:
        """``should_stop``'s answer on the main process, the same on every rank (all stop at one step)."""
        stop = bool(should_stop(step, dict(val))) if should_stop is not None and self.dist.is_main else False
        if self.dist.world_size > 1:  # other ranks have no hook: they learn the main process's answer
            flag = torch.tensor([int(stop)], device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            stop = bool(int(flag))
        return stop


class Preempted(RuntimeError):
    """A stop signal (SIGTERM, SIGINT) arrived; a checkpoint of the current step was written."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} at step {step}"
                         + (f"; checkpoint {checkpoint}" if checkpoint else "; no checkpoint directory"))


class _StopSignals:
    """Turns SIGTERM/SIGINT into a flag the loop checks after each step (a second SIGINT aborts at once).

    SLURM and other schedulers send SIGTERM before killing a job; finishing the step and writing a
    checkpoint then is what lets ``resume=`` lose nothing.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("%s received: stopping after this step with a checkpoint", signal.Signals(signum).name)

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def requested(self, world_size: int, device: torch.device) -> bool:
        """Whether any rank was asked to stop (all ranks must stop at the same step)."""
        if world_size > 1:
            flag = torch.tensor([self.signum or 0], device=device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            if int(flag) and self.signum is None:
                self.signum = int(flag)
        return self.signum is not None


def _close(batches: Any) -> None:
    """Close a batch stream that can be closed (a prefetching stream's thread, a generator)."""
    close = getattr(batches, "close", None)
    if close is not None:
        close()


def _finite(params: Iterable[torch.Tensor]) -> bool:
    """Whether every parameter is finite (one sync for all of them)."""
    params = list(params)
    return not params or bool(torch.stack([torch.isfinite(p).all() for p in params]).all())


def _schedule_settings(scheduler: Any) -> dict[str, Any]:
    """The configurable part of a scheduler: its lr factors' settings (LambdaLR) and base lrs."""
    lambdas = [copy.deepcopy(vars(f)) for f in getattr(scheduler, "lr_lambdas", []) if hasattr(f, "__dict__")]
    return {"lambdas": lambdas, "base_lrs": list(getattr(scheduler, "base_lrs", []))}


def _apply_schedule_settings(scheduler: Any, fresh: dict[str, Any] | None, lrs: list[float] | None,
                             settings: bool) -> None:
    """Put freshly configured schedule settings and/or base lrs into a restored scheduler, then recompute lr."""
    if fresh is None:
        return
    if settings:
        for f, attrs in zip(getattr(scheduler, "lr_lambdas", []), fresh["lambdas"]):
            vars(f).update(copy.deepcopy(attrs))
    if lrs is not None:
        scheduler.base_lrs = list(lrs)
        for f, lr in zip(getattr(scheduler, "lr_lambdas", []), lrs):
            if hasattr(f, "base_lr"):
                f.base_lr = lr
        for g, lr in zip(scheduler.optimizer.param_groups, lrs):
            g["initial_lr"] = lr
    _recompute_lr(scheduler)


def _recompute_lr(scheduler: Any) -> None:
    """Set each group's lr to what the scheduler gives at its current step."""
    if hasattr(scheduler, "lr_lambdas"):
        for g, base, f in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            g["lr"] = base * f(scheduler.last_epoch)
    elif hasattr(scheduler, "_get_closed_form_lr"):
        for g, lr in zip(scheduler.optimizer.param_groups, scheduler._get_closed_form_lr()):
            g["lr"] = lr
    scheduler._last_lr = [g["lr"] for g in scheduler.optimizer.param_groups]


def _scale_lr(optimizer: torch.optim.Optimizer, scheduler: Any, factor: float) -> None:
    """Multiply the learning rate (and the schedule's base) by ``factor``."""
    if factor == 1.0:
        return
    for g in optimizer.param_groups:
        g["lr"] *= factor
        if "initial_lr" in g:
            g["initial_lr"] *= factor
    if scheduler is not None:
        # the lr factors stay as they are, so the whole schedule (its floor too) is scaled
        scheduler.base_lrs = [b * factor for b in scheduler.base_lrs]
        _recompute_lr(scheduler)


def _move_optimizer_state(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Optimizer state created before the model moved must follow it."""
    for state in optimizer.state.values():
        for key, value in state.items():
            if torch.is_tensor(value) and key != "step":
                state[key] = value.to(device)
