#!/usr/bin/env python
"""Training throughput of SketchODE: the original's adjoint path against direct backprop and the fast loop.

One training step = forward + backward + Adam step on a batch of curves (G points each). Every variant
starts from the same initial weights and sees the same batches. Two checks that they compute the same
thing: the gradient of the very first step against the first variant's (relative difference of the whole
gradient vector), and the loss curves (largest relative gap at any step, and the mean loss over the last
quarter of the steps). Adam amplifies tiny differences in early training, so curves drift apart by a few
percent step by step even where the first gradients agree to 1e-6; the trend is what should agree.

Variants:
  adjoint          torchdiffeq rk4, gradients by the adjoint method (odeint_adjoint / cdeint(adjoint=True)),
                   as the original code
  torchdiffeq      torchdiffeq rk4, direct backprop through its solver loop
  fast-loop        the model's own fixed-step rk4 loop with precomputed spline derivatives, direct backprop
                   through it (``fused=False``)
  fast             the same solve as one autograd Function per solve with a hand-written backward (CPU;
                   ``sketch_ode/fused.py``; elsewhere the same as fast-loop): the default
  fast-cudagraph   fast, with each step's forward and backward captured in CUDA graphs (CUDA only)

Vector-field evaluations (NFE) are counted per step for the forward and the backward pass. Step times
are medians after ``--warmup`` steps (CUDA: synchronised). Data: VectorMNIST's training split when
the shared data is there (``--data auto``), else random-walk sketches.

    python scripts/bench_sketch_ode.py                                   # GPU if available, paper sizes
    python scripts/bench_sketch_ode.py --device cpu --batch-size 16 --n-points 50 --steps 12
    python scripts/bench_sketch_ode.py --variants adjoint fast --out bench.json
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench_report import add_run_options, apply_run_options, args_config, write_report

from sketchlab.data.curves import CurveCollate
from sketchlab.data.strokes import points_to_stroke3
from sketchlab.data.safe_npz import load_npz
from sketchlab.engine.runtime import pick_device
from sketchlab.models.sketch_ode import SketchODE

VARIANTS: dict[str, dict[str, Any]] = {
    "adjoint": {"backend": "torchdiffeq", "adjoint": True},
    "torchdiffeq": {"backend": "torchdiffeq", "adjoint": False},
    "fast-loop": {"backend": "fast", "adjoint": False, "fused": False},
    "fast": {"backend": "fast", "adjoint": False},
    "fast-cudagraph": {"backend": "fast", "adjoint": False, "cuda_graph": True},
}
VMNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "vectormnist" / "vmnist.npz"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (cuda if available) | cpu | cuda | cuda:N")
    p.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS),
                   help="default: all on CUDA, all but fast-cudagraph on CPU")
    p.add_argument("--steps", type=int, default=30, help="training steps per variant (the loss curve)")
    p.add_argument("--warmup", type=int, default=3, help="first steps left out of the timing")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--n-points", type=int, default=100, help="G, points per curve")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--z-size", type=int, default=48)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--data", default="auto", help="auto | synthetic | path to vmnist.npz")
    add_run_options(p, threads=None)
    args = p.parse_args(argv)
    if args.steps <= args.warmup or args.warmup < 0 or args.batch_size < 1 or args.n_points < 2:
        p.error("need --steps > --warmup >= 0, --batch-size >= 1 and --n-points >= 2")
    return args


def load_sketches(source: str, count: int, rng: np.random.Generator) -> tuple[list[np.ndarray], str]:
    """``count`` stroke-3 sketches: VectorMNIST's training split, or random walks of 1-3 strokes."""
    path = VMNIST if source == "auto" else Path(source)
    if source != "synthetic" and path.is_file():
        # read the file once and index the in-memory arrays: a lazy npz (np.load) would re-read and
        # unpickle the whole object array on every data["points"] access
        data = load_npz(path)
        points, split = data["points"], data["split"]
        train = np.nonzero(split == 0)[0]
        picks = rng.choice(train, size=count, replace=count > len(train))
        return [points_to_stroke3(points[i][:, [0, 1, 3]]) for i in picks], f"vmnist ({path})"
    if source not in ("auto", "synthetic"):
        raise SystemExit(f"no data file at {path}")
    sketches = []
    for _ in range(count):
        n = int(rng.integers(15, 60))
        s = np.column_stack([rng.normal(size=(n, 2)), np.zeros(n)]).astype(np.float32)
        for end in rng.choice(np.arange(3, n - 1), size=int(rng.integers(0, 3)), replace=False):
            s[end, 2] = 1
        s[-1, 2] = 1
        sketches.append(s)
    return sketches, "synthetic random walks"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def run_variant(name: str, args: argparse.Namespace, device: torch.device,
                batches: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    model = SketchODE(n_hidden=args.hidden, z_size=args.z_size, n_points=args.n_points, **VARIANTS[name]).to(device)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    losses, times, nfe_fwd, nfe_bwd = [], [], [], []
    first_grad = None
    for step in range(args.steps):
        batch = batches[step % len(batches)]
        model.reset_nfe()
        synchronize(device)
        start = time.perf_counter()
        loss = model.loss(batch, step)["loss"]
        forward = sum(model.nfe().values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if first_grad is None:
            first_grad = torch.cat([p.grad.detach().flatten() for p in model.parameters() if p.grad is not None])
        optimizer.step()
        synchronize(device)
        times.append(time.perf_counter() - start)
        nfe_fwd.append(forward)
        nfe_bwd.append(sum(model.nfe().values()) - forward)
        losses.append(float(loss.detach()))
    step_s = statistics.median(times[args.warmup:])
    # CUDA-graph replays run no Python, so they count nothing: report the eager (capture) step's count.
    return {"variant": name, **{k: v for k, v in VARIANTS[name].items()},
            "nfe_forward": max(nfe_fwd), "nfe_backward": max(nfe_bwd), "first_step_s": times[0],
            "step_s": step_s, "sketches_per_s": args.batch_size / step_s, "losses": losses,
            "final_loss": statistics.fmean(losses[-max(1, args.steps // 4):]), "first_grad": first_grad.cpu()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = pick_device(args.device)
    apply_run_options(args.threads, args.keep_freed_memory, device.type)
    variants = args.variants or [v for v in VARIANTS if device.type == "cuda" or v != "fast-cudagraph"]
    if "fast-cudagraph" in variants and device.type != "cuda":
        raise SystemExit("fast-cudagraph needs a CUDA device")
    rng = np.random.default_rng(args.seed)
    n_batches = min(args.steps, 8)
    sketches, source = load_sketches(args.data, n_batches * args.batch_size, rng)
    collate = CurveCollate(n_points=args.n_points)
    batches = [{k: v.to(device) for k, v in collate(sketches[i::n_batches]).items()} for i in range(n_batches)]

    results = [run_variant(name, args, device, batches) for name in variants]
    reference = results[0]
    for r in results:
        gaps = [abs(a - b) / abs(b) for a, b in zip(r["losses"], reference["losses"])]
        r["max_rel_loss_gap"] = max(gaps)
        r["speedup"] = r["sketches_per_s"] / reference["sketches_per_s"]
        r["first_grad_rel_diff"] = relative_difference(r["first_grad"], reference["first_grad"])
    pairwise = {f"{a['variant']} vs {b['variant']}": relative_difference(a["first_grad"], b["first_grad"])
                for i, a in enumerate(results) for b in results[:i]}
    for r in results:  # the gradients themselves stay out of the JSON
        del r["first_grad"]

    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"SketchODE training steps on {device} ({hardware}, "
          f"{torch.get_num_threads()} threads), batch {args.batch_size}, G={args.n_points}, hidden {args.hidden}, "
          f"z {args.z_size}, {args.steps} steps ({args.warmup} warm-up), data: {source}")
    header = (f"{'variant':<16}{'NFE fwd':>9}{'NFE bwd':>9}{'ms/step':>10}{'sketches/s':>12}{'speedup':>9}"
              f"{'grad diff@0':>13}{'max loss gap':>14}{'final loss':>12}")
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r['variant']:<16}{r['nfe_forward']:>9}{r['nfe_backward']:>9}{1000 * r['step_s']:>10.1f}"
              f"{r['sketches_per_s']:>12.1f}{r['speedup']:>8.2f}x{r['first_grad_rel_diff']:>13.2e}"
              f"{r['max_rel_loss_gap']:>14.2e}{r['final_loss']:>12.4f}")
    print(f"loss at steps 0, {args.steps // 2}, {args.steps - 1}: " + "; ".join(
        f"{r['variant']} {r['losses'][0]:.4f} {r['losses'][args.steps // 2]:.4f} {r['losses'][-1]:.4f}"
        for r in results))
    if pairwise:
        print("first-step gradient, relative difference: " + "; ".join(f"{k} {v:.2e}" for k, v in pairwise.items()))
    report = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "data": source, "first_grad_rel_diff": pairwise,
              "config": args_config(args), "results": results}
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
