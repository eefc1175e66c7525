"""``byeline livekit`` refuses to start without what it needs, with one line."""

from __future__ import annotations

import pytest

from byeline.cli import main


def test_worker_needs_credentials(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
        monkeypatch.delenv(name, raising=False)
    assert main(["livekit", "worker", "--routes", "x.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("byeline: set LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET")
    assert "\n" not in err


def test_worker_checks_its_files_first(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LIVEKIT_URL", "wss://example.invalid")
    monkeypatch.setenv("LIVEKIT_API_KEY", "k")
    monkeypatch.setenv("LIVEKIT_API_SECRET", "s")
    assert main(["livekit", "worker", "--routes", "/nonexistent/routes.yaml"]) == 2
    assert "routes.yaml" in capsys.readouterr().err


def test_apply_needs_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["livekit", "apply"]) == 2
    assert "--trunk FILE" in capsys.readouterr().err
