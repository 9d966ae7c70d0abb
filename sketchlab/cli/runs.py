"""``sketchlab-runs``: list the MLflow runs of an experiment or a sweep and compare them side by side.

Examples::

    sketchlab-runs                       # experiments in outputs/mlflow.db and their run counts
    sketchlab-runs -e sketch_rnn-sheep   # runs of one experiment
    sketchlab-runs --sweep latest        # the children of the newest sweep, best first
                                         # (an Optuna search: its trials, complete ones first, then pruned, failed)
    sketchlab-runs --sweep <parent id> --metric val/loss --csv sweep.csv
    sketchlab-runs --mark-dead           # set RUNNING runs whose process is gone to KILLED
    sketchlab-runs --sync                # replay every spool under outputs/ into its run
    sketchlab-runs --sync outputs/runs/2024-01-01/12-00-00

A run shows as ``RUNNING (dead?)`` when the store says RUNNING but its training process is gone:
it was started on this host and its pid is no longer alive, or its heartbeat tag (refreshed about
every minute by the logger) is older than ``--stale-after`` seconds (default 600). Such runs were
killed without a chance to close them (kill -9, power loss); ``--mark-dead`` closes them as KILLED.

A training whose tracking store failed mid-run keeps what it could not log in
``<run output dir>/mlflow_spool.jsonl``; ``--sync`` sends it to the run (safe to repeat: nothing is
logged twice).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

from sketchlab.cli.errors import entry_point
from sketchlab.tracking.loggers import HEARTBEAT_TAG, HOST_TAG, PID_TAG, mlflow_client
from sketchlab.tracking.study import TRIAL_NUMBER_TAG, TRIAL_STATE_TAG

STALE_AFTER = 600.0
DEAD_HINT = "runs shown 'RUNNING (dead?)' lost their process; close them with `sketchlab-runs --mark-dead`"
# an Optuna search's trials are listed complete first, then pruned (their losses are from shorter trainings)
STATE_ORDER = {"complete": 0, "pruned": 1, "running": 2, "failed": 3, "killed": 4}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def is_dead(run: Any, stale_after: float = STALE_AFTER, host: str | None = None, now: float | None = None) -> bool:
    """Whether a RUNNING run's process is gone: same host and pid not alive, or a stale heartbeat.

    Runs without these tags (older sketchlab, other tools) are never called dead.
    """
    if run.info.status != "RUNNING":
        return False
    tags = getattr(run.data, "tags", {}) or {}
    beat = tags.get(HEARTBEAT_TAG)
    if beat is not None and (now if now is not None else time.time()) - float(beat) > stale_after:
        return True
    pid = tags.get(PID_TAG)
    return (pid is not None and tags.get(HOST_TAG) == (host or socket.gethostname())
            and not _pid_alive(int(pid)))


def shown_status(run: Any, stale_after: float = STALE_AFTER) -> str:
    return f"{run.info.status} (dead?)" if is_dead(run, stale_after) else run.info.status


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


def trial_state(run: Any) -> str | None:
    """An Optuna trial's state (complete, pruned, failed, killed, running); None for a run that is no trial."""
    tags = getattr(run.data, "tags", {}) or {}
    if TRIAL_NUMBER_TAG not in tags:
        return None
    if run.info.status == "RUNNING":
        return "running"
    return tags.get(TRIAL_STATE_TAG) or {"FINISHED": "complete", "FAILED": "failed"}.get(run.info.status, "killed")


def comparison_rows(runs: Sequence[Any], metric: str, stale_after: float = STALE_AFTER
                    ) -> tuple[list[str], list[list[str]]]:
    """A table of runs: name, status, training time, the params that differ between them, and their final metrics.

    Search trials also get their trial number and state, and are ordered complete, pruned, then the rest.
    """
    params = sorted({k for r in runs for k in r.data.params})
    varying = [k for k in params if len({r.data.params.get(k) for r in runs}) > 1
               and not k.startswith(("hydra", "sweep_trial."))]
    metrics = sorted({k for r in runs for k in r.data.metrics if k.startswith("val/") or k == metric})
    trials = any(trial_state(r) is not None for r in runs)

    def key(run: Any) -> tuple[int, float]:
        value = run.data.metrics.get(metric)
        order = STATE_ORDER.get(trial_state(run) or "", len(STATE_ORDER)) if trials else 0
        return order, value if value is not None and math.isfinite(value) else math.inf

    timed = any("train/time_s" in r.data.metrics for r in runs)
    header = ["run_id", "name", "status", *(["trial", "state"] if trials else []), *(["trained"] if timed else []),
              *varying, *metrics]
    rows = []
    for run in sorted(runs, key=key):
        row = [run.info.run_id[:8], run.info.run_name or "", shown_status(run, stale_after)]
        if trials:
            row += [run.data.tags.get(TRIAL_NUMBER_TAG, ""), trial_state(run) or ""]
        if timed:  # training time summed over the run's resumes (train/time_s), not its start-to-end span
            seconds = run.data.metrics.get("train/time_s")
            row.append(f"{seconds / 60:.1f} min" if seconds is not None else "")
        row += [run.data.params.get(k, "") for k in varying]
        row += [f"{run.data.metrics[m]:.4f}" if m in run.data.metrics else "" for m in metrics]
        rows.append(row)
    return header, rows


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)] if rows else [len(h) for h in header]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def mark_dead(client: Any, experiment_ids: list[str], stale_after: float = STALE_AFTER,
              status: str = "KILLED") -> list[Any]:
    """Close every RUNNING run of ``experiment_ids`` whose process is gone; returns those runs."""
    running = client.search_runs(experiment_ids, filter_string="attributes.status = 'RUNNING'", max_results=10000)
    dead = [r for r in running if is_dead(r, stale_after)]
    for run in dead:
        client.set_terminated(run.info.run_id, status)
    return dead


def sync(roots: Sequence[str], tracking_uri: str | None, outputs: str) -> int:
    """Replay the spools under ``roots`` (default: the outputs folder); returns the exit status."""
    from sketchlab.tracking.spool import find_spools, replay_spool

    spools = find_spools(roots or [outputs])
    if not spools:
        print(f"no spool files (mlflow_spool*.jsonl) under {', '.join(roots or [outputs])}")
        return 0
    clients: dict[str, Any] = {}

    def client_for(uri: str) -> Any:
        # a spool names the store its run lives in; --tracking-uri overrides it (a moved store)
        uri = tracking_uri or uri
        if uri not in clients:
            clients[uri] = mlflow_client(uri, outputs)
        return clients[uri]

    failed = 0
    for spool in spools:
        result = replay_spool(spool, client_for)
        failed += result.failed
        print(f"{spool}: {result.sent} sent, {result.skipped} already there, {result.failed} still pending")
    return 1 if failed else 0


@entry_point
def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``sketchlab-runs``): user errors end in one ``error:`` line, exit status 2."""
    parser = argparse.ArgumentParser(prog="sketchlab-runs", description=__doc__.split("\n\n")[0],
                                     epilog="\n\n".join(__doc__.split("\n\n")[2:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-e", "--experiment", help="MLflow experiment name (default: all)")
    parser.add_argument("--sweep", help="'latest' or a sweep's parent run id: compare its child runs")
    parser.add_argument("--metric", default="val/best_loss", help="metric to sort by (ascending)")
    parser.add_argument("--tracking-uri", default=None,
                        help="default: $MLFLOW_TRACKING_URI, else sqlite:///<outputs>/mlflow.db")
    parser.add_argument("--outputs", default=os.environ.get("SKETCHLAB_OUTPUTS", "outputs"),
                        help="outputs folder holding mlflow.db (default: $SKETCHLAB_OUTPUTS or outputs)")
    parser.add_argument("--csv", help="also write the table to this CSV file")
    parser.add_argument("--plot", metavar="PNG", help="also draw the runs' --plot-metric curves into this image")
    parser.add_argument("--plot-metric", default="val/loss", help="metric whose history --plot draws")
    parser.add_argument("--mark-dead", action="store_true",
                        help="set RUNNING runs whose process is gone (shown 'RUNNING (dead?)') to KILLED")
    parser.add_argument("--stale-after", type=float, default=STALE_AFTER,
                        help="seconds without a heartbeat after which a RUNNING run counts as dead")
    parser.add_argument("--sync", nargs="*", metavar="DIR", default=None,
                        help="replay spooled tracking records (mlflow_spool.jsonl) found under these run "
                             "folders (default: all under --outputs) into their runs")
    args = parser.parse_args(argv)

    if args.sync is not None:
        return sync(args.sync, args.tracking_uri, args.outputs)
    client = mlflow_client(args.tracking_uri, args.outputs)
    ids = _experiment_ids(client, args.experiment)
    if args.mark_dead:
        dead = mark_dead(client, ids, args.stale_after)
        for run in dead:
            print(f"marked KILLED: {run.info.run_id} ({run.info.run_name})")
        print(f"{len(dead)} dead run(s) marked KILLED")
        return 0
    if args.sweep:
        parent = find_sweep(client, ids, args.sweep)
        runs = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        print(f"sweep {parent.info.run_id} ({parent.info.run_name}, {shown_status(parent, args.stale_after)}): "
              f"{len(runs)} runs")
    elif args.experiment is None:
        total_dead = 0
        for e in client.search_experiments():
            runs = client.search_runs([e.experiment_id], max_results=1000)
            dead = sum(is_dead(r, args.stale_after) for r in runs)
            total_dead += dead
            print(f"{e.experiment_id:>4}  {e.name}  ({len(runs)} runs" + (f", {dead} RUNNING (dead?)" if dead else "")
                  + ")")
        if total_dead:
            print(DEAD_HINT)
        return 0
    else:
        runs = client.search_runs(ids, order_by=["attributes.start_time DESC"], max_results=1000)
    header, rows = comparison_rows(runs, args.metric, args.stale_after)
    print(format_table(header, rows))
    if any(is_dead(r, args.stale_after) for r in runs):
        print(DEAD_HINT)
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            csv.writer(fh).writerows([header, *rows])
    if args.plot:
        plot_curves(client, runs, args.plot_metric, args.plot)
        print(f"wrote {args.plot}")
    return 0


def plot_curves(client: Any, runs: Sequence[Any], metric: str, out: str) -> None:
    """One figure with each run's ``metric`` history against its step, labelled by run name."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = 0
    for run in runs:
        history = sorted(client.get_metric_history(run.info.run_id, metric), key=lambda m: m.step)
        if history:
            ax.plot([m.step for m in history], [m.value for m in history], marker="o", markersize=3,
                    label=run.info.run_name or run.info.run_id[:8])
            drawn += 1
    if not drawn:
        plt.close(fig)
        raise ValueError(f"none of the {len(runs)} runs has a '{metric}' history to plot (--plot-metric)")
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
