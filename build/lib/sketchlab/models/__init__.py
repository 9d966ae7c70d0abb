"""Sketch models (plain torch modules) behind the :class:`~sketchlab.models.base.SketchModel` interface."""
