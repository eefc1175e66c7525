"""The call path compiled with mypyc: what runs is what the sources say.

``make test`` sets ``BYELINE_REQUIRE_NATIVE``: then every module of ``NATIVE_MODULES`` must be
imported from its compiled extension, so a build that silently fell back to pure Python fails
here.  Without it (a plain ``pytest`` in a checkout never built) the check is skipped.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from byeline import _native


def _python(where: Path, code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter that imports byeline from ``where``."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=where,
        env={**os.environ, "PYTHONPATH": str(where)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_native_modules_are_the_compiled_ones() -> None:
    if not os.environ.get("BYELINE_REQUIRE_NATIVE") and not _native.compiled():
        pytest.skip("not built: `make native` compiles the call path")
    for name in _native.NATIVE_MODULES:
        module = importlib.import_module(name)
        origin = Path(module.__file__ or "")
        assert origin.suffix == ".so", f"{name} runs as pure Python from {origin}"
        assert origin == _native.extension_path(name)
    assert _native.stale() == []


def test_every_listed_module_has_a_source() -> None:
    for name in _native.NATIVE_MODULES:
        assert _native.source_path(name).is_file(), name


def test_a_compiled_module_older_than_its_source_refuses_to_import(tmp_path: Path) -> None:
    """A copy of the package where one source is edited after its extension was built."""
    package = Path(_native.__file__).parent
    copy = tmp_path / "byeline"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    name = _native.NATIVE_MODULES[0]
    source = copy.joinpath(*name.split(".")[1:]).with_suffix(".py")
    fake_extension = source.with_name(source.stem + importlib.machinery.EXTENSION_SUFFIXES[0])
    fake_extension.write_bytes(b"")  # never loaded: the check runs first
    os.utime(fake_extension, (1_000_000, 1_000_000))
    os.utime(source, (2_000_000, 2_000_000))
    run = _python(tmp_path, "import byeline")
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: byeline: the compiled byeline.sip.grammar is older")
    assert "make native" in last
    # Built again (newer than the source): the check passes.
    os.utime(fake_extension, (3_000_000, 3_000_000))
    fake_extension.unlink()
    run = _python(tmp_path, "import byeline, byeline._native as n; print(n.stale())")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


# Classes made on every call or packet: their __init__ is written out so that mypyc compiles it
# (the one @dataclass generates is interpreted, several times slower).
HOT_CLASSES = (
    "byeline.sip.message:Request",
    "byeline.sip.message:Response",
    "byeline.sip.transaction:Transmit",
    "byeline.sip.transaction:Terminated",
    "byeline.sip.dialog:Dialog",
    "byeline.sip.sdp:SessionDescription",
    "byeline.sip.sdp:MediaDescription",
    "byeline.sip.sdp:Negotiated",
    "byeline.edge.server:CallLeg",
    "byeline.edge.call:CallResult",
    "byeline.edge.trunk:TrunkMatch",
    "byeline.net.sip_transport:Flow",
    "byeline.rtp.packet:RtpPacket",
)


@pytest.mark.parametrize("path", HOT_CLASSES)
def test_hot_classes_have_a_compiled_init(path: str) -> None:
    if not os.environ.get("BYELINE_REQUIRE_NATIVE") and not _native.compiled():
        pytest.skip("not built: `make native` compiles the call path")
    module_name, class_name = path.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    assert not hasattr(cls.__init__, "__code__"), f"{path}.__init__ runs interpreted"
