"""The web client's routes, Chrome stats -> rows, and the browser peer's refusals.

No browser here: these run everywhere (tests/test_webclient.py drives Chromium).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from webrtclab import (
    STATS_COLUMNS,
    ConfigurationError,
    InvalidStateError,
    Lab,
    SignalingServer,
    StatsSampler,
)
from webrtclab.browser import BrowserPeer, Chromium, browser_rows, raw_rows
from webrtclab.tables import BROWSER_STATS, STATS, StatsRow

# --- routes -------------------------------------------------------------------------------


async def test_server_serves_the_page_and_its_assets() -> None:
    async with SignalingServer() as server, aiohttp.ClientSession() as http:
        async with http.get(server.http_url + "/") as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            assert response.headers["Cache-Control"] == "no-cache"
            page = await response.text()
        assert '<script type="module" src="/static/app.js">' in page
        for name, content_type in (("app.js", "javascript"), ("style.css", "text/css")):
            async with http.get(f"{server.http_url}/static/{name}") as response:
                assert response.status == 200, name
                assert content_type in response.content_type, response.content_type
                assert response.headers["Cache-Control"] == "no-cache"
        async with http.get(server.http_url + "/static/missing.js") as response:
            assert response.status == 404
        # No escape from the static folder (the package's Python files are next to it).
        async with http.get(server.http_url + "/static/..%2f__init__.py") as response:
            assert response.status in (403, 404)
        async with http.get(server.http_url + "/healthz") as response:
            assert response.status == 200  # the signaling routes are unchanged


def test_the_page_speaks_the_bots_message_format() -> None:
    """The JS builds the same chat/cursor payloads as webrtclab/peer.py."""
    app = (Path(__file__).parents[1] / "webrtclab/web/static/app.js").read_text()
    assert '{ type: "chat", text, seq: this.seq.chat, sent_ms: round3(nowMs()) }' in app
    assert '{ type: "cursor", x, y, seq: this.seq.cursors, sent_ms: round3(nowMs()) }' in app
    assert 'createDataChannel("cursors", { ordered: false, maxRetransmits: 0 })' in app


# --- Chrome getStats -> rows ----------------------------------------------------------------


def chrome_report(t_ms: float, sent: int, received: int, lost: int, ssrc: int = 1) -> list[Any]:
    """A trimmed Chrome getStats report for one remote (video only, plus the pair)."""
    return [
        {"type": "transport", "id": "T01", "timestamp": t_ms, "selectedCandidatePairId": "CP1"},
        {
            "type": "candidate-pair",
            "id": "CP1",
            "timestamp": t_ms,
            "localCandidateId": "L1",
            "remoteCandidateId": "R1",
            "state": "succeeded",
            "nominated": True,
            "currentRoundTripTime": 0.081,
            "availableOutgoingBitrate": 300000,
        },
        {"type": "candidate-pair", "id": "CP2", "timestamp": t_ms, "state": "failed"},
        {"type": "local-candidate", "id": "L1", "timestamp": t_ms, "candidateType": "prflx"},
        {"type": "codec", "id": "C1", "timestamp": t_ms, "clockRate": 90000},
        {
            "type": "outbound-rtp",
            "id": f"OT{ssrc}",
            "kind": "video",
            "timestamp": t_ms,
            "bytesSent": sent,
            "packetsSent": sent // 1000,
            "framesEncoded": 30,
            "framesPerSecond": 15,
        },
        {
            "type": "remote-inbound-rtp",
            "id": f"RI{ssrc}",
            "kind": "video",
            "timestamp": t_ms,
            "roundTripTime": 0.0805,
            "fractionLost": 0.25,
            "packetsLost": 3,
            "jitter": 0.002,
        },
        {
            "type": "inbound-rtp",
            "id": f"IT{ssrc}",
            "kind": "video",
            "timestamp": t_ms,
            "bytesReceived": received,
            "packetsReceived": received // 1000,
            "packetsLost": lost,
            "jitter": 0.004,
            "framesDecoded": 28,
            "framesPerSecond": 14,
        },
    ]


def named(rows: Sequence[tuple[Any, ...]]) -> dict[str, dict[str, Any]]:
    return {row[3]: dict(zip(STATS_COLUMNS, row, strict=True)) for row in rows}


def test_chrome_stats_become_rows_with_the_lab_columns() -> None:
    previous: dict[Any, Any] = {}
    first = named(
        browser_rows("chrome", {"bot": chrome_report(1000, 10_000, 20_000, 0)}, 1.0, previous)
    )
    assert set(first) == {"send", "recv"}
    send, recv = first["send"], first["recv"]
    assert (send["peer"], send["remote"], send["kind"]) == ("chrome", "bot", "video")
    assert math.isnan(send["bitrate_kbps"])  # no interval yet
    assert send["rtt_ms"] == pytest.approx(80.5)  # RTCP first, as on aiortc rows
    assert send["loss_fraction"] == 0.25  # Chrome's fractionLost is already 0-1
    assert send["jitter_ms"] == pytest.approx(2.0)  # seconds -> ms
    assert send["frames_per_s"] == 15
    assert send["candidate_type"] == "prflx"
    assert (send["packets"], send["packets_lost"], send["bytes"], send["frames"]) == (
        10,
        3,
        10_000,
        30,
    )
    assert recv["rtt_ms"] == pytest.approx(81.0)  # the candidate pair's round trip
    assert recv["jitter_ms"] == pytest.approx(4.0)
    assert recv["loss_fraction"] == 0.0

    # 500 ms later (report timestamps): 25 kB sent, 10 packets received, 10 lost.
    later = named(
        browser_rows("chrome", {"bot": chrome_report(1500, 35_000, 30_000, 10)}, 1.5, previous)
    )
    assert later["send"]["bitrate_kbps"] == pytest.approx(25_000 * 8 / 500)
    assert later["recv"]["bitrate_kbps"] == pytest.approx(10_000 * 8 / 500)
    assert later["recv"]["loss_fraction"] == pytest.approx(10 / 20)

    # A new connection (recovery): new stream ids, counters from zero: no negative rate.
    fresh = named(
        browser_rows("chrome", {"bot": chrome_report(2000, 1_000, 1_000, 0, ssrc=2)}, 2.0, previous)
    )
    assert math.isnan(fresh["send"]["bitrate_kbps"])
    assert fresh["recv"]["loss_fraction"] == 0.0

    report = {"bot": chrome_report(2500, 2_000, 2_000, 0, ssrc=2)}
    frame = STATS.frame(browser_rows("chrome", report, 2.5, previous))
    assert list(frame.columns) == STATS_COLUMNS  # the dtypes of aiortc rows too
    assert frame["bitrate_kbps"].tolist() == pytest.approx([1_000 * 8 / 500] * 2)


def test_chrome_rows_fall_back_to_the_pair_rtt_and_skip_missing_streams() -> None:
    report = [s for s in chrome_report(1000, 1, 1, 0) if s["type"] != "remote-inbound-rtp"]
    report = [s for s in report if s["type"] != "inbound-rtp"]
    (row,) = browser_rows("chrome", {"bot": report}, 1.0, {})
    values: dict[str, Any] = dict(zip(STATS_COLUMNS, row, strict=True))
    assert values["direction"] == "send"
    assert values["rtt_ms"] == pytest.approx(81.0)  # no RTCP report yet: STUN round trip
    assert math.isnan(values["loss_fraction"])
    # Before a pair is selected: no candidate type, no RTT.
    bare = [s for s in report if s["type"] == "outbound-rtp"]
    (row,) = browser_rows("chrome", {"bot": bare}, 1.0, {})
    values = dict(zip(STATS_COLUMNS, row, strict=True))
    assert values["candidate_type"] is None  # <NA> in the table
    assert math.isnan(values["rtt_ms"])


def test_raw_rows_keep_every_number_of_the_interesting_stats() -> None:
    rows = raw_rows("chrome", {"bot": chrome_report(1000, 10, 20, 0)}, 1.0)
    frame = BROWSER_STATS.frame(rows)
    assert list(frame.columns) == [
        "time_s",
        "peer",
        "remote",
        "type",
        "id",
        "kind",
        "metric",
        "value",
    ]
    assert set(frame["type"]) == {
        "candidate-pair",
        "outbound-rtp",
        "remote-inbound-rtp",
        "inbound-rtp",
    }
    assert set(frame[frame["type"] == "candidate-pair"]["id"]) == {"CP1"}  # the selected one
    assert "timestamp" not in set(frame["metric"])
    bitrate = frame[frame["metric"] == "availableOutgoingBitrate"]["value"]
    assert list(bitrate) == [300000.0]
    assert "candidateType" not in set(frame["metric"])  # strings are left out


# --- the sampler's source hook -----------------------------------------------------------------


class FakeSource:
    """Only the stats half of the Member protocol: all the sampler calls."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.seen: list[float] = []

    async def collect_stats(self) -> Any:
        if self.fail:
            raise RuntimeError("page crashed")
        return {"bot": chrome_report(1000, 10, 20, 0)}

    def stats_rows(self, raw: Any, now: float) -> list[StatsRow]:
        self.seen.append(now)
        return browser_rows("fake", raw, now, {})


async def test_sampler_adds_rows_of_other_sources_at_the_sample_time() -> None:
    good, bad = FakeSource(), FakeSource(fail=True)
    sampler = StatsSampler(lambda: [good, bad])  # type: ignore[list-item]
    rows = await sampler.sample()
    assert {row[1] for row in rows} == {"fake"}
    assert {row[0] for row in rows} == set(good.seen)  # one time for the whole sample
    assert bad.seen == []  # a failing source is skipped, the others still count


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"user_id": ""}, "user id must have 1-64 characters"),
        ({"user_id": "x" * 65}, "user id must have 1-64 characters"),
        ({"base_url": "ws://127.0.0.1:1/signal"}, 'base_url must be "http://host:port"'),
        ({"width": 8}, "width must be an integer in 16-4096"),
        ({"height": 240.0}, "height must be an integer in 16-4096"),
        ({"fps": 0}, "fps must be in 1-60"),
        ({"join_timeout": 0}, "join_timeout must be positive"),
        ({"video": "screen"}, 'video must be "camera" or "synthetic"'),
        ({"video": "synthetic", "seed": -1}, "seed must be an integer in 0-2"),
        ({"video": "synthetic", "seed": True}, "seed must be an integer in 0-2"),
        ({"video": "synthetic", "width": 321}, "synthetic video needs an even size"),
    ],
)
def test_browser_peer_refuses_bad_options(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"user_id": "chrome", "base_url": "http://127.0.0.1:1"}
    arguments.update(kwargs)
    with pytest.raises(ConfigurationError, match=message):
        BrowserPeer(arguments.pop("user_id"), arguments.pop("base_url"), **arguments)


async def test_browser_peer_refuses_use_before_join() -> None:
    peer = BrowserPeer("chrome", "http://127.0.0.1:1")
    with pytest.raises(InvalidStateError, match=r"has no open page: join\(\) first"):
        await peer.send_chat("hi")
    assert await peer.collect_stats() == {}  # sampling a peer that has not joined: nothing
    await peer.close()
    await peer.close()  # idempotent
    with pytest.raises(InvalidStateError, match="is closed"):
        await peer.join()


async def test_chromium_refuses_a_missing_executable(tmp_path: Path) -> None:
    chromium = Chromium(executable=tmp_path / "no-chromium")
    with pytest.raises(ConfigurationError, match="no-chromium does not exist"):
        await chromium.start()
    await chromium.close()
    await chromium.close()
    with pytest.raises(InvalidStateError, match="was closed"):
        await chromium.start()


async def test_lab_refuses_a_browser_peer_with_a_taken_user_id() -> None:
    async with Lab() as lab:
        await lab.add_peer("bot")
        with pytest.raises(ConfigurationError, match='already has a peer "bot"'):
            await lab.add_browser_peer("bot")
        assert lab._chromium is None  # refused before any browser was launched
        assert lab.browser_stats().empty
