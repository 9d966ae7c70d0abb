"""Every import points down the layers (setup.cfg's import-linter contract) and no modules import each other."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import REPO

pytest.importorskip("importlinter", reason="import-linter is a dev dependency (pip install -e '.[dev]')")


def test_layers_contract_is_kept():
    proc = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                           "sys.argv = ['lint-imports']; lint_imports_command()"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


def test_no_import_cycles():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import import_graph
    finally:
        sys.path.pop(0)
    import grimp

    assert import_graph.cycles(grimp.build_graph("sketchlab")) == []
