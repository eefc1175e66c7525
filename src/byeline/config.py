"""Configuration of ``byeline serve``: TOML file, ``BYELINE_*`` variables, flags.

Precedence: command-line flags win over environment variables, which win over
the TOML file, which wins over the defaults below.  Every key has one name in
all three places: ``rtp_ports`` in TOML, ``BYELINE_RTP_PORTS`` in the
environment, ``--rtp-ports`` on the command line.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names it."""


LIST_KEYS = {"trunk", "dispatch", "sip", "webhooks", "drop_user_agents"}


@dataclass
class ServeConfig:
    """Everything ``byeline serve`` needs."""

    trunk: list[str] = field(default_factory=list)
    dispatch: list[str] = field(default_factory=list)
    routes: str | None = None
    sip: list[str] = field(default_factory=list)
    media_ip: str = "127.0.0.1"
    rtp_ports: str = "10000-20000"
    db: str = "./byeline.db"
    http: str | None = None
    max_calls: int = 200
    media_timeout: float = 30.0
    no_input_timeout: float | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    shutdown_grace: float = 10.0
    answer_delay: float = 0.0
    sip_t1: float = 0.5
    agent: str = "voice"
    agents: list[str] = field(default_factory=list)
    recordings: str | None = None
    record_trunks: list[str] = field(default_factory=list)
    recording_announcement: str | None = None
    vad_sample_rate: int = 8000
    vad_min_silence: float = 0.55
    endpointing_delay: float = 0.5
    llm: str = "offline"
    llm_model: str = "gpt-4.1-mini"
    llm_base_url: str | None = None
    stt: str = "offline"
    stt_model: str = "gpt-4o-mini-transcribe"
    stt_base_url: str | None = None
    tts: str = "offline"
    tts_model: str = "gpt-4o-mini-tts"
    tts_voice: str = "ash"
    tts_base_url: str | None = None
    api_token: str | None = None
    webhooks: list[str] = field(default_factory=list)
    webhook_secret: str | None = None
    retention_days: float | None = None
    log_level: str = "info"
    invite_rate: float = 50.0
    """Refused or challenged INVITEs per second per source IP; past it they are dropped."""
    invite_burst: int = 100
    overload_delay: float = 0.25
    """Seconds of unread SIP messages past which new INVITEs get 503 (0: never)."""
    overload_records: int = 50_000
    """Call-record writes waiting for the database past which new INVITEs get 503 (0: never)."""
    drop_user_agents: list[str] | None = None
    """User-Agent product names whose requests are dropped unanswered.  None (the default):
    the edge's list of SIP scanners (``byeline.edge.server.SCANNER_USER_AGENTS``); an empty
    list (``--drop-user-agents ""``): drop none."""

    @property
    def http_address(self) -> tuple[str, int] | None:
        """``http`` as (host, port), checked; None when the API is off."""
        if not self.http:
            return None
        text = self.http
        if text.startswith("["):
            host, _, port_text = text[1:].partition("]:")
        else:
            host, _, port_text = text.rpartition(":")
        if not host or not port_text.isdigit() or int(port_text) > 65535:
            raise ConfigError(f"http {self.http!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
        return host, int(port_text)

    @property
    def rtp_range(self) -> tuple[int, int]:
        """``rtp_ports`` as (low, high), checked."""
        low_s, sep, high_s = self.rtp_ports.partition("-")
        if not sep or not low_s.isdigit() or not high_s.isdigit():
            raise ConfigError(f"rtp_ports {self.rtp_ports!r}: expected LOW-HIGH, e.g. 10000-20000")
        low, high = int(low_s), int(high_s)
        if not 1024 <= low < high <= 65535:
            raise ConfigError(f"rtp_ports {self.rtp_ports!r}: need 1024 <= LOW < HIGH <= 65535")
        return low, high


def _coerce(name: str, value: Any, kind: Any) -> Any:
    text_kind = str(kind)
    try:
        if name in LIST_KEYS:
            if isinstance(value, str):
                return [v for v in value.split(",") if v]
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return value
            raise ConfigError(f"{name}: expected a list of strings")
        if text_kind.startswith("int"):
            return int(value)
        if text_kind.startswith("float"):
            return float(value)
        if value is None:
            return None
        return str(value)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{name}: {value!r} is not a valid {text_kind.split(' ')[0]}") from None


def load_config(
    path: str | None,
    flags: Mapping[str, Any],
    environ: Mapping[str, str] = os.environ,
) -> ServeConfig:
    """Merge the TOML file, the environment and the flags into a ServeConfig."""
    cfg = ServeConfig()
    known = {f.name: f.type for f in fields(cfg)}
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if path:
        try:
            with Path(path).open("rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"{path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        section = data.get("serve", data)
        unknown = sorted(set(section) - set(known))
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}")
        layers.append((path, section))
    env = {
        key[len("BYELINE_") :].lower(): value
        for key, value in environ.items()
        if key.startswith("BYELINE_") and key[len("BYELINE_") :].lower() in known
    }
    layers.append(("environment", env))
    layers.append(("flags", {k: v for k, v in flags.items() if v is not None and v != []}))
    for _, layer in layers:
        for key, value in layer.items():
            setattr(cfg, key, _coerce(key, value, known[key]))
    cfg.rtp_range  # noqa: B018 - validate early, with the key named
    if not 0 <= cfg.answer_delay <= 300:
        raise ConfigError(f"answer_delay {cfg.answer_delay!r}: need 0 to 300 seconds")
    if cfg.invite_rate < 0 or cfg.invite_burst < 1:
        raise ConfigError(
            f"invite_rate {cfg.invite_rate!r} / invite_burst {cfg.invite_burst!r}: "
            "need a rate >= 0 (0: no limit) and a burst >= 1"
        )
    if not 0 <= cfg.overload_delay <= 10:
        raise ConfigError(
            f"overload_delay {cfg.overload_delay!r}: need 0 (off) to 10 seconds of SIP backlog"
        )
    if not 0 <= cfg.overload_records <= 10_000_000:
        raise ConfigError(
            f"overload_records {cfg.overload_records!r}: need 0 (off) to 10000000 record writes"
        )
    if cfg.drop_user_agents is not None:
        cfg.drop_user_agents = [a.strip() for a in cfg.drop_user_agents if a.strip()]
    if not 0.01 <= cfg.sip_t1 <= 4.0:
        raise ConfigError(f"sip_t1 {cfg.sip_t1!r}: need 0.01 to 4 seconds (RFC 3261 T1)")
    return cfg
