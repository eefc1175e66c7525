"""The offline recogniser's routing accuracy and CPU cost, for pocketsphinx settings side by side.

32 caller sentences (24 that name a route of ``examples/routes.yaml``, 8 off-topic) are spoken by
Festival's HTS voice, sent through G.711 µ-law and fed in 20 ms frames to the streaming decoder
the agent uses (:class:`~byeline.agent.speech.streaming.StreamingUtterance`), then routed by the
intent engine.  Each recording (300 ms of silence at either end) is one utterance: no VAD cuts it.
A sentence is right when it reaches its route (off-topic: no route).  Each setting reports right/32
and the decoder's CPU per second of audio (the figure that sets how many
callers one core can hear at once), measured in this process, one setting after the other, with
the same audio.

Run: ``.venv/bin/python bench/stt_accuracy.py [--set NAME:opt=value,opt=value ...] [--json PATH]``.
Festival is installed with apt-get when missing (``festival festvox-us-slt-hts``, as
``scripts/make_caller_wavs.py`` needs); the synthesized corpus is cached under ``bench/out/``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from byeline.agent.intent_llm import IntentLLM  # noqa: E402
from byeline.agent.routes import load_routes  # noqa: E402
from byeline.agent.speech.language_model import (  # noqa: E402
    LanguageModel,
    language_model_for_routes,
)
from byeline.agent.speech.streaming import StreamingUtterance  # noqa: E402
from byeline.five9.voice import festival_available, synthesize  # noqa: E402
from byeline.rtp.g711 import ulaw_decode, ulaw_encode  # noqa: E402

RATE = 8000
FRAME = RATE // 50 * 2  # 20 ms of 16-bit PCM
PAD = b"\0\0" * (RATE * 3 // 10)
CACHE = ROOT / "bench" / "out" / "stt-corpus"

#: (sentence, route name or None for off-topic).
CORPUS: list[tuple[str, str | None]] = [
    ("I have a question about my bill", "billing"),
    ("billing please", "billing"),
    ("I need to pay my bill", "billing"),
    ("there is a problem with my invoice", "billing"),
    ("I want to make a payment", "billing"),
    ("billing", "billing"),
    ("my bill is too high", "billing"),
    ("can you help me with my invoice", "billing"),
    ("I want to buy a new phone", "sales"),
    ("sales", "sales"),
    ("sales please", "sales"),
    ("I would like to upgrade my plan", "sales"),
    ("what is your pricing", "sales"),
    ("I want to open a new account", "sales"),
    ("I am thinking about buying a tablet", "sales"),
    ("can I talk to sales", "sales"),
    ("can I talk to a person", "agent"),
    ("agent", "agent"),
    ("let me speak to a representative", "agent"),
    ("operator", "agent"),
    ("I want to talk to a human", "agent"),
    ("can I speak to an agent", "agent"),
    ("get me a representative please", "agent"),
    ("I need a real person", "agent"),
    ("what is the weather like", None),
    ("hello how are you", None),
    ("good morning", None),
    ("I am calling about my dog", None),
    ("thank you very much", None),
    ("what time is it", None),
    ("I lost my keys yesterday", None),
    ("nice to meet you", None),
]

#: Named pocketsphinx settings compared by default ("shipped": what the agent uses).
SETTINGS: dict[str, dict[str, Any]] = {
    "shipped": {},
    "ds2": {"ds": 2},
    "topn2": {"topn": 2},
    "maxhmmpf3000": {"maxhmmpf": 3000},
    "beam1e-40": {"beam": 1e-40, "wbeam": 1e-30, "pbeam": 1e-40},
    "ds2+topn2": {"ds": 2, "topn": 2},
}


def ensure_festival() -> None:
    if festival_available():
        return
    print("installing festival festvox-us-slt-hts with apt-get", file=sys.stderr)
    subprocess.run(["apt-get", "update", "-qq"], check=False)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "festival", "festvox-us-slt-hts"],
        check=True,
        env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    if not festival_available():
        raise SystemExit("Festival's HTS voice is still missing after apt-get")


def corpus_audio() -> list[bytes]:
    """Each sentence as 8 kHz PCM after a G.711 µ-law round trip, 300 ms of silence around."""
    CACHE.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (text, _route) in enumerate(CORPUS):
        path = CACHE / f"{i:02d}.wav"
        if not path.exists():
            ensure_festival()
            pcm = PAD + synthesize(text, voice="festival") + PAD
            with wave.open(str(path), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(RATE)
                w.writeframes(ulaw_decode(ulaw_encode(pcm)))
        with wave.open(str(path), "rb") as w:
            out.append(w.readframes(w.getnframes()))
    return out


def measure(
    name: str, options: dict[str, Any], audio: list[bytes], model: LanguageModel, intent: IntentLLM
) -> dict[str, Any]:
    setup = model.decoder_setup(**options)
    right = 0
    cpu = 0.0
    audio_seconds = 0.0
    wrong: list[str] = []
    # One warm-up utterance: the first decoder build and the model load are not a caller's cost.
    warm = StreamingUtterance(setup, RATE)
    warm.feed(audio[0])
    warm.finish()
    for (text, expected), pcm in zip(CORPUS, audio, strict=True):
        utterance = StreamingUtterance(setup, RATE)
        t0 = time.process_time()
        for i in range(0, len(pcm), FRAME):
            utterance.feed(pcm[i : i + FRAME])
        heard = utterance.finish().text
        cpu += time.process_time() - t0
        audio_seconds += len(pcm) / 2 / RATE
        found = intent.match(heard)
        routed = found.route.name if found.route and found.confidence >= intent.threshold else None
        if routed == expected:
            right += 1
        else:
            wrong.append(f"{text!r} -> {heard!r} ({routed})")
    return {
        "setting": name,
        "options": dict(setup.options),
        "right": right,
        "of": len(CORPUS),
        "cpu_ms_per_audio_second": round(1000 * cpu / audio_seconds, 1),
        "wrong": wrong,
    }


def parse_set(spec: str) -> tuple[str, dict[str, Any]]:
    name, _, rest = spec.partition(":")
    options: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        parsed: Any = value
        for cast in (int, float):
            try:
                parsed = cast(value)
                break
            except ValueError:
                continue
        if value in ("yes", "no"):
            parsed = value == "yes"
        options[key] = parsed
    return name, options


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        help="NAME:opt=value,... (repeatable); default: the built-in comparison",
    )
    parser.add_argument("--rounds", type=int, default=3, help="CPU: median of this many passes")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    audio = corpus_audio()
    sets = dict(parse_set(s) for s in args.set) if args.set else SETTINGS
    # Rounds alternate the settings, so that a drift in the machine's speed hits them alike.
    routes = load_routes(ROOT / "src/byeline/examples/routes.yaml")
    model = language_model_for_routes(routes)
    intent = IntentLLM(routes)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sets}
    for _ in range(args.rounds):
        for name, options in sets.items():
            runs[name].append(measure(name, dict(options), audio, model, intent))
    results = []
    for name, measured in runs.items():
        measured.sort(key=lambda r: r["cpu_ms_per_audio_second"])
        best = measured[len(measured) // 2]
        best["cpu_ms_per_audio_second_all"] = [r["cpu_ms_per_audio_second"] for r in measured]
        results.append(best)
        print(
            f"{name:24s} right {best['right']:2d}/{best['of']}  decoder CPU "
            f"{best['cpu_ms_per_audio_second']:6.1f} ms per s of audio "
            f"(min/median/max {min(best['cpu_ms_per_audio_second_all'])}/"
            f"{best['cpu_ms_per_audio_second']}/{max(best['cpu_ms_per_audio_second_all'])})"
        )
        for line in best["wrong"]:
            print(f"    wrong: {line}")
    base = results[0]["cpu_ms_per_audio_second"]
    for r in results[1:]:
        print(
            f"{r['setting']:24s} CPU ratio to {results[0]['setting']}: "
            f"{r['cpu_ms_per_audio_second'] / base:.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
