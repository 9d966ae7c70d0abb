"""Shared fixtures: the real data in ../shared/data (or a self-made stand-in) and a device check."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    env = os.environ.get("SKETCHLAB_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real datasets (``../shared/data`` beside the checkout, or ``$SKETCHLAB_DATA``)."""
    root = _shared_data()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root}")
    return root


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A data root for trainings: the real one when present, else a small self-made tree of the same layout.

    For tests of the engine and the command-line tools, which need data in the right formats but not the
    real drawings (``helpers.make_data_root`` lists what the stand-in holds). Give it to training
    subprocesses as ``$SKETCHLAB_DATA`` (``helpers.train(..., data=data_root)``).
    """
    from helpers import make_data_root

    root = _shared_data()
    return root if root.is_dir() else make_data_root(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """One intra-op thread in the test process, as the trainer's ``threads: auto`` gives a CPU training: the
    models are thousands of tiny ops (ODE stages, RNN steps), where OpenMP threads waiting on each other slow
    every op by orders of magnitude once other processes share the cores (an in-process SketchODE sampling
    test took 138 s so on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
