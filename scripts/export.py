#!/usr/bin/env python
"""Export a trained model: ``python scripts/export.py checkpoint=<run dir | .pt> format=sketch_rnn_js out=model.json``
(same as sketchlab-export; format=mlflow writes an MLflow pyfunc model folder)."""

from sketchlab.cli.export import main

if __name__ == "__main__":
    main()
