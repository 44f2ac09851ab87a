"""Packaging: `python -m build` makes a wheel and an sdist that install in a clean virtualenv and work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_distributions_build_install_and_run(tmp_path: Path) -> None:
    """Builds both distributions, then tools/smoke_dist.py installs each in a new venv (about 20 s)."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)], check=True, capture_output=True)
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "smoke_dist.py"), str(dist)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("installs in a clean virtualenv and runs") == 2, result.stdout


def test_the_version_has_one_source() -> None:
    """setup.cfg reads neoq.__version__; nothing else spells the version out."""
    import neoq

    assert "version = attr: neoq.__version__" in (ROOT / "setup.cfg").read_text()
    assert "version" not in (ROOT / "setup.py").read_text().lower()
    assert neoq.__version__.count(".") >= 2
