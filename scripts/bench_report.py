"""What the ``scripts/bench_*.py`` share: the JSON report they write with ``--out`` (settings and results),
and the training process's memory setting (``--keep-freed-memory``), so they time what a training runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sketchlab.engine.runtime import keep_freed_memory


def args_config(args: argparse.Namespace) -> dict[str, Any]:
    """The command-line settings as JSON values (paths as strings)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


def write_report(out: Path | None, report: dict[str, Any]) -> None:
    """Write ``report`` as JSON to ``out`` (its folder made if needed); nothing when ``out`` is None."""
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


def add_memory_option(parser: argparse.ArgumentParser) -> None:
    """``--keep-freed-memory`` / ``--no-keep-freed-memory`` (on by default, as a CPU training has it)."""
    parser.add_argument("--keep-freed-memory", action=argparse.BooleanOptionalAction, default=True,
                        help="glibc keeps freed memory for reuse, as trainer.keep_freed_memory=auto does on a CPU")


def apply_memory_option(keep: bool, device: str = "cpu") -> bool:
    """Apply ``--keep-freed-memory``'s value to this process when it trains on a CPU (as the trainer's
    ``auto``); whether freed memory is now kept."""
    return keep_freed_memory() if keep and device == "cpu" else False
