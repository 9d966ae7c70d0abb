"""Parity of sketchlab's Sketch-RNN with the seed port (rfeinman/Sketch-RNN) on aaron_sheep.

Both are trained with the same sizes, hyper-parameters and number of steps, each with its own code
(sketchlab through ``sketchlab-train``; the port with its own modules and its training loop's logic:
Adam, ExponentialLR per step, clip by value), then scored on the validation split under ONE definition:
per real point (the padding past each sketch's end is left out of both terms), z = posterior mean,
dropout off, the offset NLL with magenta's ``-log(sum pi N + 1e-6)``, computed by the same function
from each model's mixture parameters.

The two objectives differ: the port averages the offset loss over real points, magenta (and sketchlab)
divides it by B x Nmax, so the port weights offsets about Nmax / mean-length times more against the pen
term; and the port's LayerNormLSTM normalises with epsilon 1e-5 where magenta's uses 1e-3. With
``--port-objective magenta`` and ``--port-ln-eps 1e-3`` those two are patched here, on the port's
instances, not in its code. Two smaller differences of the objective remain: the port's offset term is the
exact log-density with a covariance shrinkage of 1e-6 (magenta's: ``-log(sum pi N + 1e-6)``, which caps a
point at 13.8 nats and fades its gradient where the density falls below about 1e-6; see ``port-offset-loss``
below), and its KL weight is
``0.5 (1 - 0.99 R^step)`` where magenta's is ``0.5 - 0.49 R^step`` (0.005 against 0.01 at the start, 0.80 times
magenta's at step 600, 0.86 times at step 1,000).

The port is read from a checkout or from a bare git directory (the ``fetch`` mirror), exported to a
temporary folder at run time; none of its code is part of sketchlab.

    python scripts/parity_seed_port.py --seed-repo /work/.mirror/rfeinman+Sketch-RNN/repo \\
        --cells lstm layer_norm --seeds 0 1 --steps 1000 --enc 64 --dec 128 --z 32 --batch 32 \\
        --max-seq-len 100 --out outputs/parity/parity.json

One-factor diagnostics: ``--sketchlab-variant`` changes one thing of sketchlab's training towards the port
(several may be combined; the model and its config are not touched: the child training process patches
the freshly built model instance, and the scoring applies the patches that change the forward pass):

- ``enc-no-dropout``: no recurrent dropout in the encoder (the port's ``nn.LSTM`` has none);
- ``enc-forget-bias-0``: encoder forget bias 0 (``nn.LSTM`` has no forget bias; magenta adds 1);
- ``torch-output-init``: the output layer with PyTorch's default ``nn.Linear`` init (the port's) instead of
  magenta's glorot uniform;
- ``port-offset-loss``: train on the port's offset term, the exact log-density ``-logsumexp(log pi + log N)``
  with its covariance shrinkage 1e-6, instead of magenta's ``-log(sum pi N + 1e-6)`` (normalisation unchanged);
- ``port-kl-weight``: the port's KL annealing, ``0.5 (1 - 0.99 R^step)``, instead of magenta's;
- ``port-init``: start from the port's initial weights (the port's model built with the same seed, mapped
  onto sketchlab's layout; gate blocks i,f,o,g / i,f,g,o to magenta's i,j,f,o, output rows to magenta's
  order); the mapping is checked first (same mixture from the same weights, encoder forget bias 0).

``--impls`` runs one side only (e.g. sketchlab variants against an earlier port run at the same seed), and
``--save-port`` keeps the port's trained weights. Each row also reports the validation KL per z dimension
(``kl``, how much the code carries), the fraction of real points whose offset NLL exceeds 10 nats
(``far_frac``; magenta's guard caps a point at 13.8) and the offset NLL of the other points (``offset_nll_near``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import types
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


# -- one-factor variants of sketchlab's training ----------------------------------------------------

VARIANTS = ("enc-no-dropout", "enc-forget-bias-0", "torch-output-init", "port-offset-loss", "port-kl-weight",
            "port-init")
#: magenta's layer-norm epsilon (the port's own is 1e-5).
LN_EPS_MAGENTA = 1e-3
#: The port's covariance shrinkage (``hparams.reg_covar``).
PORT_REG_COVAR = 1e-6


def apply_forward_variants(model: Any, variants: list[str]) -> None:
    """Patches that change the forward pass: applied in training and again to the loaded model for scoring."""
    if "enc-forget-bias-0" in variants:
        model.enc_fw.cell.forget_bias = model.enc_bw.cell.forget_bias = 0.0


def apply_train_variants(model: Any, variants: list[str]) -> None:
    """Patch a freshly built sketchlab SketchRNN instance (in the child training process)."""
    apply_forward_variants(model, variants)
    if "enc-no-dropout" in variants:
        model.enc_fw.cell.recurrent_dropout = model.enc_bw.cell.recurrent_dropout = 0.0
    if "torch-output-init" in variants:
        model.output.reset_parameters()
    if "port-init" in variants:
        port = build_port_model(json.loads(os.environ["PARITY_PORT_SIZES"]), int(os.environ["PARITY_SEED"]))
        copy_port_weights(port, model)


def _port_offset_terms(mix: Any, target: torch.Tensor, mask_pen: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """sketchlab's ``reconstruction_terms`` with the port's offset NLL: exact log-density, shrinkage 1e-6."""
    from sketchlab.models.sketch_rnn.gmm import pen_cross_entropy  # noqa: PLC0415
    target = target.float()
    not_end = 1.0 - target[..., 4]
    s1, s2 = (torch.sqrt(s ** 2 + PORT_REG_COVAR) for s in (mix.sigma1, mix.sigma2))
    rho = mix.corr * mix.sigma1 * mix.sigma2 / (s1 * s2)
    d1 = (target[..., 0:1] - mix.mu1) / s1
    d2 = (target[..., 1:2] - mix.mu2) / s2
    one_m = 1 - rho ** 2
    log_n = -0.5 * (d1 ** 2 + d2 ** 2 - 2 * rho * d1 * d2) / one_m - 0.5 * torch.log(one_m) \
        - torch.log(s1) - torch.log(s2) - math.log(2 * math.pi)
    offsets = -torch.logsumexp(torch.log(mix.pi) + log_n, dim=-1) * not_end
    pen = pen_cross_entropy(mix.pen_logits, target[..., 2:5])
    if mask_pen:
        pen = pen * not_end
    return offsets.mean(), pen.mean()


def port_kl_weight_at(model: Any, step: int) -> float:
    """The port's KLLoss weight at ``step``: ``kl_weight (1 - (1 - kl_weight_start) R^step)``."""
    return model.kl_weight * (1 - (1 - model.kl_weight_start) * model.kl_decay_rate ** step)


def sketchlab_child(variants: list[str], hydra_args: list[str]) -> None:
    """Run ``sketchlab-train`` with ``hydra_args``, its model patched by ``variants`` (see the docstring)."""
    from sketchlab.cli import train  # noqa: PLC0415
    from sketchlab.models.sketch_rnn import gmm  # noqa: PLC0415
    from sketchlab.models.sketch_rnn.model import SketchRNN  # noqa: PLC0415
    if "port-init" in variants:
        sys.path.insert(0, os.environ["PARITY_PORT_ROOT"])
    original_init = SketchRNN.__init__

    def patched_init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        apply_train_variants(self, variants)

    SketchRNN.__init__ = patched_init
    if "port-kl-weight" in variants:
        SketchRNN.kl_weight_at = port_kl_weight_at
    if "port-offset-loss" in variants:
        gmm.reconstruction_terms = _port_offset_terms
    sys.argv = [sys.argv[0], *hydra_args]
    train.main()


# -- the port ---------------------------------------------------------------------------------------

def import_seed_port(path: Path, into: Path) -> tuple[types.ModuleType, Path]:
    """Import rfeinman's ``sketch_rnn`` package from a checkout or a bare git directory; (package, its root)."""
    if (path / "sketch_rnn" / "model.py").is_file():
        root = path
    else:  # a bare mirror: export the package at HEAD
        archive = into / "port.tar"
        with open(archive, "wb") as fh:
            subprocess.run(["git", "--git-dir", str(path), "archive", "HEAD", "sketch_rnn"], stdout=fh, check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")
        root = into
    sys.path.insert(0, str(root))
    import sketch_rnn  # noqa: PLC0415 - only importable after the path is set
    return sketch_rnn, root


def _magenta_drawing_loss(x: torch.Tensor, v: torch.Tensor, params: Any, *, reg_covar: float) -> torch.Tensor:
    """The port's DrawingLoss with magenta's normalisation: both terms divided by B x Nmax."""
    from sketch_rnn.objective import mvn_log_prob  # noqa: PLC0415
    from sketch_rnn.utils import tikhonov_reg2d  # noqa: PLC0415
    mix_logp, means, scales, corrs, v_logp = params
    if reg_covar > 0:
        scales, corrs = tikhonov_reg2d(scales, corrs, alpha=reg_covar)
    losses_x = -torch.logsumexp(mix_logp + mvn_log_prob(x, means, scales, corrs), dim=-1)
    losses_v = torch.nn.functional.nll_loss(v_logp.flatten(0, 1), v.flatten(), reduction="none").reshape(v.shape)
    return (losses_x * (v != 2)).mean() + losses_v.mean()


def patch_port(model: Any, objective: str, ln_eps: float | None) -> None:
    """Apply magenta's loss normalisation and/or layer-norm epsilon to a port model instance."""
    rnn = importlib.import_module("sketch_rnn.rnn")
    if objective == "magenta":
        loss = model.loss_draw
        loss.forward = lambda x, v, params: _magenta_drawing_loss(x, v, params, reg_covar=loss.reg_covar)
    if ln_eps is not None:
        changed = False
        for module in model.cell.modules():
            if isinstance(module, (torch.nn.LayerNorm, rnn.ChunkLayerNorm)):
                module.eps = ln_eps
                changed = True
        if changed:  # the scripted decoder baked the old epsilon in as a constant: script it again
            state = {k: v.clone() for k, v in model.cell.state_dict().items()}
            model.decoder = torch.jit.script(rnn.LSTMLayer(model.cell, batch_first=True))
            model.cell.load_state_dict(state)  # LSTMLayer's constructor re-initialises the cell


def port_hparams(sizes: dict[str, Any], **extra: Any) -> Any:
    """The port's hparams with ``sizes`` (enc/dec/z/mixtures/batch/max_seq_len/dec_model) and an lstm encoder."""
    hparams = importlib.import_module("sketch_rnn.hparams")
    return hparams.hparams(enc_model="lstm", **sizes, **extra)


def build_port_model(sizes: dict[str, Any], seed: int) -> Any:
    """The port's model as ``train_port`` initialises it (seeded, nothing drawn before), without touching
    the caller's random stream."""
    pmodel = importlib.import_module("sketch_rnn.model")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return pmodel.SketchRNN(port_hparams(sizes))


def _blocks(w: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
    """Reorder the four gate blocks of ``w`` along its first axis."""
    chunks = w.chunk(4, dim=0)
    return torch.cat([chunks[k] for k in order], dim=0)


#: magenta's i, j, f, o taken from the port cells' i, f, o, g and from nn.LSTM's i, f, g, o
_FROM_PORT_CELL, _FROM_NN_LSTM = (0, 3, 1, 2), (0, 2, 1, 3)


def output_rows_from_port(m: int) -> list[int]:
    """For each of sketchlab's output rows (pen 3, pi, mu1, mu2, s1, s2, corr) the port's row
    (pi, interleaved means, interleaved scales, corr, pen)."""
    pairs = range(m)
    return ([6 * m, 6 * m + 1, 6 * m + 2] + list(range(m)) + [m + 2 * k for k in pairs] + [m + 2 * k + 1 for k in pairs]
            + [3 * m + 2 * k for k in pairs] + [3 * m + 2 * k + 1 for k in pairs] + [5 * m + k for k in pairs])


@torch.no_grad()
def copy_port_weights(port: Any, model: Any) -> None:
    """Load a port model's weights into a sketchlab SketchRNN of the same sizes (lstm / layer_norm decoder).

    The encoder's two nn.LSTM biases are summed into magenta's one; its missing forget bias is not
    emulated here (that is the ``enc-forget-bias-0`` variant).
    """
    cell, pcell = model.decoder.cell, port.cell
    kind = type(cell).__name__
    if kind not in ("LSTMCell", "LayerNormLSTMCell"):
        raise ValueError(f"port-init maps lstm and layer_norm decoders only, not {kind}")
    cell.w_xh.copy_(_blocks(pcell.weight_ih, _FROM_PORT_CELL).t())
    cell.w_hh.copy_(_blocks(pcell.weight_hh, _FROM_PORT_CELL).t())
    if kind == "LSTMCell":
        cell.bias.copy_(_blocks(pcell.bias, _FROM_PORT_CELL))
    else:
        cell.ln_all_gamma.copy_(_blocks(pcell.layernorm_h.weight, _FROM_PORT_CELL))
        cell.ln_all_beta.copy_(_blocks(pcell.layernorm_h.bias, _FROM_PORT_CELL))
        cell.ln_c_gamma.copy_(pcell.layernorm_c.weight)
        cell.ln_c_beta.copy_(pcell.layernorm_c.bias)
    # the port's init layer gives [h, c]; magenta's flat state order depends on the cell
    hidden = cell.hidden_size
    h_pos, c_pos = (t.long() for t in cell.state_from_flat(torch.arange(2 * hidden, dtype=torch.float32)))
    for name in ("weight", "bias"):
        dst, src = getattr(model.init_state, name), getattr(port.init, name)
        dst[h_pos], dst[c_pos] = src[:hidden], src[hidden:]
    rows = output_rows_from_port(model.num_mixture)
    model.output.weight.copy_(port.param_layer.linear.weight[rows])
    model.output.bias.copy_(port.param_layer.linear.bias[rows])
    rnn = port.encoder.rnn
    for runner, suffix in ((model.enc_fw, ""), (model.enc_bw, "_reverse")):
        runner.cell.w_xh.copy_(_blocks(getattr(rnn, f"weight_ih_l0{suffix}"), _FROM_NN_LSTM).t())
        runner.cell.w_hh.copy_(_blocks(getattr(rnn, f"weight_hh_l0{suffix}"), _FROM_NN_LSTM).t())
        runner.cell.bias.copy_(_blocks(getattr(rnn, f"bias_ih_l0{suffix}") + getattr(rnn, f"bias_hh_l0{suffix}"),
                                       _FROM_NN_LSTM))
    z = model.z_size
    model.enc_mu.weight.copy_(port.encoder.output.weight[:z])
    model.enc_mu.bias.copy_(port.encoder.output.bias[:z])
    model.enc_presig.weight.copy_(port.encoder.output.weight[z:])
    model.enc_presig.bias.copy_(port.encoder.output.bias[z:])


def check_port_mapping(sizes: dict[str, Any], cell: str) -> float:
    """Largest mixture difference between a port model and sketchlab given its mapped weights (eval mode,
    sketchlab's encoder forget bias 0 as nn.LSTM's) on a synthetic batch; raises if the mapping is wrong."""
    from sketchlab.models.sketch_rnn import SketchRNN  # noqa: PLC0415
    sizes = {**sizes, "dec_model": cell}
    port = build_port_model(sizes, 0)
    patch_port(port, "magenta", LN_EPS_MAGENTA)
    port.eval()
    model = SketchRNN(enc_rnn_size=sizes["enc_rnn_size"], dec_rnn_size=sizes["dec_rnn_size"], z_size=sizes["z_size"],
                      num_mixture=sizes["num_mixture"], dec_model=cell, max_seq_len=sizes["max_seq_len"])
    copy_port_weights(port, model)
    apply_forward_variants(model.eval(), ["enc-forget-bias-0"])
    gen = torch.Generator().manual_seed(0)
    batch, length = 3, sizes["max_seq_len"]
    lengths = torch.tensor([length, length // 2, 5])
    strokes = torch.zeros(batch, length + 1, 5)
    strokes[:, 0, 2] = 1
    strokes[:, 1:, :2] = torch.randn(batch, length, 2, generator=gen)
    pen_up = torch.rand(batch, length, generator=gen) < 0.2
    strokes[:, 1:, 2], strokes[:, 1:, 3] = (~pen_up).float(), pen_up.float()
    for b, n in enumerate(lengths.tolist()):
        strokes[b, n + 1:] = torch.tensor([0.0, 0, 0, 0, 1])
    with torch.no_grad():
        a, _, _ = sketchlab_mixture(model, strokes, lengths)
        p, _, _ = port_mixture(port, strokes, lengths)
    # the port's pen "logits" are log-probabilities: compare both as such
    a, p = (mix._replace(pen_logits=torch.log_softmax(mix.pen_logits, -1)) for mix in (a, p))
    diff = max(float((x - y).abs().max()) for x, y in zip(a, p))
    if diff > 1e-4:
        raise AssertionError(f"port-init mapping check failed for {cell}: mixtures differ by {diff:.3g}")
    return diff


def train_port(data_path: Path, sizes: dict[str, Any], steps: int, seed: int,
               objective: str, ln_eps: float | None) -> tuple[Any, float, float]:
    """Train the port as its train_sketch_rnn.py does, for ``steps`` optimiser steps; (model, scale, seconds)."""
    from torch.utils.data import DataLoader  # noqa: PLC0415
    dataset, pmodel = (importlib.import_module(f"sketch_rnn.{m}") for m in ("dataset", "model"))
    torch.manual_seed(seed)
    np.random.seed(seed)
    hps = port_hparams(sizes, data_set=data_path.name)
    train_strokes, _, _ = dataset.load_strokes(str(data_path.parent), hps)
    hps.max_seq_len = sizes["max_seq_len"]  # load_strokes sets the longest sketch; a shorter cap filters as magenta
    train = dataset.SketchRNNDataset(train_strokes, max_len=hps.max_seq_len,
                                          random_scale_factor=hps.random_scale_factor,
                                          augment_stroke_prob=hps.augment_stroke_prob)
    loader = DataLoader(train, batch_size=hps.batch_size, shuffle=True, num_workers=0,
                        collate_fn=lambda b: dataset.collate_drawings(b, hps.max_seq_len))
    model = pmodel.SketchRNN(hps)
    patch_port(model, objective, ln_eps)
    optimizer = torch.optim.Adam(model.parameters(), lr=hps.lr)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, hps.lr_decay)
    model.train()
    step, start = 0, time.perf_counter()
    while step < steps:
        for data, lengths in loader:
            optimizer.zero_grad()
            loss = pmodel.model_step(model, data, lengths)
            loss.backward()
            torch.nn.utils.clip_grad_value_(model.parameters(), hps.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            if step % 200 == 0:
                print(f"  port step {step}: loss {loss.item():.4f}", flush=True)
            if step >= steps:
                break
    return model.eval(), float(train.scale_factor), time.perf_counter() - start


def port_mixture(model: Any, strokes: torch.Tensor, lengths: torch.Tensor) -> Any:
    """The port's mixture parameters at every step, as sketchlab's ``Mixture``, with z = posterior mean;
    (mixture, posterior mean, posterior log-variance)."""
    from sketchlab.models.sketch_rnn.gmm import Mixture  # noqa: PLC0415
    target, x = strokes[:, 1:], strokes[:, :-1]
    _, z, logvar = model.encoder(target, lengths)
    state = torch.tanh(model.init(z)).chunk(2, dim=-1)
    out, _ = model.decoder(torch.cat([x, z[:, None].expand(-1, x.shape[1], -1)], dim=-1), state)
    mix_logp, means, scales, corrs, v_logp = model.param_layer(out)
    mix = Mixture(mix_logp.exp(), means[..., 0], means[..., 1], scales[..., 0], scales[..., 1], corrs, v_logp)
    return mix, z, logvar


# -- sketchlab ---------------------------------------------------------------------------------------

def train_sketchlab(cell: str, sizes: dict[str, Any], steps: int, seed: int, run_dir: Path,
                    data_root: Path, variants: list[str] | None = None,
                    port_root: Path | None = None) -> tuple[Any, Any, float]:
    """Train with ``sketchlab-train experiment=sheep`` at the given sizes, patched by ``variants`` (run in a
    child process of this script, see the module docstring); (model, data, seconds)."""
    from sketchlab.factory import load_trained  # noqa: PLC0415
    variants = variants or []
    entry = (["-m", "sketchlab.cli.train"] if not variants
             else [str(Path(__file__).resolve()), "--sketchlab-child", ",".join(variants)])
    args = [sys.executable, *entry, "experiment=sheep", f"model.net.dec_model={cell}",
            f"model.net.enc_rnn_size={sizes['enc_rnn_size']}", f"model.net.dec_rnn_size={sizes['dec_rnn_size']}",
            f"model.net.z_size={sizes['z_size']}", f"model.net.num_mixture={sizes['num_mixture']}",
            f"data.batch_size={sizes['batch_size']}", f"data.max_seq_len={sizes['max_seq_len']}",
            f"trainer.max_steps={steps}", f"trainer.val_every={steps}",
            f"trainer.ckpt_every={steps}", "trainer.progress=false", "test_at_end=false", "logger=none",
            "visualize.enabled=false", f"seed={seed}", f"hydra.run.dir={run_dir}",
            # the eager reference loop: the fused CPU path (fast=auto, the default) is the same maths but rounds
            # differently, and the runs reported in the README were made on the eager loop
            "model.net.fast=false"]
    env = dict(os.environ, SKETCHLAB_DATA=str(data_root), PARITY_SEED=str(seed),
               PARITY_PORT_SIZES=json.dumps({**sizes, "dec_model": cell}), PARITY_PORT_ROOT=str(port_root or ""))
    start = time.perf_counter()
    subprocess.run(args, check=True, env=env, cwd=REPO)
    seconds = time.perf_counter() - start
    model, data, _ = load_trained(run_dir, torch.device("cpu"))
    apply_forward_variants(model, variants)
    return model, data, seconds


def sketchlab_mixture(model: Any, strokes: torch.Tensor, lengths: torch.Tensor) -> Any:
    """sketchlab's mixture parameters with z = posterior mean; (mixture, posterior mean, log-variance)."""
    target, x = strokes[:, 1:], strokes[:, :-1]
    mu, presig = model.posterior(target, lengths)
    mix, _ = model.decode_params(x, mu, model.initial_state(mu, strokes.shape[0], strokes))
    return mix, mu, presig


# -- one score for both ------------------------------------------------------------------------------

#: Offset NLL (nats) above which a point counts as "far" (magenta's 1e-6 guard caps a point at 13.8).
FAR_NATS = 10.0

@torch.no_grad()
def score(mixture: Callable[[torch.Tensor, torch.Tensor], Any], batches: Any) -> dict[str, float]:
    """Validation offset NLL and pen CE per real point (z = posterior mean, dropout off), the KL per z
    dimension per sketch, the fraction of points beyond ``FAR_NATS`` and the offset NLL of the others."""
    from sketchlab.models.sketch_rnn.gmm import offset_nll, pen_cross_entropy  # noqa: PLC0415
    off_sum = pen_sum = far_sum = kl_sum = 0.0
    points = far = sketches = 0
    for batch in batches:
        strokes, lengths = batch["strokes"], batch["lengths"]
        mix, mu, logvar = mixture(strokes, lengths)
        target = strokes[:, 1:]
        real = torch.arange(target.shape[1])[None, :] < lengths[:, None]
        off = offset_nll(mix, target[..., 0], target[..., 1])[real]
        off_sum += float(off.sum())
        pen_sum += float(pen_cross_entropy(mix.pen_logits, target[..., 2:5])[real].sum())
        points += int(lengths.sum())
        far += int((off > FAR_NATS).sum())
        far_sum += float(off[off > FAR_NATS].sum())
        kl_sum += float((-0.5 * (1 + logvar - mu ** 2 - logvar.exp())).mean(-1).sum())
        sketches += strokes.shape[0]
    return {"offset_nll": off_sum / points, "pen_ce": pen_sum / points, "recon": (off_sum + pen_sum) / points,
            "kl": kl_sum / sketches, "far_frac": far / points,
            "offset_nll_near": (off_sum - far_sum) / max(points - far, 1)}


def summarise(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines: one per (cell, implementation), mean and spread over seeds, and the gap."""
    lines = ["| cell | implementation | seeds | recon / point (mean ± sd) | offset NLL | pen CE | KL / dim | "
             "far points | offset NLL of the rest | train s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for cell in dict.fromkeys(r["cell"] for r in rows):
        for impl in dict.fromkeys(r["impl"] for r in rows):
            sel = [r for r in rows if r["cell"] == cell and r["impl"] == impl]
            if not sel:
                continue
            rec = np.array([r["recon"] for r in sel])
            sd = rec.std(ddof=1) if len(rec) > 1 else float("nan")
            lines.append(f"| {cell} | {impl} | {len(sel)} | {rec.mean():.4f} ± {sd:.4f} | "
                         f"{np.mean([r['offset_nll'] for r in sel]):.4f} | {np.mean([r['pen_ce'] for r in sel]):.4f} | "
                         f"{np.mean([r['kl'] for r in sel]):.4f} | {np.mean([r['far_frac'] for r in sel]):.4%} | "
                         f"{np.mean([r['offset_nll_near'] for r in sel]):.4f} | "
                         f"{np.mean([r['seconds'] for r in sel]):.0f} |")
    return lines


def valid_batches(data_path: Path, sizes: dict[str, Any]) -> tuple[list[dict[str, torch.Tensor]], float]:
    """sheep's validation batches as sketchlab prepares them (filter, train std, stroke-5); (batches, scale)."""
    from sketchlab.data.datamodule import SketchDataModule  # noqa: PLC0415
    from sketchlab.data.sources import StrokeNpz  # noqa: PLC0415
    from sketchlab.data.stroke5 import Stroke5Collate  # noqa: PLC0415
    data = SketchDataModule(StrokeNpz(str(data_path)), batch_size=sizes["batch_size"],
                            max_seq_len=sizes["max_seq_len"], collate=Stroke5Collate(sizes["max_seq_len"])).setup()
    return list(data.eval_batches("valid")), data.scale


def main() -> None:
    if sys.argv[1:2] == ["--sketchlab-child"]:  # internal: the patched training of a --sketchlab-variant run
        sketchlab_child([v for v in sys.argv[2].split(",") if v], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--seed-repo", type=Path, required=True,
                        help="rfeinman/Sketch-RNN: a checkout or a bare git directory")
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--cells", nargs="+", default=["lstm", "layer_norm"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--enc", type=int, default=128)
    parser.add_argument("--dec", type=int, default=256)
    parser.add_argument("--z", type=int, default=128)
    parser.add_argument("--mixtures", type=int, default=20)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--max-seq-len", type=int, default=250,
                        help="Nmax: sketches longer are left out (both sides), the rest padded to it (sheep's longest: 250)")
    parser.add_argument("--port-objective", choices=["port", "magenta"], default="magenta",
                        help="the port's own loss normalisation, or magenta's (offsets over B x Nmax)")
    parser.add_argument("--port-ln-eps", type=float, default=LN_EPS_MAGENTA,
                        help="layer-norm epsilon patched into the port's cells (its own: 1e-5; magenta: 1e-3)")
    parser.add_argument("--impls", nargs="+", choices=["sketchlab", "port"], default=["sketchlab", "port"],
                        help="which side(s) to train and score")
    parser.add_argument("--sketchlab-variant", nargs="*", choices=VARIANTS, default=[],
                        help="one-factor changes of sketchlab's training towards the port (see above)")
    parser.add_argument("--save-port", action="store_true",
                        help="save the port's trained weights next to --out (port-<cell>-seed<seed>.pt)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "parity" / "parity.json")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    data_path = args.data_root / "sketch-rnn-datasets" / "aaron_sheep.npz"
    if not data_path.is_file():
        parser.error(f"{data_path} not found: pass --data-root (the folder holding sketch-rnn-datasets/)")
    sizes = {"enc_rnn_size": args.enc, "dec_rnn_size": args.dec, "z_size": args.z, "num_mixture": args.mixtures,
             "batch_size": args.batch, "max_seq_len": args.max_seq_len}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    variants = list(dict.fromkeys(args.sketchlab_variant))
    tag = "".join(f"+{v}" for v in variants)
    valid, scale = valid_batches(data_path, sizes)
    with tempfile.TemporaryDirectory() as tmp:
        _, port_root = import_seed_port(args.seed_repo.resolve(), Path(tmp))
        if "port-init" in variants:
            for cell in args.cells:
                print(f"port-init mapping check ({cell}): max mixture difference "
                      f"{check_port_mapping(sizes, cell):.2e}", flush=True)
        for cell in args.cells:
            for seed in args.seeds:
                if "sketchlab" in args.impls:
                    run_dir = args.out.parent / f"sketchlab{tag}-{cell}-seed{seed}"
                    print(f"[{cell} seed {seed}] sketchlab{tag}", flush=True)
                    model, _, secs = train_sketchlab(cell, sizes, args.steps, seed, run_dir, args.data_root,
                                                     variants, port_root)
                    rows.append({"cell": cell, "seed": seed, "impl": f"sketchlab{tag}", "seconds": secs,
                                 **score(lambda s, n: sketchlab_mixture(model, s, n), valid)})
                    print(f"  {rows[-1]}", flush=True)
                if "port" in args.impls:
                    print(f"[{cell} seed {seed}] port ({args.port_objective} objective, ln eps {args.port_ln_eps})",
                          flush=True)
                    port_model, pscale, secs = train_port(data_path, {**sizes, "dec_model": cell}, args.steps,
                                                          seed, args.port_objective, args.port_ln_eps)
                    if args.save_port:
                        torch.save(port_model.state_dict(), args.out.parent / f"port-{cell}-seed{seed}.pt")
                    # the same validation sketches in the port's units (both divide by the train std)
                    ratio = scale / pscale
                    if not math.isclose(ratio, 1.0, rel_tol=1e-4):
                        print(f"  note: scale factors differ (sketchlab {scale:.6f}, port {pscale:.6f})")
                    pvalid = [{"strokes": b["strokes"] * torch.tensor([ratio, ratio, 1, 1, 1]),
                               "lengths": b["lengths"]} for b in valid]
                    rows.append({"cell": cell, "seed": seed, "impl": f"port ({args.port_objective} objective)",
                                 "seconds": secs, **score(lambda s, n: port_mixture(port_model, s, n), pvalid)})
                    print(f"  {rows[-1]}", flush=True)
                args.out.write_text(json.dumps({"settings": {**vars(args), "seed_repo": str(args.seed_repo),
                                                             "data_root": str(args.data_root),
                                                             "out": str(args.out)},
                                                "rows": rows}, indent=2, default=str))
    print("\n".join(summarise(rows)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
