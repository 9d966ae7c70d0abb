"""Sketch-RNN weights in the JSON format of magenta's sketch-rnn-js (and of magenta-js / ml5.js).

The format, as ``sketch-rnn-js/lib/sketch_rnn.js`` (magenta-demos) reads it, is a JSON list of three:

1. ``info``: ``{"name", "mode", "version", "max_seq_len", "scale_factor", ...}``. ``mode`` 2 (or
   ``"gen"``) is a decoder-only model, anything else the VAE. ``scale_factor`` converts model units
   to drawing units: the library divides input offsets by ``scale_factor / pixel_factor`` and
   multiplies sampled ones by it (``pixel_factor`` is 2 by default in the browser).
2. the shape of each weight array (``[rows, cols]`` or ``[size]``);
3. the arrays, quantised: ``int16 = round(clip(w / 10, -1, 1) * 32767)``, row-major, little-endian,
   base64-encoded (magenta's unencoded "full" files hold plain integer lists; both are read here).

Array order, each matrix applied as ``x @ W`` with LSTM gate blocks ``i, j, f, o`` and a forget bias
of 1 added at run time (magenta's ``LSTMCell``, which is also sketchlab's layout):

- decoder-only (5 arrays): ``output_w (H, 6M+3)``, ``output_b``, ``lstm W_xh (5, 4H)``, ``W_hh (H, 4H)``, ``bias (4H)``;
- VAE (17 arrays): forward encoder ``W_xh (5, 4E), W_hh (E, 4E), bias``; backward encoder (same);
  ``mu_w (2E, Z), mu_b, sigma_w (2E, Z), sigma_b`` (``sigma = exp(presig / 2)``); the initial-state
  projection ``enc_w (Z, 2H), enc_b`` (``tanh``, split into ``[c, h]``); then the decoder's five
  arrays with ``W_xh (5 + Z, 4H)`` (its input is ``[x, z]``).

The output row is ``[pen logits (3), pi, mu1, mu2, log sigma1, log sigma2, atanh corr]`` with 20
components each (the libraries hard-code 20). Only plain LSTM cells exist there: no layer-norm or
HyperLSTM cells, so models with those cannot be exported. Dropout is a training-time device and has
no weights, so it does not enter the file (a fine-tuned import trains with the dropout configured).

Known differences of the JavaScript samplers from magenta's Python one (which sketchlab follows):
sketch-rnn-js starts generation from ``[0, 0, 0, 0, 0]`` (magenta and magenta-js: ``[0, 0, 1, 0, 0]``)
and tempers the discrete choices with ``0.5 + 0.5 * temperature``. Version < 6 VAE files squash z
with ``tanh`` before the initial state in sketch-rnn-js; sketchlab never does.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sketchlab.models.sketch_rnn.cells import LSTMCell
from sketchlab.models.sketch_rnn.model import SketchRNN

#: Weights are quantised to int16 over [-MAX_WEIGHT, MAX_WEIGHT] (sketch_rnn.js's ``max_weight``).
MAX_WEIGHT = 10.0
QUANT_STEPS = 32767
#: Mixture components the JavaScript libraries hard-code (``N_mixture`` / ``NMIXTURE``).
JS_NUM_MIXTURE = 20
#: The format version written (from 6 on, sketch-rnn-js no longer squashes z with tanh).
FORMAT_VERSION = 6
GEN_MODES = (2, "gen")
SKETCH_RNN_TARGET = "sketchlab.models.sketch_rnn.SketchRNN"
VAE_MODES = (0, 1, "vae")

#: JSON array name -> (SketchRNN parameter, transposed: the JSON holds ``x @ W`` matrices, nn.Linear ``W x``).
GEN_LAYOUT: tuple[tuple[str, str, bool], ...] = (
    ("dec_output_w", "output.weight", True),
    ("dec_output_b", "output.bias", False),
    ("dec_lstm_W_xh", "decoder.cell.w_xh", False),
    ("dec_lstm_W_hh", "decoder.cell.w_hh", False),
    ("dec_lstm_bias", "decoder.cell.bias", False),
)
VAE_LAYOUT: tuple[tuple[str, str, bool], ...] = (
    ("enc_fw_lstm_W_xh", "enc_fw.cell.w_xh", False),
    ("enc_fw_lstm_W_hh", "enc_fw.cell.w_hh", False),
    ("enc_fw_lstm_bias", "enc_fw.cell.bias", False),
    ("enc_bw_lstm_W_xh", "enc_bw.cell.w_xh", False),
    ("enc_bw_lstm_W_hh", "enc_bw.cell.w_hh", False),
    ("enc_bw_lstm_bias", "enc_bw.cell.bias", False),
    ("enc_mu_w", "enc_mu.weight", True),
    ("enc_mu_b", "enc_mu.bias", False),
    ("enc_sigma_w", "enc_presig.weight", True),
    ("enc_sigma_b", "enc_presig.bias", False),
    ("enc_w", "init_state.weight", True),
    ("enc_b", "init_state.bias", False),
    *GEN_LAYOUT,
)


class JSFormatError(ValueError):
    """A model that the sketch-rnn-js format cannot hold, or a file that is not a valid one."""


# -- quantisation ---------------------------------------------------------------------------------

def quantize(weights: np.ndarray, clip: bool = False, name: str = "weights") -> np.ndarray:
    """Magenta's ``quantize_params``: int16 codes of ``weights / MAX_WEIGHT`` (flattened, row-major).

    Values beyond ``±MAX_WEIGHT`` can't be represented; they are an error unless ``clip`` (magenta's
    exporter clips silently).
    """
    w = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(w)):
        raise JSFormatError(f"{name} holds non-finite values: the model cannot be exported")
    big = int(np.count_nonzero(np.abs(w) > MAX_WEIGHT))
    if big and not clip:
        raise JSFormatError(
            f"{big} value(s) of {name} exceed ±{MAX_WEIGHT:g} (largest {np.abs(w).max():.4g}), the range of "
            "the format's int16 quantisation: pass clip=true to clip them as magenta's exporter does")
    r = np.clip(w / MAX_WEIGHT, -1.0, 1.0)
    return np.round(r * QUANT_STEPS).astype(np.int16).reshape(-1)


def dequantize(codes: np.ndarray) -> np.ndarray:
    """float32 weights of int16 codes, as the JavaScript libraries compute them."""
    return (np.asarray(codes, dtype=np.float64) / QUANT_STEPS * MAX_WEIGHT).astype(np.float32)


def encode_blob(codes: np.ndarray) -> str:
    """Base64 of the little-endian int16 bytes (what sketch_rnn.js's ``string_to_array`` decodes)."""
    return base64.b64encode(np.asarray(codes, dtype="<i2").tobytes()).decode("ascii")


def decode_blob(blob: Any, where: str) -> np.ndarray:
    """int16 codes from a base64 string or a plain list of integers (magenta's unencoded "full" files)."""
    if isinstance(blob, str):
        try:
            raw = base64.b64decode(blob, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise JSFormatError(f"{where} is not valid base64 ({exc})") from None
        if len(raw) % 2:
            raise JSFormatError(f"{where} decodes to {len(raw)} bytes, not a whole number of int16 values")
        return np.frombuffer(raw, dtype="<i2").astype(np.int16)
    if isinstance(blob, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in blob):
            raise JSFormatError(f"{where} must be a base64 string or a list of integers")
        codes = np.asarray(blob, dtype=np.int64)
        if codes.size and (codes.min() < -32768 or codes.max() > 32767):
            raise JSFormatError(f"{where} holds values outside int16")
        return codes.astype(np.int16)
    raise JSFormatError(f"{where} must be a base64 string or a list of integers, got {type(blob).__name__}")


# -- export ---------------------------------------------------------------------------------------

def check_exportable(model: Any) -> None:
    """Raise :class:`JSFormatError` naming the setting when sketch-rnn-js cannot run ``model``."""
    if not isinstance(model, SketchRNN):
        raise JSFormatError(f"the sketch-rnn-js format holds Sketch-RNN models only, not {type(model).__name__}")
    cells = [("model.net.dec_model", model.decoder.cell)]
    if model.conditional:
        cells += [("model.net.enc_model", model.enc_fw.cell), ("model.net.enc_model", model.enc_bw.cell)]
    for key, cell in cells:
        if type(cell) is not LSTMCell:
            kind = {"LayerNormLSTMCell": "layer_norm", "HyperLSTMCell": "hyper"}.get(type(cell).__name__,
                                                                                    type(cell).__name__)
            raise JSFormatError(
                f"{key}={kind}: sketch-rnn-js and magenta-js run plain LSTM cells only (no layer-norm or "
                f"HyperLSTM cell), so these weights cannot be exported; train with {key}=lstm to export")
        if cell.forget_bias != 1.0:
            raise JSFormatError(f"the JavaScript LSTM adds a forget bias of 1.0; this cell uses {cell.forget_bias}")
    if model.num_mixture != JS_NUM_MIXTURE:
        raise JSFormatError(
            f"model.net.num_mixture={model.num_mixture}: sketch-rnn-js and magenta-js hard-code "
            f"{JS_NUM_MIXTURE} mixture components; train with model.net.num_mixture={JS_NUM_MIXTURE} to export")
    if model.conditional and model.enc_fw.cell.hidden_size != model.enc_bw.cell.hidden_size:
        raise JSFormatError("the forward and backward encoders must have the same size")


def js_weights(model: SketchRNN) -> list[tuple[str, np.ndarray]]:
    """``(name, float array)`` in the format's order and ``x @ W`` layout (see the module docstring)."""
    check_exportable(model)
    params = dict(model.named_parameters())
    layout = VAE_LAYOUT if model.conditional else GEN_LAYOUT
    out = []
    for name, param, transpose in layout:
        w = params[param].detach().to("cpu", torch.float64)
        out.append((name, (w.t() if transpose else w).contiguous().numpy()))
    return out


def export_js(model: SketchRNN, *, name: str, scale_factor: float, max_seq_len: int | None = None,
              clip: bool = False, extra_info: Mapping[str, Any] | None = None) -> list[Any]:
    """The JSON-ready list ``[info, shapes, blobs]`` of ``model`` (see the module docstring).

    ``scale_factor``: drawing units per model unit (sketchlab's data scale makes samples come out in
    the units of the training data); ``max_seq_len``: the longest sketch the libraries draw (default
    the model's). ``extra_info`` adds keys to the header (the libraries ignore unknown ones).
    """
    if not (isinstance(scale_factor, (int, float)) and math.isfinite(scale_factor) and scale_factor > 0):
        raise JSFormatError(f"scale_factor must be a positive number, got {scale_factor!r}")
    weights = js_weights(model)
    info = {"name": str(name), "mode": 0 if model.conditional else 2, "version": FORMAT_VERSION,
            "max_seq_len": int(max_seq_len if max_seq_len is not None else model.max_seq_len),
            "scale_factor": float(scale_factor), **dict(extra_info or {})}
    shapes = [list(w.shape) for _, w in weights]
    blobs = [encode_blob(quantize(w, clip, name=n)) for n, w in weights]
    return [info, shapes, blobs]


def write_js_model(blob: list[Any], path: str | Path) -> Path:
    """Write ``[info, shapes, blobs]`` compactly, as magenta's files are."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(blob, separators=(",", ":")))
    return path


# -- import ---------------------------------------------------------------------------------------

@dataclass
class JSModel:
    """A parsed sketch-rnn-js file: its header, the SketchRNN sizes and the dequantised weights."""

    info: dict[str, Any]
    hparams: dict[str, Any]
    state: dict[str, torch.Tensor] = field(repr=False)

    @property
    def net(self) -> dict[str, Any]:
        """The ``model.net`` config that builds this model (what a training config would hold)."""
        return {"_target_": SKETCH_RNN_TARGET, **self.hparams}

    @property
    def scale_factor(self) -> float:
        return float(self.info["scale_factor"])

    def build(self, **overrides: Any) -> SketchRNN:
        """A SketchRNN in eval mode with these weights (``overrides``: other SketchRNN arguments)."""
        model = SketchRNN(**{**overrides, **self.hparams})
        model.load_state_dict(self.state)
        return model.eval()


def _shape(dims: Any, index: int) -> tuple[int, ...]:
    if (not isinstance(dims, list) or len(dims) not in (1, 2)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims)):
        raise JSFormatError(f"shape {index} must be a list of one or two positive integers, got {dims!r}")
    return tuple(dims)


def _expect(shape: tuple[int, ...], want: tuple[int, ...], name: str, index: int) -> None:
    if shape != want:
        raise JSFormatError(f"array {index} ({name}) has shape {list(shape)}, expected {list(want)} "
                            "for the sizes the other arrays give")


def _mode_layout(mode: Any, count: int) -> bool:
    """Whether the file is a VAE, from its array count, checked against its ``mode``."""
    if count not in (len(GEN_LAYOUT), len(VAE_LAYOUT)):
        raise JSFormatError(f"a sketch-rnn-js model has {len(GEN_LAYOUT)} weight arrays (decoder-only) or "
                            f"{len(VAE_LAYOUT)} (VAE), this file has {count}")
    vae = count == len(VAE_LAYOUT)
    if mode not in GEN_MODES + VAE_MODES or isinstance(mode, bool):
        raise JSFormatError(f"info.mode must be one of {', '.join(map(repr, GEN_MODES + VAE_MODES))}, got {mode!r}")
    # mode 1 is "VAE" to sketch-rnn-js but "decoder only" in magenta-js's docs: the array count decides it
    if (mode in GEN_MODES and vae) or (mode in (0, "vae") and not vae):
        raise JSFormatError(f"info.mode={mode!r} does not match the file's {count} weight arrays "
                            f"({'VAE' if vae else 'decoder-only'} layout)")
    return vae


def parse_js_model(data: Any) -> JSModel:
    """Validate a loaded sketch-rnn-js JSON value and turn it into sizes and float weights."""
    if not isinstance(data, list) or len(data) != 3:
        raise JSFormatError("a sketch-rnn-js model is a JSON list [info, shapes, weights]; this is "
                            + (f"a list of {len(data)}" if isinstance(data, list) else f"a JSON {type(data).__name__}"))
    info, dims, blobs = data
    if not isinstance(info, dict):
        raise JSFormatError("the first element (info) must be an object with mode, max_seq_len, scale_factor, ...")
    missing = [k for k in ("mode", "max_seq_len", "scale_factor") if k not in info]
    if missing:
        raise JSFormatError(f"info lacks {', '.join(missing)} (sketch-rnn-js needs mode, max_seq_len and scale_factor)")
    max_seq_len, scale = info["max_seq_len"], info["scale_factor"]
    if not isinstance(max_seq_len, int) or isinstance(max_seq_len, bool) or max_seq_len < 1:
        raise JSFormatError(f"info.max_seq_len must be a positive integer, got {max_seq_len!r}")
    if (not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(scale) or scale <= 0):
        raise JSFormatError(f"info.scale_factor must be a positive number, got {scale!r}")
    if not isinstance(dims, list) or not isinstance(blobs, list):
        raise JSFormatError("the second and third elements must be lists (shapes, weights)")
    if len(dims) != len(blobs):
        raise JSFormatError(f"{len(dims)} shapes but {len(blobs)} weight arrays")
    vae = _mode_layout(info["mode"], len(dims))
    layout = VAE_LAYOUT if vae else GEN_LAYOUT
    shapes = [_shape(d, i) for i, d in enumerate(dims)]
    named = {name: (i, s) for i, ((name, _, _), s) in enumerate(zip(layout, shapes))}

    # sizes from the decoder's recurrent matrix and output layer, then every shape checked against them
    i_hh, hh = named["dec_lstm_W_hh"]
    if len(hh) != 2 or hh[1] != 4 * hh[0]:
        raise JSFormatError(f"array {i_hh} (dec_lstm_W_hh) must be (H, 4H), got {list(hh)}")
    dec = hh[0]
    i_out, out = named["dec_output_w"]
    if len(out) != 2 or out[0] != dec or (out[1] - 3) % 6 or out[1] < 9:
        raise JSFormatError(f"array {i_out} (dec_output_w) must be ({dec}, 3 + 6M), got {list(out)}")
    num_mixture = (out[1] - 3) // 6
    if num_mixture != JS_NUM_MIXTURE:
        warnings.warn(f"this model has {num_mixture} mixture components; the JavaScript libraries assume "
                      f"{JS_NUM_MIXTURE} (sketchlab reads it as it is)", stacklevel=2)
    want: dict[str, tuple[int, ...]] = {"dec_output_w": (dec, out[1]), "dec_output_b": (out[1],),
                                        "dec_lstm_W_hh": (dec, 4 * dec), "dec_lstm_bias": (4 * dec,)}
    hparams: dict[str, Any] = {"dec_rnn_size": dec, "num_mixture": num_mixture, "conditional": vae,
                               "max_seq_len": max_seq_len, "enc_model": "lstm", "dec_model": "lstm"}
    if vae:
        i_enc, enc_hh = named["enc_fw_lstm_W_hh"]
        if len(enc_hh) != 2 or enc_hh[1] != 4 * enc_hh[0]:
            raise JSFormatError(f"array {i_enc} (enc_fw_lstm_W_hh) must be (E, 4E), got {list(enc_hh)}")
        enc = enc_hh[0]
        i_w, enc_w = named["enc_w"]
        if len(enc_w) != 2:
            raise JSFormatError(f"array {i_w} (enc_w) must be (Z, 2H), got {list(enc_w)}")
        z = enc_w[0]
        for d in ("fw", "bw"):
            want.update({f"enc_{d}_lstm_W_xh": (5, 4 * enc), f"enc_{d}_lstm_W_hh": (enc, 4 * enc),
                         f"enc_{d}_lstm_bias": (4 * enc,)})
        want.update({"enc_mu_w": (2 * enc, z), "enc_mu_b": (z,), "enc_sigma_w": (2 * enc, z), "enc_sigma_b": (z,),
                     "enc_w": (z, 2 * dec), "enc_b": (2 * dec,), "dec_lstm_W_xh": (5 + z, 4 * dec)})
        hparams.update(enc_rnn_size=enc, z_size=z)
        version = info.get("version")
        if isinstance(version, (int, float)) and version < FORMAT_VERSION:
            warnings.warn(f"version {version} VAE: sketch-rnn-js squashes z with tanh before the initial "
                          "state for these; sketchlab does not, so prior samples may differ from the browser's",
                          stacklevel=2)
    else:
        want["dec_lstm_W_xh"] = (5, 4 * dec)
    for name, (i, shape) in named.items():
        _expect(shape, want[name], name, i)

    state: dict[str, torch.Tensor] = {}
    for i, ((name, param, transpose), shape, blob) in enumerate(zip(layout, shapes, blobs)):
        codes = decode_blob(blob, f"array {i} ({name})")
        if codes.size != math.prod(shape):
            raise JSFormatError(f"array {i} ({name}) holds {codes.size} values, its shape {list(shape)} needs "
                                f"{math.prod(shape)}")
        w = torch.from_numpy(dequantize(codes).reshape(shape))
        state[param] = (w.t() if transpose else w).contiguous()
    return JSModel(info=dict(info), hparams=hparams, state=state)


def read_js_model(path: str | Path) -> JSModel:
    """Parse a sketch-rnn-js ``.json`` file (plain ``json``: reading it never runs code)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no sketch-rnn-js model at {path}")

    def no_constants(value: str) -> Any:
        raise JSFormatError(f"{path}: {value} is not valid JSON")

    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=no_constants)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JSFormatError(f"{path} is not a JSON file ({exc})") from None
    try:
        return parse_js_model(data)
    except JSFormatError as exc:
        raise JSFormatError(f"{path}: {exc}") from None


def load_js_model(path: str | Path, **overrides: Any) -> SketchRNN:
    """A SketchRNN (eval mode) with the sizes and weights of a sketch-rnn-js file."""
    return read_js_model(path).build(**overrides)

