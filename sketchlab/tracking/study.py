"""An Optuna search's record in MLflow: the trial tags of its child runs and the summary on its parent run.

The search itself is :mod:`sketchlab.cli.optuna_sweeper` (``hydra/sweeper=optuna``). It writes
:data:`STUDY_FILE` into the sweep folder; :class:`~sketchlab.tracking.sweep.MLflowSweepCallback` finds it
when the multirun ends and calls :func:`summarise_study` on the sweep's parent run.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("sketchlab.tracking")

# tags of a trial's child run
TRIAL_STATE_TAG = "sketchlab.trial_state"    # complete | pruned | failed | killed
TRIAL_NUMBER_TAG = "sketchlab.optuna_trial"  # the trial's number in its study
STUDY_TAG = "sketchlab.optuna_study"
# a trial's user attribute, set by the training job when the pruner stopped it; the sweeper then tells PRUNED
PRUNED_AT_ATTR = "sketchlab.pruned_at_step"
STUDY_FILE = "optuna_study.json"


@dataclass
class StudyRecord:
    """What a sweep folder's :data:`STUDY_FILE` holds: the study and the trials this sweep added to it."""

    storage: str
    study_name: str
    direction: str = "minimize"
    trials: list[int] = field(default_factory=list)

    def write(self, sweep_dir: str | Path) -> None:
        from sketchlab.fileio import atomic_open

        with atomic_open(Path(sweep_dir) / STUDY_FILE, "w") as f:
            json.dump(asdict(self), f, indent=1)

    @classmethod
    def read(cls, sweep_dir: str | Path | None) -> StudyRecord | None:
        """The record in ``sweep_dir``, or None when that sweep was no Optuna search."""
        path = Path(sweep_dir) / STUDY_FILE if sweep_dir else None
        if path is None or not path.is_file():
            return None
        data = json.loads(path.read_text())
        return cls(storage=str(data["storage"]), study_name=str(data["study_name"]),
                   direction=str(data.get("direction", "minimize")), trials=[int(n) for n in data.get("trials", [])])


def state_counts(trials: Sequence[Any]) -> dict[str, int]:
    """``{"complete": n, "pruned": n, "failed": n, "running": n}`` over Optuna frozen trials."""
    counts = {"complete": 0, "pruned": 0, "failed": 0, "running": 0}
    for trial in trials:
        name = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}.get(trial.state.name, "running")
        counts[name] += 1
    return counts


def _save_plot(draw: Any, study: Any, path: Path) -> Path | None:
    """Draw one of Optuna's matplotlib plots of ``study`` into ``path``; None (and a log line) if it cannot."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optuna.visualization.matplotlib is marked experimental
            ax = draw(study)
        fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
        fig.set_size_inches(8, 5)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path
    except Exception as exc:  # noqa: BLE001 - e.g. importances need two finished trials; the rest still goes
        plt.close("all")
        log.info("no %s for study %s: %s", path.stem.replace("_", " "), study.study_name, exc)
        return None


def summarise_study(client: Any, run_id: str, record: StudyRecord, out_dir: str | Path) -> dict[str, Any]:
    """Log the study's outcome on the sweep's parent run; returns what was logged (for tests and logs).

    Metrics ``optuna/best_value`` and ``optuna/n_complete``, ``n_pruned``, ``n_failed`` count the whole
    study (a continued study includes its earlier sweeps), ``optuna/sweep_trials`` this sweep's trials;
    params ``best.<key>`` (the best trial's values), ``optuna.study_name``, ``optuna.storage``,
    ``optuna.best_trial``; artifacts ``optuna/*.png``: Optuna's optimisation history, parameter
    importances and intermediate values (the pruner's view), each when the study has enough trials for it.
    """
    import optuna
    from optuna.visualization import matplotlib as plots

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=record.study_name, storage=record.storage)
    trials = study.get_trials(deepcopy=False)
    counts = state_counts(trials)
    metrics = {f"optuna/n_{k}": float(v) for k, v in counts.items() if k != "running"}
    metrics["optuna/sweep_trials"] = float(len(record.trials))
    params = {"optuna.study_name": record.study_name, "optuna.storage": record.storage}
    complete = [t for t in trials if t.state.name == "COMPLETE" and t.value is not None and math.isfinite(t.value)]
    if complete:
        best = study.best_trial
        metrics["optuna/best_value"] = float(best.value)
        params["optuna.best_trial"] = str(best.number)
        params.update({f"best.{k}": str(v) for k, v in best.params.items()})
    client.log_batch(run_id, metrics=[_metric(k, v) for k, v in metrics.items()],
                     params=[_param(k, v) for k, v in params.items()])
    out = Path(out_dir) / "optuna"
    out.mkdir(parents=True, exist_ok=True)
    wanted = []
    if complete:  # with none, Optuna draws empty axes
        wanted += [(plots.plot_optimization_history, "optimization_history.png"),
                   (plots.plot_param_importances, "param_importances.png")]
    if any(t.intermediate_values for t in trials):
        wanted.append((plots.plot_intermediate_values, "intermediate_values.png"))
    drawn = [p for p in (_save_plot(draw, study, out / name) for draw, name in wanted) if p is not None]
    for path in drawn:
        client.log_artifact(run_id, str(path), "optuna")
    return {"metrics": metrics, "params": params, "plots": [p.name for p in drawn]}


def _metric(key: str, value: float) -> Any:
    import time

    from mlflow.entities import Metric

    return Metric(key, value, int(time.time() * 1000), 0)


def _param(key: str, value: str) -> Any:
    from mlflow.entities import Param

    from sketchlab.tracking.spool import MAX_PARAM_LEN

    return Param(key, value[:MAX_PARAM_LEN])
