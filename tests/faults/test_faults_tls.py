"""TLS at the edge: TLS 1.2 at least, and the certificate reloaded on SIGHUP (a bad pair is
refused and the previous certificate stays in service)."""

from __future__ import annotations

import asyncio
import shutil
import signal
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from e2e_harness import self_signed

from byeline.cli import reload_tls_context, tls_context


async def _served_cn(port: int, *, maximum: ssl.TLSVersion | None = None) -> str:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if maximum is not None:
        ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        ctx.maximum_version = maximum
    _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=ctx), 10)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        text = ssl.DER_cert_to_PEM_cert(der)
    finally:
        writer.close()
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-subject"],
        input=text,
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    return out.stdout.strip().rsplit("=", 1)[-1].strip()


def test_server_context_refuses_below_tls_1_2(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "edge")
    ctx = tls_context(str(cert), str(key))
    assert ctx is not None
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    # A pair that does not load leaves the live context as it was.
    other_cert, _ = self_signed(tmp_path, "other")
    assert not reload_tls_context(ctx, str(other_cert), str(key))  # key of another cert


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
async def test_sighup_reloads_theself_signed(serve: Any, tmp_path: Path) -> None:
    first_cert, first_key = self_signed(tmp_path, "first")
    second_cert, second_key = self_signed(tmp_path, "second")
    live_cert, live_key = tmp_path / "live.crt", tmp_path / "live.key"
    shutil.copy(first_cert, live_cert)
    shutil.copy(first_key, live_key)
    server = await serve(
        "--tls-cert", str(live_cert), "--tls-key", str(live_key), "--agent", "dtmf", transport="tls"
    )
    assert await _served_cn(server.port) == "first"
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await _served_cn(server.port, maximum=ssl.TLSVersion.TLSv1_1)

    # Renewed files, then SIGHUP: new connections get the new certificate.
    shutil.copy(second_cert, live_cert)
    shutil.copy(second_key, live_key)
    server.proc.send_signal(signal.SIGHUP)
    for _ in range(100):
        if "TLS certificate reloaded" in server.log:
            break
        await asyncio.sleep(0.05)
    assert await _served_cn(server.port) == "second"

    # A half-written renewal (the key does not match): refused, the previous one stays.
    shutil.copy(first_cert, live_cert)
    server.proc.send_signal(signal.SIGHUP)
    for _ in range(100):
        if "TLS certificate reload failed" in server.log:
            break
        await asyncio.sleep(0.05)
    assert "TLS certificate reload failed" in server.log
    assert await _served_cn(server.port) == "second"
    assert await server.stop() == 0
