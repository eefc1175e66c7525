"""Compile byeline's call path with mypyc: ``python scripts/native.py [--clean]``.

Builds one C extension beside each module of ``byeline._native.NATIVE_MODULES`` (and mypyc's
shared runtime module in ``src/``), in place, so the editable install picks them up.  Needs a C
compiler and the Python headers.  ``--clean`` removes the extensions (pure Python again).
"""

from __future__ import annotations

import os
import runpy
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
BUILD = ROOT / "build" / "native"

_native = runpy.run_path(str(SRC / "byeline" / "_native.py"))
MODULES: tuple[str, ...] = _native["NATIVE_MODULES"]


def sources() -> list[Path]:
    return [SRC.joinpath(*m.split(".")).with_suffix(".py") for m in MODULES]


def clean() -> int:
    removed = 0
    for path in [*SRC.glob("*__mypyc.*.so"), *SRC.glob("byeline/**/*.so")]:
        path.unlink()
        removed += 1
    print(f"removed {removed} compiled module(s): byeline runs as pure Python")
    return 0


def build() -> int:
    from mypyc.build import mypycify
    from setuptools import setup

    started = time.monotonic()
    os.chdir(SRC)  # module names follow the paths; the extensions land beside the sources
    os.environ["MYPY_CACHE_DIR"] = str(BUILD / "mypy_cache")  # not a .mypy_cache in src/
    paths = [str(p.relative_to(SRC)) for p in sources()]
    # One group: calls between the modules stay C calls (about 5 % faster than one
    # extension per module, for a build that cannot run in parallel).
    extensions = mypycify(paths, opt_level="3", target_dir=str(BUILD / "c"))
    setup(
        name="byeline-native",
        ext_modules=extensions,
        script_args=[
            "--quiet",
            "build_ext",
            "--inplace",
            "--parallel",
            str(os.cpu_count() or 1),
            "--build-temp",
            str(BUILD / "temp"),
            "--build-lib",
            str(BUILD / "lib"),
        ],
    )
    missing = [m for m in MODULES if _native["extension_path"](m) is None]
    if missing:
        print(f"native build: no extension for {', '.join(missing)}", file=sys.stderr)
        return 1
    # The code is in the group module; the per-module extensions are small shims that the
    # build leaves alone when they are unchanged.  Each is stamped with this build's time, which
    # the stale check compares with its source.
    for module in MODULES:
        os.utime(_native["extension_path"](module))
    print(f"compiled {len(MODULES)} modules with mypyc in {time.monotonic() - started:.0f} s")
    return 0


def main() -> int:
    if "--clean" in sys.argv:
        return clean()
    return build()


if __name__ == "__main__":
    sys.exit(main())
