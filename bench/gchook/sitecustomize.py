"""Loaded by ``bench/gc_serve.py`` into ``byeline serve`` (through ``PYTHONPATH``): times every
cyclic collection by generation once serving (after ``settle_heap`` raised the thresholds): their
CPU in all, and the wall time of the longest, a pause of the event loop. With
``BYELINE_GC_CENSUS=1`` it counts the types in the young generation at each young collection.
At exit it appends one JSON line to ``$BYELINE_GC_OUT``."""

from __future__ import annotations

import atexit
import collections
import gc
import json
import os
import time
from typing import Any

_START_THRESHOLD = 700  # CPython's default: still starting up
_census = os.environ.get("BYELINE_GC_CENSUS") == "1"
_collections = {0: 0, 1: 0, 2: 0}
_cpu = {0: 0.0, 1: 0.0, 2: 0.0}
_longest = {0: 0.0, 1: 0.0, 2: 0.0}  # wall time of the longest collection: the loop's pause
_types: collections.Counter[str] = collections.Counter()
_young_sizes: list[int] = []
_began = [0.0, 0.0]


def _callback(phase: str, info: dict[str, Any]) -> None:
    if gc.get_threshold()[0] == _START_THRESHOLD:
        return
    generation = info["generation"]
    if phase == "start":
        if _census and generation == 0:
            young = gc.get_objects(generation=0)
            _young_sizes.append(len(young))
            _types.update(type(o).__qualname__ for o in young)
        _began[0] = time.thread_time()
        _began[1] = time.perf_counter()
    else:
        _collections[generation] += 1
        _cpu[generation] += time.thread_time() - _began[0]
        _longest[generation] = max(_longest[generation], time.perf_counter() - _began[1])


def _report() -> None:
    out = os.environ.get("BYELINE_GC_OUT")
    if not out:
        return
    seen = max(1, len(_young_sizes))
    line = {
        "threshold": gc.get_threshold(),
        "collections": _collections,
        "cpu_ms": {g: round(1000 * t, 1) for g, t in _cpu.items()},
        "longest_ms": {g: round(1000 * t, 1) for g, t in _longest.items()},
        "process_cpu_s": round(time.process_time(), 2),
        "young_objects_per_collection": round(sum(_young_sizes) / seen) if _young_sizes else None,
        "young_types": {k: round(v / seen) for k, v in _types.most_common(20)},
    }
    with open(out, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


gc.callbacks.append(_callback)
atexit.register(_report)
