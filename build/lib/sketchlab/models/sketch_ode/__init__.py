"""SketchODE (Das et al., ICLR 2022): sketches as continuous-time curves, Neural CDE encoder, Neural ODE decoder."""

from sketchlab.models.sketch_ode.model import SketchODE

__all__ = ["SketchODE"]
