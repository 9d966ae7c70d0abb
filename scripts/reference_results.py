#!/usr/bin/env python
"""The README's reference-results table, straight from the MLflow runs that produced it.

    python scripts/reference_results.py reference-sheep reference-vmnist      # markdown on stdout

One row per run of the named experiments: the command (its overrides), model and data, steps, training time
(``train/time_s``: the wall time of its training segments, without the gaps between a stop and a resume), the
CPU/GPU it ran on, the best validation loss, the test-split scores that ``sketchlab-evaluate`` logged
(L_R / L_KL or the SketchODE terms, Chamfer mean and median) and the run id. Nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sketchlab.tracking.loggers import mlflow_client


def _fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def training_minutes(run) -> float:
    """Minutes the run trained: its latest ``train/time_s`` (summed over resumes, without the idle time between
    them), else, for runs from before that metric, MLflow's start-to-end span."""
    seconds = run.data.metrics.get("train/time_s")
    if seconds is not None:
        return seconds / 60
    return ((run.info.end_time or run.info.start_time) - run.info.start_time) / 60000


def rows(client, experiment: str) -> list[list[str]]:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"no MLflow experiment '{experiment}'")
    out = []
    for run in client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"]):
        m, t = run.data.metrics, run.data.tags
        if "val/best_loss" not in m and "val/loss" not in m:
            continue
        steps = max((h.step for h in client.get_metric_history(run.info.run_id, "train/loss")), default=0)
        minutes = training_minutes(run)
        model = t.get("sketchlab.model", "?")
        own = (f"L_R {_fmt(m.get('test/recon'))}, L_KL {_fmt(m.get('test/kl_raw'))}" if model == "sketch_rnn"
               else f"smooth-L1 {_fmt(m.get('test/recon_xy'))}, pen BCE {_fmt(m.get('test/pen_bce'))}")
        # runs from before the overrides tag was recorded are named by their overrides
        command = t.get("sketchlab.overrides") or (run.info.run_name or "").replace(",", " ")
        out.append([f"`sketchlab-train {command}`", f"{model} / {t.get('sketchlab.data', '?')}",
                    str(steps), f"{minutes:.0f} min", t.get("sketchlab.cpu", t.get("sketchlab.device", "?")),
                    _fmt(m.get("val/best_loss", m.get("val/loss"))), own,
                    f"{_fmt(m.get('test/chamfer_mean'))} / {_fmt(m.get('test/chamfer_median'))}",
                    f"{run.info.status.lower()}, `{run.info.run_id[:8]}`"])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="+")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--outputs", default="outputs")
    args = parser.parse_args(argv)
    client = mlflow_client(args.tracking_uri, args.outputs)
    header = ["command", "model / data", "steps", "wall time", "machine", "best val loss", "test loss terms",
              "test Chamfer mean / median", "MLflow run"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for experiment in args.experiments:
        for row in rows(client, experiment):
            print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
