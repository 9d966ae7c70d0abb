"""Command-line entry points (``sketchlab-train``, ``sketchlab-sample``, ``sketchlab-runs``)."""
