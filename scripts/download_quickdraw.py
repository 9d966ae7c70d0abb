#!/usr/bin/env python
"""Download Quick, Draw! class files into the sketchlab cache and print where they are.

Examples::

    python scripts/download_quickdraw.py cat "The Eiffel Tower"               # per-class Sketch-RNN npz
    python scripts/download_quickdraw.py cat --format raw --cache-dir data/   # raw ndjson
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sketchlab.data.download import QUICKDRAW_FORMATS, DownloadError, fetch_quickdraw


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", help="QuickDraw class names (quote names with spaces)")
    parser.add_argument("--format", choices=list(QUICKDRAW_FORMATS), default="sketchrnn", dest="fmt",
                        help="sketchrnn: per-class npz; simplified / raw: full ndjson")
    parser.add_argument("--cache-dir", default=None,
                        help="where to keep the files (default: $SKETCHLAB_CACHE or ~/.cache/sketchlab)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in args.names:
        try:
            print(fetch_quickdraw(name, args.fmt, cache_dir=args.cache_dir))
        except (ValueError, DownloadError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
