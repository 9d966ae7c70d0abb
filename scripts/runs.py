#!/usr/bin/env python
"""List and compare MLflow runs and sweeps: ``python scripts/runs.py --sweep latest`` (same as sketchlab-runs)."""

import sys

from sketchlab.cli.runs import main

if __name__ == "__main__":
    sys.exit(main())
