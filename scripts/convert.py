#!/usr/bin/env python
"""Convert SVG / QuickDraw ndjson / stroke-list JSON drawings to a Sketch-RNN npz (same as sketchlab-convert)."""

import sys

from sketchlab.cli.convert import main

if __name__ == "__main__":
    sys.exit(main())
