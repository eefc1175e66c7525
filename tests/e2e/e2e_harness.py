"""End-to-end harness: SIPp as the Five9 side against a real byeline (fixtures: conftest.py).

Two ways to run byeline:

* :func:`start_serve` runs ``byeline serve`` as a subprocess (temp dir, temp
  ``--db``, free ports), waits for its ``byeline: ready on`` line and stops it
  with SIGTERM: the CLI as an operator runs it.
* :func:`start_app` builds the app in-process (as ``byeline demo`` does) for the
  tests that need their own agent.

SIPp runs through :func:`byeline.five9.sipp.run_sipp` with its own SIP and
media ports, so several SIPp processes can run at once.  Everything is on
loopback.  Call records are read with :class:`byeline.store.CallStore` after
byeline has flushed them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from byeline.app import App, build_app
from byeline.config import ServeConfig
from byeline.five9.sipp import (
    SippMissing,
    SippResult,
    dtmf_capture,
    render_scenario,
    run_sipp,
    sipp_binary,
)
from byeline.store import CallStore
from byeline.store.records import CallRecord

DATA = Path(__file__).resolve().parents[1] / "data" / "e2e"
TRUNK = DATA / "trunk.json"
TRUNK_AUTH = DATA / "trunk-auth.json"
TRUNK_ELSEWHERE = DATA / "trunk-elsewhere.json"
ROUTES = DATA / "routes.yaml"
BYELINE = Path(sys.executable).with_name("byeline")
SERVICE = "+18005550100"

try:
    sipp_binary()
except SippMissing as exc:  # pragma: no cover - the CI image has SIPp
    pytest.skip(str(exc), allow_module_level=True)


# -- ports ---------------------------------------------------------------------------------


def free_port(kind: int = socket.SOCK_DGRAM, host: str = "127.0.0.1") -> int:
    """A port free for UDP (or TCP) on ``host`` right now, and for TCP too when asked UDP."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, kind) as s:
            s.bind((host, 0))
            port: int = s.getsockname()[1]
        other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
        with socket.socket(family, other) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port")


# RTP ranges: disjoint blocks per test, below the kernel's ephemeral ports (where SIPp's free
# ports come from), from a base that differs between concurrent runs.
_rtp_blocks = itertools.count(20000 + (os.getpid() % 24) * 500, 24)


def rtp_block() -> tuple[int, int]:
    """A fresh even RTP range of 12 pairs for one byeline."""
    low = next(_rtp_blocks)
    return low, low + 23


# -- byeline serve as a subprocess ---------------------------------------------------------


@dataclass
class Served:
    """A running ``byeline serve``."""

    proc: asyncio.subprocess.Process
    db: Path
    port: int
    host: str
    stderr: list[str] = field(default_factory=list)
    _drain: asyncio.Task[None] | None = None

    @property
    def target(self) -> str:
        """SIPp's ``remote_host:port``."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def log(self) -> str:
        """Everything byeline wrote on stderr so far."""
        return "".join(self.stderr)

    async def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then the exit status (killed after ``timeout``)."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._drain is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drain, 5)
        assert self.proc.returncode is not None
        return self.proc.returncode

    def records(self) -> list[CallRecord]:
        """Every call record, oldest first (byeline must have stopped)."""
        return read_records(self.db)


async def start_serve(
    tmp: Path,
    *args: str,
    transport: str = "udp",
    host: str = "127.0.0.1",
    trunks: tuple[Path, ...] = (TRUNK,),
    routes: Path | None = ROUTES,
    rtp: tuple[int, int] | None = None,
    port: int | None = None,
) -> Served:
    """Start ``byeline serve`` listening on ``transport:host:PORT``; wait until it is ready."""
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    port = port or free_port(kind, host)
    low, high = rtp or rtp_block()
    db = tmp / "byeline.db"
    shown = f"[{host}]" if ":" in host else host
    argv = [str(BYELINE), "serve", "--sip", f"{transport}:{shown}:{port}"]
    for trunk in trunks:
        argv += ["--trunk", str(trunk)]
    if routes is not None:
        argv += ["--routes", str(routes)]
    argv += ["--db", str(db), "--rtp-ports", f"{low}-{high}", *args]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=tmp,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    served = Served(proc=proc, db=db, port=port, host=host)
    ready = asyncio.get_running_loop().create_future()

    async def drain() -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            line = raw.decode(errors="replace")
            served.stderr.append(line)
            if line.startswith("byeline: ready on") and not ready.done():
                ready.set_result(True)
        if not ready.done():
            ready.set_result(False)

    served._drain = asyncio.ensure_future(drain())
    try:
        ok = await asyncio.wait_for(ready, 20)
    except TimeoutError:
        ok = False
    if not ok:
        await served.stop(5)
        raise AssertionError(f"byeline serve did not start: {served.log[-2000:]}")
    return served


# -- byeline in-process ----------------------------------------------------------------------


async def start_app(tmp: Path, **overrides: Any) -> tuple[App, int]:
    """Build and start the app in this process on a free UDP port."""
    port = free_port()
    low, high = rtp_block()
    values: dict[str, Any] = {
        "trunk": [str(TRUNK)],
        "routes": str(ROUTES),
        "sip": [f"udp:127.0.0.1:{port}"],
        "db": str(tmp / "byeline.db"),
        "rtp_ports": f"{low}-{high}",
    }
    values.update(overrides)
    app = build_app(ServeConfig(**values))
    await app.start()
    return app, port


# -- records -----------------------------------------------------------------------------------


def read_records(db: Path) -> list[CallRecord]:
    """Every call in ``db`` with its trace, oldest first."""
    store = CallStore.open(str(db))
    try:
        records = store.list_calls(limit=100)
        full = [store.get_call(r.call_id) for r in records]
    finally:
        store.close()
    return sorted((r for r in full if r is not None), key=lambda r: r.started_at)


def trace_lines(record: CallRecord) -> list[str]:
    """``"in INVITE"``, ``"out 200"``... for each traced message, in order."""
    out = []
    for m in record.trace:
        first = m.first_line
        word = first.split()[1] if first.startswith("SIP/2.0") else first.split()[0]
        out.append(f"{m.direction} {word}")
    return out


# -- SIPp --------------------------------------------------------------------------------------


def scenario(name: str, directory: Path, *, digit: str | None = None, **marks: str) -> Path:
    """Render a bundled scenario into ``directory``; ``digit`` plays its RFC 4733 capture.

    ``marks`` replace ``@NAME@`` placeholders (e.g. the status a refusal scenario expects).
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = render_scenario(name, directory, pcap=dtmf_capture(digit) if digit else None)
    if marks:
        text = path.read_text("utf-8")
        for key, value in marks.items():
            text = text.replace(f"@{key.upper()}@", value)
        path.write_text(text, "utf-8")
    return path


async def sipp(
    target: str,
    name: str,
    workdir: Path,
    *,
    digit: str | None = None,
    marks: dict[str, str] | None = None,
    variables: dict[str, str] | None = None,
    transport: str = "u1",
    extra: list[str] | None = None,
    timeout: float = 20.0,
    service: str = SERVICE,
) -> SippResult:
    """Run one SIPp call of scenario ``name`` against ``target`` on its own ports."""
    path = scenario(name, workdir, digit=digit, **(marks or {}))
    local_ip = "::1" if target.startswith("[") else "127.0.0.1"
    kind = socket.SOCK_DGRAM if transport.startswith("u") else socket.SOCK_STREAM
    media = _free_media_port(local_ip)
    return await run_sipp(
        target,
        path,
        workdir=workdir,
        service=service,
        variables={"ani": "5550100", **(variables or {})},
        local_port=free_port(kind, local_ip),
        transport=transport,
        extra=["-mp", str(media), *(extra or [])],
        timeout=timeout,
    )


def _free_media_port(host: str) -> int:
    # SIPp binds media_port and media_port+2 (RTP and RTCP of the echo) for audio.
    for _ in range(50):
        port = free_port(socket.SOCK_DGRAM, host) & ~1
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            for p in (port, port + 1, port + 2, port + 3):
                with socket.socket(family, socket.SOCK_DGRAM) as s:
                    s.bind((host, p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free media port")


async def answered(workdir: Path, timeout: float = 10.0) -> bool:
    """Wait until the SIPp call running in ``workdir`` has sent its ACK (the call is up)."""
    for _ in range(int(timeout / 0.05)):
        for log in workdir.glob("*_messages.log"):
            if "\nACK sip:" in log.read_text(errors="replace"):
                return True
        await asyncio.sleep(0.05)
    return False


def why(result: SippResult) -> str:
    """SIPp's own account of a failure, for assertion messages."""
    return (
        f"sipp exit {result.returncode}\nerrors:\n{result.errors[-1500:]}\n"
        f"stderr:\n{result.stderr[-800:]}\nmessages:\n{result.messages[-3000:]}"
    )


def received(result: SippResult, first_word: str) -> list[str]:
    """The messages SIPp received whose first line starts with ``first_word``, in full."""
    out = []
    for block in result.messages.split("----------------------------------------------- "):
        if "message received" not in block:
            continue
        lines = block.splitlines()
        start = next(
            (
                i
                for i, line in enumerate(lines)
                if re.match(r"^(SIP/2\.0 \d{3}|[A-Z]+ \S+ SIP/)", line)
            ),
            None,
        )
        if start is None:
            continue
        message = "\n".join(lines[start:])
        if lines[start].startswith(first_word):
            out.append(message)
    return out


def header(message: str, name: str) -> str | None:
    """The first value of header ``name`` in a message as SIPp logged it."""
    for line in message.splitlines()[1:]:
        if not line.strip():
            break
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == name.lower():
            return value.strip()
    return None


def self_signed(directory: Path, name: str = "localhost") -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1 (``openssl`` CLI), as PEM files."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl CLI")
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={name}",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key
