"""``sketchlab-runs``: list the MLflow runs of an experiment or a sweep and compare them side by side.

Examples::

    sketchlab-runs                       # experiments in outputs/mlflow.db and their run counts
    sketchlab-runs -e sketch_rnn-sheep   # runs of one experiment
    sketchlab-runs --sweep latest        # the children of the newest sweep, best first
    sketchlab-runs --sweep <parent id> --metric val/loss --csv sweep.csv
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Sequence
from typing import Any

from sketchlab.cli.errors import entry_point
from sketchlab.tracking.loggers import mlflow_client


def _experiment_ids(client: Any, name: str | None) -> list[str]:
    experiments = client.search_experiments()
    if name is None:
        return [e.experiment_id for e in experiments]
    for e in experiments:
        if e.name == name:
            return [e.experiment_id]
    raise SystemExit(f"no MLflow experiment named '{name}'; known: {', '.join(sorted(e.name for e in experiments))}")


def find_sweep(client: Any, experiment_ids: list[str], sweep: str) -> Any:
    """The parent run of a sweep: ``latest`` or a run id."""
    if sweep != "latest":
        return client.get_run(sweep)
    parents = client.search_runs(experiment_ids, filter_string="tags.`sketchlab.role` = 'sweep'",
                                 order_by=["attributes.start_time DESC"], max_results=1)
    if not parents:
        raise SystemExit("no sweep found: run one with `sketchlab-train -m key=a,b`")
    return parents[0]


def comparison_rows(runs: Sequence[Any], metric: str) -> tuple[list[str], list[list[str]]]:
    """A table of runs: name, status, the params that differ between them, and their final metrics."""
    params = sorted({k for r in runs for k in r.data.params})
    varying = [k for k in params if len({r.data.params.get(k) for r in runs}) > 1 and not k.startswith("hydra")]
    metrics = sorted({k for r in runs for k in r.data.metrics if k.startswith("val/") or k == metric})

    def key(run: Any) -> float:
        value = run.data.metrics.get(metric)
        return value if value is not None and math.isfinite(value) else math.inf

    header = ["run_id", "name", "status", *varying, *metrics]
    rows = []
    for run in sorted(runs, key=key):
        row = [run.info.run_id[:8], run.info.run_name or "", run.info.status]
        row += [run.data.params.get(k, "") for k in varying]
        row += [f"{run.data.metrics[m]:.4f}" if m in run.data.metrics else "" for m in metrics]
        rows.append(row)
    return header, rows


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)] if rows else [len(h) for h in header]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``sketchlab-runs``): user errors end in one ``error:`` line, exit status 2."""
    parser = argparse.ArgumentParser(prog="sketchlab-runs", description=__doc__.splitlines()[0])
    parser.add_argument("-e", "--experiment", help="MLflow experiment name (default: all)")
    parser.add_argument("--sweep", help="'latest' or a sweep's parent run id: compare its child runs")
    parser.add_argument("--metric", default="val/best_loss", help="metric to sort by (ascending)")
    parser.add_argument("--tracking-uri", default=None, help="default: sqlite:///<outputs>/mlflow.db")
    parser.add_argument("--outputs", default="outputs", help="outputs folder holding mlflow.db")
    parser.add_argument("--csv", help="also write the table to this CSV file")
    args = parser.parse_args(argv)

    client = mlflow_client(args.tracking_uri, args.outputs)
    ids = _experiment_ids(client, args.experiment)
    if args.sweep:
        parent = find_sweep(client, ids, args.sweep)
        runs = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        print(f"sweep {parent.info.run_id} ({parent.info.run_name}, {parent.info.status}): {len(runs)} runs")
    elif args.experiment is None:
        for e in client.search_experiments():
            n = len(client.search_runs([e.experiment_id], max_results=1000))
            print(f"{e.experiment_id:>4}  {e.name}  ({n} runs)")
        return 0
    else:
        runs = client.search_runs(ids, order_by=["attributes.start_time DESC"], max_results=1000)
    header, rows = comparison_rows(runs, args.metric)
    print(format_table(header, rows))
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            csv.writer(fh).writerows([header, *rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())
