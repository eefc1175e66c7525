"""A git ref's ``src/`` extracted beside a benchmark run, so that it measures that commit.

Used by ``run.py --snapshot`` and ``store_cost.py --snapshot``: edits made while a benchmark runs
cannot change what it measures, and a baseline can run side by side with the working tree.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def take_snapshot(ref: str, work: Path) -> tuple[str, Path]:
    """Extract ``ref``'s src/ into ``work/snapshot``; returns the short commit and the src path."""
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", ref],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    dest = work / "snapshot"
    dest.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "src"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return commit, dest / "src"
