"""MLflow pyfunc models of sketchlab models: saved without pickles, loaded by MLflow, drawing on predict;
logged at the end of training with ``logger.log_model=true``; fine-tuning from a sketch-rnn-js file."""

from __future__ import annotations

import json
import os
from pathlib import Path
import socket
import subprocess
import sys
import time
import urllib.request

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import torch

from helpers import SHORT, TINY_RNN, run_dirs, runs_of, train
from sketchlab.engine.checkpoint import load_checkpoint
from sketchlab.models.sketch_rnn import SketchRNN
from sketchlab.models.sketch_rnn.js_format import export_js, read_js_model, write_js_model
from sketchlab.tracking.serving import ServedModel, save_pyfunc

NET = {"_target_": "sketchlab.models.sketch_rnn.SketchRNN", "enc_rnn_size": 6, "dec_rnn_size": 8, "z_size": 4,
       "num_mixture": 3, "max_seq_len": 10}


def served(name: str, conditional: bool, scale: float, seed: int = 0) -> ServedModel:
    net = {**NET, "conditional": conditional}
    torch.manual_seed(seed)
    model = SketchRNN(**{k: v for k, v in net.items() if k != "_target_"})
    return ServedModel(name, net, model, scale)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    path = tmp_path_factory.mktemp("pyfunc") / "model"
    models = [served("gen", False, 2.0), served("vae", True, 5.0, seed=1)]
    save_pyfunc(models, path)
    return path, models


def test_saved_model_holds_weights_and_config_not_pickles(bundle):
    path, models = bundle
    files = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    assert {"MLmodel", "_pyfunc_entry.py", "artifacts/sketchlab_config.json", "artifacts/weights_0.pt",
            "artifacts/weights_1.pt"} <= files
    assert not [f for f in files if f.endswith((".pkl", ".pickle"))]
    config = json.loads((path / "artifacts" / "sketchlab_config.json").read_text())
    assert [m["name"] for m in config["models"]] == ["gen", "vae"] and config["models"][1]["scale"] == 5.0
    state = torch.load(path / "artifacts" / "weights_1.pt", weights_only=True)
    for key, value in models[1].model.state_dict().items():
        assert torch.equal(state[key], value)


def test_loaded_model_draws_per_request(bundle):
    path, models = bundle
    model = mlflow.pyfunc.load_model(str(path))
    out = model.predict({"n": 3, "temperature": 0.5, "seed": 4})
    assert list(out.columns) == ["request", "class", "strokes"] and len(out) == 3
    assert set(out["class"]) == {"gen"}
    for strokes in out["strokes"]:
        arr = np.asarray(strokes)
        assert arr.ndim == 2 and arr.shape[1] == 3 and 1 <= len(arr) <= NET["max_seq_len"]

    # the same seed draws the same sketches; offsets come in data units (model units times the scale)
    again = model.predict({"n": 3, "temperature": 0.5, "seed": 4})
    assert [np.asarray(s).tolist() for s in again["strokes"]] == [np.asarray(s).tolist() for s in out["strokes"]]
    g = torch.Generator().manual_seed(4)
    direct = models[0].model.eval().decode(None, n=3, temperature=0.5, generator=g)
    np.testing.assert_allclose(np.asarray(out["strokes"][0])[:, :2], direct[0][:, :2] * 2.0, rtol=1e-5, atol=1e-5)

    # several requests, a class and a latent code
    z = [0.1, -0.2, 0.3, 0.4]
    rows = pd.DataFrame([{"n": 2, "class": "vae", "z": z, "seed": 1}, {"n": 1, "class": "gen"}])
    out = model.predict(rows)
    assert out["request"].tolist() == [0, 0, 1] and out["class"].tolist() == ["vae", "vae", "gen"]
    g = torch.Generator().manual_seed(1)
    direct = models[1].model.eval().decode(torch.tensor([z] * 2), temperature=0.4, generator=g)
    np.testing.assert_allclose(np.asarray(out["strokes"][0])[:, :2], direct[0][:, :2] * 5.0, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("request_,message", [
    ({"class": "cat"}, "unknown class 'cat': this model draws gen, vae"),
    # a request with a list value goes in a list of records (MLflow spreads a dict's lists over rows)
    ([{"class": "vae", "z": [0.0, 1.0]}], "takes z of size 4, got 2"),
    ([{"class": "gen", "z": [0.0] * 4}], "is unconditional: it takes no z"),
    ([{"class": "vae", "z": "abc"}], "z must be a list of numbers"),
    ({"n": 0}, "n must be between 1 and"),
    ({"n": 1.5}, "n must be an integer"),
    ({"temperature": 0.0}, "temperature must be > 0"),
])
def test_bad_requests_are_refused_clearly(bundle, request_, message):
    model = mlflow.pyfunc.load_model(str(bundle[0]))
    with pytest.raises(Exception) as err:
        model.predict(request_)
    assert message in str(err.value)


def test_save_refuses_duplicate_classes_and_existing_folders(tmp_path, bundle):
    with pytest.raises(ValueError, match="distinct names"):
        save_pyfunc([served("a", False, 1.0), served("a", False, 1.0)], tmp_path / "m")
    with pytest.raises(FileExistsError):
        save_pyfunc([served("a", False, 1.0)], bundle[0])


@pytest.mark.slow
def test_fine_tune_from_json_and_log_the_model(tmp_path, data_root):
    """resume=<model>.json starts a new run from the file's weights; logger.log_model=true logs a pyfunc model."""
    torch.manual_seed(0)
    source = SketchRNN(dec_rnn_size=16, num_mixture=20, conditional=False, max_seq_len=50)
    js_path = write_js_model(export_js(source, name="toy", scale_factor=1.0), tmp_path / "toy.gen.json")
    train(tmp_path, *TINY_RNN, *SHORT, f"resume={js_path}", "logger.log_model=true", "logger.experiment_name=ft",
          "logger.connect_timeout=120",  # a busy machine can take longer than 10 s to create the sqlite store
          data=data_root)

    (run_dir,) = run_dirs(tmp_path)
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    net = state["config"]["model"]["net"]
    assert (net["dec_rnn_size"], net["num_mixture"], net["conditional"]) == (16, 20, False)  # the file's sizes
    assert state["step"] == 2
    # two Adam steps (lr 1e-3) from the file's weights: close to them, yet trained
    js = read_js_model(js_path).state
    moved = max((state["model"][k] - v).abs().max().item() for k, v in js.items())
    assert 0 < moved < 0.01

    client, (run,) = runs_of(tmp_path, "ft")
    assert run.data.tags["sketchlab.initialised_from"] == str(js_path.resolve())
    assert run.data.tags["sketchlab.model_uri"] == f"runs:/{run.info.run_id}/model"
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"
    try:
        model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI")
    out = model.predict({"n": 2, "seed": 0})
    assert len(out) == 2 and set(out["class"]) == {"sheep"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_mlflow_models_serve_draws_over_http(bundle, tmp_path):
    """``mlflow models serve --env-manager local`` (offline; its start takes a minute on a busy 2-core box)."""
    port = _free_port()
    log = open(tmp_path / "serve.log", "w")
    # mlflow starts `uvicorn` by name: the venv's bin must be on PATH even when the venv is not activated (make test)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", str(bundle[0]), "--env-manager",
                             "local", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env=env)
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("server did not start:\n" + (tmp_path / "serve.log").read_text()[-3000:])
                time.sleep(1)
        body = json.dumps({"dataframe_records": [{"n": 2, "class": "vae", "seed": 0}]}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body,
                                     {"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(req, timeout=60).read())
        assert [p["class"] for p in answer["predictions"]] == ["vae", "vae"]
        assert all(len(p["strokes"][0]) == 3 for p in answer["predictions"])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)  # the server and its uvicorn worker, which this test started
        proc.wait(timeout=30)
        log.close()
