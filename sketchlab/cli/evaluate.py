"""``sketchlab-evaluate``: score a trained model on a split with its own losses and the shared Chamfer distance."""

from __future__ import annotations

import inspect
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from sketchlab.cli.errors import entry_point, hydra_task
from sketchlab.cli.sample import WHICH, checkpoint_file, checkpoint_from_mlflow
from sketchlab.config import config_dir
from sketchlab.data.sources import SPLITS
from sketchlab.factory import load_trained
from sketchlab.registry import guard_hydra
from sketchlab.validation import ConfigValueError, check_bool, check_choice, check_device, check_float, check_int

log = logging.getLogger("sketchlab.evaluate")


def check_evaluate_config(cfg: DictConfig) -> None:
    """Reject bad values of conf/evaluate.yaml before anything loads, naming the key."""
    if bool(cfg.checkpoint) == bool(cfg.mlflow_run):
        raise ConfigValueError("say what to evaluate, once: checkpoint=<file or run dir> or mlflow_run=<run id>")
    check_choice(cfg.which, "which", WHICH)
    check_choice(cfg.split, "split", SPLITS)
    check_int(cfg.max_sketches, "max_sketches", min=1, optional=True)
    check_int(cfg.batch_size, "batch_size", min=1)
    check_float(cfg.temperature, "temperature", above=0, optional=True)
    check_int(cfg.chamfer_points, "chamfer_points", min=2)
    check_bool(cfg.log_to_mlflow, "log_to_mlflow")
    check_int(cfg.seed, "seed")
    check_device(cfg.device, "device")


def _decoding(model: Any, temperature: float | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(decode kwargs, what to record)``: greedy where the model samples, else the given temperature."""
    takes_greedy = "greedy" in inspect.signature(model.decode).parameters
    if temperature is None:
        if takes_greedy:
            return {"temperature": 1.0, "greedy": True}, {"mode": "greedy"}
        return {"temperature": 1.0}, {"mode": "deterministic"}  # e.g. SketchODE: no sampling in its decoder
    return {"temperature": float(temperature)}, {"mode": "temperature" if takes_greedy else "deterministic",
                                                 "temperature": float(temperature)}


@torch.no_grad()
def evaluate(model: Any, data: Any, split: str, max_sketches: int | None, batch_size: int, decode_kw: dict[str, Any],
             chamfer_points: int, step: int = 0) -> tuple[dict[str, float], int]:
    """Each loss term's mean over the split (eval mode) and the Chamfer distance of reconstructions."""
    from sketchlab import sampling
    from sketchlab.engine.evaluation import loss_sums
    from sketchlab.metrics import chamfer_distance

    model.eval()
    device = next(model.parameters()).device
    sketches = data.sketches(split)[:max_sketches]
    chunks = [sketches[i:i + batch_size] for i in range(0, len(sketches), batch_size)]
    sums, count = loss_sums(model, (data.collate(c) for c in chunks), device, step)
    metrics = {k: v / max(count, 1) for k, v in sums.items()}
    if model.conditional:
        distances = [chamfer_distance(o, r, chamfer_points) for c in chunks
                     for o, r in zip(c, sampling.reconstruct(model, data, c, **decode_kw))]
        metrics["chamfer_mean"] = float(np.mean(distances))
        metrics["chamfer_median"] = float(np.median(distances))
    return metrics, len(sketches)


def run_evaluation(cfg: DictConfig) -> dict[str, Any]:
    """Score ``cfg``'s checkpoint, write ``metrics.json`` to ``cfg.out_dir`` and log into its MLflow run."""
    from sketchlab.engine.runtime import pick_device, seed_everything
    from sketchlab.tracking.loggers import mlflow_client

    check_evaluate_config(cfg)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    seed_everything(int(cfg.seed))
    with tempfile.TemporaryDirectory() as tmp:
        if cfg.checkpoint:
            ckpt = checkpoint_file(cfg.checkpoint, cfg.which)
            source = str(ckpt)
        else:
            ckpt = checkpoint_from_mlflow(cfg.mlflow_run, cfg.which, cfg.tracking_uri, cfg.paths.output_dir,
                                          Path(tmp))
            source = f"mlflow:{cfg.mlflow_run}/checkpoints/{cfg.which}.pt"
        model, data, info = load_trained(ckpt, device, cfg.data_dir)
    decode_kw, decoding = _decoding(model, cfg.temperature)
    scores, n = evaluate(model, data, cfg.split, cfg.max_sketches, int(cfg.batch_size), decode_kw,
                         int(cfg.chamfer_points), info["step"])
    metrics = {f"{cfg.split}/{k}": v for k, v in scores.items()}
    run_id = cfg.mlflow_run or info.get("mlflow_run_id")
    summary = {"checkpoint": source, "step": info["step"], "split": cfg.split, "n_sketches": n,
               "decoding": decoding, "chamfer": {"points": int(cfg.chamfer_points), "unit": "bounding-box diagonal",
                                                 "along": "drawn strokes"},
               "model": str(info["config"].model.name), "data": str(info["config"].data.name),
               "mlflow_run": run_id, "metrics": metrics}
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    if run_id and cfg.log_to_mlflow:
        from mlflow.entities import Metric

        client = mlflow_client(cfg.tracking_uri, cfg.paths.output_dir)
        try:
            client.get_run(run_id)
        except Exception:  # a checkpoint from another machine's store: the JSON is the record
            log.warning("MLflow run %s is not in %s; metrics are in %s only", run_id, client.tracking_uri, out_dir)
        else:
            now = int(time.time() * 1000)
            client.log_batch(run_id, metrics=[Metric(k, float(v), now, info["step"]) for k, v in metrics.items()
                                              if np.isfinite(v)])
            client.log_artifact(run_id, str(out_dir / "metrics.json"), f"evaluations/{out_dir.name}")
    for key, value in metrics.items():
        log.info("%s = %.4f", key, value)
    log.info("%d sketches of %s, %s decoding; wrote %s", n, cfg.split, decoding["mode"], out_dir / "metrics.json")
    return summary


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="evaluate")
@hydra_task
def _hydra_main(cfg: DictConfig) -> None:
    run_evaluation(cfg)


@entry_point
def main() -> None:
    """Console entry point (``sketchlab-evaluate``): user errors end in one ``error:`` line, exit status 2."""
    guard_hydra()  # check hydra.callbacks/launcher/sweeper/logging before Hydra builds them
    _hydra_main()


if __name__ == "__main__":
    sys.exit(main())
