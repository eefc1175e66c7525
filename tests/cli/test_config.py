"""Configuration precedence: defaults < TOML file < BYELINE_* environment < flags."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from byeline.config import ConfigError, load_config


def test_defaults() -> None:
    cfg = load_config(None, {}, environ={})
    assert cfg.rtp_range == (10000, 20000)
    assert cfg.db == "./byeline.db"
    assert cfg.trunk == []


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    toml = tmp_path / "byeline.toml"
    toml.write_text(
        'trunk = ["a.json"]\nrtp_ports = "30000-30100"\nmax_calls = 5\nmedia_ip = "10.0.0.1"\n'
    )
    env = {"BYELINE_MAX_CALLS": "7", "BYELINE_MEDIA_IP": "10.0.0.2", "UNRELATED": "x"}
    cfg = load_config(str(toml), {"media_ip": "10.0.0.3", "trunk": []}, environ=env)
    assert cfg.trunk == ["a.json"]  # empty flag list does not override
    assert cfg.rtp_range == (30000, 30100)  # file
    assert cfg.max_calls == 7  # environment over file
    assert cfg.media_ip == "10.0.0.3"  # flag over environment


def test_serve_section_and_list_from_environment(tmp_path: Path) -> None:
    toml = tmp_path / "byeline.toml"
    toml.write_text('[serve]\nsip = ["udp:127.0.0.1:5070"]\n')
    cfg = load_config(str(toml), {}, environ={"BYELINE_TRUNK": "a.json,b.json"})
    assert cfg.sip == ["udp:127.0.0.1:5070"]
    assert cfg.trunk == ["a.json", "b.json"]


@pytest.mark.parametrize(
    ("content", "env", "message"),
    [
        ("bogus = 1\n", {}, "unknown key(s) bogus"),
        ("max_calls = [\n", {}, "byeline.toml"),
        ("", {"BYELINE_MAX_CALLS": "many"}, "max_calls: 'many' is not a valid int"),
        ("", {"BYELINE_RTP_PORTS": "20000-10000"}, "need 1024 <= LOW < HIGH <= 65535"),
        ("", {"BYELINE_RTP_PORTS": "lots"}, "expected LOW-HIGH"),
        ('trunk = "a.json"\nsip = [1]\n', {}, "sip: expected a list of strings"),
    ],
)
def test_bad_values_name_the_key(
    tmp_path: Path, content: str, env: dict[str, str], message: str
) -> None:
    toml = tmp_path / "byeline.toml"
    toml.write_text(content)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(str(toml), {}, environ=env)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load_config("nope.toml", {}, environ={})
