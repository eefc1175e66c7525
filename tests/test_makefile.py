"""The interpreter ``make`` builds the venv from: the distribution's CPython when it is 3.11+.

A CPython built from source with the defaults (libpython as a shared library, no profile-guided
build) ran the call path 1.25x slower than Debian's ``/usr/bin/python3`` (docs/PERFORMANCE.md,
round 22), so the choice is checked here rather than left to whichever ``python3`` is on PATH.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = Path("/usr/bin/python3")


def _system_python_fits() -> bool:
    if not SYSTEM_PYTHON.exists():
        return False
    probe = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import sys; sys.exit(sys.version_info < (3, 11))"],
        capture_output=True,
    )
    return probe.returncode == 0


def _planned_venv_command(venv: Path, *overrides: str) -> str:
    """The ``... -m venv`` line that ``make venv`` would run for an empty ``venv``."""
    out = subprocess.run(
        ["make", "-n", "venv", f"VENV={venv}", *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return next(line for line in out.splitlines() if " -m venv " in line)


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_the_venv_is_made_from_the_distribution_python(tmp_path: Path) -> None:
    line = _planned_venv_command(tmp_path / "venv")
    chosen = line.split("||", 1)[1].split()[0]
    assert chosen == (str(SYSTEM_PYTHON) if _system_python_fits() else "python3")


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_python_on_the_command_line_wins(tmp_path: Path) -> None:
    line = _planned_venv_command(tmp_path / "venv", f"PYTHON={sys.executable}")
    assert line.split("||", 1)[1].split()[0] == sys.executable


@pytest.mark.skipif(
    Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(), reason="not the project's venv"
)
def test_the_project_venv_runs_on_the_chosen_interpreter() -> None:
    # What `make test` runs the tests with: the venv the Makefile made, on the interpreter it chose.
    base = Path(sys._base_executable).resolve()  # type: ignore[attr-defined]
    if _system_python_fits():
        assert base == SYSTEM_PYTHON.resolve()
