"""The MLflow UI in a real (headless) browser: a sweep's children, a metric chart and an image artifact show.

Optional: needs Debian's `chromium` (skipped without it). `make ui-check` runs just this; screenshots go to
outputs/ui-check/.
"""

from __future__ import annotations

import html
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import REPO, SHORT, TINY_RNN, runs_of, train

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow, pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")]
SHOTS = REPO / "outputs" / "ui-check"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _browse(url: str, profile: Path, screenshot: Path | None = None) -> str:
    """The DOM of ``url`` after its scripts ran (and a screenshot), from headless Chromium."""
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--window-size=1400,1000", "--virtual-time-budget=20000"]
    if screenshot is not None:
        subprocess.run([*flags, f"--screenshot={screenshot}", url], capture_output=True, timeout=120)
    proc = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    return _text(proc.stdout)


def _text(dom: str) -> str:
    """The visible text of a DOM dump, whitespace collapsed, so assertions don't depend on markup."""
    dom = re.sub(r"<(style|script)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


@pytest.fixture
def ui(tmp_path, data_root):
    """A small sweep in a fresh store, served by `mlflow ui` on a loopback port."""
    train(tmp_path, "-m", *TINY_RNN, *SHORT, "logger.experiment_name=ui", "optim.lr=0.001,0.0005", data=data_root)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("mlflow ui did not start within 90 s")
    yield base, tmp_path
    server.terminate()
    server.wait(timeout=30)


def test_sweep_children_metric_chart_and_images_show_in_the_ui(ui):
    base, home = ui
    c, runs = runs_of(home, "ui")
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    exp = children[0].info.experiment_id
    SHOTS.mkdir(parents=True, exist_ok=True)
    profile = home / "chromium-profile"

    dom = _browse(f"{base}/#/experiments/{exp}/runs", profile, SHOTS / "experiment.png")
    assert "Training runs" in dom and "sweep ui " in dom and "3 matching runs" in dom, dom[-2000:]

    for child in children:  # each child's page carries its short, swept-key name
        run = child.info.run_id
        dom = _browse(f"{base}/#/experiments/{exp}/runs/{run}", profile,
                      SHOTS / f"run_{child.info.run_name}.png")
        assert child.info.run_name in dom and child.info.run_name.startswith("lr=")

    dom = _browse(f"{base}/#/experiments/{exp}/runs/{run}/model-metrics", profile, SHOTS / "run_metrics.png")
    assert re.search(r"train \(\d+\)", dom) and "Step" in dom  # the train/* chart group, drawn with a step axis

    dom = _browse(f"{base}/#/experiments/{exp}/runs/{run}/artifacts", profile, SHOTS / "run_artifacts.png")
    assert "images" in dom and "config_resolved.yaml" in dom and "checkpoints" in dom
