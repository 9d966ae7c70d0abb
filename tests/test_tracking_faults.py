"""A tracking store that never kills training: start-up check, spool and --sync, races, reopen, dead runs."""

import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from sketchlab.cli.runs import is_dead, main as runs_main
from sketchlab.tracking.loggers import MLflowLogger, NullLogger, TrackingUnavailable
from sketchlab.tracking.spool import SPOOL_FILE, SYNCED_FILE

REPO = Path(__file__).resolve().parents[1]


def steps(client, run_id, key="train/loss"):
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_unreachable_http_store_fails_fast_and_clearly(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(TrackingUnavailable) as err:
        MLflowLogger("x", tracking_uri="http://127.0.0.1:9", outputs_dir=tmp_path, connect_timeout=5)
    assert time.monotonic() - t0 < 15
    msg = str(err.value)
    for part in ("http://127.0.0.1:9", "logger.tracking_uri=", "MLFLOW_TRACKING_URI", "logger=none"):
        assert part in msg


def test_sqlite_store_locked_at_start_up_fails_within_the_timeout(tmp_path):
    lock = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        t0 = time.monotonic()
        with pytest.raises(TrackingUnavailable, match="mlflow.db is not available"):
            MLflowLogger("x", outputs_dir=tmp_path, connect_timeout=2)
        assert time.monotonic() - t0 < 15  # 2 s, plus start-up on a busy machine
    finally:
        lock.rollback()
        lock.close()


def test_store_code_is_imported_before_the_start_up_clock_runs(tmp_path, monkeypatch):
    """Importing MLflow's store code took 9 s on a loaded machine (the query 0.2 s): it must not count
    against connect_timeout, or a healthy store is reported unavailable."""
    from sketchlab.tracking import loggers

    MLflowLogger("x", outputs_dir=tmp_path).finish()  # an existing store, so the check is timed
    order = []
    real_import, real_timed = loggers._import_store_code, loggers._call_with_timeout
    monkeypatch.setattr(loggers, "_import_store_code", lambda uri: (order.append("import"), real_import(uri)))
    monkeypatch.setattr(loggers, "_call_with_timeout",
                        lambda fn, timeout: (order.append("timed"), real_timed(fn, timeout))[1])
    MLflowLogger("x", outputs_dir=tmp_path).finish()
    assert order == ["import", "timed"]


def test_reopening_a_missing_run_says_so(tmp_path):
    MLflowLogger("x", outputs_dir=tmp_path).finish()
    with pytest.raises(ValueError, match="cannot reopen MLflow run 0123"):
        MLflowLogger("x", outputs_dir=tmp_path, run_id="0123" * 8)


def test_locked_store_mid_run_spools_then_sync_completes_the_run(tmp_path, capsys):
    logger = MLflowLogger("faults", outputs_dir=tmp_path, spool_dir=tmp_path / "run", flush_timeout=2,
                          retry_after=60)
    logger.log_params({"a": 1})
    logger.log_metrics({"train/loss": 1.0}, step=1)
    assert logger.flush(10)
    # another process holds the database: every write waits for MLflow's sqlite busy timeout
    lock = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        t0 = time.monotonic()
        for step in range(2, 11):
            logger.log_metrics({"train/loss": 1.0 / step}, step=step)
        logger.log_params({"b": 2})
        logger.set_tags({"t": "v"})
        (tmp_path / "note.txt").write_text("hi")
        logger.log_artifact(tmp_path / "note.txt")
        logger.log_image(Image.new("RGB", (4, 4)), "val/samples", step=10)
        assert time.monotonic() - t0 < 1.0  # logging never waits for the store
        logger.finish("FINISHED")
        assert time.monotonic() - t0 < 6.0  # finish waits flush_timeout, then spools
    finally:
        lock.rollback()
        lock.close()
    spool = tmp_path / "run" / SPOOL_FILE
    assert spool.is_file() and '"kind": "status"' in spool.read_text()
    logger._thread.join(30)  # the record stuck in the busy wait may still land: sync must not duplicate it

    client = MlflowClient(logger.tracking_uri)
    assert client.get_run(logger.run_id).info.status == "RUNNING"
    assert runs_main(["--outputs", str(tmp_path), "--sync", str(tmp_path / "run")]) == 0
    assert "0 still pending" in capsys.readouterr().out
    run = client.get_run(logger.run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"a": "1", "b": "2"} and run.data.tags["t"] == "v"
    assert steps(client, logger.run_id) == list(range(1, 11))
    assert "note.txt" in {a.path for a in client.list_artifacts(logger.run_id)}
    assert any("+step+10+" in a.path for a in client.list_artifacts(logger.run_id, "images"))
    assert not spool.exists() and (tmp_path / "run" / SYNCED_FILE).is_file()
    # replaying again (all spools under outputs/) finds nothing and changes nothing
    assert runs_main(["--outputs", str(tmp_path), "--sync"]) == 0
    assert steps(client, logger.run_id) == list(range(1, 11))


def test_unreachable_store_mid_run_then_back_replays_its_own_spool(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    logger = MLflowLogger("faults", outputs_dir=tmp_path, spool_dir=tmp_path / "run", retry_after=0.5)
    good = logger.client
    logger.client = MlflowClient("http://127.0.0.1:9")  # the server goes away
    t0 = time.monotonic()
    for step in range(1, 6):
        logger.log_metrics({"train/loss": float(step)}, step=step)
    assert time.monotonic() - t0 < 0.5
    assert logger.flush(20)
    assert logger.n_spooled == 5 and (tmp_path / "run" / SPOOL_FILE).is_file()
    logger.client = good  # ... and comes back: the writer sends the spool with the next record
    time.sleep(0.6)
    logger.log_metrics({"train/loss": 6.0}, step=6)
    logger.finish()
    client = MlflowClient(logger.tracking_uri)
    assert steps(client, logger.run_id) == [1, 2, 3, 4, 5, 6]
    assert client.get_run(logger.run_id).info.status == "FINISHED"
    assert not (tmp_path / "run" / SPOOL_FILE).exists()


CHILD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    start = Path(sys.argv[2])
    from mlflow.tracking import MlflowClient  # imported before the barrier: the race is in the store creation
    from sketchlab.tracking.loggers import MLflowLogger
    while not start.exists():
        time.sleep(0.005)
    logger = MLflowLogger("race", outputs_dir=sys.argv[1], run_name=sys.argv[3])
    logger.log_metrics({"m": 1.0}, step=1)
    logger.finish()
""")


def test_trainings_starting_together_on_a_fresh_sqlite_store(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "out"), str(start), f"r{i}"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(3)]
    time.sleep(3)  # let them all import and wait at the barrier
    start.touch()
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(outs)
    client = MlflowClient(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["r0", "r1", "r2"]
    assert all(r.info.status == "FINISHED" and r.data.metrics == {"m": 1.0} for r in runs)


def test_reopened_run_logs_no_step_twice_and_reports_changed_params(tmp_path):
    first = MLflowLogger("resume", outputs_dir=tmp_path)
    first.log_params({"lr": 0.1, "seed": 0})
    for step in range(1, 6):
        first.log_metrics({"train/loss": float(step)}, step=step)
    first.log_image(Image.new("RGB", (4, 4)), "val/samples", step=4)
    assert first.flush(10)  # ... then the process is killed: no finish(), the run stays RUNNING

    logger = MLflowLogger("ignored", outputs_dir=tmp_path, run_id=first.run_id)
    client = MlflowClient(logger.tracking_uri)
    assert logger.run_id == first.run_id and logger.experiment_id == first.experiment_id
    assert client.get_run(first.run_id).info.status == "RUNNING"
    for step in range(3, 9):  # resumed from a checkpoint at step 2
        logger.log_metrics({"train/loss": float(step), "val/loss": 0.5}, step=step)
        if step % 4 == 0:
            logger.log_image(Image.new("RGB", (4, 4)), "val/samples", step=step)
    assert logger.log_params({"lr": 0.1, "seed": 0, "extra": "x"}) == []
    assert logger.log_params({"lr": 0.05}) == ["lr"]
    assert logger.params_changed == [("lr", "0.1", "0.05")]
    logger.finish()

    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.1", "seed": "0", "extra": "x"}
    assert run.data.tags["sketchlab.param_changed.lr"] == "0.1 -> 0.05"
    assert steps(client, first.run_id) == list(range(1, 9))
    assert steps(client, first.run_id, "val/loss") == list(range(3, 9))
    assert len(client.search_runs([first.experiment_id])) == 1
    assert client.get_experiment_by_name("ignored") is None
    images = sorted(a.path for a in client.list_artifacts(first.run_id, "images") if a.path.endswith(".png"))
    assert [p.split("+step+")[1].split("+")[0] for p in images] == ["4", "8"]


def test_dead_runs_are_flagged_and_marked_killed(tmp_path, capsys):
    dead_pid = subprocess.Popen([sys.executable, "-c", "pass"]).pid
    os.waitpid(dead_pid, 0)
    alive = MLflowLogger("dead", outputs_dir=tmp_path, run_name="alive")
    killed = MLflowLogger("dead", outputs_dir=tmp_path, run_name="killed")
    killed.set_tags({"sketchlab.pid": str(dead_pid)})
    silent = MLflowLogger("dead", outputs_dir=tmp_path, run_name="silent")  # another host, no heartbeat since
    silent.set_tags({"sketchlab.host": "elsewhere", "sketchlab.heartbeat": str(int(time.time()) - 3600)})
    for logger in (alive, killed, silent):
        assert logger.flush(10)
    client = MlflowClient(alive.tracking_uri)
    assert not is_dead(client.get_run(alive.run_id))
    assert is_dead(client.get_run(killed.run_id)) and is_dead(client.get_run(silent.run_id))

    assert runs_main(["--outputs", str(tmp_path), "-e", "dead"]) == 0
    lines = {line.split()[1]: line for line in capsys.readouterr().out.splitlines() if "RUNNING" in line}
    assert "RUNNING (dead?)" in lines["killed"] and "RUNNING (dead?)" in lines["silent"]
    assert "dead?" not in lines["alive"]
    assert runs_main(["--outputs", str(tmp_path), "--mark-dead"]) == 0
    assert "2 dead run(s) marked KILLED" in capsys.readouterr().out
    assert client.get_run(killed.run_id).info.status == "KILLED"
    assert client.get_run(silent.run_id).info.status == "KILLED"
    assert client.get_run(alive.run_id).info.status == "RUNNING"
    assert client.get_run(alive.run_id).data.tags["sketchlab.host"] == socket.gethostname()
    alive.finish()


def test_null_logger_takes_the_new_options():
    logger = NullLogger(run_id="x", spool_dir="/nowhere", connect_timeout=1)
    assert logger.log_params({"a": 1}) == [] and logger.flush() is True and logger.params_changed == []
    logger.finish()


def test_heartbeat_is_refreshed_by_the_writer(tmp_path):
    logger = MLflowLogger("beat", outputs_dir=tmp_path, heartbeat_every=1)
    client = MlflowClient(logger.tracking_uri)
    first = int(client.get_run(logger.run_id).data.tags["sketchlab.heartbeat"])
    deadline = time.time() + 10
    while int(client.get_run(logger.run_id).data.tags["sketchlab.heartbeat"]) == first and time.time() < deadline:
        time.sleep(0.3)
    assert int(client.get_run(logger.run_id).data.tags["sketchlab.heartbeat"]) > first
    assert client.get_run(logger.run_id).data.tags["sketchlab.pid"] == str(os.getpid())
    logger.finish()


def test_creating_a_fresh_sqlite_store_is_not_timed_but_opening_one_is(tmp_path, monkeypatch):
    """Schema creation on a loaded machine can outlast connect_timeout; an existing store cannot."""
    import sketchlab.tracking.loggers as loggers
    from sketchlab.tracking.loggers import open_store

    real = loggers._new_client

    def slow_client(uri):
        time.sleep(1.5)
        return real(uri)

    monkeypatch.setattr(loggers, "_new_client", slow_client)
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    client, _ = open_store(uri, timeout=0.5)  # a new file: no timeout
    assert client.search_experiments()
    with pytest.raises(TrackingUnavailable, match="fresh.db is not available"):
        open_store(uri, timeout=0.5)  # the same store again: timed
