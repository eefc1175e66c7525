"""What the cyclic GC costs ``byeline serve`` under the signalling benchmark's load.

Runs the server and SIPp's Five9 UAC as ``bench/run.py`` does (same cores, same scenario) at RATE
calls/s for SECONDS, with ``bench/gchook/sitecustomize.py`` loaded into the server, then prints
the collections per generation and their CPU once serving; ``--census`` also lists what the young
generation holds at each young collection (slower: for finding what lives too long).

    .venv/bin/python bench/gc_serve.py 1200 10 [--census] [--src DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import run

HOOK = Path(__file__).resolve().parent / "gchook"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rate", type=int)
    parser.add_argument("seconds", type=int)
    parser.add_argument("--census", action="store_true")
    parser.add_argument("--src", help="import byeline from this src/ instead")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="byeline-gc-"))
    out = work / "gc.jsonl"
    paths = [str(HOOK)] + ([args.src] if args.src else [])
    run.SERVER_ENV["PYTHONPATH"] = ":".join(paths)
    run.SERVER_ENV["BYELINE_GC_OUT"] = str(out)
    run.SERVER_ENV["BYELINE_GC_CENSUS"] = "1" if args.census else "0"
    server = run.start_server("byeline", 15090, work)
    try:
        argv = run.sipp_uac(
            15090,
            run.scenario(work, 0),
            args.rate,
            args.rate * args.seconds,
            54100,
            args.seconds + 20,
        )
        subprocess.run(
            run.pinned(run.LOAD_CORE, argv),
            cwd=work,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=args.seconds + 60,
            check=False,
        )
    finally:
        server.stop()
    calls = args.rate * args.seconds
    for line in out.read_text().splitlines():
        report = json.loads(line)
        total = sum(report["cpu_ms"].values())
        print(
            f"{calls} calls at {args.rate}/s, thresholds {report['threshold']}: "
            + ", ".join(
                f"gen{g} {report['collections'][g]} collections {report['cpu_ms'][g]} ms"
                f" (longest {report.get('longest_ms', {}).get(g, '-')} ms)"
                for g in ("0", "1", "2")
            )
            + f"; {1000 * total / calls:.1f} µs per call"
        )
        if report["young_types"]:
            print(f"young generation at a collection: {report['young_objects_per_collection']}")
            for name, count in report["young_types"].items():
                print(f"  {count:8d} {name}")


if __name__ == "__main__":
    main()
