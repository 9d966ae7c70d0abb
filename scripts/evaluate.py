#!/usr/bin/env python
"""Score a trained model: ``python scripts/evaluate.py checkpoint=<run dir> split=test`` (same as sketchlab-evaluate)."""

from sketchlab.cli.evaluate import main

if __name__ == "__main__":
    main()
