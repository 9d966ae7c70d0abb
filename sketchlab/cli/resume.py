"""``resume=``: find the checkpoint, take the config stored in it, and reconcile it with new overrides.

``resume=<model>.json`` (a sketch-rnn-js model) is not a resume: such a file holds weights but no
optimizer state, step or training config, so it starts a fresh run (step 0, new optimizer, the command
line's config) whose Sketch-RNN takes the file's sizes and is initialised from its weights, i.e.
fine-tuning (:func:`plan_js_init`).

A resumed run trains with the checkpoint's config. Overrides given again on the command line are
compared with it: keys that only change how the run is watched or how long it goes (``trainer.max_steps``,
logging, paths, ...) are applied; any other difference is an error listing the keys, unless the user
names them in ``resume_overrides=[optim.lr, ...]``. Then the new values are applied and recorded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sketchlab.engine.checkpoint import load_checkpoint, resolve_checkpoint
from sketchlab.validation import ConfigValueError

log = logging.getLogger("sketchlab.resume")

#: Keys that don't shape the trained model: they may differ from the checkpoint's config freely.
FREE_KEYS = ("trainer.max_steps", "trainer.val_every", "trainer.val_batches", "trainer.log_every",
             "trainer.ckpt_every", "trainer.progress", "trainer.threads", "trainer.keep_freed_memory",
             "trainer.device", "trainer.on_nan",
             "trainer.max_rewinds", "trainer.rewind_lr_factor", "data.eval_batch_size", "logger", "visualize",
             "run_name", "tags", "paths", "launcher", "resume", "resume_overrides")


class ResumeConfigError(ValueError):
    """Overrides given on resume differ from the checkpoint's config in keys that shape training."""


@dataclass
class ResumePlan:
    """What a resumed training needs: the loaded state, the config to train with and where to write."""

    state: dict[str, Any]
    checkpoint: Path
    cfg: DictConfig
    ckpt_dir: Path
    run_id: str | None
    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    @property
    def keep_hparams(self) -> set[str]:
        """Optimizer param-group keys whose new values must win over the checkpoint's."""
        keys = {k.split(".", 1)[1] for k in self.changed if k.startswith("optim.")}
        if "_target_" in keys:  # another optimizer class: all of its settings are new
            keys |= {k for k in _flat(OmegaConf.to_container(self.cfg.optim, resolve=True)) if not k.startswith("_")}
        return {k for k in keys if not k.startswith("_")}

    @property
    def keep_schedule(self) -> bool:
        return any(k.startswith("sched.") for k in self.changed)


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``, keeping empty mappings as leaves so they survive a round trip."""
    if not isinstance(tree, dict) or (not tree and prefix):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _matches(key: str, prefixes: Any) -> bool:
    return any(key == p or key.startswith(f"{p}.") for p in prefixes)


def reconcile(stored: dict[str, Any], base: dict[str, Any], composed: dict[str, Any],
              allowed: list[str]) -> tuple[dict[str, Any], dict[str, tuple[Any, Any]]]:
    """Merge command-line overrides into a checkpoint's config.

    ``base`` is the resolved config without any override and ``composed`` with them; the keys where
    they differ are the ones the user set. Returns the config to train with and the shaping keys that
    changed (``resume_overrides``), as ``{key: (old, new)}``.
    """
    stored_flat, base_flat, new_flat = _flat(stored), _flat(base), _flat(composed)
    touched = {k for k in set(base_flat) | set(new_flat) if base_flat.get(k, _MISSING) != new_flat.get(k, _MISSING)}
    differ = sorted(k for k in touched if stored_flat.get(k, _MISSING) != new_flat.get(k, _MISSING))
    refused = [k for k in differ if not _matches(k, FREE_KEYS) and not _matches(k, allowed)]
    if refused:
        lines = "\n  ".join(f"{k}: {_show(stored_flat.get(k, _MISSING))} in the checkpoint, "
                            f"{_show(new_flat.get(k, _MISSING))} now" for k in refused)
        raise ResumeConfigError(
            "resume= trains with the config stored in the checkpoint; these overrides change it:\n  " + lines
            + f"\nDrop them, or apply them on purpose with resume_overrides=[{','.join(refused)}]")
    merged = dict(stored_flat)
    for k in differ:
        if k in new_flat:
            merged[k] = new_flat[k]
        else:
            merged.pop(k, None)
    changed = {k: (stored_flat.get(k), new_flat.get(k)) for k in differ if not _matches(k, FREE_KEYS)}
    return _unflatten(merged), changed


class _Missing:
    def __repr__(self) -> str:
        return "<absent>"


_MISSING = _Missing()


def _show(value: Any) -> str:
    return repr(value) if not isinstance(value, _Missing) else "absent"


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def find_checkpoint(resume: str, out_dir: Path, tracking_uri: str | None, outputs_dir: str
                    ) -> tuple[Path, Path] | None:
    """``(checkpoint file, folder to write checkpoints to)`` for a ``resume=`` value.

    ``<run dir or .pt>``; ``mlflow:<run id>`` (the run's local folder if it is still there, else its
    logged checkpoint); ``auto`` (this job's own folder if it holds a checkpoint, else None: a fresh start,
    which is what a requeued SLURM job wants). Continuing from a run's ``last.pt`` writes on in the same
    folder; starting from any other file (``best.pt``) branches into this job's folder.
    """
    if resume == "auto":
        own = out_dir / "checkpoints" / "last.pt"
        return (own, own.parent) if own.is_file() else None
    if resume.startswith("mlflow:"):
        from sketchlab.tracking.loggers import mlflow_client

        run_id = resume.split(":", 1)[1]
        client = mlflow_client(tracking_uri, outputs_dir)
        try:
            run = client.get_run(run_id)
        except Exception as exc:
            raise ValueError(f"resume={resume}: no MLflow run '{run_id}' in {client.tracking_uri} "
                             "(set logger.tracking_uri or MLFLOW_TRACKING_URI to the store that has it)") from exc
        folder = run.data.tags.get("sketchlab.checkpoint_dir")
        if folder and (Path(folder) / "last.pt").is_file():
            return Path(folder) / "last.pt", Path(folder)
        dest = out_dir / "checkpoints"
        dest.mkdir(parents=True, exist_ok=True)
        try:
            path = Path(client.download_artifacts(run_id, "checkpoints/last.pt", str(out_dir)))
        except Exception as exc:
            raise FileNotFoundError(f"resume={resume}: the run's folder {folder} is gone and the run has no "
                                    "logged checkpoints/last.pt artifact") from exc
        return path, dest
    path = resolve_checkpoint(resume)
    return path, (path.parent if path.name == "last.pt" else out_dir / "checkpoints")


def plan_resume(cfg: DictConfig, base: DictConfig, out_dir: Path) -> ResumePlan | None:
    """Everything a ``resume=`` run needs, or None when ``resume=auto`` finds nothing to resume."""
    logger_cfg = cfg.get("logger") or {}
    found = find_checkpoint(str(cfg.resume), out_dir, logger_cfg.get("tracking_uri"), str(cfg.paths.output_dir))
    if found is None:
        return None
    path, ckpt_dir = found
    state = load_checkpoint(path)
    if "config" not in state:
        raise ValueError(f"{path} holds no training config; it was not written by sketchlab-train")
    allowed = [str(k) for k in (cfg.get("resume_overrides") or [])]
    merged, changed = reconcile(state["config"], OmegaConf.to_container(base, resolve=True),
                                OmegaConf.to_container(cfg, resolve=True), allowed)
    for key, (old, new) in changed.items():
        log.warning("resume_overrides: %s = %r (was %r in the checkpoint)", key, new, old)
    merged_cfg = OmegaConf.create(merged)
    merged_cfg.resume = str(cfg.resume)
    # the same run goes on only where it left off; a branch from another checkpoint is a new run
    run_id = state.get("mlflow_run_id") if ckpt_dir == path.parent and path.name == "last.pt" else None
    return ResumePlan(state, path, merged_cfg, ckpt_dir, run_id, changed)


# -- resume=<model>.json: fine-tuning from sketch-rnn-js weights ------------------------------------

@dataclass
class JSInit:
    """A fresh run initialised from a sketch-rnn-js file: its weights and the model keys it changed."""

    path: Path
    state: dict[str, Any]
    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)


def plan_js_init(cfg: DictConfig) -> JSInit:
    """Set ``cfg.model.net``'s sizes to those of the sketch-rnn-js file ``cfg.resume`` (in place) and
    return its weights. The model must be Sketch-RNN; ``max_seq_len`` stays the data's."""
    from sketchlab.models.sketch_rnn.js_format import SKETCH_RNN_TARGET, read_js_model

    path = Path(str(cfg.resume)).expanduser()
    net = cfg.model.net
    if net.get("_target_") != SKETCH_RNN_TARGET:
        raise ConfigValueError(f"resume={cfg.resume} initialises a Sketch-RNN from sketch-rnn-js weights, but "
                               f"model.net is {net.get('_target_')}: choose model=sketch_rnn")
    js = read_js_model(path)
    changed: dict[str, tuple[Any, Any]] = {}
    for key, value in js.hparams.items():
        if key == "max_seq_len":  # no weight depends on it: the data's longest sketch stays the limit
            continue
        old = net.get(key)
        if old != value:
            changed[f"model.net.{key}"] = (old, value)
            net[key] = value
    for key, (old, new) in changed.items():
        log.warning("resume=%s: %s = %r from the sketch-rnn-js model (was %r)", path.name, key, new, old)
    log.info("resume=%s: a new run initialised from the sketch-rnn-js weights (fine-tuning: step 0, a fresh "
             "optimizer; a .json model holds no optimizer state)", path)
    return JSInit(path, js.state, changed)
