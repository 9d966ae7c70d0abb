"""A Hydra callback that gives each multirun one MLflow parent run, with every job as its child.

The store and the parent are created here, in the launching process, before any job starts:
parallel jobs (joblib launcher) that each tried to create a fresh sqlite store would race on its
schema migration and crash. It runs for every sweeper; after an Optuna search (``hydra/sweeper=optuna``)
the parent also gets the study's summary (:func:`sketchlab.tracking.study.summarise_study`).
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from sketchlab.tracking.loggers import (HOST_TAG, PID_TAG, MLflowLogger, get_experiment_id, mlflow_client,
                                        open_store, resolve_tracking_uri, sweep_parent_id, write_sweep_parent)
from sketchlab.tracking.naming import swept_keys, write_swept_keys
from sketchlab.tracking.study import TRIAL_STATE_TAG, StudyRecord, summarise_study

log = logging.getLogger("sketchlab.tracking")

PARENT_ENV = "SKETCHLAB_MLFLOW_PARENT_RUN"


def _uses_mlflow(config: DictConfig) -> bool:
    target = str(config.get("logger", {}).get("_target_", ""))
    return target.endswith(MLflowLogger.__name__)


class MLflowSweepCallback(Callback):
    """Creates the parent run on multirun start and closes it on multirun end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not _uses_mlflow(config):
            return
        lcfg = config.logger
        sweep_dir = str(config.hydra.sweep.dir)
        tags = {"sketchlab.sweep_dir": str(Path(sweep_dir).resolve()),
                "sketchlab.sweep_overrides": " ".join(config.hydra.overrides.task), "sketchlab.role": "sweep",
                # lets `sketchlab-runs` flag a sweep whose launcher was killed
                HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}

        swept = swept_keys(sweep_arguments(config))
        write_swept_keys(sweep_dir, swept)
        when = Path(sweep_dir)
        name = f"sweep {lcfg.experiment_name} {when.parent.name} {when.name[:8].replace('-', ':')}"

        def create_parent(client: Any) -> Any:
            experiment_id = get_experiment_id(client, lcfg.experiment_name, Path(lcfg.outputs_dir) / "mlartifacts")
            run = client.create_run(experiment_id, run_name=name, tags=tags)
            if swept:
                client.log_param(run.info.run_id, "swept_keys", ",".join(swept))
            return run

        # an unreachable store fails the sweep here, quickly and clearly, before any job starts
        _, run = open_store(resolve_tracking_uri(lcfg.get("tracking_uri"), lcfg.outputs_dir), create_parent,
                            float(lcfg.get("connect_timeout", 10)))
        write_sweep_parent(sweep_dir, run.info.run_id)
        os.environ[PARENT_ENV] = run.info.run_id

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        run_id = os.environ.pop(PARENT_ENV, None) or sweep_parent_id(str(config.hydra.sweep.dir))
        if not run_id or not _uses_mlflow(config):
            return
        lcfg = config.logger
        sweep_dir = str(config.hydra.sweep.dir)
        try:
            client = mlflow_client(lcfg.get("tracking_uri"), lcfg.outputs_dir)
            children = client.search_runs([client.get_run(run_id).info.experiment_id],
                                          filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
            study = StudyRecord.read(sweep_dir)
            # a search goes on past a failed trial (within hydra.sweeper.max_failure_rate): it finished
            failed = study is None and any(r.info.status == "FAILED" for r in children)
            if study is not None:
                _summarise(client, run_id, study, sweep_dir)
            # a pruned trial's best loss is from a shorter training: not comparable with the others
            scored = [r for r in children if "val/best_loss" in r.data.metrics
                      and r.data.tags.get(TRIAL_STATE_TAG) != "pruned"]
            if scored:  # the parent shows the sweep's outcome in the UI's run list
                best = min(scored, key=lambda r: r.data.metrics["val/best_loss"])
                client.log_metric(run_id, "val/best_loss", best.data.metrics["val/best_loss"])
                client.set_tag(run_id, "sketchlab.best_child", f"{best.info.run_name} ({best.info.run_id})")
            client.set_terminated(run_id, "FAILED" if failed else "FINISHED")
        except Exception as exc:  # noqa: BLE001 - the jobs are done; a store failure must not fail the sweep
            log.warning("could not close the sweep's parent run %s (%s); it stays RUNNING until "
                        "`sketchlab-runs --mark-dead`", run_id, exc)


def _summarise(client: Any, run_id: str, study: StudyRecord, sweep_dir: str) -> None:
    """The study's summary on the parent; a failure is logged, and the parent is still closed."""
    try:
        summary = summarise_study(client, run_id, study, sweep_dir)
    except Exception as exc:  # noqa: BLE001 - the trials are in the store either way
        log.warning("could not log study %s's summary on the sweep's parent run %s (%s)", study.study_name, run_id,
                    exc)
        return
    log.info("study %s: %s", study.study_name,
             ", ".join(f"{k.removeprefix('optuna/')} {v:g}" for k, v in summary["metrics"].items()))


def sweep_arguments(config: DictConfig) -> list[str]:
    """The sweep's overrides: ``hydra.sweeper.params`` (as ``key=value``) then the command line's."""
    params = config.hydra.sweeper.get("params") or {}
    return [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)


def parent_run_for_job(sweep_dir: str | None) -> str | None:
    """The sweep's parent run id as seen from inside a job (env var, else the marker file)."""
    return os.environ.get(PARENT_ENV) or sweep_parent_id(sweep_dir)
