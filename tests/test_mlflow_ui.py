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
from typing import Callable

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


def _browse(url: str, profile: Path, screenshot: Path | None = None,
            ready: Callable[[str], bool] = lambda dom: True) -> str:
    """The DOM of ``url`` after its scripts ran (and a screenshot), from headless Chromium.

    Charts and run tables fill in after the page's own API calls return, which on a loaded machine can take
    longer than one virtual-time budget; so the page is loaded again with longer budgets until ``ready``
    holds for its text (the last text is returned either way, for the caller's assertion to show).
    """
    dom = ""
    for budget_ms in (20_000, 60_000, 120_000):
        flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--window-size=1400,1000", f"--virtual-time-budget={budget_ms}"]
        proc = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=300)
        dom = _text(proc.stdout)
        if ready(dom):
            break
    if screenshot is not None:
        subprocess.run([*flags, f"--screenshot={screenshot}", url], capture_output=True, timeout=300)
    return dom


def _charted(dom: str) -> bool:
    """The train/* chart group is there and drawn (its step axis is labelled)."""
    return bool(re.search(r"train \(\d+\)", dom)) and "Step" in dom


def _artifacts_listed(dom: str) -> bool:
    return "images" in dom and "config_resolved.yaml" in dom and "checkpoints" in dom


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

    dom = _browse(f"{base}/#/experiments/{exp}/runs", profile, SHOTS / "experiment.png",
                  lambda dom: "3 matching runs" in dom)
    assert "Training runs" in dom and "sweep ui " in dom and "3 matching runs" in dom, dom[-2000:]

    for child in children:  # each child's page carries its short, swept-key name
        run = child.info.run_id
        dom = _browse(f"{base}/#/experiments/{exp}/runs/{run}", profile,
                      SHOTS / f"run_{child.info.run_name}.png", lambda dom: child.info.run_name in dom)
        assert child.info.run_name in dom and child.info.run_name.startswith("lr=")

    dom = _browse(f"{base}/#/experiments/{exp}/runs/{run}/model-metrics", profile, SHOTS / "run_metrics.png",
                  _charted)
    assert _charted(dom), dom[-2000:]  # the train/* chart group, drawn with a step axis

    dom = _browse(f"{base}/#/experiments/{exp}/runs/{run}/artifacts", profile, SHOTS / "run_artifacts.png",
                  _artifacts_listed)
    assert _artifacts_listed(dom), dom[-2000:]
