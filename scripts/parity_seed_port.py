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
instances, not in its code, so that the objectives are equal and the two must agree within seed noise.

The port is read from a checkout or from a bare git directory (the ``fetch`` mirror), exported to a
temporary folder at run time; none of its code is part of sketchlab.

    python scripts/parity_seed_port.py --seed-repo /work/.mirror/rfeinman+Sketch-RNN/repo \\
        --cells lstm layer_norm --seeds 0 1 --steps 1000 --enc 64 --dec 128 --z 32 --batch 32 \\
        --max-seq-len 100 --out outputs/parity/parity.json
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


# -- the port ---------------------------------------------------------------------------------------

def import_seed_port(path: Path, into: Path) -> types.ModuleType:
    """Import rfeinman's ``sketch_rnn`` package from a checkout or a bare git directory."""
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
    return sketch_rnn


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


def train_port(data_path: Path, sizes: dict[str, Any], steps: int, seed: int,
               objective: str, ln_eps: float | None) -> tuple[Any, float, float]:
    """Train the port as its train_sketch_rnn.py does, for ``steps`` optimiser steps; (model, scale, seconds)."""
    from torch.utils.data import DataLoader  # noqa: PLC0415
    hparams, dataset, pmodel = (importlib.import_module(f"sketch_rnn.{m}") for m in ("hparams", "dataset", "model"))
    torch.manual_seed(seed)
    np.random.seed(seed)
    hps = hparams.hparams(data_set=data_path.name, enc_model="lstm", **sizes)
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
    """The port's mixture parameters at every step, as sketchlab's ``Mixture``, with z = posterior mean."""
    from sketchlab.models.sketch_rnn.gmm import Mixture  # noqa: PLC0415
    target, x = strokes[:, 1:], strokes[:, :-1]
    _, z, _ = model.encoder(target, lengths)
    state = torch.tanh(model.init(z)).chunk(2, dim=-1)
    out, _ = model.decoder(torch.cat([x, z[:, None].expand(-1, x.shape[1], -1)], dim=-1), state)
    mix_logp, means, scales, corrs, v_logp = model.param_layer(out)
    return Mixture(mix_logp.exp(), means[..., 0], means[..., 1], scales[..., 0], scales[..., 1], corrs, v_logp)


# -- sketchlab ---------------------------------------------------------------------------------------

def train_sketchlab(cell: str, sizes: dict[str, Any], steps: int, seed: int, run_dir: Path,
                    data_root: Path) -> tuple[Any, Any, float]:
    """Train with ``sketchlab-train experiment=sheep`` at the given sizes; (model, data, seconds)."""
    from sketchlab.factory import load_trained  # noqa: PLC0415
    args = [sys.executable, "-m", "sketchlab.cli.train", "experiment=sheep", f"model.net.dec_model={cell}",
            f"model.net.enc_rnn_size={sizes['enc_rnn_size']}", f"model.net.dec_rnn_size={sizes['dec_rnn_size']}",
            f"model.net.z_size={sizes['z_size']}", f"model.net.num_mixture={sizes['num_mixture']}",
            f"data.batch_size={sizes['batch_size']}", f"data.max_seq_len={sizes['max_seq_len']}",
            f"trainer.max_steps={steps}", f"trainer.val_every={steps}",
            f"trainer.ckpt_every={steps}", "trainer.progress=false", "test_at_end=false", "logger=none",
            "visualize.enabled=false", f"seed={seed}", f"hydra.run.dir={run_dir}"]
    env = dict(os.environ, SKETCHLAB_DATA=str(data_root))
    start = time.perf_counter()
    subprocess.run(args, check=True, env=env, cwd=REPO)
    seconds = time.perf_counter() - start
    model, data, _ = load_trained(run_dir, torch.device("cpu"))
    return model, data, seconds


def sketchlab_mixture(model: Any, strokes: torch.Tensor, lengths: torch.Tensor) -> Any:
    target, x = strokes[:, 1:], strokes[:, :-1]
    mu, _ = model.posterior(target, lengths)
    mix, _ = model.decode_params(x, mu, model.initial_state(mu, strokes.shape[0], strokes))
    return mix


# -- one score for both ------------------------------------------------------------------------------

@torch.no_grad()
def score(mixture: Callable[[torch.Tensor, torch.Tensor], Any], batches: Any) -> dict[str, float]:
    """Validation offset NLL and pen CE per real point (z = posterior mean, dropout off)."""
    from sketchlab.models.sketch_rnn.gmm import offset_nll, pen_cross_entropy  # noqa: PLC0415
    off_sum = pen_sum = 0.0
    points = 0
    for batch in batches:
        strokes, lengths = batch["strokes"], batch["lengths"]
        mix = mixture(strokes, lengths)
        target = strokes[:, 1:]
        real = (torch.arange(target.shape[1])[None, :] < lengths[:, None]).float()
        off_sum += float((offset_nll(mix, target[..., 0], target[..., 1]) * real).sum())
        pen_sum += float((pen_cross_entropy(mix.pen_logits, target[..., 2:5]) * real).sum())
        points += int(lengths.sum())
    return {"offset_nll": off_sum / points, "pen_ce": pen_sum / points, "recon": (off_sum + pen_sum) / points}


def summarise(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown lines: one per (cell, implementation), mean and spread over seeds, and the gap."""
    lines = ["| cell | implementation | seeds | recon / point (mean ± sd) | offset NLL | pen CE | train s |",
             "|---|---|---|---|---|---|---|"]
    for cell in dict.fromkeys(r["cell"] for r in rows):
        for impl in dict.fromkeys(r["impl"] for r in rows):
            sel = [r for r in rows if r["cell"] == cell and r["impl"] == impl]
            if not sel:
                continue
            rec = np.array([r["recon"] for r in sel])
            sd = rec.std(ddof=1) if len(rec) > 1 else float("nan")
            lines.append(f"| {cell} | {impl} | {len(sel)} | {rec.mean():.4f} ± {sd:.4f} | "
                         f"{np.mean([r['offset_nll'] for r in sel]):.4f} | {np.mean([r['pen_ce'] for r in sel]):.4f} | "
                         f"{np.mean([r['seconds'] for r in sel]):.0f} |")
    return lines


def main() -> None:
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
    parser.add_argument("--port-ln-eps", type=float, default=1e-3,
                        help="layer-norm epsilon patched into the port's cells (its own: 1e-5; magenta: 1e-3)")
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
    with tempfile.TemporaryDirectory() as tmp:
        import_seed_port(args.seed_repo.resolve(), Path(tmp))
        for cell in args.cells:
            for seed in args.seeds:
                run_dir = args.out.parent / f"sketchlab-{cell}-seed{seed}"
                print(f"[{cell} seed {seed}] sketchlab", flush=True)
                model, data, secs = train_sketchlab(cell, sizes, args.steps, seed, run_dir, args.data_root)
                valid = list(data.eval_batches("valid"))
                rows.append({"cell": cell, "seed": seed, "impl": "sketchlab", "seconds": secs,
                             **score(lambda s, n: sketchlab_mixture(model, s, n), valid)})
                print(f"  {rows[-1]}", flush=True)
                print(f"[{cell} seed {seed}] port ({args.port_objective} objective, ln eps {args.port_ln_eps})",
                      flush=True)
                port_model, pscale, secs = train_port(data_path, {**sizes, "dec_model": cell}, args.steps, seed,
                                                  args.port_objective, args.port_ln_eps)
                # the same validation sketches in the port's units (both divide by the train std)
                ratio = data.scale / pscale
                if not math.isclose(ratio, 1.0, rel_tol=1e-4):
                    print(f"  note: scale factors differ (sketchlab {data.scale:.6f}, port {pscale:.6f})")
                pvalid = [{"strokes": b["strokes"] * torch.tensor([ratio, ratio, 1, 1, 1]), "lengths": b["lengths"]}
                          for b in valid]
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
