"""The JSON report every ``scripts/bench_*.py`` writes with ``--out``: its settings and its results."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


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
