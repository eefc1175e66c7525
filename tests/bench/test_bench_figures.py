"""The bench's own arithmetic: the capacity plot from a report, and the handback bench's figures."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from bench_scripts import load

from byeline.five9.plot import Series, nice_ticks, svg_plot

SVG = "{http://www.w3.org/2000/svg}"

plot = load("plot")
handback = load("handback")


def _step(calls: int, cpu: float, rss: float, ok: bool = True) -> dict[str, Any]:
    return {"calls_up": calls, "server_cpu_pct": cpu, "server_rss_mb": rss, "ok": ok}


REPORT: dict[str, Any] = {
    "mode": {"media_hold_s": 10.0},
    "environment": {"git_head": "abc1234", "measured": "working tree", "cpu": "Test CPU"},
    "media": {
        "server_idle_rss_mb": 150.0,
        "max_calls": 200,
        "steps": [_step(50, 5.0, 152.0), _step(200, 20.5, 157.0), _step(400, 97.0, 170.0, False)],
    },
}


def test_nice_ticks() -> None:
    assert nice_ticks(97.0) == [0, 20, 40, 60, 80, 100]
    assert nice_ticks(1400) == [0, 500, 1000, 1500]
    assert nice_ticks(0.0) == [0.0, 1.0]
    assert nice_ticks(12.0)[-1] >= 12.0


def test_capacity_svg_has_every_point_and_the_axis_labels() -> None:
    root = ET.fromstring(plot.capacity_svg(REPORT))
    assert root.tag == f"{SVG}svg"
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    assert "CPU (% of one core)" in texts and "RSS (MB)" in texts
    assert any(t.startswith("concurrent calls") for t in texts)
    assert any("abc1234" in t for t in texts)
    points = [c for c in root.iter(f"{SVG}circle") if c.find(f"{SVG}title") is not None]
    titles = sorted(c.find(f"{SVG}title").text or "" for c in points)  # type: ignore[union-attr]
    assert titles == sorted(
        [
            "server CPU: 50, 5",
            "server CPU: 200, 20.5",
            "server CPU: 400, 97",
            "server RSS: 50, 152",
            "server RSS: 200, 157",
            "server RSS: 400, 170",
        ]
    )
    hollow = [c for c in points if c.get("fill") == "#fff"]
    assert len(hollow) == 2  # the failed 400-call step, in both panels


def test_capacity_svg_refuses_a_report_without_media() -> None:
    with pytest.raises(plot.ReportError, match="no media section"):
        plot.capacity_svg({"signalling": {}})
    with pytest.raises(plot.ReportError, match="failed"):
        plot.capacity_svg({"media": {"error": "boom"}})


def test_points_land_on_their_ticks() -> None:
    svg = svg_plot(
        [Series("s", [(0.0, 0.0), (10.0, 10.0)], "#000")],
        x_label="x",
        y_label="y",
        width=200,
        height=200,
        standalone=True,
    )
    root = ET.fromstring(svg)
    dots = [c for c in root.iter(f"{SVG}circle") if c.find(f"{SVG}title") is not None]
    (x0, y0), (x1, y1) = ((float(c.get("cx", 0)), float(c.get("cy", 0))) for c in dots)
    assert x1 > x0 and y1 < y0  # up and to the right


def test_handback_steps_and_medians() -> None:
    steps = handback.parse_steps("1:50,100:400")
    assert [(s.concurrency, s.calls) for s in steps] == [(1, 50), (100, 400)]
    with pytest.raises(ValueError):
        handback.parse_steps("100:10")

    def run(p99: float, lost: int) -> dict[str, Any]:
        figure = {"p50": 1.0, "p95": 2.0, "p99": p99, "max": p99 + 1}
        return {
            "steps": [
                {
                    "concurrency": 100,
                    "calls": 400,
                    "keys_lost": lost,
                    "decision_to_bye_ms": figure,
                    "key_sent_to_bye_ms": figure,
                    "key_queued_to_bye_ms": figure,
                }
            ]
        }

    (row,) = handback.medians([run(3.0, 0), run(9.0, 1), run(4.0, 0)])
    assert row["decision_to_bye_ms"]["p99"] == 4.0 and row["decision_to_bye_ms"]["max"] == 5.0
    assert row["keys_lost"] == 1 and row["calls"] == 1200 and row["runs"] == 3


def test_the_cpu_ratio_compares_the_medians_at_each_confirmed_rate() -> None:
    run = load("run")

    def search(*cpu: float) -> dict[str, Any]:
        ordered = sorted(cpu)
        return {
            "spread_at_max": {
                "cpu_ms_per_call": {"min": ordered[0], "median": ordered[1], "max": ordered[2]}
            }
        }

    sippy, byeline = search(1.18, 1.141, 1.149), search(0.42, 0.35, 0.36)
    assert run.median_cpu_at_max(byeline) == 0.36
    assert run.ratio(run.median_cpu_at_max(sippy), run.median_cpu_at_max(byeline)) == 3.192
    assert run.median_cpu_at_max(None) is None  # a search that failed to run
    assert run.median_cpu_at_max({"error": "sippy missing"}) is None


def test_core_speed_times_the_fixed_work_on_the_core() -> None:
    procs = load("procs")
    speed = procs.core_speed(0, seconds=0.6)
    assert speed["core"] == 0
    assert speed["chunks"] >= 10
    assert 0 < speed["chunk_ms_p50"] <= speed["chunk_ms_p99"] <= speed["chunk_ms_max"]
    assert speed["window_ms_min"] <= speed["window_ms_median"] <= speed["window_ms_max"]
    assert 0 <= speed["stalls_over_10ms"] <= speed["chunks"]
    line = procs.describe_speed(speed)
    assert line.startswith("core 0: ") and "chunks over 10 ms" in line


def test_media_stalls_tell_a_loop_wide_stall_from_single_late_calls() -> None:
    np = pytest.importorskip("numpy")
    media_load = load("media_load")
    period = int(media_load.PERIOD * 1e9)
    calls = 10
    d_all = []
    t_all = []
    for call in range(calls):
        # 50 packets 20 ms apart; every call is 15 ms late in period 20 (a stall), and call 0
        # alone is also late in period 40.
        times = np.arange(50, dtype=np.int64) * period + call * 1000
        d = np.full(50, 0.2)
        d[20] = 15.0
        if call == 0:
            d[40] = 12.0
        d_all.append(d)
        t_all.append(times)
    stalls = media_load._stalls(d_all, t_all, calls)
    assert stalls == {"late_packets": 11, "stall_periods": 1, "late_packets_in_stalls": 0.909}
    quiet = media_load._stalls([np.full(5, 0.1)], [np.arange(5, dtype=np.int64)], 1)
    assert quiet["late_packets"] == 0 and quiet["stall_periods"] == 0


def test_a_media_step_is_retried_for_the_machine_not_for_byeline() -> None:
    pytest.importorskip("numpy")
    retry = load("media_load")._worth_a_retry
    stalled = {"generator_kept_up": True, "loss": 0.0, "late_packets_in_stalls": 0.53}
    assert retry(stalled, 0.001)  # jitter alone, mostly in loop-wide stalls
    assert not retry({**stalled, "late_packets_in_stalls": 0.3}, 0.001)  # late call by call
    assert not retry({**stalled, "loss": 0.002}, 0.001)  # packets lost: byeline's failure
    assert retry({**stalled, "loss": 0.002, "generator_kept_up": False}, 0.001)  # a late generator
    saturated = {**stalled, "loss": 0.18, "generator_kept_up": False, "server_cpu_pct": 94.8}
    assert not retry(saturated, 0.001)  # byeline's core full and packets lost: its capacity
    assert retry({**saturated, "loss": 0.0}, 0.001)  # jitter alone at 95 %: still worth a retry


profile_serve = load("profile_serve")

# callgrind_annotate's inclusive listing and caller tree, trimmed: a compiled function can be
# listed under two spellings of its source file, with the same count.
ANNOTATED = """\
--------------------------------------------------------------------------------
1,000,000 (100.0%)  PROGRAM TOTALS
--------------------------------------------------------------------------------
900,000 (90.00%)  /w/build/native/c/__native_x.c:CPyDef_server___SipEdge___receive
900,000 (90.00%)  build/native/c/__native_x.c:CPyDef_server___SipEdge___receive [/w/x.so]
180,000 (18.00%)  build/native/c/__native_x.c:CPyDef_message___parse_message [/w/x.so]
"""
CALLER_TREE = """\
 120,000 (12.00%)  < build/native/c/__native_x.c:CPyDef_server___SipEdge___receive (6x) [/w/x.so]
  60,000 (6.00%)  < build/native/c/__native_x.c:CPyDef_server___SipEdge____retry (3x) [/w/x.so]
 180,000 (18.00%)  *  build/native/c/__native_x.c:CPyDef_message___parse_message [/w/x.so]
 160,000 (16.00%)  >   build/native/c/__native_x.c:CPyDef_message____crlf_lines (9x) [/w/x.so]

 900,000 (90.00%)  < /w/n.c:CPyDef_sip_transport____UdpProtocol___datagram_received (9x)
 900,000 (90.00%)  *  build/native/c/__native_x.c:CPyDef_server___SipEdge___receive [/w/x.so]
 180,000 (18.00%)  >   build/native/c/__native_x.c:CPyDef_message___parse_message (9x) [/w/x.so]
"""


def test_profile_serve_reads_totals_inclusive_counts_and_calls() -> None:
    assert profile_serve._total(ANNOTATED) == 1_000_000
    assert profile_serve._inclusive(ANNOTATED, "CPyDef_server___SipEdge___receive") == 900_000
    assert profile_serve._inclusive(ANNOTATED, "CPyDef_message___parse_message") == 180_000
    assert profile_serve._inclusive(ANNOTATED, "CPyDef_sdp___answer_offer") == 0
    # Calls come from the callers' lines above the function's own entry, callees not counted.
    assert profile_serve._calls_of(CALLER_TREE, "CPyDef_message___parse_message") == 9
    assert profile_serve._calls_of(CALLER_TREE, "CPyDef_server___SipEdge___receive") == 9


overload = load("overload")

COUNTS = (
    "CurrentTime;ElapsedTime;0_INVITE_Sent;0_INVITE_Retrans;1_100_Recv;2_180_Recv;3_503_Recv;"
    "3_503_Retrans;4_200_Recv;\n"
    "2026-11-28\t17:48:46.59\t1795888126.59;00:00:01:003000;2400;0;0;2294;12;0;2282;\n"
    "2026-11-28\t17:48:49.78\t1795888129.78;00:00:04:192000;9600;0;0;9600;345;2;9255;\n"
)


def test_overload_scenario_acks_a_503_and_its_count_is_read(tmp_path: Any) -> None:
    text = overload.overload_scenario(tmp_path).read_text()
    refused = text.index('<recv response="503" optional="true" next="refused"/>')
    assert text.index('<recv response="180"') < refused < text.index('<recv response="200" rtd')
    branch = text[text.index('<label id="refused"/>') :]
    assert "ACK sip:" in branch and "CSeq: 1 ACK" in branch and "[peer_tag_param]" in branch
    assert text.index('<nop next="done"/>') < text.index('<label id="refused"/>')
    assert text.rstrip().endswith("</scenario>") and '<label id="done"/>' in text
    (tmp_path / "five9_uac_1_counts.csv").write_text(COUNTS)
    assert overload.sipp_503s(tmp_path) == 345  # the last row, received (not retransmitted)


def test_store_gil_writes_the_same_rows_both_ways(tmp_path: Path) -> None:
    store_gil = load("store_gil")
    tables = []
    for insert in (store_gil.execute_many, store_gil.multirow):
        db = store_gil._database(tmp_path / f"{insert.__name__}.db")
        rows = store_gil._rows(301, 7)  # 128 + 128 + 32 + 8 + 4 + 1
        insert(db, rows)
        tables.append(db.execute("SELECT * FROM sip_messages ORDER BY id").fetchall())
        db.close()
    assert len(tables[0]) == 301 and tables[0] == tables[1]


def test_a_signalling_step_counts_the_calls_whose_ended_row_was_written(tmp_path: Path) -> None:
    from byeline.store import CallStore

    run = load("run")
    db = tmp_path / "calls.db"
    assert run.ended_records(db) == 0  # no database: no record, not an error
    store = CallStore.open(str(db))
    try:
        for n in range(5):
            store.call_started(f"c{n}", trunk_id="t")
        for n in range(3):
            store.call_updated(f"c{n}", status="ended", ended_at=1.0, ended_by="caller")
        assert store.flush(10)
    finally:
        store.close()
    assert run.ended_records(db) == 3  # two calls still active: their record did not end
    (tmp_path / "junk.db").write_bytes(b"not a database")
    assert run.ended_records(tmp_path / "junk.db") == 0
