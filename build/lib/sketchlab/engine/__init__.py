"""The training engine: one loop for every model, on CPU or GPU."""

from sketchlab.engine.trainer import Trainer, TrainingDiverged

__all__ = ["Trainer", "TrainingDiverged"]
