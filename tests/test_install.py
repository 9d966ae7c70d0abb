"""A non-editable install (a wheel) finds its configs and trains from any directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from helpers import REPO, SHORT, TINY_RNN


@pytest.mark.slow
def test_wheel_install_trains_from_another_directory(tmp_path, data_root):
    source = tmp_path / "source"  # setuptools writes build/ into the tree it builds: not into the checkout
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv", ".git", "outputs", "build", "*.egg-info",
                                                                "__pycache__", ".pytest_cache"))
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            str(source), "-w", str(wheels)], capture_output=True, text=True, timeout=600)
    if build.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {build.stderr[-500:]}")
    (wheel,) = wheels.glob("sketchlab-*.whl")
    # the C++ step kernels are compiled where the wheel is installed: their source travels in it
    assert "sketchlab/models/sketch_rnn/csrc/step_kernels.cpp" in zipfile.ZipFile(wheel).namelist()
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    work = tmp_path / "elsewhere"
    work.mkdir()
    # the installed copy, not the checkout: its dependencies come from this environment
    env = {**os.environ, "PYTHONPATH": str(site), "SKETCHLAB_DATA": str(data_root),
           "SKETCHLAB_OUTPUTS": str(work / "outputs")}
    env.pop("SKETCHLAB_CONF", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    where = subprocess.run([sys.executable, "-c", "import sketchlab; print(sketchlab.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True)
    assert where.stdout.strip().startswith(str(site))
    proc = subprocess.run([str(site / "bin" / "sketchlab-train"), "experiment=quickstart", "trainer.max_steps=2",
                           *TINY_RNN, *SHORT], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list((work / "outputs" / "runs").glob("*/*/checkpoints/last.pt"))
