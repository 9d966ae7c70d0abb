#!/usr/bin/env python
"""How training cost scales: sketches/s and peak memory against batch size and sequence length.

Models (sizes from the shipped ``sketchlab/conf/model/*.yaml``, so the defaults are what a training runs):
  sketch_rnn   Sketch-RNN, ``dec_model=layer_norm``, magenta's enc 256 / dec 512 / z 128 / 20 mixtures,
               recurrent dropout on, ``fast="auto"`` (on a CPU: the fused recurrence of
               ``sketchlab/models/sketch_rnn/fused.py``). Length = the padded sequence length (the recurrence
               runs every step of it, as magenta pads every batch to ``max_seq_len``).
  sketch_ode   SketchODE on the ``fast`` fixed-step RK4 backend, hidden 64, z 48 (on a CPU each solve is one
               autograd Function, ``sketch_ode/fused.py``). Length = G, the points per curve; the solver steps
               on the curve's own times, so G - 1 RK4 steps per solve.
  sketch_ode_loop  the same with ``fused=False`` (the plain autograd loop); not in the default run.

One training step = forward + backward (+ value clipping for Sketch-RNN, as magenta) + Adam step on one
synthetic batch of exactly that (batch, length) (``bench_sketch_rnn.synthetic_batch`` /
``bench_sketch_ode.load_sketches``). Each cell runs in a fresh child process (spawn), so its peak memory is
its own: on a CPU the child's peak RSS (``ru_maxrss``) and its RSS before the model is built (after torch's
import); the difference is what the model, batch, activations and optimiser state took. On CUDA,
``torch.cuda.max_memory_allocated``. Rates are the median of ``--steps`` timed steps after ``--warmup``.

``--profile`` prints the top ops (``torch.profiler``, by self time) of each selected cell instead of timing the
grid; pick one cell with ``--models``, ``--batch-sizes`` and ``--lengths``.

    python scripts/bench_scaling.py --out outputs/bench/scaling.json            # the full grid, 1 thread
    python scripts/bench_scaling.py --models sketch_ode --batch-sizes 64 --lengths 100 --profile
    python scripts/bench_scaling.py --models sketch_rnn --set sketch_rnn.dec_rnn_size=128 --batch-sizes 8
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_report import add_run_options, apply_run_options, args_config, write_report  # noqa: E402
from bench_sketch_ode import load_sketches  # noqa: E402
from bench_sketch_rnn import StepTimer, synthetic_batch  # noqa: E402

from sketchlab.data.curves import CurveCollate  # noqa: E402
from sketchlab.engine.runtime import pick_device  # noqa: E402
from sketchlab.models.sketch_ode import SketchODE  # noqa: E402
from sketchlab.models.sketch_rnn import SketchRNN  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "sketchlab" / "conf" / "model"
#: model name -> (shipped config, class, the settings this benchmark fixes, the config key that is "length")
MODELS: dict[str, tuple[str, type, dict[str, Any], str]] = {
    "sketch_rnn": ("sketch_rnn.yaml", SketchRNN, {"dec_model": "layer_norm", "fast": "auto"}, "max_seq_len"),
    "sketch_ode": ("sketch_ode.yaml", SketchODE, {"backend": "fast", "adjoint": False}, "n_points"),
    "sketch_ode_loop": ("sketch_ode.yaml", SketchODE, {"backend": "fast", "adjoint": False, "fused": False},
                        "n_points"),
}
DEFAULT_MODELS = ["sketch_rnn", "sketch_ode"]
#: ru_maxrss is in KiB on Linux, bytes on macOS
RSS_UNIT = 1 if sys.platform == "darwin" else 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS, choices=list(MODELS))
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[16, 64, 256])
    p.add_argument("--lengths", nargs="+", type=int, default=[100, 250],
                   help="Sketch-RNN: padded sequence length; SketchODE: G, points per curve")
    p.add_argument("--steps", type=int, default=3, help="timed steps per cell (median)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    p.add_argument("--set", nargs="+", default=[], metavar="MODEL.KEY=VALUE",
                   help="override a model setting, e.g. sketch_rnn.dec_rnn_size=128 (value parsed as YAML)")
    p.add_argument("--profile", action="store_true", help="print torch.profiler's top ops per cell instead")
    p.add_argument("--profile-rows", type=int, default=15)
    add_run_options(p, threads=1)
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or min(args.batch_sizes) < 1 or min(args.lengths) < 2:
        p.error("need --steps >= 1, --warmup >= 0, batch sizes >= 1 and lengths >= 2")
    args.overrides = parse_overrides(args.set, p)
    return args


def parse_overrides(items: list[str], parser: argparse.ArgumentParser | None = None) -> dict[str, dict[str, Any]]:
    """``["sketch_rnn.dec_rnn_size=128", ...]`` -> ``{"sketch_rnn": {"dec_rnn_size": 128}}`` (values as YAML)."""
    out: dict[str, dict[str, Any]] = {name: {} for name in MODELS}
    for item in items:
        key, sep, value = item.partition("=")
        model, dot, field = key.partition(".")
        if not sep or not dot or model not in MODELS or not field:
            message = f"--set wants MODEL.KEY=VALUE with MODEL one of {', '.join(MODELS)}, got '{item}'"
            if parser is None:
                raise ValueError(message)
            parser.error(message)
        out[model][field] = yaml.safe_load(value)
    return out


def model_kwargs(name: str, length: int, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The shipped config's ``net`` settings for ``name``, with this benchmark's fixed settings and ``length``."""
    conf_file, cls, fixed, length_key = MODELS[name]
    net = yaml.safe_load((CONF / conf_file).read_text())["net"]
    net.pop("_target_")
    kwargs = {**net, **fixed, length_key: length, **(overrides or {})}
    unresolved = [k for k, v in kwargs.items() if isinstance(v, str) and "${" in v]
    if unresolved:
        raise ValueError(f"{conf_file}: set {', '.join(unresolved)} (interpolations are not resolved here)")
    return kwargs


def build_cell(name: str, batch_size: int, length: int, overrides: dict[str, Any], seed: int,
               device: torch.device) -> tuple[torch.nn.Module, dict[str, torch.Tensor], bool]:
    """The model (train mode) and a synthetic batch of exactly ``batch_size`` x ``length``; whether to clip."""
    kwargs = model_kwargs(name, length, overrides)
    cls = MODELS[name][1]
    torch.manual_seed(seed)
    model = cls(**kwargs).to(device).train()
    rng = np.random.default_rng(seed)
    if name == "sketch_rnn":
        batch = synthetic_batch(batch_size, length, rng)
    else:
        sketches, _ = load_sketches("synthetic", batch_size, rng)
        batch = CurveCollate(n_points=length, t_max=kwargs["t_max"])(sketches)
    return model, {k: v.to(device) for k, v in batch.items()}, name == "sketch_rnn"


def current_rss_bytes() -> int:
    """This process's resident memory now (Linux /proc; elsewhere its peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * RSS_UNIT


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far."""
    # ru_maxrss and /proc/self/statm read the kernel's RSS counts differently; in a long-lived process ru_maxrss
    # was seen a few pages below the RSS of that moment
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * RSS_UNIT, current_rss_bytes())


def run_cell(spec: dict[str, Any]) -> dict[str, Any]:
    """Time one (model, batch, length) cell and measure its memory; meant for a fresh process."""
    device = pick_device(spec["device"])
    apply_run_options(spec["threads"], spec["keep_freed_memory"], device.type)
    cuda = device.type == "cuda"
    baseline = current_rss_bytes()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    model, batch, clip = build_cell(spec["model"], spec["batch_size"], spec["length"], spec["overrides"],
                                    spec["seed"], device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    params = list(model.parameters())
    step = [0]

    def train_step() -> None:
        loss = model.loss(batch, step[0])["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_value_(params, 1.0)
        optimizer.step()
        step[0] += 1

    timer = StepTimer(device)
    for _ in range(spec["warmup"]):
        timer(train_step)
    row = {k: spec[k] for k in ("model", "batch_size", "length")}
    if spec["profile"]:
        row["profile"] = profile_steps(train_step, cuda, spec["profile_rows"])
        return row
    times = [timer(train_step) for _ in range(spec["steps"])]
    median = statistics.median(times)
    row.update(step_s=median, min_step_s=min(times), sketches_per_s=spec["batch_size"] / median,
               ms_per_sketch=1000 * median / spec["batch_size"], threads=torch.get_num_threads())
    if cuda:
        row.update(peak_mem_mb=torch.cuda.max_memory_allocated(device) / 2**20, memory="cuda max_memory_allocated")
    else:
        peak = peak_rss_bytes()
        row.update(baseline_rss_mb=baseline / 2**20, peak_rss_mb=peak / 2**20,
                   peak_mem_mb=(peak - baseline) / 2**20, memory="peak RSS - RSS before building the model")
    return row


def profile_steps(train_step, cuda: bool, rows: int) -> dict[str, Any]:
    """Profile two training steps; the top ops by self time, as a table and as data."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(2):
            train_step()
        if cuda:
            torch.cuda.synchronize()
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    averages = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in averages) or 1.0
    top = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)[:rows]
    return {"table": averages.table(sort_by=sort, row_limit=rows),
            "top": [{"op": e.key, "calls": e.count, "self_cpu_ms": e.self_cpu_time_total / 1000,
                     "self_cpu_share": e.self_cpu_time_total / total} for e in top]}


def run_isolated(spec: dict[str, Any]) -> dict[str, Any]:
    """:func:`run_cell` in a fresh spawned process (its peak memory is then the cell's alone)."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(run_cell, spec).result()


def markdown_table(rows: list[dict[str, Any]], cuda: bool) -> str:
    """Rows as a markdown table: sketches/s, ms per sketch and peak memory per cell."""
    memory = "peak memory (MiB)" if cuda else "peak RSS - baseline (MiB) | peak RSS (MiB)"
    lines = [f"| model | batch | length | ms/step | sketches/s | ms/sketch | {memory} |",
             "|---|---:|---:|---:|---:|---:|---:|" + ("" if cuda else "---:|")]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['batch_size']} | {r['length']} | failed: {r['error']} | | | |"
                         + ("" if cuda else " |"))
            continue
        peak = "" if cuda else f" {r['peak_rss_mb']:.0f} |"
        lines.append(f"| {r['model']} | {r['batch_size']} | {r['length']} | {1000 * r['step_s']:.0f} | "
                     f"{r['sketches_per_s']:.1f} | {r['ms_per_sketch']:.2f} | {r['peak_mem_mb']:.0f} |{peak}")
    return "\n".join(lines)


def scaling_summary(rows: list[dict[str, Any]]) -> list[str]:
    """Per model, how time per sketch changes with batch size (flat = time linear in B) and with length."""
    lines = []
    ok = [r for r in rows if "error" not in r]
    for model in dict.fromkeys(r["model"] for r in ok):
        mine = [r for r in ok if r["model"] == model]
        batches = sorted({r["batch_size"] for r in mine})
        lengths = sorted({r["length"] for r in mine})
        cell = {(r["batch_size"], r["length"]): r for r in mine}
        for length in lengths:
            per = [cell[b, length]["ms_per_sketch"] for b in batches if (b, length) in cell]
            if len(per) > 1:
                lines.append(f"{model}, length {length}: ms/sketch at batch {batches}: "
                             + ", ".join(f"{v:.2f}" for v in per) + f" (last/first {per[-1] / per[0]:.2f})")
        if len(lengths) > 1:
            for b in batches:
                if (b, lengths[0]) in cell and (b, lengths[-1]) in cell:
                    ratio = cell[b, lengths[-1]]["step_s"] / cell[b, lengths[0]]["step_s"]
                    lines.append(f"{model}, batch {b}: step time x{ratio:.2f} from length {lengths[0]} to "
                                 f"{lengths[-1]} (length x{lengths[-1] / lengths[0]:.2f})")
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = pick_device(args.device)
    rows = []
    for model in args.models:
        for length in args.lengths:
            for batch_size in args.batch_sizes:
                spec = {"model": model, "batch_size": batch_size, "length": length, "steps": args.steps,
                        "warmup": args.warmup, "device": str(device), "threads": args.threads,
                        "overrides": args.overrides[model], "seed": args.seed, "profile": args.profile,
                        "profile_rows": args.profile_rows, "keep_freed_memory": args.keep_freed_memory}
                start = time.perf_counter()
                try:
                    row = run_isolated(spec)
                except Exception as exc:  # one failing cell (e.g. out of memory) shouldn't lose the others
                    row = {"model": model, "batch_size": batch_size, "length": length,
                           "error": f"{type(exc).__name__}: {exc}"}
                row["cell_wall_s"] = time.perf_counter() - start
                rows.append(row)
                if args.profile and "profile" in row:
                    print(f"\n{model}, batch {batch_size}, length {length}: top ops of 2 training steps "
                          f"(self time)\n{row['profile']['table']}", flush=True)
                elif "error" in row:
                    print(f"{model:>10} B={batch_size:<4} L={length:<4} FAILED: {row['error']}", flush=True)
                else:
                    print(f"{model:>10} B={batch_size:<4} L={length:<4} {1000 * row['step_s']:9.0f} ms/step "
                          f"{row['sketches_per_s']:8.1f} sketches/s {row['peak_mem_mb']:8.0f} MiB", flush=True)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    meta = {"date": datetime.date.today().isoformat(), "device": str(device), "device_name": name,
            "torch": torch.__version__, "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
            "config": args_config(args)}
    if not args.profile:
        print(f"\nTraining throughput on {name} ({device}), {args.threads or 'default'} torch thread(s), "
              f"median of {args.steps} steps after {args.warmup} warm-up; load average {os.getloadavg()[0]:.1f}")
        print(markdown_table(rows, device.type == "cuda"))
        meta["summary"] = scaling_summary(rows)
        print("\n".join(meta["summary"]))
    write_report(args.out, {**meta, "results": rows})
    return {**meta, "results": rows}


if __name__ == "__main__":
    main()
