#!/usr/bin/env python
"""Draw with a trained model: ``python scripts/sample.py checkpoint=outputs/runs/...`` (same as sketchlab-sample)."""

from sketchlab.cli.sample import main

if __name__ == "__main__":
    main()
