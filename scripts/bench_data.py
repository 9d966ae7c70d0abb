#!/usr/bin/env python
"""How long a training step waits for its batch, with and without the data prefetch thread.

The data module is built from an experiment's config exactly as training builds it (source, filtering,
augmentation, the model's collate). The "step" is a stand-in of ``--step-ms`` milliseconds, so the
measurement is about the data stream, not the model: ``sleep`` releases the CPU as a GPU step does
(the Python thread waits on the device), ``compute`` keeps one core busy with matrix products (a CPU
step; on a machine with few cores the producer thread then competes for it). Prefetch depths alternate in
blocks of batches (each a fresh stream), on one torch thread.

    python scripts/bench_data.py                                  # sheep (B=100) and VectorMNIST ODE (B=64)
    python scripts/bench_data.py --experiments sheep --step-ms 20 --work compute --batches 100
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from bench_report import args_config, write_report

from sketchlab.config import config_dir, register_resolvers
from sketchlab.factory import build_data


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiments", nargs="+", default=["sheep", "vmnist_ode"])
    p.add_argument("--depths", nargs="+", type=int, default=[0, 2], help="data.prefetch values (0: synchronous)")
    p.add_argument("--batches", type=int, default=60, help="batches per depth")
    p.add_argument("--rounds", type=int, default=4, help="blocks per depth (alternating depths)")
    p.add_argument("--step-ms", type=float, default=30.0, help="duration of the stand-in training step")
    p.add_argument("--work", choices=("sleep", "compute"), default="sleep")
    p.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for every experiment")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def stand_in_step(ms: float, work: str) -> None:
    if work == "sleep":
        time.sleep(ms / 1000)
        return
    a = torch.ones(256, 256)
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        a = torch.tanh(a @ a * 1e-3)


def bench(name: str, args: argparse.Namespace) -> dict:
    register_resolvers()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={name}", *args.override])
    modules = {d: build_data(cfg) for d in args.depths}
    waits: dict[int, list[float]] = {d: [] for d in args.depths}
    # blocks of batches, alternating depths; each block opens a fresh stream and closes it, so a
    # prefetch thread gets no head start from another depth's block (its first batch is left out)
    for _ in range(args.rounds):
        for d, data in modules.items():
            stream = data.train_batches(prefetch=d)
            next(stream)
            for _ in range(args.batches // args.rounds):
                stand_in_step(args.step_ms, args.work)
                t0 = time.perf_counter()
                next(stream)
                waits[d].append(time.perf_counter() - t0)
            if hasattr(stream, "close"):
                stream.close()
    rows = {d: {"mean_wait_ms": 1000 * statistics.fmean(w), "median_wait_ms": 1000 * statistics.median(w),
                "max_wait_ms": 1000 * max(w)} for d, w in waits.items()}
    return {"experiment": name, "batch_size": int(cfg.data.batch_size), "rows": rows}


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    torch.set_num_threads(1)
    results = [bench(name, args) for name in args.experiments]
    print(f"Time a step waits for its batch ({args.work} stand-in step of {args.step_ms:g} ms, "
          f"{args.batches} batches per depth in {args.rounds} alternating blocks)")
    print("| experiment | batch | prefetch | mean wait (ms) | median (ms) | max (ms) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        for d, row in r["rows"].items():
            print(f"| {r['experiment']} | {r['batch_size']} | {d} | {row['mean_wait_ms']:.2f} | "
                  f"{row['median_wait_ms']:.2f} | {row['max_wait_ms']:.2f} |")
    write_report(args.out, {"config": args_config(args), "results": results})
    return results


if __name__ == "__main__":
    main()
