"""Field data next to lab runs: Chrome's webrtc-internals dumps in, lab runs out as dumps.

One real call (module scope): headless Chromium and an aiortc peer on a lossy 40 ms link,
with chrome://webrtc-internals open in a second page of Chromium during the call; the
page's own download buttons produce the dumps.  The tests load them and compare with the
lab's own Chrome rows for the same call, round-trip lab runs through the dump format, and
refuse bad files.  The call needs /usr/bin/chromium (a failure in CI when missing).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gzip
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from helpers import require_system

import webrtclab
from webrtclab import (
    STATS_COLUMNS,
    ConfigurationError,
    FieldData,
    InvalidStateError,
    Lab,
    MediaSpec,
    WebrtcLabError,
    export_webrtc_internals,
    load_webrtc_internals,
    plot_timeline,
)
from webrtclab.browser import CHROMIUM_PATH, RAW_COLUMNS, BrowserPeer
from webrtclab.cli import main
from webrtclab.experiment import ResultWriter
from webrtclab.netem import LinkConditions
from webrtclab.plot import plot_result

DELAY_MS = 40
LOSS = 0.05  # both ways: loss the two tables can be compared on
CALL_S = 10.0
OUTBOUND_VIDEO = ("outbound-rtp", "video")


@dataclass
class Call:
    """What the shared call left behind."""

    dump: Path  # the webrtc-internals dump, plain JSON (the page's checkbox unticked)
    dump_gz: Path  # the same download, compressed (the page's default)
    rtcstats: Path  # the page's rtcstats dump
    log: list[dict[str, Any]]  # getStats reports the page gave, as getStats log records
    origin: float  # the lab clock's start, Unix seconds
    stats: pd.DataFrame  # lab.stats()
    browser_stats: pd.DataFrame  # lab.browser_stats()
    run: Path  # the call as a result folder (what `webrtclab run` writes)


async def _call(tmp: Path) -> Call:
    async with Lab(link=LinkConditions(delay_ms=DELAY_MS, loss=LOSS), seed=5) as lab:
        await lab.add_peer("bot", media=MediaSpec(width=320, height=240, fps=15))
        chrome = await lab.add_browser_peer("chrome")
        internals = await chrome.open_webrtc_internals()  # before the call: it records from now
        await lab.wait_connected(timeout=20)
        log = []
        end = time.monotonic() + CALL_S
        while time.monotonic() < end:
            await asyncio.sleep(1.0)
            for remote, report in (await chrome.collect_stats()).items():
                stamp = max(s["timestamp"] for s in report)
                record = {"timestamp": stamp, "peer": "chrome", "remote": remote, "stats": report}
                log.append(record)
        dump = await internals.dump(tmp / "webrtc_internals_dump.txt")
        dump_gz = await internals.dump(tmp / "webrtc_internals_dump.gz", compress=True)
        rtcstats = await internals.rtcstats_dump(tmp / "rtcstats_dump.gz")
        await internals.close()
        writer = ResultWriter(tmp / "run", {"name": "chrome-call"}, seed=5)
        writer.append("stats", lab.sampler.stats.rows)
        writer.append("events", lab.event_log.rows)
        writer.finish("completed")
        origin = time.time() - lab.clock.now()
        return Call(
            dump, dump_gz, rtcstats, log, origin, lab.stats(), lab.browser_stats(), tmp / "run"
        )


@pytest.fixture(scope="module")
def call(tmp_path_factory: pytest.TempPathFactory) -> Call:
    require_system(CHROMIUM_PATH, "chromium", "the field data tests")
    tmp = tmp_path_factory.mktemp("call")
    # Its own thread and event loop: the tests' loops come and go, the call is shared.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _call(tmp)).result(timeout=90)


@pytest.fixture(scope="module")
def field(call: Call) -> FieldData:
    """The dump on the lab's time axis, its one connection named as the lab names it."""
    (cid,) = json.loads(call.dump.read_text())["PeerConnections"]
    return load_webrtc_internals(call.dump, origin=call.origin, remotes={cid: "bot"})


def rows(stats: pd.DataFrame, direction: str, kind: str | None = None) -> pd.DataFrame:
    picked = stats[(stats["peer"] == "chrome") & (stats["direction"] == direction)]
    return picked if kind is None else picked[picked["kind"] == kind]


# --- the real dump ---------------------------------------------------------------------------


def test_the_page_exports_the_shape_the_loader_reads(call: Call) -> None:
    dump = json.loads(call.dump.read_text())
    assert {"PeerConnections", "getUserMedia", "UserAgent"} <= set(dump), sorted(dump)
    assert "HeadlessChrome" in dump["UserAgent"]
    ((cid, pc),) = dump["PeerConnections"].items()
    assert {"url", "rtcConfiguration", "stats", "updateLog"} <= set(pc), sorted(pc)
    assert "user=chrome" in pc["url"]
    series = pc["stats"]
    stamps = [k for k in series if k.endswith("-timestamp")]
    assert stamps, "every stat object has a timestamp series"
    outbound = [k for k in series if series[k].get("statsType") == "outbound-rtp"]
    sample = series[outbound[0]]
    assert set(sample) == {"startTime", "endTime", "statsType", "values"}
    assert isinstance(json.loads(sample["values"]), list)
    # The API calls: those before the page opened are replayed, as far as Chromium kept them.
    assert pc["updateLog"] and {"type", "value", "timestamp"} <= set(pc["updateLog"][-1])
    assert gzip.decompress(call.dump_gz.read_bytes()).startswith(b"{")
    assert gzip.decompress(call.rtcstats.read_bytes()).startswith(b"RTCStatsDump\n")


def test_the_dump_loads_into_the_labs_tables(call: Call, field: FieldData) -> None:
    assert list(field.stats.columns) == STATS_COLUMNS
    assert field.stats.dtypes.to_dict() == call.stats.dtypes.to_dict()
    assert list(field.browser_stats.columns) == RAW_COLUMNS
    assert field.browser_stats.dtypes.to_dict() == call.browser_stats.dtypes.to_dict()
    assert set(field.stats["peer"]) == {"chrome"}  # the page URL's user parameter
    assert set(field.stats["remote"]) == {"bot"}
    assert set(zip(field.stats["direction"], field.stats["kind"])) == {
        (d, k) for d in ("send", "recv") for k in ("audio", "video")
    }
    assert set(field.stats["candidate_type"].dropna()) <= {"host", "prflx"}
    # The long table has every getStats metric the lab keeps (and libwebrtc's internal ones).
    lab_metrics = set(call.browser_stats["metric"])
    assert lab_metrics - set(field.browser_stats["metric"]) <= {"availableIncomingBitrate"}
    assert not field.browser_stats["metric"].str.startswith("[").any()  # the page's own rates
    # Connection states and tracks, once each (the page may log its replay twice).
    (pc,) = json.loads(call.dump.read_text())["PeerConnections"].values()
    logged = {
        (u["timestamp"], u["type"], u["value"])
        for u in pc["updateLog"]
        if u["type"] in ("onconnectionstatechange", "ontrack")
    }
    events = field.events
    assert len(events) == len(logged) and set(events["event"]) <= {"connection-state", "track"}
    states = [json.loads(u[2]) for u in sorted(logged) if u[1] == "onconnectionstatechange"]
    assert events[events["event"] == "connection-state"]["detail"].tolist() == states
    assert (field.rtt["rtt_ms"] > 2 * DELAY_MS - 5).all() and len(field.rtt) >= 4
    assert field.metadata["source"]["format"] == "webrtc-internals"
    assert field.status == "completed"

    # Without names given, the connection id is the remote.
    plain = load_webrtc_internals(call.dump)
    (cid,) = json.loads(call.dump.read_text())["PeerConnections"]
    assert set(plain.stats["remote"]) == {cid}
    assert plain.stats["time_s"].min() >= 0  # from the first thing the dump recorded


def _window(one: pd.DataFrame, other: pd.DataFrame) -> tuple[float, float]:
    """The span both tables sampled, after the first second of the call."""
    start = max(rows(one, "recv")["time_s"].min(), rows(other, "recv")["time_s"].min()) + 1.0
    end = min(rows(one, "recv")["time_s"].max(), rows(other, "recv")["time_s"].max())
    return start, end


def _at(table: pd.DataFrame, column: str, t: float) -> float:
    return float(np.interp(t, table["time_s"], table[column].astype(float)))


def _measures(stats: pd.DataFrame, start: float, end: float) -> dict[str, float]:
    """RTT (median of the rows) and bitrate over [start, end], loss up to ``end``.

    The lab samples every 0.5 s, webrtc-internals every second, at other instants:
    one interval's rate or loss is not the other's.  Over one window, both tables'
    counters (``bytes``, ``packets``, ``packets_lost``, what the rate and loss columns
    are computed from) give the same rates, read at the same two times.
    """
    inside = stats[(stats["time_s"] >= start) & (stats["time_s"] <= end)]
    out = {
        "rtt_ms (send, RTCP)": rows(inside, "send", "video")["rtt_ms"].median(),
        "rtt_ms (recv, STUN)": rows(inside, "recv", "video")["rtt_ms"].median(),
    }
    for direction in ("send", "recv"):
        video = rows(stats, direction, "video")
        sent = _at(video, "bytes", end) - _at(video, "bytes", start)
        out[f"{direction} video kbps"] = sent * 8 / (end - start) / 1000
    # Loss: a few packets a second, so from the call's start (every counter is 0 there
    # in both tables): only the end is read between samples, a packet either way at most.
    lost = received = 0.0
    for kind in ("audio", "video"):
        stream = rows(stats, "recv", kind)
        lost += _at(stream, "packets_lost", end)
        received += _at(stream, "packets", end)
    out["recv loss_fraction (since the start)"] = lost / (lost + received)
    out["recv video kbps (median of rows)"] = rows(inside, "recv", "video")["bitrate_kbps"].median()
    return out


def test_the_dump_agrees_with_the_labs_chrome_rows_within_5_percent(
    call: Call, field: FieldData
) -> None:
    start, end = _window(call.stats, field.stats)
    assert end - start >= 5, (start, end)
    lab, dump = _measures(call.stats, start, end), _measures(field.stats, start, end)
    report = {k: (round(float(lab[k]), 4), round(float(dump[k]), 4)) for k in lab}
    print(f"window {start:.2f}-{end:.2f} s, lab vs dump:", report)  # noqa: T201
    for name in lab:
        if "median of rows" in name:
            continue  # shown, not asserted: different sampling instants (see _measures)
        assert math.isclose(lab[name], dump[name], rel_tol=0.05), (name, report)
    assert 2 * DELAY_MS - 3 <= dump["rtt_ms (send, RTCP)"] <= 2 * DELAY_MS * 1.15 + 5
    assert 0.5 * LOSS <= dump["recv loss_fraction (since the start)"] <= 2 * LOSS, report


def test_the_compressed_and_rtcstats_dumps_give_the_same_table(
    call: Call, field: FieldData
) -> None:
    (cid,) = json.loads(call.dump.read_text())["PeerConnections"]
    names: dict[str, Any] = {"origin": call.origin, "remotes": {cid: "bot"}}
    compressed = load_webrtc_internals(call.dump_gz, **names)
    # Two downloads a moment apart: the second may have one more sample.
    common = field.stats["time_s"].max()
    trimmed = compressed.stats[compressed.stats["time_s"] <= common].reset_index(drop=True)
    pd.testing.assert_frame_equal(trimmed, field.stats.reset_index(drop=True))
    rtcstats = load_webrtc_internals(call.rtcstats, **names)
    assert rtcstats.metadata["source"]["format"] == "rtcstats"
    merged = field.stats.merge(
        rtcstats.stats, on=["time_s", "direction", "kind"], suffixes=("", "_rtcstats")
    )
    assert len(merged) >= len(field.stats) - 4  # the same reports (the first may be missing)
    for column in ("bytes", "packets", "packets_lost", "rtt_ms", "jitter_ms"):
        pd.testing.assert_series_equal(
            merged[column], merged[f"{column}_rtcstats"], check_names=False
        )


def test_plots_draw_the_imported_table(field: FieldData) -> None:
    figure = plot_timeline(field.stats, title="webrtc-internals")
    rate, rtt, loss = figure.axes[:3]
    assert rate.lines and rtt.lines and loss.lines
    assert plot_result(field).axes  # a FieldData is a Result


# --- getStats logs ---------------------------------------------------------------------------


def test_a_getstats_log_loads_in_each_accepted_shape(call: Call, tmp_path: Path) -> None:
    assert len(call.log) >= 5
    lines = tmp_path / "log.jsonl"
    lines.write_text("".join(json.dumps(record) + "\n" for record in call.log))
    loaded = load_webrtc_internals(lines, origin=call.origin)
    assert loaded.metadata["source"]["format"] == "getstats-log"
    assert set(loaded.stats["peer"]) == {"chrome"} and set(loaded.stats["remote"]) == {"bot"}
    video = rows(loaded.stats, "send", "video")
    sent = [
        sum(s["bytesSent"] for s in r["stats"] if (s["type"], s.get("kind")) == OUTBOUND_VIDEO)
        for r in call.log
    ]
    assert video["bytes"].tolist() == sent
    assert video["bitrate_kbps"].iloc[1:].gt(0).all()
    assert np.allclose(video["time_s"], [r["timestamp"] / 1000 - call.origin for r in call.log])
    assert loaded.stats.dtypes.to_dict() == call.stats.dtypes.to_dict()

    def variant(name: str, records: list[Any], as_array: bool = False) -> FieldData:
        path = tmp_path / name
        if as_array:
            path.write_text(json.dumps(records))
        else:
            path.write_text("\n".join(json.dumps(r) for r in records))
        return load_webrtc_internals(path, origin=call.origin)

    by_id = [{**r, "stats": {s["id"]: s for s in r["stats"]}} for r in call.log]
    renamed = [
        {**{k: v for k, v in r.items() if k != "remote"}, "connection": "bot"} for r in call.log
    ]
    untimed = [{k: v for k, v in r.items() if k != "timestamp"} for r in call.log]
    for other in (
        variant("array.json", call.log, as_array=True),
        variant("by-id.jsonl", by_id),
        variant("connection.jsonl", renamed),
        variant("untimed.jsonl", untimed),  # the stats' own latest timestamp
    ):
        pd.testing.assert_frame_equal(other.stats, loaded.stats)
    bare = variant("bare.jsonl", [r["stats"] for r in call.log])  # no envelope at all
    assert set(bare.stats["peer"]) == {"local"} and set(bare.stats["remote"]) == {"pc"}
    assert bare.stats["bytes"].tolist() == loaded.stats["bytes"].tolist()


# --- lab runs out as dumps -------------------------------------------------------------------


def _comparable(stats: pd.DataFrame) -> pd.DataFrame:
    """What a dump carries: rates need an interval (a stream's first row has none) and
    getStats has no audio frame rate."""
    stats = stats.sort_values(["peer", "remote", "direction", "kind", "time_s"], kind="stable")
    stats = stats.reset_index(drop=True)
    first = ~stats.duplicated(["peer", "remote", "direction", "kind"])
    stats.loc[first, ["bitrate_kbps", "rtx_kbps", "wire_kbps"]] = math.nan
    stats.loc[stats["kind"] == "audio", "frames_per_s"] = math.nan
    return stats


def test_a_lab_run_exported_and_imported_back_has_the_same_numbers(
    call: Call, tmp_path: Path
) -> None:
    run = webrtclab.load(call.run)
    assert set(run.stats["peer"]) == {"bot", "chrome"}  # aiortc rows and Chrome rows
    path = export_webrtc_internals(call.run, tmp_path / "run.json")
    dump = json.loads(path.read_text())
    assert len(dump["PeerConnections"]) == 2 and dump["getUserMedia"] == []
    back = load_webrtc_internals(path)
    assert back.name == "chrome-call"
    expected, got = _comparable(run.stats), _comparable(back.stats)
    pd.testing.assert_frame_equal(
        got.drop(columns=["rtx_kbps", "wire_kbps"]),
        expected.drop(columns=["rtx_kbps", "wire_kbps"]),
        check_exact=False,
        rtol=1e-5,  # times go through whole-epoch milliseconds (1.8e12: 0.2 us steps)
        atol=1e-6,
    )
    # Running totals of those two are rebuilt from their rates, in whole bytes.
    for column in ("rtx_kbps", "wire_kbps"):
        assert np.allclose(got[column], expected[column], atol=0.02, equal_nan=True), column
    states = run.events[run.events["event"] == "connection-state"]
    back_states = back.events[back.events["event"] == "connection-state"]
    assert back_states["detail"].tolist() == states.sort_values("time_s")["detail"].tolist()

    # Gzip by the name, and a dump of a dump is the same dump.
    again = export_webrtc_internals(back, tmp_path / "again.json.gz")
    pd.testing.assert_frame_equal(load_webrtc_internals(again).stats, back.stats)


def test_a_stats_table_exports_too(call: Call, tmp_path: Path) -> None:
    path = export_webrtc_internals(call.stats, tmp_path / "live.json")
    back = load_webrtc_internals(path)
    assert set(back.stats["peer"]) == {"bot", "chrome"}
    assert len(back.stats) == len(call.stats)


def test_export_refuses_what_it_cannot_write(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not a webrtclab result folder"):
        export_webrtc_internals(tmp_path / "nothing", tmp_path / "out.json")
    with pytest.raises(ConfigurationError, match="the stats table is empty"):
        export_webrtc_internals(pd.DataFrame(columns=STATS_COLUMNS), tmp_path / "out.json")
    with pytest.raises(ConfigurationError, match="without the columns"):
        export_webrtc_internals(pd.DataFrame({"time_s": [1.0]}), tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()


# --- refusals --------------------------------------------------------------------------------

STAT = {"id": "OT01V1", "type": "outbound-rtp", "kind": "video", "bytesSent": 1, "timestamp": 1.0}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"  \n", "is empty"),
        (b"<html>webrtc-internals</html>", "is not JSON"),
        (b'{"PeerConnections": {"1-1": {}}}\n{', "is not JSON"),
        (b"\xff\xfe\x00", "not even UTF-8"),
        (b"\x1f\x8b\x08\x00broken", "is not valid gzip"),
        (b'{"getUserMedia": [], "UserAgent": "x"}', "has no PeerConnections"),
        (b'{"PeerConnections": {}}', "PeerConnections is empty"),
        (b'{"PeerConnections": []}', '"PeerConnections" is not an object'),
        (b'{"PeerConnections": {"1-1": 3}}', "connection '1-1' is not an object"),
        (b'{"PeerConnections": {"1-1": {"url": "", "stats": {}}}}', "no getStats sample"),
        (
            b'{"PeerConnections": {"1-1": {"stats": {"X-a": {"values": "[1,"}}}}}',
            "has values that are not JSON",
        ),
        (b'{"stats": 3}', "no getStats report"),
        (b'{"stats": [{"id": "x", "type": "codec"}]}', 'no "timestamp"'),
        (b"RTCStatsDump\n{}\nnot json", "line 3 is not JSON"),
        (b'RTCStatsDump\n{}\n["getStats", "1-1", {}, 5]', "no getStats sample"),
        (b'[{"timestamp": 1, "stats": [' + json.dumps(STAT).encode() + b"]}, 7]", "record 2"),
    ],
)
def test_bad_files_are_refused_with_a_clear_error(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "dump.json"
    path.write_bytes(content)
    with pytest.raises(ConfigurationError, match=message) as caught:
        load_webrtc_internals(path)
    assert isinstance(caught.value, WebrtcLabError)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no such file"):
        load_webrtc_internals(tmp_path / "nope.json")
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_webrtc_internals(tmp_path)  # a folder


async def test_webrtc_internals_needs_a_joined_peer() -> None:
    peer = BrowserPeer("chrome", "http://127.0.0.1:1")
    with pytest.raises(InvalidStateError, match=r"join\(\) first"):
        await peer.open_webrtc_internals()
    await peer.close()


# --- the command line ------------------------------------------------------------------------


def test_import_stats_writes_a_result_folder_that_load_reads(
    call: Call, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "imported"
    assert main(["import-stats", str(call.dump), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert 2 * DELAY_MS - 3 <= summary["rtt_ms_median"] <= 2 * DELAY_MS * 1.15 + 5
    loaded = webrtclab.load(out)
    assert loaded.status == "completed"
    assert loaded.metadata["source"]["format"] == "webrtc-internals"
    direct = load_webrtc_internals(call.dump)
    pd.testing.assert_frame_equal(loaded.stats, direct.stats)
    pd.testing.assert_frame_equal(loaded.events, direct.events)
    # browser_stats is a table of the folder like the others.
    assert len(direct.browser_stats) > 100
    pd.testing.assert_frame_equal(loaded.browser_stats, direct.browser_stats)

    # A folder that holds a result is refused, unless asked to replace it.
    assert main(["import-stats", str(call.dump), "--out", str(out)]) == 2
    assert "already holds a result" in capsys.readouterr().err
    assert main(["import-stats", str(call.dump_gz), "--out", str(out), "--overwrite"]) == 0

    # And back out as a dump.
    dumped = tmp_path / "back.json"
    assert main(["export-stats", str(out), "--out", str(dumped)]) == 0
    assert "webrtc-internals dump in" in capsys.readouterr().err
    assert len(load_webrtc_internals(dumped).stats) == len(loaded.stats)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "missing.json", "no such file"),
        (lambda tmp: _write(tmp / "bad.json", "not json"), "is not JSON"),
        (lambda tmp: _write(tmp / "empty.json", ""), "is empty"),
        (lambda tmp: _write(tmp / "other.json", '{"a": 1}'), "has no PeerConnections"),
    ],
)
def test_import_stats_refuses_bad_files_and_writes_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make: Callable[[Path], Path],
    message: str,
) -> None:
    out = tmp_path / "out"
    assert main(["import-stats", str(make(tmp_path)), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("webrtclab import-stats: error:") and message in captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert not out.exists()


def test_import_stats_refuses_an_out_that_is_a_file(
    call: Call, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _write(tmp_path / "taken", "x")
    assert main(["import-stats", str(call.dump), "--out", str(out)]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_export_stats_refuses_a_folder_without_a_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export-stats", str(tmp_path), "--out", str(tmp_path / "x.json")]) == 2
    assert "not a webrtclab result folder" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
