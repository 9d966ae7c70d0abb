"""sketch-rnn-js JSON export and import (``sketchlab-export format=sketch_rnn_js``, ``checkpoint=model.json``).

Round trips on tiny random models, a file written by hand from the format's description, malformed
files, models the format cannot hold, the CLIs, and (when Node.js and the magenta-demos mirror are
on the machine) the real sketch-rnn-js library reading our export.
"""

from __future__ import annotations

import base64
import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from helpers import REPO, train_env
from sketchlab.cli.export import run_export
from sketchlab.cli.sample import run_sampling
from sketchlab.config import config_dir
from sketchlab.engine.checkpoint import save_checkpoint
from sketchlab.models.sketch_rnn import SketchRNN
from sketchlab.models.sketch_rnn.js_format import (MAX_WEIGHT, QUANT_STEPS, JSFormatError, export_js,
                                                   parse_js_model, read_js_model, write_js_model)

STEP = MAX_WEIGHT / QUANT_STEPS  # one quantisation step
TINY = {"enc_rnn_size": 6, "dec_rnn_size": 8, "z_size": 4, "num_mixture": 20, "max_seq_len": 12}


def tiny(conditional: bool, seed: int = 0, **kw) -> SketchRNN:
    torch.manual_seed(seed)
    model = SketchRNN(**{**TINY, "conditional": conditional, **kw}).eval()
    with torch.no_grad():  # larger than the init's 1e-3 so that z and the biases matter in the comparisons
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def draw(model: SketchRNN, n: int = 3, seed: int = 7) -> list[np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, model.z_size, generator=g) if model.conditional else None
    return model.decode(z, n=n, temperature=0.5, generator=g)


@pytest.mark.parametrize("conditional", [False, True], ids=["gen", "vae"])
def test_round_trip_weights_within_a_step_and_identical_samples(tmp_path, conditional):
    model = tiny(conditional)
    path = write_js_model(export_js(model, name="toy", scale_factor=2.5), tmp_path / "toy.json")
    raw = json.loads(path.read_text())
    assert raw[0] == {"name": "toy", "mode": 0 if conditional else 2, "version": 6, "max_seq_len": 12,
                      "scale_factor": 2.5}
    assert len(raw[1]) == (17 if conditional else 5) and all(isinstance(b, str) for b in raw[2])

    js = read_js_model(path)
    loaded = js.build()
    assert js.scale_factor == 2.5 and loaded.conditional == conditional and loaded.max_seq_len == 12
    original = model.state_dict()
    for key, value in loaded.state_dict().items():
        assert (value - original[key]).abs().max().item() <= STEP / 2 + 1e-6, key
    # quantisation loses no more: exporting the import again gives the same bytes
    assert export_js(loaded, name="toy", scale_factor=2.5) == raw
    again = read_js_model(path).build()
    for a, b in zip(draw(loaded), draw(again)):
        np.testing.assert_array_equal(a, b)


def _blob(values) -> str:
    return base64.b64encode(np.asarray(values, dtype="<i2").tobytes()).decode()


def hand_model(full: bool = False) -> list:
    """A decoder-only file built from the format's description: H=1, 20 components.

    Only the pen-down input drives the cell: gates i, j, o get code 32767 (10.0), f gets -32767 (-10.0),
    bias zero. The output layer reads h into the pen logit of "pen up" (index 1), component 2's pi logit
    and mu1, and its bias sets mu2 of component 2.
    """
    h, m = 1, 20
    w_xh = np.zeros((5, 4 * h), dtype=int)
    w_xh[2] = [32767, 32767, -32767, 32767]          # i, j, f, o from the pen-down input
    w_hh = np.zeros((h, 4 * h), dtype=int)
    out_w = np.zeros((h, 3 + 6 * m), dtype=int)
    out_w[0, 1] = 16384                              # pen up logit
    out_w[0, 3 + 2] = 32767                          # pi logit of component 2
    out_w[0, 3 + m + 2] = 3277                       # mu1 of component 2
    out_b = np.zeros(3 + 6 * m, dtype=int)
    out_b[3 + 2 * m + 2] = -1638                     # mu2 of component 2
    arrays = [out_w, out_b, w_xh, w_hh, np.zeros(4 * h, dtype=int)]
    blobs = [a.reshape(-1).tolist() if full else _blob(a.reshape(-1)) for a in arrays]
    return [{"name": "hand", "mode": 2, "version": 6, "max_seq_len": 3, "scale_factor": 10.0},
            [list(a.shape) for a in arrays], blobs]


@pytest.mark.parametrize("full", [False, True], ids=["base64", "int-lists"])
def test_hand_built_json_loads_computes_the_described_cell_and_samples(tmp_path, full):
    path = tmp_path / "hand.json"
    path.write_text(json.dumps(hand_model(full)))
    model = read_js_model(path).build()
    assert (model.decoder.cell.hidden_size, model.num_mixture, model.conditional) == (1, 20, False)

    # the format's maths by hand: LSTM gates i, j, f, o, forget bias 1, from the start token (0, 0, 1, 0, 0)
    def sig(v):
        return 1 / (1 + math.exp(-v))

    ten = 32767 / QUANT_STEPS * MAX_WEIGHT
    c = sig(ten) * math.tanh(ten)  # c0 = 0 so the forget gate sig(-10 + 1) doesn't enter yet
    hid = math.tanh(c) * sig(ten)
    x = torch.tensor([[[0.0, 0.0, 1.0, 0.0, 0.0]]])
    mix, (h1, c1) = model.decode_params(x, None, model.initial_state(None, 1, x))
    assert h1.item() == pytest.approx(hid, abs=1e-5) and c1.item() == pytest.approx(c, abs=1e-5)
    assert mix.pen_logits[0, 0, 1].item() == pytest.approx(hid * 16384 / QUANT_STEPS * MAX_WEIGHT, abs=1e-4)
    assert mix.mu1[0, 0, 2].item() == pytest.approx(hid * 3277 / QUANT_STEPS * MAX_WEIGHT, abs=1e-4)
    assert mix.mu2[0, 0, 2].item() == pytest.approx(-1638 / QUANT_STEPS * MAX_WEIGHT, abs=1e-5)
    assert mix.pi[0, 0].argmax().item() == 2 and mix.sigma1[0, 0, 2].item() == pytest.approx(1.0)

    # greedy: component 2's mean and the pen-up state (logit about 3.8 vs 0 and 0), up to max_seq_len rows
    (sketch,) = model.decode(None, n=1, greedy=True)
    assert sketch.shape == (3, 3) and (sketch[:, 2] == 1).all()
    assert sketch[0, 0] == pytest.approx(hid * 3277 / QUANT_STEPS * MAX_WEIGHT, abs=1e-4)
    assert len(model.decode(None, n=2, temperature=0.5, generator=torch.Generator().manual_seed(0))) == 2


def _mutations():
    def gen():
        return hand_model()

    def set_(path, value):
        def apply(d):
            node = d
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
            return d
        return apply

    def delete(key):
        def apply(d):
            del d[0][key]
            return d
        return apply

    return [
        ("not a list", lambda d: {"info": d[0]}, "JSON list [info, shapes, weights]"),
        ("two parts", lambda d: d[:2], "a list of 2"),
        ("no mode", delete("mode"), "info lacks mode"),
        ("no scale", delete("scale_factor"), "scale_factor"),
        ("bad max_seq_len", set_([0, "max_seq_len"], 2.5), "max_seq_len must be a positive integer"),
        ("bad mode", set_([0, "mode"], "rnn"), "info.mode must be one of"),
        ("mode vs arrays", set_([0, "mode"], 0), "does not match the file's 5 weight arrays"),
        ("array count", lambda d: [d[0], d[1][:4], d[2][:4]], "has 5 weight arrays (decoder-only) or 17"),
        ("count mismatch", lambda d: [d[0], d[1], d[2][:4]], "5 shapes but 4 weight arrays"),
        ("bad shape", set_([1, 4], [4, "x"]), "shape 4 must be a list of one or two positive integers"),
        ("wrong shape", set_([1, 2], [6, 4]), "array 2 (dec_lstm_W_xh) has shape [6, 4], expected [5, 4]"),
        ("output width", set_([1, 0], [1, 122]), "dec_output_w) must be (1, 3 + 6M)"),
        ("bad base64", set_([2, 1], "***"), "array 1 (dec_output_b) is not valid base64"),
        ("short blob", set_([2, 4], _blob([1, 2])), "holds 2 values, its shape [4] needs 4"),
        ("odd bytes", set_([2, 4], base64.b64encode(b"abc").decode()), "not a whole number of int16"),
        ("int range", set_([2, 4], [0, 1, 2, 40000]), "outside int16"),
        ("float list", set_([2, 4], [0.5, 1, 2, 3]), "base64 string or a list of integers"),
    ]


@pytest.mark.parametrize("mutate,message", [(m, msg) for _, m, msg in _mutations()],
                         ids=[name for name, _, _ in _mutations()])
def test_malformed_json_is_refused_naming_the_problem(mutate, message):
    with pytest.raises(JSFormatError, match=None) as err:
        parse_js_model(mutate(hand_model()))
    assert message in str(err.value)


def test_files_that_are_not_json_models(tmp_path):
    (tmp_path / "a.json").write_text("[1, 2")
    with pytest.raises(JSFormatError, match="is not a JSON file"):
        read_js_model(tmp_path / "a.json")
    (tmp_path / "b.json").write_text('[{"mode": 2, "max_seq_len": 3, "scale_factor": NaN}, [], []]')
    with pytest.raises(JSFormatError, match="NaN is not valid JSON"):
        read_js_model(tmp_path / "b.json")
    with pytest.raises(FileNotFoundError):
        read_js_model(tmp_path / "missing.json")


@pytest.mark.parametrize("kw,message", [
    ({"dec_model": "layer_norm"}, "model.net.dec_model=layer_norm: sketch-rnn-js and magenta-js run plain LSTM"),
    ({"dec_model": "hyper", "hyper_num_units": 4, "hyper_embedding_size": 2}, "model.net.dec_model=hyper"),
    ({"enc_model": "layer_norm", "conditional": True}, "model.net.enc_model=layer_norm"),
    ({"num_mixture": 3}, "hard-code 20 mixture components"),
])
def test_unsupported_models_are_refused_on_export(kw, message):
    model = SketchRNN(**{**TINY, "conditional": False, **kw})
    with pytest.raises(JSFormatError) as err:
        export_js(model, name="x", scale_factor=1.0)
    assert message in str(err.value)


def test_weights_beyond_the_range_fail_unless_clipped():
    model = tiny(False)
    with torch.no_grad():
        model.output.bias[0] = 12.5
    with pytest.raises(JSFormatError, match="exceed ±10.*clip=true"):
        export_js(model, name="x", scale_factor=1.0)
    blob = export_js(model, name="x", scale_factor=1.0, clip=True)
    assert parse_js_model(blob).state["output.bias"][0].item() == pytest.approx(MAX_WEIGHT)
    with pytest.raises(JSFormatError, match="Sketch-RNN models only"):
        export_js(torch.nn.Linear(2, 2), name="x", scale_factor=1.0)


# -- the command-line tools ------------------------------------------------------------------------

def _checkpoint(tmp_path, **kw):
    """A checkpoint as sketchlab-train writes it (model weights, step, resolved config, data scale)."""
    model = tiny(**{"conditional": False, **kw})
    net = {"_target_": "sketchlab.models.sketch_rnn.SketchRNN", **TINY, "conditional": False, **kw}
    config = {"model": {"name": "sketch_rnn", "net": net}, "data": {"name": "toy"}}
    path = save_checkpoint(tmp_path / "last.pt", {"model": model.state_dict(), "step": 5, "config": config,
                                                  "data_scale": 3.25})
    return path, model


def _cfg(name, overrides):
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose(name, overrides=overrides)


def test_export_cli_then_sample_cli_from_the_json(tmp_path):
    ckpt, model = _checkpoint(tmp_path)
    out = tmp_path / "toy.gen.json"
    assert run_export(_cfg("export", [f"checkpoint={ckpt}", f"out={out}"])) == out
    info = json.loads(out.read_text())[0]
    assert info["name"] == "toy" and info["scale_factor"] == 3.25 and info["mode"] == 2

    samples = tmp_path / "samples"
    summary = run_sampling(_cfg("sample", [f"checkpoint={out}", f"out_dir={samples}", "n=4", "cell_size=32",
                                           "formats=[png]"]))
    assert Image.open(samples / "samples.png").size == (64, 64)
    assert summary["metrics"] == {} and summary["files"] == [str(samples / "samples.png")]


def test_export_cli_refuses_what_the_format_cannot_hold(tmp_path):
    from sketchlab.validation import ConfigValueError

    ckpt, _ = _checkpoint(tmp_path, dec_model="layer_norm")
    with pytest.raises(JSFormatError, match="dec_model=layer_norm"):
        run_export(_cfg("export", [f"checkpoint={ckpt}", f"out={tmp_path / 'x.json'}"]))
    with pytest.raises(ConfigValueError, match="a list of checkpoints is for format=mlflow"):
        run_export(_cfg("export", [f"checkpoint=[{ckpt},{ckpt}]", f"out={tmp_path / 'x.json'}"]))
    with pytest.raises(ConfigValueError, match="format must be one of"):
        run_export(_cfg("export", [f"checkpoint={ckpt}", "format=onnx", f"out={tmp_path / 'x.json'}"]))


@pytest.mark.slow  # a fresh interpreter importing torch, Hydra and MLflow: long on a busy machine
def test_export_script_reports_user_errors_in_one_line(tmp_path):
    ckpt, _ = _checkpoint(tmp_path, num_mixture=3)
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "export.py"), f"checkpoint={ckpt}",
                           f"out={tmp_path / 'x.json'}"],
                          cwd=tmp_path, env=train_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: model.net.num_mixture=3: sketch-rnn-js")


# -- the real sketch-rnn-js (optional: Node.js and the magenta-demos mirror read at test time) ---------

MIRROR = "/work/.mirror/magenta+magenta-demos/repo"
HARNESS = r"""
const fs = require('fs'), vm = require('vm'), path = require('path');
const [dir, modelPath, inputPath] = process.argv.slice(2);
global.nj = require(path.resolve(dir, 'numjs.js'));
vm.runInThisContext(fs.readFileSync(path.join(dir, 'sketch_rnn.js'), 'utf8'));
const model = new SketchRNN(JSON.parse(fs.readFileSync(modelPath, 'utf8')));
model.set_pixel_factor(1.0);
const input = JSON.parse(fs.readFileSync(inputPath, 'utf8'));
const out = {};
let state = model.zero_state(), z = null;
if (input.z) {
  const ms = model.encode_to_mu_sigma(input.strokes);
  out.mu = ms[0].tolist(); out.sigma = ms[1].tolist();
  z = input.z;
  state = model.get_init_state_from_latent_vector(z);
  out.h0 = state[0].tolist(); out.c0 = state[1].tolist();
}
out.pdfs = [];
for (const x of input.strokes) {
  state = model.update(x, state, z);
  out.pdfs.push(model.get_pdf(state).map(a => a.tolist()));
}
console.log('RESULT ' + JSON.stringify(out));
"""


@pytest.fixture(scope="module")
def sketch_rnn_js(tmp_path_factory):
    """sketch_rnn.js and numjs.js read from the mirror into a temporary folder (never committed)."""
    if shutil.which("node") is None:
        pytest.skip("Node.js not installed")
    folder = tmp_path_factory.mktemp("sketch_rnn_js")
    for name in ("sketch_rnn.js", "numjs.js"):
        proc = subprocess.run(["git", "-C", MIRROR, "show", f"HEAD:sketch-rnn-js/lib/{name}"], capture_output=True)
        if proc.returncode != 0:
            pytest.skip(f"magenta-demos mirror not at {MIRROR}")
        (folder / name).write_bytes(proc.stdout)
    (folder / "harness.js").write_text(HARNESS)
    return folder


@pytest.mark.parametrize("conditional", [False, True], ids=["gen", "vae"])
def test_the_real_sketch_rnn_js_computes_what_sketchlab_computes(tmp_path, sketch_rnn_js, conditional):
    path = write_js_model(export_js(tiny(conditional, seed=1), name="toy", scale_factor=1.0), tmp_path / "m.json")
    model = read_js_model(path).build()
    strokes = torch.tensor([[0.3, -0.2, 1, 0, 0], [0.5, 0.1, 0, 1, 0], [-0.4, 0.6, 1, 0, 0], [0.2, 0.2, 0, 1, 0]])
    z = torch.tensor([[0.5, -1.0, 0.25, 0.8]]) if conditional else None
    (tmp_path / "in.json").write_text(json.dumps({"strokes": strokes.tolist(), "z": None if z is None else z[0].tolist()}))
    proc = subprocess.run(["node", str(sketch_rnn_js / "harness.js"), str(sketch_rnn_js), str(path),
                           str(tmp_path / "in.json")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    js = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])

    with torch.no_grad():
        if conditional:
            mu, presig = model.posterior(strokes.unsqueeze(0), torch.tensor([len(strokes)]))
            np.testing.assert_allclose(js["mu"], mu[0].numpy(), atol=1e-4)
            np.testing.assert_allclose(js["sigma"], torch.exp(presig / 2)[0].numpy(), atol=1e-4)
        state = model.initial_state(z, 1, strokes)
        if conditional:
            np.testing.assert_allclose(js["h0"], state[0][0].numpy(), atol=1e-4)
            np.testing.assert_allclose(js["c0"], state[1][0].numpy(), atol=1e-4)
        mix, _ = model.decode_params(strokes.unsqueeze(0), z, state)
    ours = [mix.pi, mix.mu1, mix.mu2, mix.sigma1, mix.sigma2, mix.corr, mix.pen]
    for t, pdf in enumerate(js["pdfs"]):
        for name, theirs, mine in zip(("pi", "mu1", "mu2", "sigma1", "sigma2", "corr", "pen"), pdf, ours):
            np.testing.assert_allclose(theirs, mine[0, t].numpy(), atol=1e-4, err_msg=f"step {t} {name}")
