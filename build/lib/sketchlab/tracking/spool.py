"""The local spool: tracking records that could not reach the MLflow store, kept to replay later.

A spool is a JSON-lines file, ``<run output dir>/mlflow_spool.jsonl``. Every line is one
self-contained record::

    {"v": 1, "tracking_uri": "sqlite:///…/mlflow.db", "run_id": "…", "time": 1700000000.0,
     "kind": "metrics", "metrics": {"train/loss": 1.2}, "step": 10, "timestamp": 1700000000000}

with ``kind`` one of ``params`` (``params``: {key: str}), ``metrics`` (``metrics``, ``step``,
``timestamp`` in ms), ``tags`` (``tags``), ``artifact`` (``path``: absolute, ``artifact_path``),
``image`` (``file``: a PNG written beside the spool, ``key``, ``step``) and ``status``
(``status``, ``end_time`` in ms).

:func:`replay_spool` (``sketchlab-runs --sync``) sends the records to their run and moves the lines
that went through to ``mlflow_spool.synced``; lines that still fail stay pending. Replaying is
idempotent: a (metric key, step) pair the run already holds is skipped, a param already present is
skipped (a differing one becomes a ``sketchlab.param_changed.<key>`` tag, since MLflow refuses to
change a param), tags and artifacts overwrite themselves, and a spooled status is applied only while
the store still shows the run RUNNING.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

log = logging.getLogger("sketchlab.tracking")

SPOOL_FILE = "mlflow_spool.jsonl"
SYNCED_FILE = "mlflow_spool.synced"
SPOOL_GLOB = "mlflow_spool*.jsonl"  # the pending file and any replay that was cut short
PARAM_CHANGED_TAG = "sketchlab.param_changed."
MAX_PARAM_LEN = 6000  # MLflow's limit on a param value


def _lock(spool: Path) -> FileLock:
    return FileLock(str(spool.parent / (SPOOL_FILE + ".lock")))


def append_records(spool: Path, records: Iterable[Mapping[str, Any]], timeout: float = 10.0) -> int:
    """Append ``records`` (JSON-able dicts) to the spool file; returns how many were written."""
    lines = [json.dumps(dict(r), default=str) + "\n" for r in records]
    if not lines:
        return 0
    spool.parent.mkdir(parents=True, exist_ok=True)
    with _lock(spool).acquire(timeout=timeout):
        with open(spool, "a") as fh:
            fh.writelines(lines)
            fh.flush()
            os.fsync(fh.fileno())
    return len(lines)


def find_spools(roots: Iterable[str | Path]) -> list[Path]:
    """Every pending spool file under ``roots`` (folders or spool files)."""
    found: set[Path] = set()
    for root in map(Path, roots):
        if root.is_file():
            found.add(root.resolve())
        elif root.is_dir():
            found.update(p.resolve() for p in root.rglob(SPOOL_GLOB))
    return sorted(found)


@dataclass
class ReplayResult:
    sent: int = 0        # records delivered
    skipped: int = 0     # records (or metric points) the run already had
    failed: int = 0      # records that are still pending


def _read(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill mid-write: nothing to replay
                log.warning("skipping a damaged line in %s", path)
    return out


def metric_steps(client: Any, run_id: str, keys: Iterable[str]) -> dict[str, set[int]]:
    """The steps at which the run already holds each metric of ``keys``."""
    return {k: {m.step for m in client.get_metric_history(run_id, k)} for k in set(keys)}


_IMAGE_FILE = re.compile(r"^(?P<key>.*)\+step\+(?P<step>\d+)\+timestamp\+")


def image_steps(client: Any, run_id: str) -> set[tuple[str, int]]:
    """The (key, step) pairs of the images ``log_image`` stored in a run (parsed from its file names)."""
    try:
        files = client.list_artifacts(run_id, "images")
    except Exception:  # noqa: BLE001 - then an image may be logged twice, nothing worse
        return set()
    out = set()
    for f in files:
        m = _IMAGE_FILE.match(Path(f.path).name)
        if m:
            out.add((m["key"].replace("~", "/"), int(m["step"])))
    return out


def send_params(client: Any, run_id: str, params: Mapping[str, str], known: dict[str, str]) -> list[str]:
    """Log the params ``known`` (the run's current params, updated here) lacks; returns the changed keys.

    MLflow refuses to change a logged param, so a differing value is recorded as a
    ``sketchlab.param_changed.<key>`` tag ("old -> new") instead of failing.
    """
    from mlflow.entities import Param, RunTag

    new, tags, changed = [], [], []
    for key, value in params.items():
        value = str(value)[:MAX_PARAM_LEN]
        if key not in known:
            new.append(Param(key, value))
        elif known[key] != value:
            changed.append(key)
            tags.append(RunTag(PARAM_CHANGED_TAG + key, f"{known[key]} -> {value}"[:MAX_PARAM_LEN]))
    for start in range(0, len(new), 100):
        client.log_batch(run_id, params=new[start:start + 100])
    if tags:
        client.log_batch(run_id, tags=tags)
    for p in new:
        known[p.key] = p.value
    return changed


def send_record(client: Any, run_id: str, rec: Mapping[str, Any]) -> None:
    """Deliver one record (spooled or live) to ``run_id``; params and metrics are sent as given."""
    from mlflow.entities import Metric, RunTag

    kind = rec["kind"]
    if kind == "params":
        from mlflow.entities import Param

        items = [Param(k, str(v)[:MAX_PARAM_LEN]) for k, v in rec["params"].items()]
        for start in range(0, len(items), 100):
            client.log_batch(run_id, params=items[start:start + 100])
    elif kind == "metrics":
        items = [Metric(k, float(v), int(rec["timestamp"]), int(rec["step"])) for k, v in rec["metrics"].items()]
        if items:
            client.log_batch(run_id, metrics=items)
    elif kind == "tags":
        client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in rec["tags"].items()])
    elif kind == "artifact":
        path = Path(rec["path"])
        if path.is_dir():
            client.log_artifacts(run_id, str(path), rec.get("artifact_path"))
        elif path.is_file():
            client.log_artifact(run_id, str(path), rec.get("artifact_path"))
        else:
            log.warning("artifact %s no longer exists; not logged", path)
    elif kind == "image":
        image = rec.get("image")
        if image is None:
            from PIL import Image

            with Image.open(rec["file"]) as im:
                image = im.copy()
        client.log_image(run_id, image, key=rec["key"], step=int(rec["step"]))
    elif kind == "status":
        client.set_terminated(run_id, rec["status"], end_time=rec.get("end_time"))
    else:
        raise ValueError(f"unknown spool record kind {kind!r}")


def _replay_run(client: Any, run_id: str, records: list[dict[str, Any]], result: ReplayResult) -> list[bool]:
    """Send one run's records; returns, per record, whether it is done (sent or already there)."""
    run = client.get_run(run_id)
    params = dict(run.data.params)
    steps = metric_steps(client, run_id, (k for r in records if r["kind"] == "metrics" for k in r["metrics"]))
    images = image_steps(client, run_id) if any(r["kind"] == "image" for r in records) else set()
    last_status = max((i for i, r in enumerate(records) if r["kind"] == "status"), default=None)
    done = []
    for i, rec in enumerate(records):
        try:
            if rec["kind"] == "params":
                send_params(client, run_id, rec["params"], params)
            elif rec["kind"] == "metrics":
                step = int(rec["step"])
                fresh = {k: v for k, v in rec["metrics"].items() if step not in steps[k]}
                result.skipped += len(rec["metrics"]) - len(fresh)
                if fresh:
                    send_record(client, run_id, {**rec, "metrics": fresh})
                for k in fresh:
                    steps[k].add(step)
            elif rec["kind"] == "image" and (rec["key"], int(rec["step"])) in images:
                result.skipped += 1
            elif rec["kind"] == "status":
                # only the newest status counts, and only while the run still shows RUNNING: a run
                # reopened (resumed) since then has a newer status of its own
                if i == last_status and client.get_run(run_id).info.status == "RUNNING":
                    send_record(client, run_id, rec)
                else:
                    result.skipped += 1
            else:
                send_record(client, run_id, rec)
                if rec["kind"] == "image":
                    images.add((rec["key"], int(rec["step"])))
            result.sent += 1
            done.append(True)
        except Exception as exc:  # noqa: BLE001 - keep the record, report, go on with the rest
            log.warning("could not replay a %s record into run %s: %s", rec["kind"], run_id, exc)
            result.failed += 1
            done.append(False)
    return done


def replay_spool(spool: Path, client_for: Callable[[str], Any]) -> ReplayResult:
    """Replay a spool file into its runs (``client_for(tracking_uri)`` gives the client).

    The file is first moved aside (so that a logger still appending starts a new one), the
    records that went through are appended to ``mlflow_spool.synced`` and the others go back to
    the pending file.
    """
    spool = Path(spool)
    result = ReplayResult()
    work = spool.with_name(f"mlflow_spool.replaying.{os.getpid()}.{time.monotonic_ns()}.jsonl")
    with _lock(spool).acquire(timeout=30):
        if not spool.is_file():
            return result
        os.replace(spool, work)
    records = _read(work)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, rec in enumerate(records):
        groups.setdefault((rec["tracking_uri"], rec["run_id"]), []).append(i)
    done = [False] * len(records)
    for (uri, run_id), idx in groups.items():
        try:
            flags = _replay_run(client_for(uri), run_id, [records[i] for i in idx], result)
        except Exception as exc:  # noqa: BLE001 - the store or the run is not there: keep them all
            log.warning("could not replay into run %s at %s: %s", run_id, uri, exc)
            result.failed += len(idx)
            continue
        for i, ok in zip(idx, flags):
            done[i] = ok
    with _lock(spool).acquire(timeout=30):
        if any(done):
            with open(spool.with_name(SYNCED_FILE), "a") as fh:
                fh.writelines(json.dumps(r) + "\n" for r, ok in zip(records, done) if ok)
        pending = [r for r, ok in zip(records, done) if not ok]
        if pending:
            with open(spool.with_name(SPOOL_FILE), "a") as fh:
                fh.writelines(json.dumps(r) + "\n" for r in pending)
        work.unlink()
    return result
