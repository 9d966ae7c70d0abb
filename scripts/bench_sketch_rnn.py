#!/usr/bin/env python
"""Training throughput of Sketch-RNN per decoder cell and execution mode.

One training step = forward + backward + value clipping + Adam step on a batch of synthetic sketches
padded to ``--seq-len`` (magenta pads every batch to max_seq_len). Defaults are magenta's sizes:
batch 100, length 250, encoder 256, decoder 512, z 128, 20 components, recurrent dropout on.

Modes:
  eager            the reference Python loop (``fast=False``)
  auto             ``fast="auto"`` (the default config): on a CPU the fused recurrence (every cell), else as fast
  fast             ``fast=True``: native LSTM kernel (cuDNN) where the maths allows, else torch.compile'd steps
  fast-cudagraphs  ``fast=True, compile_mode="reduce-overhead"`` (CUDA graphs; CUDA only)

Each (cell, mode) gets ``--warmup`` untimed steps (compilation happens there; its time is reported),
then ``--steps`` timed steps (CUDA events on a GPU); the median step time gives sketches/s.

    python scripts/bench_sketch_rnn.py                             # GPU if available, magenta sizes
    python scripts/bench_sketch_rnn.py --device cpu --batch-size 8 --seq-len 50 --enc-size 64 --dec-size 128
    python scripts/bench_sketch_rnn.py --cells lstm hyper --modes eager fast --out bench.json
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

from bench_report import add_run_options, apply_run_options, args_config, step_kernels_note, write_report

from sketchlab.data.stroke5 import Stroke5Collate
from sketchlab.engine.runtime import pick_device
from sketchlab.models.sketch_rnn import SketchRNN
from sketchlab.models.sketch_rnn.cells import CELL_KINDS

MODES = {"eager": {"fast": False}, "auto": {"fast": "auto"}, "fast": {"fast": True},
         "fast-cudagraphs": {"fast": True, "compile_mode": "reduce-overhead"}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto (cuda if available) | cpu | cuda | cuda:N")
    p.add_argument("--cells", nargs="+", default=list(CELL_KINDS), choices=CELL_KINDS, help="decoder cells")
    p.add_argument("--modes", nargs="+", default=None, choices=list(MODES),
                   help="default: all modes on CUDA, eager, auto and fast on CPU")
    p.add_argument("--steps", type=int, default=20, help="timed steps per (cell, mode)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seq-len", type=int, default=250)
    p.add_argument("--enc-size", type=int, default=256)
    p.add_argument("--dec-size", type=int, default=512)
    p.add_argument("--z-size", type=int, default=128)
    p.add_argument("--num-mixture", type=int, default=20)
    p.add_argument("--recurrent-dropout", action=argparse.BooleanOptionalAction, default=True,
                   help="magenta's default is on; off lets the lstm train on the native kernel")
    p.add_argument("--bf16", action="store_true", help="autocast the forward to bfloat16")
    add_run_options(p, threads=None)
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1 or args.seq_len < 1:
        p.error("--steps, --batch-size and --seq-len must be positive and --warmup >= 0")
    return args


def synthetic_batch(batch_size: int, seq_len: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Random stroke-3 sketches of lengths in [seq_len / 2, seq_len], padded to seq_len."""
    sketches = []
    for n in rng.integers(max(1, seq_len // 2), seq_len + 1, size=batch_size):
        s = np.column_stack([rng.normal(size=(n, 2)), rng.random(n) < 0.1]).astype(np.float32)
        s[-1, 2] = 1
        sketches.append(s)
    return Stroke5Collate(seq_len)(sketches)


class StepTimer:
    """Wall time of one step: CUDA events on a GPU, perf_counter on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __call__(self, fn) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1000.0
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0


def bench_one(args: argparse.Namespace, device: torch.device, cell: str, mode: str,
              batch: dict[str, torch.Tensor]) -> dict[str, float | str]:
    torch.manual_seed(args.seed)
    model = SketchRNN(enc_rnn_size=args.enc_size, dec_rnn_size=args.dec_size, z_size=args.z_size,
                      num_mixture=args.num_mixture, dec_model=cell, use_recurrent_dropout=args.recurrent_dropout,
                      max_seq_len=args.seq_len, **MODES[mode]).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    params = list(model.parameters())
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    step_count = [0]

    def train_step() -> None:
        with autocast:
            loss = model.loss(batch, step_count[0])["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_value_(params, 1.0)
        optimizer.step()
        step_count[0] += 1

    timer = StepTimer(device)
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        timer(train_step)
    warmup_s = time.perf_counter() - t0
    times = [timer(train_step) for _ in range(args.steps)]
    median = statistics.median(times)
    return {"cell": cell, "mode": mode, "median_step_s": median, "min_step_s": min(times),
            "sketches_per_s": args.batch_size / median, "warmup_s": warmup_s}


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    device = pick_device(args.device)
    apply_run_options(args.threads, args.keep_freed_memory, device.type)
    modes = args.modes or (list(MODES) if device.type == "cuda" else ["eager", "auto", "fast"])
    if device.type != "cuda" and "fast-cudagraphs" in modes:
        raise SystemExit("fast-cudagraphs needs a CUDA device")
    batch = {k: v.to(device) for k, v in synthetic_batch(args.batch_size, args.seq_len,
                                                          np.random.default_rng(args.seed)).items()}
    results: list[dict] = []
    for cell in args.cells:
        for mode in modes:
            try:
                row = bench_one(args, device, cell, mode, batch)
            except Exception as exc:  # one failing mode (e.g. a compiler error) shouldn't lose the others
                print(f"{cell:>10} {mode:>16}  FAILED: {type(exc).__name__}: {exc}", flush=True)
                results.append({"cell": cell, "mode": mode, "error": f"{type(exc).__name__}: {exc}"})
                continue
            results.append(row)
            eager = next((r for r in results if r["cell"] == cell and r["mode"] == "eager" and "error" not in r), None)
            row["speedup_vs_eager"] = eager["median_step_s"] / row["median_step_s"] if eager else None
            print(f"{cell:>10} {mode:>16}  {1000 * row['median_step_s']:9.1f} ms/step  "
                  f"{row['sketches_per_s']:9.1f} sketches/s  (warm-up {row['warmup_s']:.1f} s)", flush=True)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"\nSketch-RNN training throughput on {name} ({device}), batch {args.batch_size}, length {args.seq_len}, "
          f"enc {args.enc_size}, dec {args.dec_size}, recurrent dropout {'on' if args.recurrent_dropout else 'off'}"
          f"{', bf16' if args.bf16 else ''}; median of {args.steps} steps{step_kernels_note()}")
    print(f"| {'cell':<10} | {'mode':<16} | {'ms/step':>9} | {'sketches/s':>10} | {'vs eager':>8} |")
    print(f"|{'-' * 12}|{'-' * 18}|{'-' * 11}|{'-' * 12}|{'-' * 10}|")
    for r in results:
        if "error" in r:
            print(f"| {r['cell']:<10} | {r['mode']:<16} | {'failed':>9} | {'-':>10} | {'-':>8} |")
            continue
        speedup = "-" if r["speedup_vs_eager"] is None else f"{r['speedup_vs_eager']:.2f}x"
        print(f"| {r['cell']:<10} | {r['mode']:<16} | {1000 * r['median_step_s']:9.1f} | "
              f"{r['sketches_per_s']:10.1f} | {speedup:>8} |")
    meta = {**args_config(args), "device": str(device), "device_name": name, "torch": torch.__version__}
    write_report(args.out, {"config": meta, "results": results})
    return results


if __name__ == "__main__":
    main()
