"""What the ``scripts/bench_*.py`` share: the process options every one takes (``--threads``, ``--seed``,
``--keep-freed-memory``: the training process's memory setting, so they time what a training runs), and the
JSON report they write with ``--out`` (settings, results, and what the fused recurrences' steps ran on)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from sketchlab.memory import keep_freed_memory
from sketchlab.models.sketch_rnn.step_kernels import used as step_kernels_used


def args_config(args: argparse.Namespace) -> dict[str, Any]:
    """The command-line settings as JSON values (paths as strings)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


def step_kernels_note() -> str:
    """``; step kernels: cpp-avx512`` (say), or ``python (why)``, for a results header: what the fused
    recurrences' steps ran on in this process (empty where none ran)."""
    used = step_kernels_used()
    return "" if used is None else f"; step kernels: {used}"


def write_report(out: Path | None, report: dict[str, Any]) -> None:
    """Write ``report`` as JSON to ``out`` (its folder made if needed), with ``step_kernels`` (what the fused
    recurrences' steps ran on, None where none ran); nothing when ``out`` is None."""
    if out is None:
        return
    report = {**report, "step_kernels": step_kernels_used()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


def add_run_options(parser: argparse.ArgumentParser, threads: int | None = 1) -> None:
    """``--threads`` (default ``threads``; 0 or None: torch's choice), ``--seed``, ``--keep-freed-memory`` /
    ``--no-keep-freed-memory`` (on by default, as a CPU training has it) and ``--out``."""
    parser.add_argument("--threads", type=int, default=threads,
                        help="torch CPU threads (default: %(default)s; 0 or none: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep-freed-memory", action=argparse.BooleanOptionalAction, default=True,
                        help="glibc keeps freed memory for reuse, as trainer.keep_freed_memory=auto does on a CPU")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")


def apply_run_options(threads: int | None, keep: bool, device: str = "cpu") -> bool:
    """Set torch's CPU threads (0 or None: leave torch's choice) and, on a CPU, keep freed memory when ``keep``
    (as the trainer's ``auto``); whether freed memory is now kept."""
    if threads:
        torch.set_num_threads(threads)
    return keep_freed_memory() if keep and device == "cpu" else False
