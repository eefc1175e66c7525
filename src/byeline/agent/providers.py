"""Speech and language providers, chosen by configuration.

The embedded default is offline: pocketsphinx (STT), espeak-ng (TTS), silero
(VAD) and the intent engine (LLM).  Any of STT, TTS and LLM can be switched to
an OpenAI-compatible service through LiveKit Agents' own plugin
(``pip install 'byeline[openai]'``): a base URL and a key cover OpenAI itself
and local or hosted servers that speak its API (vLLM, Ollama, LiteLLM...).

    [serve]
    llm = "openai"                       # offline | openai
    llm_model = "gpt-4.1-mini"
    llm_base_url = "http://127.0.0.1:8000/v1"
    stt = "openai"                       # offline | openai
    tts = "openai"                       # offline | openai
    # keys: BYELINE_LLM_API_KEY / BYELINE_STT_API_KEY / BYELINE_TTS_API_KEY, else OPENAI_API_KEY
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from livekit.agents import llm as lk_llm
from livekit.agents import stt as lk_stt
from livekit.agents import tts as lk_tts

from .routes import Routes

KINDS = ("offline", "openai")


class ProviderError(ValueError):
    """A provider that cannot be built from the configuration; the message says why."""


@dataclass(frozen=True)
class ProviderConfig:
    """Which provider does what, and how to reach the non-offline ones."""

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

    def check(self) -> None:
        """Refuse unknown provider names, naming the key."""
        for key in ("llm", "stt", "tts"):
            value = getattr(self, key)
            if value not in KINDS:
                raise ProviderError(f"{key} {value!r}: expected one of {', '.join(KINDS)}")


def _openai() -> Any:
    try:
        from livekit.plugins import openai
    except ImportError:
        raise ProviderError(
            "the openai provider needs LiveKit's plugin: pip install 'byeline[openai]'"
        ) from None
    return openai


def _api_key(kind: str, environ: Mapping[str, str]) -> str:
    key = environ.get(f"BYELINE_{kind.upper()}_API_KEY") or environ.get("OPENAI_API_KEY")
    if not key:
        raise ProviderError(
            f"{kind} = openai needs an API key: set BYELINE_{kind.upper()}_API_KEY or "
            "OPENAI_API_KEY (any non-empty value for a local server that wants none)"
        )
    return key


def _base_url(value: str | None) -> dict[str, str]:
    return {"base_url": value} if value else {}


def build_llm(
    cfg: ProviderConfig, routes: Routes, environ: Mapping[str, str] = os.environ
) -> lk_llm.LLM[Any]:
    """The LLM that chooses the route (it calls the ``handback`` tool)."""
    if cfg.llm == "offline":
        from .intent_llm import IntentLLM

        return IntentLLM(routes)
    openai = _openai()
    llm: lk_llm.LLM[Any] = openai.LLM(
        model=cfg.llm_model, api_key=_api_key("llm", environ), **_base_url(cfg.llm_base_url)
    )
    return llm


def build_stt(
    cfg: ProviderConfig, routes: Routes, environ: Mapping[str, str] = os.environ
) -> lk_stt.STT[Any]:
    """Speech to text."""
    if cfg.stt == "offline":
        from .speech import PocketsphinxSTT

        stt = PocketsphinxSTT.for_routes(routes)
        # The voice agent streams each session's audio to the decoder workers
        # (PocketsphinxSTT.for_session): start them, and their decoders, now.
        stt.for_session().prewarm()
        return stt
    openai = _openai()
    keywords = sorted({w for r in routes.routes for p in r.phrases for w in p.split()})
    cloud: lk_stt.STT[Any] = openai.STT(
        model=cfg.stt_model,
        api_key=_api_key("stt", environ),
        prompt="Callers say what they need: " + ", ".join(keywords[:60]),
        **_base_url(cfg.stt_base_url),
    )
    return cloud


def build_tts(cfg: ProviderConfig, environ: Mapping[str, str] = os.environ) -> lk_tts.TTS[Any]:
    """Text to speech."""
    if cfg.tts == "offline":
        from .speech import EspeakTTS

        return EspeakTTS()
    openai = _openai()
    cloud: lk_tts.TTS[Any] = openai.TTS(
        model=cfg.tts_model,
        voice=cfg.tts_voice,
        api_key=_api_key("tts", environ),
        **_base_url(cfg.tts_base_url),
    )
    return cloud
