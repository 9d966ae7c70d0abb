"""``sketchlab-sample``: samples, reconstructions, interpolations (and dense renders) from a trained model.

``checkpoint=`` also takes a sketch-rnn-js ``.json`` model (magenta's pretrained class models, or one
written by ``sketchlab-export``); such a file carries no dataset, so only samples are drawn.
"""

from __future__ import annotations

import inspect
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig

from sketchlab.cli.errors import entry_point, hydra_task
from sketchlab.config import config_dir
from sketchlab.data.sources import SPLITS
from sketchlab.factory import load_trained
from sketchlab.registry import guard_hydra
from sketchlab.validation import (ConfigValueError, check_bool, check_choice, check_device, check_float, check_int,
                                  check_subset)

log = logging.getLogger("sketchlab.sample")

WHICH = ("last", "best")  # the checkpoints a training run writes
FORMATS = ("png", "svg")  # what sketchlab.render.save_grid writes


def checkpoint_from_mlflow(run_id: str, which: str, tracking_uri: str | None, outputs_dir: str,
                           dest: Path) -> Path:
    """Download ``checkpoints/<which>.pt`` of an MLflow run into ``dest``."""
    from sketchlab.tracking.loggers import mlflow_client

    client = mlflow_client(tracking_uri, outputs_dir)
    try:
        client.get_run(run_id)
    except Exception as exc:
        raise ValueError(f"no MLflow run '{run_id}' in {client.tracking_uri}") from exc
    try:
        return Path(client.download_artifacts(run_id, f"checkpoints/{which}.pt", str(dest)))
    except Exception as exc:
        raise FileNotFoundError(f"MLflow run {run_id} has no artifact checkpoints/{which}.pt{_no_best_hint(which)}"
                                ) from exc


def _no_best_hint(which: str) -> str:
    return ("; best.pt is written only by runs that validate (trainer.val_every > 0) at a checkpoint step, "
            "use which=last for the last checkpoint" if which == "best" else "")


def checkpoint_file(checkpoint: str | Path, which: str) -> Path:
    """The file ``checkpoint=`` names: a ``.pt`` file as given, or ``<which>.pt`` of a training run directory.

    ``which`` chooses only within a run directory. A file is used as given, so ``which=best`` with a
    file other than ``best.pt`` is an error rather than silently sampling from another checkpoint.
    """
    path = Path(checkpoint).expanduser()
    if path.is_file():
        if which != "last" and path.name != f"{which}.pt":
            raise ConfigValueError(f"which={which} picks {which}.pt in a run directory, but checkpoint={checkpoint} "
                                   f"is a file: pass the run directory, or the {which}.pt file without which=")
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint at {checkpoint}: checkpoint= must be a .pt file or a training run "
                                "directory")
    candidates = [path / "checkpoints" / f"{which}.pt", path / f"{which}.pt"]  # a run dir, or its checkpoints/
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no {which}.pt in {checkpoint} (looked for {', '.join(str(c) for c in candidates)})"
                            + _no_best_hint(which))


def check_sample_config(cfg: DictConfig) -> None:
    """Reject bad values of conf/sample.yaml before anything loads, naming the key."""
    if not cfg.checkpoint and not cfg.mlflow_run:
        raise ConfigValueError("say what to sample from: checkpoint=<file or run dir> or mlflow_run=<run id>")
    if cfg.checkpoint and cfg.mlflow_run:
        raise ConfigValueError(f"give checkpoint= or mlflow_run=, not both (got checkpoint={cfg.checkpoint}, "
                               f"mlflow_run={cfg.mlflow_run})")
    check_choice(cfg.which, "which", WHICH)
    check_choice(cfg.split, "split", SPLITS)
    check_int(cfg.n, "n", min=1)
    check_float(cfg.temperature, "temperature", above=0)
    check_int(cfg.interpolations, "interpolations", min=0)
    check_int(cfg.interp_steps, "interp_steps", min=2)
    check_choice(cfg.interp_method, "interp_method", ("slerp", "lerp"))
    check_int(cfg.dense_factor, "dense_factor", min=1)
    check_subset(cfg.formats, "formats", FORMATS)
    check_int(cfg.cell_size, "cell_size", min=1)
    check_bool(cfg.metrics, "metrics")
    check_int(cfg.metric_batches, "metric_batches", min=1, optional=True)
    check_int(cfg.distance_sketches, "distance_sketches", min=0)
    check_bool(cfg.log_to_mlflow, "log_to_mlflow")
    check_float(cfg.sigma, "sigma", min=0)
    check_float(cfg.omega, "omega", above=0, optional=True)
    check_int(cfg.seed, "seed")
    check_device(cfg.device, "device")


def run_sampling(cfg: DictConfig) -> dict[str, Any]:
    """Write the grids and metrics of ``cfg`` into ``cfg.out_dir``; returns the metrics and file list."""
    from sketchlab import sampling
    from sketchlab.engine.runtime import pick_device, seed_everything
    from sketchlab.render import interpolation_rows, pair_rows, save_grid

    check_sample_config(cfg)
    ckpt = checkpoint_file(cfg.checkpoint, cfg.which) if cfg.checkpoint else None
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    seed_everything(int(cfg.seed))
    with tempfile.TemporaryDirectory() as tmp:
        if ckpt is None:
            ckpt = checkpoint_from_mlflow(cfg.mlflow_run, cfg.which, cfg.tracking_uri, cfg.paths.output_dir, Path(tmp))
        model, data, info = load_trained(ckpt, device, cfg.data_dir)

    files: list[Path] = []

    def save(name: str, cells: list, cols: int) -> None:
        for fmt in cfg.formats:
            files.append(save_grid(cells, out_dir / f"{name}.{fmt}", cols=cols, cell_size=int(cfg.cell_size)))

    n, temp = int(cfg.n), float(cfg.temperature)
    cols = int(np.ceil(np.sqrt(n)))
    look: dict[str, Any] = {}
    if cfg.omega is not None:  # SketchODE's abstraction knob: decode with another frequency than trained
        if "omega" not in inspect.signature(model.decode).parameters:
            raise ConfigValueError(f"omega= is SketchODE's decoding frequency; {type(model).__name__} has none")
        look["omega"] = float(cfg.omega)
    save("samples", sampling.sample(model, n, temp, data=data, split=cfg.split, sigma=float(cfg.sigma), **look), cols)
    if data is None:  # a sketch-rnn-js model comes without a dataset to reconstruct or score
        log.info("%s is a sketch-rnn-js model without data: samples only (no reconstructions, "
                 "interpolations or metrics)", ckpt)
    if model.conditional and data is not None:
        originals = sampling.spread(data.sketches(cfg.split), n)
        recons = sampling.reconstruct(model, data, originals, temp, **look)
        save("reconstructions", *pair_rows(originals, recons, pairs_per_row=2))
        if int(cfg.interpolations) > 0:
            rng = np.random.default_rng(int(cfg.seed))
            pool = data.sketches(cfg.split)
            pairs = [tuple(pool[i] for i in rng.choice(len(pool), 2, replace=False))
                     for _ in range(int(cfg.interpolations))]
            rows = sampling.interpolate(model, data, pairs, int(cfg.interp_steps), temp, cfg.interp_method, **look)
            save("interpolations", *interpolation_rows([[a, *row, b] for (a, b), row in zip(pairs, rows)]))
        kw = model.dense_decode_kwargs(int(cfg.dense_factor)) if int(cfg.dense_factor) > 1 else None
        if kw is not None:
            save("dense_reconstructions",
                 *pair_rows(recons, sampling.reconstruct(model, data, originals, temp, **{**look, **kw}),
                            pairs_per_row=2))

    metrics: dict[str, float] = {}
    if cfg.metrics and data is not None:
        metrics = sampling.split_metrics(model, data, cfg.split, cfg.metric_batches,
                                         n_distance=int(cfg.distance_sketches))
    # a checkpoint fetched from MLflow lived in a temporary folder: record where it really comes from
    source = f"mlflow:{cfg.mlflow_run}/checkpoints/{cfg.which}.pt" if cfg.mlflow_run else str(ckpt)
    summary = {"checkpoint": source, "step": info["step"], "split": cfg.split, "metrics": metrics,
               "files": [str(f) for f in files]}
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    files.append(out_dir / "metrics.json")
    if cfg.mlflow_run and cfg.log_to_mlflow:
        from sketchlab.tracking.loggers import mlflow_client

        client = mlflow_client(cfg.tracking_uri, cfg.paths.output_dir)
        client.log_artifacts(cfg.mlflow_run, str(out_dir), f"samples/{out_dir.name}")
    for key, value in metrics.items():
        log.info("%s/%s = %.4f", cfg.split, key, value)
    log.info("wrote %d files to %s", len(files), out_dir)
    return summary


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="sample")
@hydra_task
def _hydra_main(cfg: DictConfig) -> None:
    run_sampling(cfg)


@entry_point
def main() -> None:
    """Console entry point (``sketchlab-sample``): user errors end in one ``error:`` line, exit status 2."""
    guard_hydra()  # check hydra.callbacks/launcher/sweeper/logging before Hydra builds them
    _hydra_main()


if __name__ == "__main__":
    sys.exit(main())
