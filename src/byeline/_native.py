"""The modules compiled to C extensions with mypyc, and the check that none is stale.

The call path (SIP parsing, transactions, SDP, the edge, the store's encoding, the media
stream) is typed strictly enough for mypyc to compile it unchanged: ``make native`` builds one
extension module beside each source file listed here, and Python imports the extension in
preference to the ``.py``.  The sources stay the reference: without the extensions byeline
runs the same code as pure Python, only slower.

A compiled module older than its source would run yesterday's code, so importing byeline with
one refuses, in one line, before anything else runs.
"""

from __future__ import annotations

import importlib.machinery
from pathlib import Path

NATIVE_MODULES: tuple[str, ...] = (
    "byeline.sip.grammar",
    "byeline.sip.message",
    "byeline.sip.dialog",
    "byeline.sip.transaction",
    "byeline.sip.sdp",
    "byeline.sip.digest",
    "byeline.sip.entropy",
    "byeline.edge.attributes",
    "byeline.edge.call",
    "byeline.edge.overload",
    "byeline.edge.server",
    "byeline.edge.timers",
    "byeline.edge.trunk",
    "byeline.net.ports",
    "byeline.net.rtp",
    "byeline.net.sip_transport",
    "byeline.rtp.dtmf",
    "byeline.rtp.g711",
    "byeline.rtp.jitterbuffer",
    "byeline.rtp.packet",
    "byeline.rtp.stream",
    "byeline.store.callstore",
    "byeline.store.operations",
    "byeline.store.writer",
)

_PACKAGE_ROOT = Path(__file__).resolve().parent  # src/byeline


def source_path(module: str) -> Path:
    """The ``.py`` file of ``module`` (a name from :data:`NATIVE_MODULES`)."""
    return _PACKAGE_ROOT.joinpath(*module.split(".")[1:]).with_suffix(".py")


def extension_path(module: str) -> Path | None:
    """The compiled extension of ``module`` beside its source, or None when there is none."""
    source = source_path(module)
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = source.with_name(source.stem + suffix)
        if candidate.exists():
            return candidate
    return None


def compiled() -> list[str]:
    """The modules of :data:`NATIVE_MODULES` that have a compiled extension."""
    return [m for m in NATIVE_MODULES if extension_path(m) is not None]


def stale() -> list[str]:
    """The modules whose compiled extension is older than their source."""
    out = []
    for module in NATIVE_MODULES:
        ext = extension_path(module)
        if ext is not None and source_path(module).stat().st_mtime > ext.stat().st_mtime:
            out.append(module)
    return out


def check() -> None:
    """Refuse to run stale compiled code (ImportError, one line)."""
    old = stale()
    if old:
        raise ImportError(
            f"byeline: the compiled {', '.join(old)} is older than its source; "
            "run `make native` (or `make clean-native` to run pure Python)"
        )
