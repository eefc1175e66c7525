"""The long fuzz run: every byeline parser, a million inputs each, crashes counted.

    .venv/bin/python fuzz/run.py                      # all targets, 1,000,000 inputs each
    .venv/bin/python fuzz/run.py --runs 20000 sip sdp # a quick look at two targets
    .venv/bin/python fuzz/run.py --engine mutate      # without atheris

Engines:

* ``atheris`` (default when ``import atheris`` works): coverage-guided libFuzzer, one
  subprocess per target, seed corpus written to a temporary directory, byeline's modules
  instrumented. Crash inputs are written to ``fuzz/crashes/<target>/``.
* ``mutate``: a plain mutation loop in-process (flips, cuts, splices of grammar bytes) over the
  same seed corpus, bounded by ``--runs`` and ``--max-seconds``. No dependency.

A *crash* is any exception other than the target's documented ``ValueError`` family, or a hang
(libFuzzer ``-timeout``). Each target prints one line: inputs tried, seconds, inputs/s, crashes.
This is not part of ``make test``; the short property run is tests/security/test_fuzz_properties.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from byeline.sip.message import Headers

ROOT = Path(__file__).resolve().parents[1]
RFC4475 = ROOT.parent / "shared" / "rfc4475"
CRASHES = Path(__file__).resolve().parent / "crashes"

Target = Callable[[bytes], None]


def _targets() -> dict[str, Target]:
    """name -> function(bytes); imported lazily so atheris can instrument byeline first."""
    from byeline.agent.routes import RouteDecision, parse_routes
    from byeline.edge.attributes import HeaderRefused, check_header
    from byeline.edge.trunk import parse_trunk
    from byeline.rtp.dtmf import DtmfReceiver, TelephoneEvent, parse_dtmf_relay
    from byeline.rtp.packet import RtpPacket, parse_rtcp
    from byeline.sip import sdp
    from byeline.sip.digest import DigestChallenger, DigestCredentials, parse_auth_header
    from byeline.sip.message import Request, SipParseError, StreamFramer, parse_message

    def sip(data: bytes) -> None:
        for stream in (False, True):
            try:
                message = parse_message(data, stream=stream)
            except SipParseError:
                continue
            with contextlib.suppress(ValueError):
                message.serialize()

    def framer(data: bytes) -> None:
        f = StreamFramer()
        step = 1 + (data[0] % 97 if data else 0)
        try:
            for i in range(0, len(data), step):
                f.feed(data[i : i + step])
                for message in f.messages():
                    with contextlib.suppress(SipParseError):
                        parse_message(message, stream=True)
        except SipParseError:
            pass

    def sdp_target(data: bytes) -> None:
        try:
            offer = sdp.SessionDescription.parse(data)
            sdp.answer_offer(
                offer, media_ip="127.0.0.1", media_port=4000, session_id=1, session_version=1
            )
        except ValueError:
            pass

    def rtp(data: bytes) -> None:
        with contextlib.suppress(ValueError):
            RtpPacket.parse(data)

    def rtcp(data: bytes) -> None:
        with contextlib.suppress(ValueError):
            parse_rtcp(data)

    def dtmf(data: bytes) -> None:
        receiver = DtmfReceiver()
        for i in range(0, len(data), 8):
            chunk = data[i : i + 8]
            with contextlib.suppress(ValueError):
                TelephoneEvent.parse(chunk[4:])
            with contextlib.suppress(ValueError):
                receiver.receive_payload(int.from_bytes(chunk[:4], "big"), chunk[4:])
        parse_dtmf_relay(data)

    challenger = DigestChallenger("byeline", b"k" * 32)

    def digest(data: bytes) -> None:
        text = data.decode("utf-8", "replace")
        for parse in (parse_auth_header, DigestCredentials.parse):
            with contextlib.suppress(ValueError):
                parse(text)
        verification = challenger.verify("INVITE", text, "five9", "secret", 1000.0)
        if verification.ok:
            raise AssertionError("forged credentials verified")

    def _json(data: bytes) -> object:
        try:
            return json.loads(data)
        except (ValueError, RecursionError):
            return None

    def trunk(data: bytes) -> None:
        doc = _json(data)
        with contextlib.suppress(ValueError):
            parse_trunk(doc)

    def routes(data: bytes) -> None:
        doc = _json(data)
        try:
            parsed = parse_routes(doc)
        except ValueError:
            return
        # A decision from any parsed route: metadata is JSON within the header limit.
        for route in parsed.routes:
            meta = RouteDecision(route, intent=data.decode("utf-8", "replace")).metadata({})
            if len(meta.encode()) > 1024:
                raise AssertionError(f"metadata of {len(meta)} bytes")

    def header(data: bytes) -> None:
        text = data.decode("utf-8", "replace")
        name, _, value = text.partition(":")
        try:
            check_header(name, value)
        except HeaderRefused:
            return
        base = [
            ("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx"),
            ("From", "<sip:a@b>;tag=1"),
            ("To", "<sip:c@d>;tag=2"),
            ("Call-ID", "x"),
            ("CSeq", "2 BYE"),
        ]
        request = Request(method="BYE", uri="sip:a@b", headers=_headers([*base, (name, value)]))
        parsed = parse_message(request.serialize(), stream=False)
        names = [n for n, _ in parsed.headers if n != "Content-Length"]
        expected = [*(n for n, _ in base), name]
        if names != expected or parsed.headers.getall(name)[-1] != value.strip():
            raise AssertionError(f"header {name!r} became {list(parsed.headers)!r}")

    return {
        "sip": sip,
        "framer": framer,
        "sdp": sdp_target,
        "rtp": rtp,
        "rtcp": rtcp,
        "dtmf": dtmf,
        "digest": digest,
        "trunk": trunk,
        "routes": routes,
        "header": header,
    }


def _headers(items: list[tuple[str, str]]) -> Headers:
    from byeline.sip.message import Headers

    return Headers(items)


# -- seed corpus ------------------------------------------------------------------------------


def seeds(target: str) -> list[bytes]:
    """Starting inputs per target: torture messages, test vectors, example files."""
    torture = [p.read_bytes() for p in sorted(RFC4475.glob("*.dat"))] if RFC4475.is_dir() else []
    offer = (
        b"v=0\r\no=- 1 1 IN IP4 192.0.2.5\r\ns=-\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\n"
        b"m=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 "
        b"telephone-event/8000\r\na=fmtp:101 0-16\r\na=sendrecv\r\n"
    )
    if target in ("sip", "framer"):
        return [*torture, b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 0\r\n\r\n"]
    if target == "sdp":
        bodies = [t.split(b"\r\n\r\n", 1)[1] for t in torture if b"\r\n\r\nv=0" in t]
        return [offer, *bodies]
    if target == "rtp":
        return [bytes.fromhex("8065000100000a000000123405 0a00a0".replace(" ", "")), bytes(12)]
    if target == "rtcp":
        return [
            bytes.fromhex("80c8000600000001") + bytes(20),
            bytes.fromhex("81c9000700000001") + bytes(24),
            bytes.fromhex("81cb000100000001"),
        ]
    if target == "dtmf":
        return [b"\x00\x00\x00\xa0\x05\x0a\x00\xa0" * 3, b"Signal=5\r\nDuration=160\r\n"]
    if target == "digest":
        return [
            b'Digest username="five9", realm="byeline", nonce="abc", uri="sip:x@y", '
            b'response="0123456789abcdef0123456789abcdef", algorithm=MD5, qop=auth, '
            b'nc=00000001, cnonce="xyz", opaque="op"'
        ]
    if target == "trunk":
        data_dir = ROOT / "tests" / "data"
        files = [*data_dir.rglob("trunk*.json"), *(data_dir / "trunks").glob("*.json")]
        return [p.read_bytes() for p in files]
    if target == "routes":
        import yaml

        docs = [yaml.safe_load((ROOT / "src/byeline/examples/routes.yaml").read_text())]
        e2e = ROOT / "tests/data/e2e/routes.yaml"
        if e2e.is_file():
            docs.append(yaml.safe_load(e2e.read_text()))
        return [json.dumps(d).encode() for d in docs]
    if target == "header":
        return [b"X-RouteReason:caller asked for billing", b'X-MetaData:{"route":"billing"}']
    raise KeyError(target)


# -- mutate engine ----------------------------------------------------------------------------

_SPECIAL = [b"\r\n", b"\n", b"\r", b" ", b"\t", b":", b";", b",", b'"', b"<", b">", b"\x00"]
_SPECIAL += [b"\xff", b"%", b"=", b"[", b"]", b"\r\n\r\n", b"{", b"}", b"9" * 30, b"-1"]


def mutate(rng: random.Random, corpus: list[bytes]) -> bytes:
    data = bytearray(rng.choice(corpus))
    for _ in range(rng.randint(1, 6)):
        pos = rng.randint(0, len(data))
        op = rng.randint(0, 5)
        if op == 0:
            data[pos:pos] = rng.choice(_SPECIAL)
        elif op == 1:
            del data[pos : pos + rng.randint(1, 32)]
        elif op == 2 and data:
            data[min(pos, len(data) - 1)] = rng.randint(0, 255)
        elif op == 3:
            other = rng.choice(corpus)
            start = rng.randint(0, len(other))
            data[pos:pos] = other[start : start + rng.randint(1, 64)]
        elif op == 4 and data:
            end = min(len(data), pos + rng.randint(1, 64))
            data[pos:pos] = data[pos:end] * rng.randint(1, 8)
        else:
            data[pos:pos] = rng.randbytes(rng.randint(1, 8))
    return bytes(data[:70000])


def run_mutate(name: str, runs: int, max_seconds: float, seed: int) -> tuple[int, float, int]:
    target = _targets()[name]
    corpus = seeds(name)
    rng = random.Random(seed)
    crashes = 0
    start = time.monotonic()
    done = 0
    for done in range(1, runs + 1):
        data = mutate(rng, corpus)
        try:
            target(data)
        except Exception:
            crashes += 1
            _save(name, data)
            if crashes <= 3:
                traceback.print_exc()
        if done % 4096 == 0 and time.monotonic() - start > max_seconds:
            break
    return done, time.monotonic() - start, crashes


def _save(name: str, data: bytes) -> Path:
    folder = CRASHES / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"crash-{abs(hash(data)):x}"
    path.write_bytes(data)
    return path


# -- atheris engine ---------------------------------------------------------------------------


def atheris_child(name: str, argv: list[str]) -> None:
    """Runs in the subprocess: instrument byeline, fuzz one target with libFuzzer."""
    import atheris  # type: ignore[import-untyped]

    with atheris.instrument_imports(include=["byeline"]):
        targets = _targets()
    target = targets[name]
    atheris.Setup([sys.argv[0], *argv], target)
    atheris.Fuzz()


_DONE = re.compile(r"Done (\d+) runs in (\d+) second")


def run_atheris(name: str, runs: int, max_seconds: float) -> tuple[int, float, int]:
    crash_dir = CRASHES / name
    crash_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"byeline-fuzz-{name}-") as corpus:
        for i, data in enumerate(seeds(name)):
            Path(corpus, f"seed-{i}").write_bytes(data)
        argv = [
            f"-runs={runs}",
            f"-max_total_time={int(max_seconds)}",
            "-max_len=8192",
            "-timeout=10",
            "-rss_limit_mb=4096",
            f"-artifact_prefix={crash_dir}/",
            "-print_final_stats=1",
            corpus,
        ]
        start = time.monotonic()
        proc = subprocess.run(
            [sys.executable, __file__, "--child", name, "--", *argv],
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.monotonic() - start
    log = proc.stdout + proc.stderr
    match = _DONE.search(log)
    done_runs = int(match.group(1)) if match else 0
    crashed = proc.returncode != 0
    if crashed:
        tail = "\n".join(log.splitlines()[-40:])
        print(f"--- {name}: libFuzzer exited {proc.returncode}\n{tail}", file=sys.stderr)
        stats = re.search(r"stat::number_of_executed_units: (\d+)", log)
        done_runs = int(stats.group(1)) if stats else done_runs
    return done_runs, elapsed, 1 if crashed else 0


def main() -> int:
    if "--child" in sys.argv:
        i = sys.argv.index("--child")
        atheris_child(sys.argv[i + 1], sys.argv[sys.argv.index("--") + 1 :])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help="targets to run (default: all)")
    parser.add_argument("--runs", type=int, default=1_000_000, help="inputs per target")
    parser.add_argument("--max-seconds", type=float, default=900, help="time bound per target")
    parser.add_argument("--engine", choices=("atheris", "mutate"), default=None)
    parser.add_argument("--seed", type=int, default=4475)
    args = parser.parse_args()
    engine = args.engine
    if engine is None:
        import importlib.util

        engine = "atheris" if importlib.util.find_spec("atheris") else "mutate"
    names = args.targets or list(_target_names())
    print(f"engine {engine}, {args.runs} inputs per target, {args.max_seconds:.0f} s bound")
    print(f"{'target':<8} {'inputs':>10} {'seconds':>8} {'inputs/s':>9} {'crashes':>8}")
    total_crashes = 0
    for name in names:
        if engine == "atheris":
            done, elapsed, crashes = run_atheris(name, args.runs, args.max_seconds)
        else:
            done, elapsed, crashes = run_mutate(name, args.runs, args.max_seconds, args.seed)
        total_crashes += crashes
        rate = done / elapsed if elapsed else 0.0
        print(f"{name:<8} {done:>10} {elapsed:>8.1f} {rate:>9.0f} {crashes:>8}", flush=True)
    return 1 if total_crashes else 0


def _target_names() -> list[str]:
    return ["sip", "framer", "sdp", "rtp", "rtcp", "dtmf", "digest", "trunk", "routes", "header"]


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
