"""sketchlab: config-driven experiments with generative models of vector sketches and handwriting."""

__version__ = "0.1.0"
