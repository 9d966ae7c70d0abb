"""Experiment tracking (MLflow) for training runs and sweeps."""

from sketchlab.tracking.loggers import MLflowLogger, NullLogger, flatten, resolve_tracking_uri

__all__ = ["MLflowLogger", "NullLogger", "flatten", "resolve_tracking_uri"]
