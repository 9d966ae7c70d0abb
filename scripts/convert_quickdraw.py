#!/usr/bin/env python
"""Convert Quick, Draw! ndjson files to a Sketch-RNN style stroke-3 npz, exactly as Google's ``sketchrnn`` files.

Deprecated for everything else in favour of ``sketchlab-convert`` (``scripts/convert.py``), which reads QuickDraw
ndjson as well as SVG and stroke-list JSON, reports and skips bad lines instead of stopping, and splits by a seeded
shuffle. This script stays for what only it does: Google's raw → simplified preprocessing, the ``md5(key_id)``
split, ``--recognized-only`` and ``--max-per-class``, which together reproduce the official files.

Examples::

    python scripts/convert_quickdraw.py cat.ndjson dog.ndjson --out cats_dogs.npz
    python scripts/convert_quickdraw.py raw_folder/ --format raw --recognized-only --max-per-class 5000 --out qd.npz
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sketchlab.data.quickdraw import FORMATS, convert


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help=".ndjson / .ndjson.gz files, or folders holding them")
    parser.add_argument("--out", required=True, help="output .npz path")
    parser.add_argument("--format", choices=FORMATS, default="auto", dest="fmt",
                        help="input flavour; auto tells raw [x, y, t] from simplified [x, y] strokes")
    parser.add_argument("--simplify", action=argparse.BooleanOptionalAction, default=None,
                        help="run Google's raw→simplified preprocessing (default: on raw drawings only)")
    parser.add_argument("--recognized-only", action="store_true", help="drop drawings the game did not recognize")
    parser.add_argument("--max-per-class", type=int, default=None, metavar="N",
                        help="keep at most the first N drawings of each class")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = convert(args.inputs, args.out, simplify=args.simplify, fmt=args.fmt,
                          recognized_only=args.recognized_only, max_per_class=args.max_per_class,
                          overwrite=args.overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
