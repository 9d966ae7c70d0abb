#!/usr/bin/env python
"""The table of ready experiments (sketchlab/conf/experiment/*.yaml), from each file's first comment line.

Examples::

    python scripts/list_experiments.py                    # print the markdown table
    python scripts/list_experiments.py --check README.md  # exit 1 if the README's table is out of date
    python scripts/list_experiments.py --write README.md  # rewrite the README's table

The README's table sits between ``<!-- experiments:begin -->`` and ``<!-- experiments:end -->``.
Files whose name starts with ``_`` are shared parts, not experiments, and are left out.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

EXPERIMENTS = Path(__file__).resolve().parents[1] / "sketchlab" / "conf" / "experiment"
BEGIN, END = "<!-- experiments:begin -->", "<!-- experiments:end -->"


def describe(path: Path) -> str:
    """The first comment line of a config file, skipping Hydra's ``# @package`` directive."""
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("#") and not line.startswith("# @"):
            text = line.lstrip("#").strip()
            if text:
                return text
        elif line and not line.startswith("#"):
            break  # only the comment block at the top describes the file
    raise ValueError(f"{path} has no description: start it with a comment line saying what the experiment is")


def experiments(folder: Path = EXPERIMENTS) -> list[tuple[str, str]]:
    """``(name, description)`` of each experiment in ``folder``, sorted by name."""
    return [(p.stem, describe(p)) for p in sorted(folder.glob("*.yaml")) if not p.stem.startswith("_")]


def table(rows: Sequence[tuple[str, str]]) -> str:
    """A markdown table of experiments (``|`` in descriptions escaped)."""
    lines = ["| experiment | what it trains |", "|---|---|"]
    lines += [f"| `{name}` | {text.replace('|', chr(92) + '|')} |" for name, text in rows]
    return "\n".join(lines)


def with_table(text: str, new_table: str) -> str:
    """``text`` with the part between the markers replaced by ``new_table``."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"markers {BEGIN} ... {END} not found (in this order)")
    return text[:start + len(BEGIN)] + "\n" + new_table + "\n" + text[end:]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--check", metavar="FILE", type=Path, help="exit 1 if FILE's table is out of date")
    action.add_argument("--write", metavar="FILE", type=Path, help="rewrite FILE's table")
    parser.add_argument("--experiments", type=Path, default=EXPERIMENTS, help="the experiment config folder")
    args = parser.parse_args(argv)
    try:
        new_table = table(experiments(args.experiments))
        target = args.check or args.write
        if target is None:
            print(new_table)
            return 0
        old = target.read_text()
        new = with_table(old, new_table)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.write:
        if new != old:
            target.write_text(new)
        return 0
    if new != old:
        print(f"{target}: the experiment table is out of date; run python scripts/list_experiments.py "
              f"--write {target}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
