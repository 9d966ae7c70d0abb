"""The README's experiment table is generated from sketchlab/conf/experiment/ and kept up to date."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import REPO

SCRIPT = REPO / "scripts" / "list_experiments.py"


def list_experiments(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_readme_experiment_table_is_up_to_date():
    proc = list_experiments("--check", str(REPO / "README.md"))
    assert proc.returncode == 0, proc.stderr


def test_table_lists_every_experiment_file_with_its_first_comment_line():
    proc = list_experiments()
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| `")]
    names = sorted(p.stem for p in (REPO / "sketchlab" / "conf" / "experiment").glob("*.yaml") if not p.stem.startswith("_"))
    assert [row.split("`")[1] for row in rows] == names
    assert any(row.startswith("| `vmnist_ode` | SketchODE on VectorMNIST") for row in rows)


def test_stale_table_fails_the_check_and_write_fixes_it(tmp_path: Path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- experiments:begin -->\n| `gone` | an old experiment |\n"
                      "<!-- experiments:end -->\nrest\n")
    proc = list_experiments("--check", str(readme))
    assert proc.returncode == 1 and "out of date" in proc.stderr
    assert list_experiments("--write", str(readme)).returncode == 0
    text = readme.read_text()
    assert "`gone`" not in text and "| `sheep` |" in text and text.startswith("intro\n") and text.endswith("rest\n")
    assert list_experiments("--check", str(readme)).returncode == 0


def test_missing_markers_are_an_error(tmp_path: Path):
    readme = tmp_path / "README.md"
    readme.write_text("no table here\n")
    proc = list_experiments("--check", str(readme))
    assert proc.returncode == 2 and "markers" in proc.stderr
