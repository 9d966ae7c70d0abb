"""Trained sketch models as an MLflow ``pyfunc`` model, so ``mlflow models serve`` draws sketches.

The saved model holds data, not pickled objects: each model's weights (a ``state_dict`` written by
``torch.save`` and read back with ``weights_only=True``) and one JSON config listing, per model, its
class name, its ``model.net`` config (built again through :func:`sketchlab.registry.build`, whose
allow-list applies) and its data scale. The Python side is MLflow's "models from code": MLflow copies
`sketchlab/tracking/_pyfunc_entry.py` (two lines that name :class:`SketchSampler`) instead of
cloudpickling a ``PythonModel`` instance, so loading the model runs sketchlab's installed code, never
code stored in the file. Serving therefore needs sketchlab installed where the model is served
(``mlflow models serve -m <model> --env-manager local`` in sketchlab's environment).

``predict`` takes a DataFrame (or a list of dicts; a dict without lists), one request per row, with the optional
columns ``n`` (sketches, default 1), ``temperature`` (default 0.4), ``seed`` (fixes the draw),
``class`` (which of the bundled models; default the first) and ``z`` (a latent code of the model's
z_size; default z ~ N(0, I) where the model has a prior). It returns one row per sketch:
``request`` (the input row), ``class`` and ``strokes``, a list of ``[dx, dy, pen_lift]`` in the units
of the training data (the model's normalised offsets times the data scale).
"""

from __future__ import annotations

import inspect
import json
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from torch import nn

#: The file MLflow copies as the model's code ("models from code").
ENTRY_FILE = Path(__file__).with_name("_pyfunc_entry.py")
CONFIG_ARTIFACT = "sketchlab_config"
BUNDLE_FORMAT = 1
DEFAULTS = {"n": 1, "temperature": 0.4}
MAX_SKETCHES = 1024  # per request row: a bound on the work one request can ask for


@dataclass
class ServedModel:
    """One model of a bundle: what clients call it, how to build it, its weights and data scale."""

    name: str
    net: dict[str, Any]     # the model.net config: _target_ and keyword arguments, fully resolved
    model: nn.Module
    scale: float = 1.0      # data units per model unit


def _signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, DataType, Schema

    # AnyType but for the class: MLflow refuses to cast an integer column to double (temperature=1), a
    # column with gaps (float64 with NaN) to long (n or seed missing in some rows) and a gap in an array
    # column (z given in some rows only); _draw checks the values itself
    inputs = Schema([ColSpec(AnyType(), "n", required=False),
                     ColSpec(AnyType(), "temperature", required=False),
                     ColSpec(AnyType(), "seed", required=False),
                     ColSpec(DataType.string, "class", required=False),
                     ColSpec(AnyType(), "z", required=False)])
    return ModelSignature(inputs=inputs)


def write_artifacts(models: Sequence[ServedModel], folder: str | Path) -> dict[str, str]:
    """Weights and config files of ``models`` in ``folder``; the ``artifacts`` mapping MLflow takes."""
    if not models:
        raise ValueError("an MLflow sketch model needs at least one model")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"the bundled models need distinct names (classes), got {names}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    artifacts: dict[str, str] = {}
    entries = []
    for i, served in enumerate(models):
        key = f"weights_{i}"
        path = folder / f"{key}.pt"
        torch.save({k: v.detach().cpu() for k, v in served.model.state_dict().items()}, path)
        artifacts[key] = str(path)
        net = dict(served.net)
        if "fast" in net:  # serving draws a few sketches at a time: the eager path, no compile warm-up
            net["fast"] = False
        entries.append({"name": served.name, "net": net, "scale": float(served.scale), "weights": key})
    config = folder / "sketchlab_config.json"
    config.write_text(json.dumps({"format": BUNDLE_FORMAT, "models": entries}, indent=2))
    artifacts[CONFIG_ARTIFACT] = str(config)
    return artifacts


def requirements() -> list[str]:
    """What serving needs installed, pinned to this environment (sketchlab itself included)."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for name in ("sketchlab", "torch", "numpy", "pandas", "mlflow", "hydra-core", "omegaconf"):
        try:
            reqs.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            reqs.append(name)
    return reqs


def save_pyfunc(models: Sequence[ServedModel], path: str | Path) -> Path:
    """Save ``models`` as one MLflow pyfunc model folder at ``path`` (which must not exist yet)."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists: MLflow writes a model into a new folder")
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = write_artifacts(models, tmp)
        with warnings.catch_warnings():
            # an input example would make MLflow load and run the model while saving it
            warnings.filterwarnings("ignore", message=".*input example was not provided")
            mlflow.pyfunc.save_model(str(path), python_model=str(ENTRY_FILE), artifacts=artifacts,
                                     signature=_signature(), pip_requirements=requirements())
    return path


# -- the model MLflow loads -------------------------------------------------------------------------

def _rows(model_input: Any) -> list[dict[str, Any]]:
    """Requests as plain dicts, from a DataFrame, a dict (one request) or a list of dicts."""
    if hasattr(model_input, "to_dict"):
        rows = model_input.to_dict(orient="records")
    elif isinstance(model_input, Mapping):
        rows = [dict(model_input)]
    elif isinstance(model_input, list) and all(isinstance(r, Mapping) for r in model_input):
        rows = [dict(r) for r in model_input]
    else:
        raise ValueError("predict takes a DataFrame, a dict or a list of dicts with the optional keys "
                         "n, temperature, seed, class, z")
    return [{k: v for k, v in row.items() if not _missing(v)} for row in rows]


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return False


def _integer(value: Any, key: str) -> int:
    number = float(value)
    if not number.is_integer():
        raise ValueError(f"{key} must be an integer, got {value!r}")
    return int(number)


class SketchSampler(mlflow.pyfunc.PythonModel):
    """Draws sketches with the bundled sketchlab models (see the module docstring)."""

    def load_context(self, context: Any) -> None:
        from sketchlab.registry import build

        config = json.loads(Path(context.artifacts[CONFIG_ARTIFACT]).read_text())
        if config.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"unknown sketchlab model bundle format {config.get('format')!r}")
        self.models: dict[str, tuple[nn.Module, float]] = {}
        for entry in config["models"]:
            model = build(entry["net"])
            state = torch.load(context.artifacts[entry["weights"]], map_location="cpu", weights_only=True)
            model.load_state_dict(state)
            self.models[entry["name"]] = (model.eval(), float(entry["scale"]))
        self.default = config["models"][0]["name"]

    def _draw(self, row: dict[str, Any]) -> tuple[str, list[np.ndarray]]:
        name = str(row.get("class", self.default))
        if name not in self.models:
            raise ValueError(f"unknown class '{name}': this model draws {', '.join(self.models)}")
        model, scale = self.models[name]
        n = _integer(row.get("n", DEFAULTS["n"]), "n")
        temperature = float(row.get("temperature", DEFAULTS["temperature"]))
        if not 1 <= n <= MAX_SKETCHES:
            raise ValueError(f"n must be between 1 and {MAX_SKETCHES}, got {n}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        generator = torch.Generator().manual_seed(_integer(row["seed"], "seed")) if "seed" in row else None
        z = None
        if "z" in row:
            try:
                z = torch.as_tensor(np.asarray(row["z"], dtype=np.float32)).reshape(1, -1)
            except (TypeError, ValueError):
                raise ValueError(f"z must be a list of numbers, got {row['z']!r}") from None
            if not model.conditional or z.shape[1] != model.z_size:
                raise ValueError(f"class '{name}' takes z of size {model.z_size}, got {z.shape[1]}"
                                 if model.conditional else f"class '{name}' is unconditional: it takes no z")
            z = z.expand(n, -1)
        elif model.conditional:
            if not model.has_prior:
                raise ValueError(f"class '{name}' has no prior to sample z from: pass z")
            z = torch.randn(n, model.z_size, generator=generator)
        # Sketch-RNN draws with the generator; decoders without randomness (SketchODE) take none
        extra = {"generator": generator} if "generator" in inspect.signature(model.decode).parameters else {}
        with torch.no_grad():
            sketches = model.decode(z, n=n, temperature=temperature, **extra)
        out = []
        for s in sketches:
            s = np.asarray(s, dtype=np.float64).copy()
            s[:, :2] *= scale
            out.append(s)
        return name, out

        # a DataFrame hint is one MLflow infers no schema from (the signature above is the schema)
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
                ) -> pd.DataFrame:
        records = []
        for i, row in enumerate(_rows(model_input)):
            name, sketches = self._draw(row)
            records += [{"request": i, "class": name, "strokes": s.tolist()} for s in sketches]
        return pd.DataFrame.from_records(records, columns=["request", "class", "strokes"])
