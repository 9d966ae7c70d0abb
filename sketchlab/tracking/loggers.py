"""Experiment loggers: MLflow (the default) and a no-op one, behind one small interface.

The MLflow logger talks to the store through ``MlflowClient`` only, never the fluent
``mlflow.start_run`` API: a sweep's parent run and the jobs that the basic launcher runs one after
another in the same process then cannot trip over each other's "active run".
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SWEEP_PARENT_FILE = "mlflow_parent_run_id"


def flatten(tree: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists become their string form."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, name, sep))
        else:
            out[name] = value
    return out


class NullLogger:
    """Logs nothing (``logger=none``); takes and ignores the MLflow logger's options so configs can switch."""

    def __init__(self, **_: Any) -> None: ...

    run_id: str | None = None
    log_checkpoints = False

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...

    def log_image(self, image: Any, key: str, step: int) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def finish(self, status: str = "FINISHED") -> None: ...


def resolve_tracking_uri(uri: str | None, outputs_dir: str | Path = "outputs") -> str:
    """The store URI; default is an sqlite file under ``outputs_dir``, written as an absolute path."""
    if uri:
        return uri
    db = Path(outputs_dir).expanduser().resolve() / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


def mlflow_client(uri: str | None = None, outputs_dir: str | Path = "outputs") -> Any:
    """An ``MlflowClient`` on :func:`resolve_tracking_uri`'s store."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=resolve_tracking_uri(uri, outputs_dir))


def get_experiment_id(client: Any, name: str, artifact_root: str | Path | None = None) -> str:
    """The id of experiment ``name``, created (with artifacts under ``artifact_root``) if needed."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            raise ValueError(f"MLflow experiment '{name}' is deleted; restore it or choose another logger.experiment_name")
        return experiment.experiment_id
    location = None
    if artifact_root is not None:
        location = (Path(artifact_root).expanduser().resolve() / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # another process created it between our get and create
        return client.get_experiment_by_name(name).experiment_id


class MLflowLogger:
    """One MLflow run: params, per-step metrics, artifacts and images."""

    def __init__(self, experiment_name: str = "sketchlab", tracking_uri: str | None = None,
                 outputs_dir: str | Path = "outputs", run_name: str | None = None,
                 parent_run_id: str | None = None, tags: Mapping[str, str] | None = None,
                 log_checkpoints: bool = True) -> None:
        self.client = mlflow_client(tracking_uri, outputs_dir)
        self.tracking_uri = self.client.tracking_uri
        self.experiment_id = get_experiment_id(self.client, experiment_name, Path(outputs_dir) / "mlartifacts")
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
        self.run_id: str | None = run.info.run_id
        self.log_checkpoints = log_checkpoints
        self._finished = False

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start:start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items() if math.isfinite(float(v))]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        elif path.is_file():
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_image(self, image: Any, key: str, step: int) -> None:
        """Log a PIL image under ``key`` at ``step``: the MLflow UI shows it with a step slider."""
        self.client.log_image(self.run_id, image, key=key, step=step)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def finish(self, status: str = "FINISHED") -> None:
        if not self._finished:
            self.client.set_terminated(self.run_id, status)
            self._finished = True


def sweep_parent_id(sweep_dir: str | Path | None) -> str | None:
    """The parent run id the sweep callback wrote into a multirun's sweep dir, if any."""
    if not sweep_dir:
        return None
    marker = Path(sweep_dir) / SWEEP_PARENT_FILE
    return marker.read_text().strip() if marker.is_file() else None


def write_sweep_parent(sweep_dir: str | Path, run_id: str) -> None:
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(sweep_dir) / f".{SWEEP_PARENT_FILE}.{os.getpid()}"
    tmp.write_text(run_id)
    os.replace(tmp, Path(sweep_dir) / SWEEP_PARENT_FILE)
