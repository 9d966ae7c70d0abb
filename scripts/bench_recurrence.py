#!/usr/bin/env python
"""The decoder recurrence alone, eager loop against the fused Function, on a CPU.

Forward + backward of one magenta cell over a random ``(T, B, input)`` sequence, recurrent dropout on, the
two paths interleaved in one process (eager, fused, eager, fused, ...) so that both see the same machine
load; the median of ``--rounds`` timed rounds after one untimed one, with the page faults of each round
(first touches of memory the allocator got fresh from the kernel: see ``--keep-freed-memory``).
``fast="auto"``'s choice between the two paths on a CPU rests on this
(``FUSED_HYPER_MAX_WORK`` in ``sketchlab/models/sketch_rnn/recurrence.py``).

    python scripts/bench_recurrence.py                                   # all cells, a few batch x hidden sizes
    python scripts/bench_recurrence.py --cells hyper --sizes 100x256 100x512 --out rec.json
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import time

import torch

from bench_report import add_run_options, apply_run_options, args_config, step_kernels_note, write_report

from sketchlab.models.sketch_rnn.cells import CELL_KINDS, make_cell
from sketchlab.models.sketch_rnn.fused import fused_run
from sketchlab.models.sketch_rnn.recurrence import run_loop

PATHS = {"eager": run_loop, "fused": fused_run}


def size(text: str) -> tuple[int, int]:
    """``"100x256"`` → (batch 100, hidden 256)."""
    try:
        batch, hidden = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a size is BATCHxHIDDEN, e.g. 100x256, got {text!r}") from None
    if batch < 1 or hidden < 1:
        raise argparse.ArgumentTypeError(f"batch and hidden size must be positive, got {text!r}")
    return batch, hidden


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", nargs="+", default=list(CELL_KINDS), choices=CELL_KINDS)
    p.add_argument("--sizes", nargs="+", type=size, default=[(16, 256), (100, 256), (100, 512)],
                   help="BATCHxHIDDEN pairs")
    p.add_argument("--seq-len", type=int, default=250)
    p.add_argument("--input-size", type=int, default=133, help="magenta's decoder input: 5 + z 128")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per path (after one untimed)")
    add_run_options(p, threads=1)
    args = p.parse_args(argv)
    if args.rounds < 1 or args.seq_len < 1 or args.threads < 0:
        p.error("--rounds and --seq-len must be positive, --threads positive or 0 (torch's choice)")
    return args


def bench_size(kind: str, batch: int, hidden: int, args: argparse.Namespace) -> dict:
    """Median seconds of forward + backward per path, and fused's speed over eager's."""
    torch.manual_seed(args.seed)
    cell = make_cell(kind, args.input_size, hidden, recurrent_dropout=0.1).train()
    x = torch.randn(args.seq_len, batch, args.input_size)
    state = cell.zero_state(batch, x)
    times: dict[str, list[float]] = {name: [] for name in PATHS}
    faults: dict[str, list[int]] = {name: [] for name in PATHS}
    for r in range(args.rounds + 1):
        for name, run in PATHS.items():
            cell.zero_grad(set_to_none=True)
            faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            outputs, _ = run(cell, x, state)
            outputs.sum().backward()
            if r:
                times[name].append(time.perf_counter() - start)
                faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before)
            del outputs
    eager, fused = statistics.median(times["eager"]), statistics.median(times["fused"])
    return {"cell": kind, "batch": batch, "hidden": hidden, "eager_s": eager, "fused_s": fused,
            "fused_speedup": eager / fused, "times": times, "page_faults": faults,
            **{f"{name}_faults": int(statistics.median(faults[name])) for name in PATHS}}


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    kept = apply_run_options(args.threads, args.keep_freed_memory)
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s), T {args.seq_len}, "
          f"freed memory kept: {kept}")
    results = []
    for kind in args.cells:
        for batch, hidden in args.sizes:
            res = bench_size(kind, batch, hidden, args)
            results.append(res)
            print(f"{kind:>10} B {batch:>4} hidden {hidden:>4}: eager {res['eager_s']:.3f} s "
                  f"({res['eager_faults']} page faults), fused {res['fused_s']:.3f} s ({res['fused_faults']}), "
                  f"fused {res['fused_speedup']:.2f}x", flush=True)
    print(step_kernels_note().lstrip("; ") or "no fused run")
    write_report(args.out, {"config": args_config(args), "freed_memory_kept": kept, "results": results})
    return results


if __name__ == "__main__":
    main()
