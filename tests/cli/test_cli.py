"""The ``byeline`` command: exit codes and one-line errors, run as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "src" / "byeline" / "examples"


def byeline(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "byeline.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_trunk_validate_good_files() -> None:
    r = byeline(
        "trunk",
        "validate",
        str(EXAMPLES / "five9-trunk.json"),
        str(EXAMPLES / "five9-dispatch.json"),
        "--routes",
        str(EXAMPLES / "routes.yaml"),
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(": valid") == 2


def test_trunk_validate_bad_file_names_field_and_rule(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"trunk": {"numbers": ["+1800"], "headers": {"Via": "x"}, "bogus_field": 1}})
    )
    r = byeline("trunk", "validate", str(bad))
    assert r.returncode == 1
    assert "bogus_field" in r.stderr


def test_trunk_validate_unmapped_result_attribute(tmp_path: Path) -> None:
    trunk = json.loads((EXAMPLES / "five9-trunk.json").read_text())
    del trunk["trunk"]["attributes_to_headers"]["five9.route_type"]
    path = tmp_path / "trunk.json"
    path.write_text(json.dumps(trunk))
    r = byeline("trunk", "validate", str(path), "--routes", str(EXAMPLES / "routes.yaml"))
    assert r.returncode == 1
    assert '"five9.route_type" is not mapped' in r.stderr


def test_serve_refuses_unmapped_result_attribute_in_one_line(tmp_path: Path) -> None:
    trunk = json.loads((EXAMPLES / "five9-trunk.json").read_text())
    trunk["trunk"]["attributes_to_headers"].pop("five9.metadata")
    path = tmp_path / "trunk.json"
    path.write_text(json.dumps(trunk))
    r = byeline(
        "serve",
        "--trunk",
        str(path),
        "--routes",
        str(EXAMPLES / "routes.yaml"),
        "--sip",
        "udp:127.0.0.1:0",
        "--db",
        str(tmp_path / "x.db"),
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("byeline: ") and "five9.metadata" in lines[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--sip", "carrier-pigeon:1.2.3.4:5"], "--sip"),
        (["--rtp-ports", "5-4"], "rtp_ports"),
        (["--trunk", "/nonexistent/trunk.json"], "/nonexistent/trunk.json"),
    ],
)
def test_serve_bad_options_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    base = ["serve", "--db", str(tmp_path / "x.db")]
    if "--trunk" not in args:
        base += ["--trunk", str(EXAMPLES / "five9-trunk.json")]
    r = byeline(*base, *args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr


def test_serve_without_trunk(tmp_path: Path) -> None:
    r = byeline("serve", "--db", str(tmp_path / "x.db"))
    assert r.returncode == 2
    assert "no trunk file" in r.stderr


def test_calls_list_and_show_on_empty_db(tmp_path: Path) -> None:
    db = str(tmp_path / "calls.db")
    r = byeline("calls", "--db", db, "list", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == []
    r = byeline("calls", "--db", db, "show", "SCL_nope")
    assert r.returncode == 1
    assert "no call 'SCL_nope'" in r.stderr
