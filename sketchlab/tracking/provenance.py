"""What produced a run: code version, package versions and the machine, as MLflow tags."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from sketchlab.machine import cpuinfo_field

#: Packages whose versions change results; recorded on every run.
PACKAGES = ("sketchlab", "torch", "numpy", "hydra-core", "omegaconf", "mlflow", "torchdiffeq", "torchcde")


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def code_version(package_dir: Path | None = None) -> tuple[dict[str, str], str | None]:
    """``(tags, diff)``: the git commit of sketchlab's checkout, a dirty flag and the uncommitted diff.

    An installed (non-checkout) sketchlab has no git history; then only its version is known.
    """
    package_dir = package_dir or Path(__file__).resolve().parents[1]
    top = _git(["rev-parse", "--show-toplevel"], package_dir)
    if top is None:
        return {"sketchlab.git": "none (not a git checkout)"}, None
    top_dir = Path(top.strip())
    commit = (_git(["rev-parse", "HEAD"], top_dir) or "").strip()
    status = _git(["status", "--porcelain"], top_dir) or ""
    diff = None
    if status.strip():
        diff = _git(["diff", "HEAD"], top_dir) or ""
        untracked = [line[3:] for line in status.splitlines() if line.startswith("??")]
        if untracked:  # new files are part of the code that ran, but `git diff` leaves them out
            diff += "\n# untracked files (not in the diff above):\n" + "".join(f"#   {u}\n" for u in untracked)
    tags = {"mlflow.source.git.commit": commit, "sketchlab.git.dirty": str(bool(status.strip())).lower()}
    branch = (_git(["rev-parse", "--abbrev-ref", "HEAD"], top_dir) or "").strip()
    if branch:
        tags["mlflow.source.git.branch"] = branch
    return tags, diff


def package_versions() -> dict[str, str]:
    """``sketchlab.version.<package>`` tags for :data:`PACKAGES` (``missing`` when not installed)."""
    out = {}
    for name in PACKAGES:
        try:
            out[f"sketchlab.version.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[f"sketchlab.version.{name}"] = "missing"
    out["sketchlab.version.python"] = platform.python_version()
    return out


def cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo on Linux), else what ``platform`` knows."""
    return cpuinfo_field("model name") or platform.processor() or platform.machine()


def device_tags(device: torch.device) -> dict[str, str]:
    """The device a run trains on, with the CPU model or the GPU name."""
    tags = {"sketchlab.device": str(device), "sketchlab.cpu": cpu_name(),
            "sketchlab.torch_threads": str(torch.get_num_threads())}
    if device.type == "cuda":
        tags["sketchlab.gpu"] = torch.cuda.get_device_name(device)
    return tags


def provenance(device: torch.device) -> tuple[dict[str, str], str | None]:
    """Every provenance tag of a run on ``device``, and the uncommitted diff (None when clean)."""
    code, diff = code_version()
    return {**code, **package_versions(), **device_tags(device)}, diff
