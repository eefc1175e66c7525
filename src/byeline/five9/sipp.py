"""SIPp as the Five9 side: scenario files shipped with byeline and a runner.

SIPp is the independent peer of the tests, the demo and the benchmarks: a
Five9 IVR transferring a call, pressing keys over RFC 4733, hanging up first,
or answering as a UAS.  The scenarios live in ``five9/sipp/``; a scenario can
name an RTP capture to play with ``[$pcap]``, which SIPp cannot take as a
variable, so :func:`render_scenario` writes it in (or drops the playback).
"""

from __future__ import annotations

import asyncio
import re
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

SIPP_SHARE = Path("/usr/share/sip-tester")
"""Where Debian's sip-tester keeps its RTP captures (``dtmf_2833_1.pcap``...)."""

_PLAY_BLOCK = re.compile(
    r"\s*<nop>\s*<action>\s*<exec play_pcap_audio=\"\[\$pcap\]\"/>"
    r"\s*</action>\s*</nop>"
)


class SippMissing(RuntimeError):
    """SIPp is not installed."""


def sipp_binary() -> str:
    """The path of ``sipp``, or SippMissing with the fix in one line."""
    path = shutil.which("sipp")
    if path is None:
        raise SippMissing("sipp not found: install Debian's sip-tester (make test does it)")
    return path


def dtmf_capture(digit: str) -> Path:
    """SIPp's RFC 2833 capture for one key: 0-9, * or #."""
    name = {"*": "star", "#": "pound"}.get(digit, digit)
    path = SIPP_SHARE / f"dtmf_2833_{name}.pcap"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no SIPp DTMF capture for key {digit!r}")
    return path


def scenario_text(name: str) -> str:
    """The text of a bundled scenario (``five9_dtmf`` ...)."""
    return (resources.files("byeline.five9") / "sipp" / f"{name}.xml").read_text("utf-8")


def render_scenario(name: str, directory: Path, *, pcap: Path | None = None) -> Path:
    """Write the scenario ``name`` into ``directory``, with ``pcap`` played or no playback."""
    text = scenario_text(name)
    text = _PLAY_BLOCK.sub("", text) if pcap is None else text.replace("[$pcap]", str(pcap))
    suffix = f"_{pcap.stem}" if pcap is not None else ""
    path = directory / f"{name}{suffix}.xml"
    path.write_text(text, "utf-8")
    return path


@dataclass
class SippResult:
    """What one SIPp run did."""

    returncode: int
    stdout: str
    stderr: str
    log: str = ""
    errors: str = ""
    messages: str = ""
    received_byes: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """SIPp exits 0 when every call succeeded."""
        return self.returncode == 0


async def run_sipp(
    target: str,
    scenario: Path,
    *,
    workdir: Path,
    service: str = "+18005550100",
    variables: dict[str, str] | None = None,
    calls: int = 1,
    rate: float | None = None,
    local_port: int = 0,
    transport: str = "u1",
    extra: list[str] | None = None,
    timeout: float = 60.0,
) -> SippResult:
    """Run SIPp against ``target`` and collect its logs and the BYEs it received."""
    local_ip = "::1" if target.startswith("[") else "127.0.0.1"
    args = [
        sipp_binary(),
        target,
        "-sf",
        str(scenario),
        "-s",
        service,
        "-m",
        str(calls),
        "-i",
        local_ip,
        "-mi",
        local_ip,
        "-t",
        transport,
        "-nostdin",
        "-trace_err",
        "-trace_logs",
        "-trace_msg",
        "-timeout",
        f"{int(timeout)}s",
        "-timeout_error",
    ]
    if local_port:
        args += ["-p", str(local_port)]
    if rate is not None:
        args += ["-r", str(rate)]
    for key, value in (variables or {}).items():
        args += ["-set", key, value]
    args += extra or []
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=workdir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout + 10)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
    stem = scenario.stem
    result = SippResult(
        proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")
    )
    for path in workdir.glob(f"{stem}_*_logs.log"):
        result.log += path.read_text(errors="replace")
    for path in workdir.glob(f"{stem}_*_errors.log"):
        result.errors += path.read_text(errors="replace")
    for path in workdir.glob(f"{stem}_*_messages.log"):
        result.messages += path.read_text(errors="replace")
    result.received_byes = received_byes(result.messages)
    return result


def received_byes(messages: str) -> list[dict[str, str]]:
    """The X- headers of every BYE that SIPp received, from its ``-trace_msg`` log."""
    byes: list[dict[str, str]] = []
    for block in messages.split("----------------------------------------------- "):
        if "message received" not in block:
            continue
        lines = block.splitlines()
        start = next((i for i, line in enumerate(lines) if line.startswith("BYE ")), None)
        if start is None:
            continue
        headers: dict[str, str] = {}
        for line in lines[start + 1 :]:
            if not line.strip():
                break
            name, sep, value = line.partition(":")
            if sep and name.lower().startswith("x-"):
                headers[name.strip()] = value.strip()
        byes.append(headers)
    return byes
