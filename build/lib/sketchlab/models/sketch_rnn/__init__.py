"""Sketch-RNN (Ha & Eck 2017), faithful to magenta's TensorFlow implementation."""

from sketchlab.models.sketch_rnn.model import SketchRNN

__all__ = ["SketchRNN"]
