"""Offline speech for the voice agent, as LiveKit Agents plugins.

- :class:`PocketsphinxSTT`: speech-to-text with pocketsphinx and a language model generated at
  agent start from the routes' phrases (:mod:`.language_model`); use it with a VAD through
  ``livekit.agents.stt.StreamAdapter``.
- :class:`EspeakTTS`: text-to-speech with espeak-ng, at the call's 8 kHz.

Nothing is downloaded: the models come with the ``pocketsphinx`` and ``espeakng-loader`` wheels.

The plugin classes are imported on first use: the decoder worker processes import
:mod:`.language_model` through this package and must not pay for ``livekit.agents``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .language_model import LanguageModel, build_language_model, language_model_for_routes

if TYPE_CHECKING:
    from .espeak_tts import EspeakTTS
    from .pocketsphinx_stt import PocketsphinxSTT

__all__ = [
    "EspeakTTS",
    "LanguageModel",
    "PocketsphinxSTT",
    "build_language_model",
    "language_model_for_routes",
]


def __getattr__(name: str) -> Any:
    if name == "PocketsphinxSTT":
        from .pocketsphinx_stt import PocketsphinxSTT

        return PocketsphinxSTT
    if name == "EspeakTTS":
        from .espeak_tts import EspeakTTS

        return EspeakTTS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
