"""The caller's script for ``five9 call --script FILE``: what the caller does, in order.

A YAML list; each item one step::

    - wait: 1.5                 # seconds
    - press: "1"                # keys over RFC 4733
    - say: I have a question about my bill
    - play: prompts/caller.wav  # relative to the script file
    - hangup                    # the caller hangs up first
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .simulator import Action, HangUp, Play, Press, Say, Wait

DTMF_KEYS = set("0123456789*#ABCD")


class ScriptError(ValueError):
    """A script file that cannot be run; the message names the step."""


def parse_script(data: Any, *, source: str = "<script>", base: Path | None = None) -> list[Action]:
    """Steps from decoded YAML."""
    if not isinstance(data, list):
        raise ScriptError(f"{source}: expected a list of steps")
    actions: list[Action] = []
    for i, step in enumerate(data):
        where = f"{source}: step {i + 1}"
        if step in ("hangup", "hang up", {"hangup": None}, {"hangup": True}):
            actions.append(HangUp())
            continue
        if not isinstance(step, dict) or len(step) != 1:
            raise ScriptError(f"{where}: expected one of wait, press, say, play, hangup")
        ((kind, value),) = step.items()
        if kind == "wait":
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ScriptError(f"{where}: wait takes a number of seconds >= 0")
            actions.append(Wait(float(value)))
        elif kind == "press":
            keys = str(value)
            if not keys or set(keys) - DTMF_KEYS:
                raise ScriptError(f"{where}: press takes keys 0-9 * # A-D; got {keys!r}")
            actions.append(Press(keys))
        elif kind == "say":
            if not isinstance(value, str) or not value.strip():
                raise ScriptError(f"{where}: say takes the text to speak")
            actions.append(Say(value))
        elif kind == "play":
            if not isinstance(value, str):
                raise ScriptError(f"{where}: play takes a WAV file path")
            path = Path(value)
            if base is not None and not path.is_absolute():
                path = base / path
            actions.append(Play(path))
        else:
            raise ScriptError(f"{where}: unknown step {kind!r}")
    return actions


def load_script(path: str | Path) -> list[Action]:
    """Read a script file."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text("utf-8"))
    except OSError as exc:
        raise ScriptError(f"{p}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ScriptError(f"{p}: not valid YAML ({exc})") from None
    return parse_script(data, source=str(p), base=p.parent)
