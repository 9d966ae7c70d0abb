"""Experiment loggers: MLflow (the default) and a no-op one, behind one small interface.

The MLflow logger talks to the store through ``MlflowClient`` only, never the fluent
``mlflow.start_run`` API: a sweep's parent run and the jobs that the basic launcher runs one after
another in the same process then cannot trip over each other's "active run".

A tracking store must never kill a training: the store is checked once, with a short timeout,
before training begins (:class:`TrackingUnavailable` if it does not answer); after that every
logging call only queues a record for a background writer thread. Records the store refuses or
does not take in time go to a local spool file (see :mod:`sketchlab.tracking.spool`) that
``sketchlab-runs --sync`` replays later.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import queue
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from sketchlab.fileio import atomic_open
from sketchlab.tracking.spool import (SPOOL_FILE, append_records, image_steps, metric_steps, replay_spool,
                                      send_record)

log = logging.getLogger("sketchlab.tracking")

SWEEP_PARENT_FILE = "mlflow_parent_run_id"
HOST_TAG, PID_TAG, HEARTBEAT_TAG = "sketchlab.host", "sketchlab.pid", "sketchlab.heartbeat"


class TrackingUnavailable(RuntimeError):
    """The tracking store did not answer at start-up; raised before any training happens."""


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

    def __init__(self, **_: Any) -> None:
        self.params_changed: list[tuple[str, str, str]] = []

    run_id: str | None = None
    log_checkpoints = False
    log_model = False
    spool_path: Path | None = None

    def log_params(self, params: Mapping[str, Any]) -> list[str]:
        return []

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...

    def log_image(self, image: Any, key: str, step: int) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def finish(self, status: str = "FINISHED") -> None: ...


# -- the store -------------------------------------------------------------------------------------
def resolve_tracking_uri(uri: str | None, outputs_dir: str | Path = "outputs") -> str:
    """The store every tool uses: ``uri`` (a flag or config key), else ``$MLFLOW_TRACKING_URI``, else the
    sqlite file ``<outputs_dir>/mlflow.db`` (written as an absolute path)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    db = Path(outputs_dir).expanduser().resolve() / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


def _sqlite_path(uri: str) -> Path | None:
    """The database file of an ``sqlite:///`` URI (None for other stores and in-memory ones)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


_RACE_ERRORS = ("already exists", "database is locked", "duplicate column", "online migration")


@contextlib.contextmanager
def _store_creation_lock(uri: str, timeout: float = 120.0) -> Iterator[None]:
    """An inter-process lock beside an sqlite database (nothing for other stores).

    Creating a client creates a fresh sqlite store's tables; processes doing it at once race (one
    dies on "table already exists" / "duplicate column"), so sketchlab processes take turns.
    """
    db = _sqlite_path(uri)
    if db is None:
        yield
        return
    from filelock import FileLock, Timeout

    db.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(db) + ".lock")
    try:
        lock.acquire(timeout=timeout)
    except Timeout:  # a wedged holder must not stop us: _new_client's retry still covers the race
        log.warning("waited %g s for %s.lock; going on without it", timeout, db)
        yield
        return
    try:
        yield
    finally:
        lock.release()


def _new_client(uri: str, attempts: int = 3) -> Any:
    """``MlflowClient(uri)``, retried on the errors of a store creation race with a process that does
    not take the lock (``mlflow ui``). MLflow already sets ``PRAGMA busy_timeout = 20000`` on each
    sqlite session, so writes wait for another process's lock for up to 20 s before failing."""
    from mlflow.tracking import MlflowClient

    for attempt in range(attempts):
        try:
            return MlflowClient(tracking_uri=uri)
        except Exception as exc:  # noqa: BLE001 - only the race errors are retried
            if attempt == attempts - 1 or not any(e in str(exc).lower() for e in _RACE_ERRORS):
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def mlflow_client(uri: str | None = None, outputs_dir: str | Path = "outputs") -> Any:
    """An ``MlflowClient`` on :func:`resolve_tracking_uri`'s store (safe when a fresh sqlite store is
    created by several processes at once)."""
    resolved = resolve_tracking_uri(uri, outputs_dir)
    with _store_creation_lock(resolved):
        return _new_client(resolved)


EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


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
        # MLflow 3's UI opens experiments of unknown kind in its GenAI view; ours are model training
        return client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
    except MlflowException:  # another process created it between our get and create
        return client.get_experiment_by_name(name).experiment_id


@contextlib.contextmanager
def _short_http_timeouts(uri: str, timeout: float) -> Iterator[None]:
    """MLflow's HTTP timeout and retries cut down while the start-up check runs (http(s) stores only).

    Its defaults (120 s per request, 7 retries with backoff) are what made an unreachable server
    hang a training for minutes before crashing it.
    """
    if not uri.startswith(("http://", "https://")):
        yield
        return
    knobs = {"MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, int(timeout))), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    saved = {k: os.environ.get(k) for k in knobs}
    os.environ.update(knobs)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _call_with_timeout(fn: Callable[[], Any], timeout: float) -> Any:
    """``fn()`` in a daemon thread; its result, its exception, or TimeoutError after ``timeout`` s."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name="sketchlab-mlflow-check")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def unavailable_message(uri: str, exc: BaseException) -> str:
    return (f"the MLflow tracking store {uri} is not available ({type(exc).__name__}: {exc}). "
            "Training was not started. Start/fix that store, or choose another one with "
            "logger.tracking_uri=<uri> (or the MLFLOW_TRACKING_URI environment variable), "
            "or train without tracking with logger=none.")


def open_store(uri: str, fn: Callable[[Any], Any] | None = None, timeout: float = 10.0) -> tuple[Any, Any]:
    """``(client, fn(client))`` on store ``uri``, within ``timeout`` s, else :class:`TrackingUnavailable`.

    For the start of a training or a sweep: an unreachable store fails here, quickly and clearly,
    instead of hanging in MLflow's long HTTP retries. Creating a new local sqlite store is not timed:
    it cannot be unreachable, only slow (its schema migrations took over 10 s on a loaded 2-core
    machine). Nor is the wait for a sibling process creating it. Errors that show the store answered
    (a missing run, a deleted experiment: ``ValueError``) are raised as they are.
    """
    def start() -> tuple[Any, Any]:
        client = _new_client(uri)
        return client, (fn(client) if fn is not None else None)

    _import_store_code(uri)
    try:
        with _store_creation_lock(uri), _short_http_timeouts(uri, timeout):
            db = _sqlite_path(uri)
            return start() if db is not None and not db.exists() else _call_with_timeout(start, timeout)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - every other start-up failure gets the same clear message
        if _is_missing(exc):
            raise
        raise TrackingUnavailable(unavailable_message(uri, exc)) from exc


def _import_store_code(uri: str) -> None:
    """Import the MLflow store module for ``uri`` before the start-up check's clock runs.

    Importing SQLAlchemy, alembic and MLflow's sqlalchemy store took 9 s on a loaded 2-core machine,
    against 0.2 s for opening the existing store and querying it: timed together, a healthy store
    looked unavailable. Importing cannot hang on an unreachable store, so it is not timed.
    """
    if uri.startswith(("http://", "https://", "databricks")):
        import mlflow.store.tracking.rest_store  # noqa: F401, PLC0415
    elif "://" in uri and not uri.startswith("file:"):
        try:
            import mlflow.store.tracking.sqlalchemy_store  # noqa: F401, PLC0415
        except ImportError:  # a store without SQLAlchemy installed: the timed check reports it
            pass
    from mlflow.tracking import MlflowClient  # noqa: F401, PLC0415


def _is_missing(exc: BaseException) -> bool:
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def _is_bad_data(exc: BaseException) -> bool:
    """A record the store will never take (retrying or spooling it is pointless): MLflow says the
    value is invalid, or the client refused it before sending (``log_image`` with a bad key)."""
    return (getattr(exc, "error_code", None) == "INVALID_PARAMETER_VALUE"
            or (isinstance(exc, (ValueError, TypeError)) and not hasattr(exc, "error_code")))


# -- the logger ------------------------------------------------------------------------------------
_STOP = object()


class MLflowLogger:
    """One MLflow run: params, per-step metrics, artifacts and images, written by a background thread.

    ``run_id`` reopens an existing run (resume) instead of creating one. ``spool_dir`` is where
    records that cannot reach the store are kept (default ``<outputs_dir>/mlflow_spool/<run id>``;
    the train CLI passes the run's output dir). ``connect_timeout`` bounds the start-up check,
    ``flush_timeout`` what :meth:`finish` waits for the writer, ``heartbeat_every`` how often the
    ``sketchlab.heartbeat`` tag is refreshed, ``retry_after`` how long the writer spools directly
    after the store failed before trying it again. ``log_model`` asks the train CLI for an MLflow
    pyfunc model artifact (``runs:/<run id>/model``, see :mod:`sketchlab.tracking.serving`).
    """

    def __init__(self, experiment_name: str = "sketchlab", tracking_uri: str | None = None,
                 outputs_dir: str | Path = "outputs", run_name: str | None = None,
                 parent_run_id: str | None = None, tags: Mapping[str, str] | None = None,
                 log_checkpoints: bool = True, log_model: bool = False, connect_timeout: float = 10.0,
                 spool_dir: str | Path | None = None, run_id: str | None = None,
                 flush_timeout: float = 30.0, heartbeat_every: float = 60.0, retry_after: float = 30.0) -> None:
        self.tracking_uri = resolve_tracking_uri(tracking_uri, outputs_dir)
        self.log_checkpoints = log_checkpoints
        self.log_model = log_model  # the train CLI logs an MLflow pyfunc model at the end when set
        self.flush_timeout = float(flush_timeout)
        self.heartbeat_every = float(heartbeat_every)
        self.retry_after = float(retry_after)
        self.params_changed: list[tuple[str, str, str]] = []  # (key, old, new) of params logged as tags
        self._params: dict[str, str] = {}
        # per metric key, the highest step the reopened run already holds (see log_metrics)
        self._metric_floor: dict[str, int] = {}
        self._start(experiment_name, outputs_dir, run_name, parent_run_id, dict(tags or {}), run_id,
                    float(connect_timeout))
        base = Path(spool_dir) if spool_dir else Path(outputs_dir) / "mlflow_spool" / self.run_id
        self.spool_path = base.expanduser().resolve() / SPOOL_FILE
        self.n_spooled = 0
        self._finished = False
        self._queue: queue.Queue[Any] = queue.Queue()
        self._cond = threading.Condition()
        self._pending = 0            # records queued or being written
        self._inflight: dict[str, Any] | None = None
        self._abandoned = False      # set by finish() when it gave up waiting for the writer
        self._down_until = 0.0       # monotonic time before which the writer spools without trying
        self._last_beat = time.monotonic()
        self._last_replay = -math.inf
        self._thread = threading.Thread(target=self._work, daemon=True, name="sketchlab-mlflow-writer")
        self._thread.start()
        # a script that never calls finish() still gets its queued records written (or spooled)
        atexit.register(_close_at_exit, weakref.ref(self))

    # -- start-up: synchronous, bounded, fails clearly -------------------------------------------
    def _start(self, experiment_name: str, outputs_dir: str | Path, run_name: str | None,
               parent_run_id: str | None, tags: dict[str, str], run_id: str | None, timeout: float) -> None:
        uri = self.tracking_uri
        tags.update({HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), HEARTBEAT_TAG: str(int(time.time()))})
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id

        def start(client: Any) -> tuple[Any, dict[str, int], set[tuple[str, int]]]:
            if run_id:
                run = client.get_run(run_id)
                client.update_run(run_id, status="RUNNING")
                send_record(client, run_id, {"kind": "tags", "tags": tags})
                floor = {k: max(s) for k, s in metric_steps(client, run_id, run.data.metrics).items() if s}
                return run, floor, image_steps(client, run_id)
            experiment_id = get_experiment_id(client, experiment_name, Path(outputs_dir) / "mlartifacts")
            return client.create_run(experiment_id, run_name=run_name, tags=tags), {}, set()

        try:
            self.client, (run, floor, images) = open_store(uri, start, timeout)
        except Exception as exc:
            if run_id and _is_missing(exc):
                raise ValueError(f"cannot reopen MLflow run {run_id}: no such run in {uri}") from exc
            raise
        self.run_id: str | None = run.info.run_id
        self.experiment_id = run.info.experiment_id
        self._params = dict(run.data.params)
        self._metric_floor = floor
        self._images = images  # (key, step) of the images a reopened run already has

    # -- the logging interface: only queues records ----------------------------------------------
    def _put(self, rec: dict[str, Any]) -> None:
        if self._finished:
            log.warning("logger already finished; dropping a %s record", rec["kind"])
            return
        with self._cond:
            self._pending += 1
        self._queue.put(rec)

    def log_params(self, params: Mapping[str, Any]) -> list[str]:
        """Log params; returns the keys whose value differs from the one the run already has.

        MLflow refuses to change a param (a resumed run with another setting would crash), so a
        changed value is logged as tag ``sketchlab.param_changed.<key>`` = "old -> new" and also
        collected in :attr:`params_changed`. Params already present with the same value are skipped.
        """
        from sketchlab.tracking.spool import MAX_PARAM_LEN, PARAM_CHANGED_TAG

        new: dict[str, str] = {}
        changed: list[str] = []
        for key, value in params.items():
            value = str(value)[:MAX_PARAM_LEN]
            old = self._params.get(key)
            if old is None:
                new[key] = self._params[key] = value
            elif old != value:
                changed.append(key)
                if (key, old, value) not in self.params_changed:
                    self.params_changed.append((key, old, value))
        if new:
            self._put({"kind": "params", "params": new})
        if changed:
            self.set_tags({PARAM_CHANGED_TAG + k: f"{o} -> {n}"[:MAX_PARAM_LEN]
                           for k, o, n in self.params_changed if k in changed})
        return changed

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log metrics at ``step``; non-finite values are dropped.

        In a reopened run, points at or below the highest step the run already has for a key are
        dropped: after a kill, the steps between the last checkpoint and the kill were already
        logged, and an exact resume recomputes those same values, so logging them again would
        only duplicate the history.
        """
        floor = self._metric_floor
        items = {k: float(v) for k, v in metrics.items()
                 if math.isfinite(float(v)) and not (k in floor and step <= floor[k])}
        if items:
            self._put({"kind": "metrics", "metrics": items, "step": int(step), "timestamp": int(time.time() * 1000)})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a file or a folder's content (in the background; a failed upload is spooled)."""
        self._put({"kind": "artifact", "path": str(Path(path).resolve()), "artifact_path": artifact_path})

    def log_image(self, image: Any, key: str, step: int) -> None:
        """Log a PIL image under ``key`` at ``step``: the MLflow UI shows it with a step slider."""
        if (key, int(step)) in self._images:  # recomputed after a resume: already logged
            return
        if not hasattr(image, "save"):  # a numpy array: keep it as a PIL image (it may be spooled)
            from PIL import Image

            image = Image.fromarray(image)
        self._put({"kind": "image", "image": image.copy(), "key": key, "step": int(step)})

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if tags:
            self._put({"kind": "tags", "tags": {k: str(v) for k, v in tags.items()}})

    def flush(self, timeout: float | None = None) -> bool:
        """Wait (at most ``timeout`` s, default ``flush_timeout``) until the writer has handled every
        queued record, sent or spooled; True when it has. Cheap to call at checkpoints."""
        deadline = time.monotonic() + (self.flush_timeout if timeout is None else timeout)
        with self._cond:
            while self._pending > 0:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(left)
        return True

    def finish(self, status: str = "FINISHED") -> None:
        """Close the run with ``status``; waits at most ``flush_timeout`` s, spools what is left."""
        if self._finished:
            return
        self._put({"kind": "status", "status": status, "end_time": int(time.time() * 1000)})
        self._close(self.flush_timeout)

    def _close(self, timeout: float) -> None:
        """Stop the writer: wait at most ``timeout`` s for it, then spool what it did not handle."""
        self._finished = True
        done = self.flush(timeout)
        with self._cond:
            self._abandoned = True
            left = [] if done or self._inflight is None else [self._inflight]
        while True:
            try:
                rec = self._queue.get_nowait()
            except queue.Empty:
                break
            if rec is not _STOP:
                left.append(rec)
        self._queue.put(_STOP)
        if left:
            self._spool(left)
        if self.n_spooled and self.spool_path.is_file():
            log.warning("%d tracking record(s) of run %s could not reach %s; they are kept in %s - replay them "
                        "with `sketchlab-runs --sync %s`", self.n_spooled, self.run_id, self.tracking_uri,
                        self.spool_path, self.spool_path.parent)

    # -- the writer thread -----------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            try:
                rec = self._queue.get(timeout=min(max(self.heartbeat_every, 0.1), 5.0))
            except queue.Empty:
                rec = None
            if rec is _STOP:
                return
            with self._cond:
                if self._abandoned:  # finish() already drained the queue: keep this one too
                    if rec is not None:
                        self._spool([rec])
                    return
                self._inflight = rec
            if rec is not None:
                self._deliver(rec)
            self._heartbeat()
            with self._cond:
                if self._abandoned:  # finish() gave up on this record and spooled it itself
                    return
                self._inflight = None
                if rec is not None:
                    self._pending -= 1
                    self._cond.notify_all()

    def _deliver(self, rec: dict[str, Any]) -> None:
        if time.monotonic() < self._down_until:
            self._spool([rec])
            return
        for attempt in range(2):
            t0 = time.monotonic()
            try:
                send_record(self.client, self.run_id, rec)
                break
            except Exception as exc:  # noqa: BLE001 - the store failing must not reach the training
                if self._abandoned:  # finish() gave up waiting and spooled this record itself
                    return
                if _is_bad_data(exc):
                    log.warning("MLflow refused a %s record (not retried): %s", rec["kind"], exc)
                    return
                # a quick failure (refused connection) is worth one retry; a slow one (sqlite busy
                # timeout, HTTP timeout) already waited long enough
                if attempt == 0 and time.monotonic() - t0 < 2.0:
                    time.sleep(0.5)
                    continue
                if not self.n_spooled:
                    log.warning("the MLflow store %s failed (%s: %s); training goes on and records are "
                                "spooled to %s", self.tracking_uri, type(exc).__name__, exc, self.spool_path)
                self._down_until = time.monotonic() + self.retry_after
                self._spool([rec])
                return
        if (self.n_spooled and not self._abandoned and time.monotonic() - self._last_replay > self.retry_after
                and self.spool_path.is_file()):
            self._last_replay = time.monotonic()
            self._replay_own_spool()

    def _replay_own_spool(self) -> None:
        """The store answers again: send what was spooled meanwhile (idempotent, see spool.py)."""
        try:
            result = replay_spool(self.spool_path, lambda uri: self.client if uri == self.tracking_uri
                                  else mlflow_client(uri))
            log.info("replayed spooled records into run %s: %s", self.run_id, result)
        except Exception as exc:  # noqa: BLE001 - stays in the spool for `sketchlab-runs --sync`
            log.warning("could not replay %s: %s", self.spool_path, exc)

    def _heartbeat(self) -> None:
        now = time.monotonic()
        if now - self._last_beat < self.heartbeat_every or now < self._down_until:
            return
        self._last_beat = now
        try:
            self.client.set_tag(self.run_id, HEARTBEAT_TAG, str(int(time.time())))
        except Exception:  # noqa: BLE001 - a missed heartbeat is harmless
            pass

    def _spool(self, records: list[dict[str, Any]]) -> None:
        """Append records to the spool file; a last resort, so it only logs its own failure."""
        out = []
        for rec in records:
            rec = {"v": 1, "tracking_uri": self.tracking_uri, "run_id": self.run_id, "time": time.time(), **rec}
            if rec["kind"] == "image":
                image = rec.pop("image")
                name = f"{rec['key'].replace('/', '_')}_{rec['step']}.png"
                png = self.spool_path.parent / "mlflow_spool_images" / name
                try:
                    png.parent.mkdir(parents=True, exist_ok=True)
                    image.save(png)
                except Exception as exc:  # noqa: BLE001
                    log.warning("could not keep image %s: %s", png, exc)
                    continue
                rec["file"] = str(png)
            out.append(rec)
        try:
            self.n_spooled += append_records(self.spool_path, out)
        except Exception as exc:  # noqa: BLE001 - nothing more can be done without stopping training
            log.error("could not write %d tracking record(s) to %s: %s", len(out), self.spool_path, exc)


def _close_at_exit(ref: weakref.ref) -> None:
    logger = ref()
    if logger is not None and not logger._finished:
        logger._close(min(logger.flush_timeout, 10.0))


def sweep_parent_id(sweep_dir: str | Path | None) -> str | None:
    """The parent run id the sweep callback wrote into a multirun's sweep dir, if any."""
    if not sweep_dir:
        return None
    marker = Path(sweep_dir) / SWEEP_PARENT_FILE
    return marker.read_text().strip() if marker.is_file() else None


def write_sweep_parent(sweep_dir: str | Path, run_id: str) -> None:
    with atomic_open(Path(sweep_dir) / SWEEP_PARENT_FILE, "w") as f:
        f.write(run_id)
