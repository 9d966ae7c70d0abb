#!/usr/bin/env python
"""Sketch-RNN training throughput against the seed port, rfeinman/Sketch-RNN, side by side in one process.

Both models get the same sizes, the same decoder cell and the same synthetic batch; one training step is
forward + backward + value clipping (1.0) + Adam, as both projects train. The candidates are timed
interleaved (A, B, C, A, B, C, ...) so that a busy machine slows them alike, in turns of ``--turn``
consecutive steps (1 by default: every step; with more, each candidate's later steps find its own weights
and buffers in the CPU's caches, as in a training). The median step time of each gives sketches/s; the table
reports each of sketchlab's modes as a ratio to rfeinman: the median over rounds of rfeinman's turn time
over the mode's turn right after it (the JSON also holds the ratio of the median step times).

What differs by design: rfeinman's encoder is ``nn.LSTM`` without recurrent dropout (sketchlab's follows
magenta and drops on the candidate in the encoder too), and its HyperLSTM's small network reads ``x`` only
(magenta's reads ``[x, h]``). sketchlab does at least as much work per step in both cases.

``--seed-repo`` is a checkout of rfeinman/Sketch-RNN, or a bare git directory (a ``fetch`` mirror): then
its ``sketch_rnn`` package is exported from ``HEAD`` into a temporary directory at run time. Nothing of it
is copied into this repository.

    python scripts/bench_vs_seed.py --seed-repo /work/.mirror/rfeinman+Sketch-RNN/repo            # issue's setting
    python scripts/bench_vs_seed.py --seed-repo ... --preset magenta --rounds 3 --out vs_seed.json
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_report import (add_run_options, apply_run_options, args_config, step_kernels_note,  # noqa: E402
                          write_report)
from bench_sketch_rnn import synthetic_batch  # noqa: E402

from sketchlab.models.sketch_rnn import SketchRNN  # noqa: E402
from sketchlab.models.sketch_rnn.cells import CELL_KINDS  # noqa: E402

PRESETS = {
    # the setting of issue 13's first table
    "issue": {"batch_size": 16, "seq_len": 100, "enc_size": 128, "dec_size": 256, "rounds": 12},
    # magenta's default sizes
    "magenta": {"batch_size": 100, "seq_len": 250, "enc_size": 256, "dec_size": 512, "rounds": 3},
}
#: sketchlab's execution modes: SketchRNN keyword arguments
MODES: dict[str, dict[str, Any]] = {"eager": {"fast": False}, "fast": {"fast": True}, "auto": {"fast": "auto"}}
PACKAGE = "sketch_rnn"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed-repo", type=Path, required=True,
                   help="rfeinman/Sketch-RNN: a checkout, or a bare git directory to export it from")
    p.add_argument("--preset", choices=list(PRESETS), default="issue")
    p.add_argument("--cells", nargs="+", default=list(CELL_KINDS), choices=CELL_KINDS)
    p.add_argument("--modes", nargs="+", default=["eager", "auto"], choices=list(MODES),
                   help="sketchlab modes: eager, fast (fast=True), auto (fast=auto, the default config)")
    p.add_argument("--rounds", type=int, default=None,
                   help="timed turns per candidate (default: the preset's)")
    p.add_argument("--turn", type=int, default=1,
                   help="consecutive steps of a candidate before the next one's (1: interleave every step; "
                        "more: each runs with its own data in cache, as in a training; ratios are per turn)")
    p.add_argument("--warmup", type=int, default=3,
                   help="untimed steps per candidate first (TorchScript optimises after 2)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--enc-size", type=int, default=None)
    p.add_argument("--dec-size", type=int, default=None)
    p.add_argument("--z-size", type=int, default=128)
    p.add_argument("--num-mixture", type=int, default=20)
    add_run_options(p, threads=1)
    args = p.parse_args(argv)
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.rounds < 1 or args.warmup < 0 or args.turn < 1:
        p.error("--rounds and --turn must be positive and --warmup >= 0")
    return args


def seed_package_root(repo: Path, workdir: Path) -> Path:
    """A directory holding rfeinman's ``sketch_rnn`` package: the checkout itself, or an export from git."""
    if (repo / PACKAGE / "model.py").is_file():
        return repo
    git = ["git", f"--git-dir={repo}"]
    try:
        names = subprocess.run([*git, "ls-tree", "-r", "--name-only", "HEAD", f"{PACKAGE}/"], check=True,
                               capture_output=True, text=True).stdout.split()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"--seed-repo {repo}: neither a checkout with {PACKAGE}/model.py nor a git directory "
                         f"({exc}); fetch rfeinman/Sketch-RNN and pass its path") from exc
    if f"{PACKAGE}/model.py" not in names:
        raise SystemExit(f"--seed-repo {repo}: HEAD has no {PACKAGE}/model.py; is it rfeinman/Sketch-RNN?")
    for name in names:
        target = workdir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(subprocess.run([*git, "show", f"HEAD:{name}"], check=True, capture_output=True).stdout)
    return workdir


def import_seed(root: Path) -> Any:
    sys.path.insert(0, str(root))
    try:
        pkg = importlib.import_module(PACKAGE)
        importlib.import_module(f"{PACKAGE}.hparams")  # not imported by the package's __init__
        return pkg
    finally:
        sys.path.remove(str(root))


def make_step(model: torch.nn.Module, loss_fn: Callable[[int], torch.Tensor]) -> Callable[[], float]:
    """One timed training step: loss, backward, clip by value 1.0, Adam."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    params = [p for p in model.parameters() if p.requires_grad]
    count = [0]

    def step() -> float:
        t0 = time.perf_counter()
        loss = loss_fn(count[0])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_value_(params, 1.0)
        optimizer.step()
        count[0] += 1
        return time.perf_counter() - t0

    return step


def candidates(args: argparse.Namespace, seed_pkg: Any, cell: str,
               batch: dict[str, torch.Tensor]) -> dict[str, Callable[[], float]]:
    out: dict[str, Callable[[], float]] = {}
    torch.manual_seed(args.seed)
    hps = seed_pkg.hparams.hparams(enc_model="lstm", dec_model=cell, enc_rnn_size=args.enc_size,
                                   dec_rnn_size=args.dec_size, z_size=args.z_size, num_mixture=args.num_mixture,
                                   max_seq_len=args.seq_len, r_dropout=0.1, batch_size=args.batch_size)
    seed_model = seed_pkg.SketchRNN(hps).train()
    strokes, lengths = batch["strokes"], batch["lengths"]
    out["rfeinman"] = make_step(seed_model, lambda _: seed_pkg.model_step(seed_model, strokes, lengths))
    for mode in args.modes:
        torch.manual_seed(args.seed)
        model = SketchRNN(enc_rnn_size=args.enc_size, dec_rnn_size=args.dec_size, z_size=args.z_size,
                          num_mixture=args.num_mixture, enc_model="lstm", dec_model=cell,
                          use_recurrent_dropout=True, recurrent_dropout=0.1, max_seq_len=args.seq_len,
                          **MODES[mode]).train()
        out[f"sketchlab {mode}"] = make_step(model, lambda step, m=model: m.loss(batch, step)["loss"])
    return out


def _turn_times(step_times: list[float], turn: int) -> list[float]:
    """The time of each turn of ``turn`` consecutive steps."""
    return [sum(step_times[i:i + turn]) for i in range(0, len(step_times), turn)]


def bench_cell(args: argparse.Namespace, seed_pkg: Any, cell: str, batch: dict[str, torch.Tensor]) -> dict:
    steps = candidates(args, seed_pkg, cell, batch)
    warm = {}
    for name, step in steps.items():  # compilation happens here
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            step()
        warm[name] = time.perf_counter() - t0
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            times[name].extend(step() for _ in range(args.turn))
    seed_turns = _turn_times(times["rfeinman"], args.turn)
    rows = {}
    for name, ts in times.items():
        median = statistics.median(ts)
        # each round's rfeinman turn over this candidate's turn right after it: a slow spell of a
        # shared machine slows both of a pair, so the median of these ratios moves less than the
        # ratio of the medians
        paired = statistics.median(s / t for s, t in zip(seed_turns, _turn_times(ts, args.turn)))
        rows[name] = {"median_step_s": median, "sketches_per_s": args.batch_size / median,
                      "ratio_vs_rfeinman": paired, "ratio_of_medians": statistics.median(times["rfeinman"]) / median,
                      "warmup_s": warm[name], "step_s": ts}
    return rows


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    apply_run_options(args.threads, args.keep_freed_memory)
    batch = synthetic_batch(args.batch_size, args.seq_len, np.random.default_rng(args.seed))
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="rfeinman-") as tmp:
        seed_pkg = import_seed(seed_package_root(args.seed_repo, Path(tmp)))
        for cell in args.cells:
            results[cell] = bench_cell(args, seed_pkg, cell, batch)
            print(f"{cell}: " + ", ".join(f"{k} {v['sketches_per_s']:.1f}/s" for k, v in results[cell].items()),
                  flush=True)

    names = ["rfeinman"] + [f"sketchlab {m}" for m in args.modes]
    print(f"\nTraining sketches/s, {args.threads} thread(s), batch {args.batch_size}, length {args.seq_len}, "
          f"enc {args.enc_size}, dec {args.dec_size}, recurrent dropout on; median of {args.rounds * args.turn} "
          f"steps, in {args.rounds} interleaved turns of {args.turn} ({args.warmup} warm-up); ratio: median over "
          f"turns of rfeinman's turn time / this one's{step_kernels_note()}")
    print("| cell | " + " | ".join(names) + " | best ratio |")
    print("|---" * (len(names) + 2) + "|")
    for cell, rows in results.items():
        best = max(rows[n]["ratio_vs_rfeinman"] for n in names[1:])
        cells = [f"{rows[n]['sketches_per_s']:.1f}" + ("" if n == "rfeinman" else
                                                        f" ({rows[n]['ratio_vs_rfeinman']:.2f}x)") for n in names]
        print(f"| {cell} | " + " | ".join(cells) + f" | {best:.2f}x |")
    report = {"config": args_config(args), "torch": torch.__version__, "results": results}
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
