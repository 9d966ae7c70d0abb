"""``sketchlab-train``: compose the config, build the components, train and track the run in MLflow."""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from sketchlab.cli.errors import entry_point, hydra_task
from sketchlab.cli.optuna_sweeper import register_plugin
from sketchlab.config import config_dir
from sketchlab.factory import build_data
from sketchlab.registry import build, guard_hydra

log = logging.getLogger("sketchlab.train")


def _job_info() -> tuple[Path, str | None]:
    """(output dir, sweep dir or None) of this Hydra job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    sweep_dir = str(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None
    return Path(hc.runtime.output_dir), sweep_dir


def _job_overrides() -> list[str]:
    """This job's command-line overrides."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task)


def _base_config() -> DictConfig:
    """This job's config as composed without any command-line override (what ``resume=`` compares against)."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    return compose(config_name=HydraConfig.get().job.config_name, overrides=[])


def _configured(group: str, make: Any) -> Any:
    """``make()``, with the ValueError torch raises for a bad optimizer/schedule setting named as that group's."""
    from sketchlab.validation import ConfigValueError

    try:
        return make()
    except ValueError as exc:
        raise ConfigValueError(f"{group}: {exc} (check the {group}.* values)") from exc


def _next_steps(logger: Any, ckpt_dir: Path, experiment: str | None) -> None:
    """Tell the user where the run is and the exact commands to look at it and draw with it."""
    run_dir = ckpt_dir.parent if ckpt_dir.name == "checkpoints" else ckpt_dir
    if getattr(logger, "run_id", None):
        log.info("MLflow run %s in %s", logger.run_id, logger.tracking_uri)
        log.info("  view it:    make ui   (then http://127.0.0.1:5000/#/experiments/%s/runs/%s)",
                 logger.experiment_id, logger.run_id)
        if experiment:
            log.info("  compare:    sketchlab-runs -e '%s'", experiment)
    log.info("  draw:       sketchlab-sample checkpoint=%s", run_dir)
    log.info("  train more: sketchlab-train resume=%s trainer.max_steps=<more steps>", run_dir)


def _log_served_model(logger: Any, model: Any, cfg: DictConfig, resolved: dict, scale: float, ckpt_dir: Path,
                      out_dir: Path) -> None:
    """``logger.log_model=true``: save an MLflow pyfunc model of the best-validated weights (else the last)
    in ``<run dir>/mlflow_model`` and log it as the run's ``model`` artifact."""
    import shutil

    from sketchlab.engine.checkpoint import load_checkpoint
    from sketchlab.tracking.serving import ServedModel, save_pyfunc

    best = ckpt_dir / "best.pt"
    if best.is_file():
        model.load_state_dict(load_checkpoint(best, map_location="cpu")["model"])
    net = resolved["model"]["net"]
    folder = out_dir / "mlflow_model"
    if folder.exists():  # a resumed run that logged one before: the new weights replace it
        shutil.rmtree(folder)
    save_pyfunc([ServedModel(str(cfg.data.name), net, model, scale)], folder)
    logger.log_artifact(folder, "model")
    logger.set_tags({"sketchlab.model_uri": f"runs:/{logger.run_id}/model",
                     "sketchlab.model_weights": "best.pt" if best.is_file() else "last step"})
    log.info("MLflow model: runs:/%s/model (serve: mlflow models serve -m runs:/%s/model --env-manager local)",
             logger.run_id, logger.run_id)


def _trial_reporter(trial: DictConfig) -> Any:
    """Reports validation losses to an Optuna trial and asks its pruner (``hydra.sweeper.pruner``) to stop."""
    from hydra.core.hydra_config import HydraConfig

    from sketchlab.cli.optuna_sweeper import TrialReporter

    pruner = HydraConfig.get().sweeper.get("pruner") if HydraConfig.initialized() else None
    return TrialReporter(str(trial.storage), str(trial.study_name), int(trial.trial_id), pruner)


def train(cfg: DictConfig) -> float:
    """Train one model as configured; returns the best validation loss (what sweepers minimise).

    With ``resume=`` the config stored in the checkpoint is used (see :mod:`sketchlab.cli.resume`) and
    the run's MLflow run goes on: one training is one MLflow run, however often it is stopped.
    In an Optuna search (``sweep_trial`` set) the validation losses go to the trial, whose pruner may stop
    the training early: the run then ends normally (FINISHED, tag ``sketchlab.trial_state=pruned``).
    """
    from sketchlab.cli.resume import plan_js_init, plan_resume
    from sketchlab.factory import is_js_model
    from sketchlab.engine.checkpoint import load_checkpoint
    from sketchlab.engine.runtime import DistInfo, seed_everything
    from sketchlab.engine.trainer import Preempted
    from sketchlab.models.sketch_rnn.step_kernels import used as step_kernels_used
    from sketchlab.sampling import visualize_callback
    from sketchlab.tracking.loggers import NullLogger, flatten
    from sketchlab.tracking.naming import child_run_name, read_swept_keys, single_run_name, trial_run_name
    from sketchlab.tracking.provenance import provenance
    from sketchlab.tracking.study import STUDY_TAG, TRIAL_NUMBER_TAG, TRIAL_STATE_TAG
    from sketchlab.tracking.sweep import parent_run_for_job

    out_dir, sweep_dir = _job_info()
    dist = DistInfo.from_env()
    js_init = plan_js_init(cfg) if cfg.get("resume") and is_js_model(str(cfg.resume)) else None
    plan = plan_resume(cfg, _base_config(), out_dir) if cfg.get("resume") and js_init is None else None
    if plan is not None:
        cfg = plan.cfg
    ckpt_dir = plan.ckpt_dir if plan is not None else out_dir / "checkpoints"

    # everything random (weights, data order, augmentation) is built after this line
    seed_everything(int(cfg.seed))
    data = build_data(cfg, dist.rank, dist.world_size).setup()
    model = build(cfg.model.net)
    if js_init is not None:  # fine-tuning a sketch-rnn-js model: its weights replace the fresh ones
        model.load_state_dict(js_init.state)
    optimizer = _configured("optim", lambda: build(cfg.optim)(model.parameters()))
    scheduler = _configured("sched", lambda: build(cfg.sched)(optimizer)) if cfg.get("sched") else None
    trainer = build(cfg.trainer)

    job_overrides = _job_overrides()
    trial = cfg.get("sweep_trial")
    swept = read_swept_keys(sweep_dir)
    run_name = (cfg.get("run_name")
                or (trial_run_name(int(trial.number), job_overrides, swept) if trial is not None else None)
                or child_run_name(job_overrides, swept)
                or single_run_name(str(cfg.model.name), str(cfg.data.name), out_dir))
    tags, diff = provenance(trainer.device)
    tags.update({"sketchlab.overrides": " ".join(job_overrides)[:5000], "sketchlab.model": str(cfg.model.name), "sketchlab.data": str(cfg.data.name),
                 "sketchlab.output_dir": str(out_dir.resolve()), "sketchlab.checkpoint_dir": str(ckpt_dir.resolve()),
                 **{str(k): str(v) for k, v in cfg.get("tags", {}).items()}})
    if js_init is not None:
        tags["sketchlab.initialised_from"] = str(js_init.path.resolve())
        tags.update({f"sketchlab.js_model.{k}": f"{old!r} -> {new!r}" for k, (old, new) in js_init.changed.items()})
    if trial is not None:
        tags.update({TRIAL_NUMBER_TAG: str(trial.number), STUDY_TAG: str(trial.study_name)})
    if plan is not None:
        # the run's command stays the one that started it; the resuming command is recorded beside it
        tags[f"sketchlab.resumed_with.{int(plan.state['step'])}"] = tags.pop("sketchlab.overrides")
        tags[f"sketchlab.resumed_at.{int(plan.state['step'])}"] = str(plan.checkpoint.resolve())
        tags.update({f"sketchlab.resume_override.{k}": f"{old!r} -> {new!r}" for k, (old, new) in plan.changed.items()})
    logger = (build(cfg.logger, run_name=run_name, parent_run_id=parent_run_for_job(sweep_dir), tags=tags,
                    run_id=plan.run_id if plan is not None else None, spool_dir=str(out_dir))
              if dist.is_main else NullLogger())
    resolved = OmegaConf.to_container(cfg, resolve=True)
    status, pruned = "FAILED", False
    try:
        reporter = _trial_reporter(trial) if trial is not None and dist.is_main else None
        logger.log_params(flatten(resolved))
        logger.log_params({"data.scale_factor": data.scale, "model.n_params": sum(p.numel() for p in model.parameters())})
        (out_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(resolved)))
        logger.log_artifact(out_dir / "config_resolved.yaml")
        # a resumed run keeps its original .hydra record; the resuming command's goes beside it
        logger.log_artifact(out_dir / ".hydra", "hydra" if plan is None else f"hydra/resumed_at_{plan.state['step']}")
        if diff is not None:
            (out_dir / "code.diff").write_text(diff)
            logger.log_artifact(out_dir / "code.diff", "provenance")
        vis = cfg.get("visualize", {})
        on_val = (visualize_callback(data, logger, n=int(vis.get("n", 8)), temperature=float(vis.get("temperature", 0.4)))
                  if vis.get("enabled", True) and dist.is_main else None)
        extra = {"config": resolved, "data_scale": data.scale, "mlflow_run_id": logger.run_id}
        result = trainer.fit(model, data, optimizer, scheduler, logger=logger, ckpt_dir=ckpt_dir,
                             resume=plan.state if plan is not None else None, on_validation=on_val,
                             checkpoint_extra=extra, keep_hparams=plan.keep_hparams if plan is not None else (),
                             keep_schedule=plan.keep_schedule if plan is not None else False,
                             should_stop=reporter)
        pruned = reporter is not None and reporter.pruned_at is not None
        if getattr(logger, "log_checkpoints", False):
            logger.log_artifact(ckpt_dir, "checkpoints")
        if math.isfinite(result.best_val):
            logger.log_metrics({"val/best_loss": result.best_val}, result.step)
        if cfg.get("test_at_end") and not pruned:  # a pruned trial is no model to report on
            # the paper's numbers are test losses of the best-validated weights, as magenta reports them
            best = ckpt_dir / "best.pt"
            if best.is_file():
                model.load_state_dict(load_checkpoint(best, map_location=trainer.device)["model"])
            scores = trainer.validate(model, data, split="test")
            logger.log_metrics({f"test/{k}": v for k, v in scores.items()}, result.step)
            logger.set_tags({"sketchlab.test_weights": "best.pt" if best.is_file() else "last step"})
        if getattr(logger, "log_model", False):
            _log_served_model(logger, model, cfg, resolved, data.scale, ckpt_dir, out_dir)
        status = "FINISHED"
        log.info("done: step %d, best val loss %.4f, outputs in %s", result.step, result.best_val, out_dir)
        _next_steps(logger, ckpt_dir, (cfg.get("logger") or {}).get("experiment_name"))
        return result.best_val
    except Preempted as stop:
        status = "KILLED"
        if stop.checkpoint is not None and getattr(logger, "log_checkpoints", False):
            logger.log_artifact(ckpt_dir, "checkpoints")
        log.warning("%s; continue with: resume=%s", stop, ckpt_dir.parent if ckpt_dir.name == "checkpoints" else ckpt_dir)
        raise SystemExit(128 + stop.signum) from None
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if trial is not None:
            state = "pruned" if pruned else {"FINISHED": "complete", "FAILED": "failed"}.get(status, "killed")
            logger.set_tags({TRIAL_STATE_TAG: state})
        kernels = step_kernels_used()  # known once the model has run: which steps the fused recurrences took
        if kernels is not None:
            logger.set_tags({"sketchlab.step_kernels": kernels})
        logger.finish(status)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
@hydra_task
def _hydra_main(cfg: DictConfig) -> float:
    return train(cfg)


@entry_point
def main() -> None:
    """Console entry point (``sketchlab-train``): user errors end in one ``error:`` line, exit status 2."""
    guard_hydra()  # check hydra.callbacks/launcher/sweeper/logging before Hydra builds them
    register_plugin()  # hydra/sweeper=optuna
    _one_folder_per_training()
    _hydra_main()


def _one_folder_per_training() -> None:
    """Under torchrun every rank composes its own timestamped run folder; only rank 0's is the training's.

    The other ranks keep theirs in a temporary folder that goes away with them (they write no checkpoint and
    log nothing).
    """
    import atexit
    import shutil
    import tempfile

    rank = int(os.environ.get("RANK", "0"))
    if rank > 0 and not {"-m", "--multirun"} & set(sys.argv):
        tmp = tempfile.mkdtemp(prefix=f"sketchlab-rank{rank}-")
        atexit.register(shutil.rmtree, tmp, True)
        sys.argv += [f"hydra.run.dir={tmp}", "hydra.output_subdir=null"]


if __name__ == "__main__":
    sys.exit(main())
