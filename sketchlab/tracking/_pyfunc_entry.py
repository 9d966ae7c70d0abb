"""The code of a sketchlab MLflow model ("models from code"): MLflow copies this file into the model
and runs it on load, instead of unpickling a Python object. See :mod:`sketchlab.tracking.serving`."""

from mlflow.models import set_model

from sketchlab.tracking.serving import SketchSampler

set_model(SketchSampler())
