#!/usr/bin/env python
"""Train a model: ``python scripts/train.py experiment=sheep trainer.max_steps=1000`` (same as sketchlab-train)."""

from sketchlab.cli.train import main

if __name__ == "__main__":
    main()
