"""Stats rows from fake aiortc reports: unit conversions, deltas, the DataFrame, the sampler."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

import webrtclab.stats
from webrtclab import STATS_COLUMNS, ConfigurationError, StatsSampler
from webrtclab.cc.control import StreamCounters
from webrtclab.session import MediaCounter
from webrtclab.stats import SessionStats, session_rows
from webrtclab.tables import STATS, StatsRow

# --- fakes mimicking aiortc's stats objects and a PeerSession ---------------------------------


def outbound(kind: str, bytes_sent: int, packets_sent: int) -> SimpleNamespace:
    return SimpleNamespace(
        type="outbound-rtp", kind=kind, bytesSent=bytes_sent, packetsSent=packets_sent
    )


def inbound(kind: str, received: int, lost: int = 0, jitter: float = 0) -> SimpleNamespace:
    return SimpleNamespace(
        type="inbound-rtp", kind=kind, packetsReceived=received, packetsLost=lost, jitter=jitter
    )


def remote_inbound(
    kind: str,
    rtt: float | None = 0.0,
    fraction_lost: int = 0,
    jitter: float = 0,
    lost: int = 0,
) -> SimpleNamespace:
    return SimpleNamespace(
        type="remote-inbound-rtp",
        kind=kind,
        roundTripTime=rtt,
        fractionLost=fraction_lost,
        jitter=jitter,
        packetsLost=lost,
    )


def transport(name: str) -> SimpleNamespace:
    return SimpleNamespace(type="transport", id=name)  # no kind: must be ignored


def report(*stats: Any) -> dict[str, Any]:
    return {f"stat{i}": stat for i, stat in enumerate(stats)}


def transceiver(kind: str, clock_rate: int | None) -> SimpleNamespace:
    codecs = [SimpleNamespace(clockRate=clock_rate)] if clock_rate else []
    return SimpleNamespace(kind=kind, _codecs=codecs)


class FakePc:
    def __init__(self, transceivers: list[SimpleNamespace], reports: list[Any]) -> None:
        self.transceivers = transceivers
        self.reports = reports  # returned (or raised) in turn by getStats()

    def getTransceivers(self) -> list[SimpleNamespace]:
        return self.transceivers

    def getSenders(self) -> list[Any]:
        return []  # send rows keep the report's counters

    async def getStats(self) -> Any:
        item = self.reports.pop(0) if len(self.reports) > 1 else self.reports[0]
        if isinstance(item, BaseException):
            raise item
        return item


class FakeSession:
    """What session_rows reads from a PeerSession (weak-referenceable, like the real one)."""

    def __init__(
        self,
        *,
        peer: str = "alice",
        remote: str = "bob",
        created_s: float = 0.0,
        path: tuple[str, str, str, str] | None = ("host", "127.0.0.1:1", "host", "127.0.0.1:2"),
        transceivers: list[SimpleNamespace] | None = None,
        reports: list[Any] | None = None,
    ) -> None:
        self.peer = SimpleNamespace(user_id=peer)
        self.remote = remote
        self.created_s = created_s
        self.path = path
        self.pc = FakePc(
            transceivers
            if transceivers is not None
            else [transceiver("audio", 48000), transceiver("video", 90000)],
            reports or [report()],
        )
        self.counters = {
            (d, k): MediaCounter() for d in ("send", "recv") for k in ("audio", "video")
        }
        self.rate = SimpleNamespace(counters={k: StreamCounters() for k in ("audio", "video")})
        self.target_bps: int | None = None
        self.rtt_samples: list[tuple[float, str, float]] = []  # (lab time s, kind, ms)

    def send_target_bps(self, kind: str) -> int | None:
        return self.target_bps

    def selected_path(self) -> tuple[str, str, str, str] | None:
        return self.path


@dataclass
class FakePeer:
    """A member whose stats come from fake sessions, through the real SessionStats.

    Only the stats half of the Member protocol (all the sampler calls), hence the
    type: ignore[list-item] where one is given to a StatsSampler.
    """

    sessions: dict[str, FakeSession] = field(default_factory=dict)
    source: SessionStats = field(default_factory=SessionStats)

    async def collect_stats(self) -> Any:
        return await self.source.collect(self.sessions.values())  # type: ignore[arg-type]

    def stats_rows(self, raw: Any, now: float) -> list[StatsRow]:
        return self.source.rows(raw, now)


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.t = now

    def now(self) -> float:
        return self.t


def rows_by_key(rows: list[tuple[Any, ...]]) -> dict[tuple[str, str], dict[str, Any]]:
    named = [dict(zip(STATS_COLUMNS, row, strict=True)) for row in rows]
    return {(r["direction"], r["kind"]): r for r in named}


# session_rows' deltas: (direction, kind) -> the previous counters.
Previous = dict[tuple[str, str], webrtclab.stats._Previous]


def one_row(session: FakeSession, rep: dict[str, Any], now: float, previous: Any = None) -> Any:
    rows = session_rows(session, rep, now, {} if previous is None else previous)  # type: ignore[arg-type]
    assert len(rows) == 1
    return dict(zip(STATS_COLUMNS, rows[0], strict=True))


# --- conversions ------------------------------------------------------------------------------


def test_recv_jitter_video_ticks_to_ms() -> None:
    row = one_row(FakeSession(), report(inbound("video", 10, jitter=900)), 1.0)
    assert row["jitter_ms"] == pytest.approx(10.0)


def test_recv_jitter_opus_ticks_to_ms() -> None:
    row = one_row(FakeSession(), report(inbound("audio", 10, jitter=480)), 1.0)
    assert row["jitter_ms"] == pytest.approx(10.0)


def test_jitter_uses_the_negotiated_codec_clock_rate() -> None:
    session = FakeSession(transceivers=[transceiver("audio", 8000), transceiver("video", None)])
    audio = one_row(session, report(inbound("audio", 10, jitter=80)), 1.0)
    assert audio["jitter_ms"] == pytest.approx(10.0)
    # No negotiated codec yet: the default 90 kHz video clock.
    video = one_row(session, report(inbound("video", 10, jitter=90)), 1.0)
    assert video["jitter_ms"] == pytest.approx(1.0)


def test_recv_jitter_is_the_max_over_streams_of_a_kind() -> None:
    rep = report(inbound("video", 5, jitter=90), inbound("video", 5, jitter=1800))
    row = one_row(FakeSession(), rep, 1.0)
    assert row["jitter_ms"] == pytest.approx(20.0)
    assert row["packets"] == 10


def test_send_jitter_as_the_remote_reports_it() -> None:
    rep = report(outbound("video", 100, 1), remote_inbound("video", jitter=900))
    assert one_row(FakeSession(), rep, 1.0)["jitter_ms"] == pytest.approx(10.0)
    rep = report(outbound("audio", 100, 1), remote_inbound("audio", jitter=480))
    assert one_row(FakeSession(), rep, 1.0)["jitter_ms"] == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("fraction", "expected"), [(0, 0.0), (64, 0.25), (128, 0.5), (255, 255 / 256)]
)
def test_send_fraction_lost_to_loss_fraction(fraction: int, expected: float) -> None:
    rep = report(outbound("video", 100, 1), remote_inbound("video", fraction_lost=fraction, lost=7))
    row = one_row(FakeSession(), rep, 1.0)
    assert row["loss_fraction"] == pytest.approx(expected)
    assert row["packets_lost"] == 7


def test_send_bitrate_from_bytes_sent_delta() -> None:
    previous: Previous
    session, previous = FakeSession(), {}
    first = one_row(session, report(outbound("video", 5000, 10)), 1.0, previous)
    assert first["bitrate_kbps"] == pytest.approx(40.0)  # 5000 B since created_s = 0
    second = one_row(session, report(outbound("video", 6000, 12)), 1.5, previous)
    assert second["bitrate_kbps"] == pytest.approx(16.0)  # 1000 B in 0.5 s
    assert (second["bytes"], second["packets"]) == (6000, 12)


def test_send_bitrate_sums_streams_of_a_kind() -> None:
    rep = report(outbound("video", 600, 3), outbound("video", 400, 2))
    row = one_row(FakeSession(), rep, 0.5)
    assert (row["bytes"], row["packets"]) == (1000, 5)
    assert row["bitrate_kbps"] == pytest.approx(16.0)


def test_first_sample_counts_from_session_creation() -> None:
    session = FakeSession(created_s=10.0)
    row = one_row(session, report(outbound("audio", 2000, 10)), 12.0)
    assert row["bitrate_kbps"] == pytest.approx(8.0)


def test_recv_bitrate_from_counted_payload_bytes() -> None:
    previous: Previous
    session, previous = FakeSession(), {}
    session.counters[("recv", "video")].bytes = 1000
    one_row(session, report(inbound("video", 10)), 1.0, previous)
    session.counters[("recv", "video")].bytes = 3000
    row = one_row(session, report(inbound("video", 20)), 2.0, previous)
    assert row["bitrate_kbps"] == pytest.approx(16.0)
    assert row["bytes"] == 3000


def test_recv_loss_fraction_from_packet_deltas() -> None:
    previous: Previous
    session, previous = FakeSession(), {}
    first = one_row(session, report(inbound("audio", 100, lost=0)), 1.0, previous)
    assert first["loss_fraction"] == 0.0
    # 90 received and 10 lost over the interval: 10 / 100.
    second = one_row(session, report(inbound("audio", 190, lost=10)), 2.0, previous)
    assert second["loss_fraction"] == pytest.approx(0.1)
    assert (second["packets"], second["packets_lost"]) == (190, 10)
    # Loss over the interval only, not cumulative: 50 received, none lost.
    third = one_row(session, report(inbound("audio", 240, lost=10)), 3.0, previous)
    assert third["loss_fraction"] == 0.0


def test_recv_loss_is_nan_when_no_packet_was_expected() -> None:
    previous: Previous
    session, previous = FakeSession(), {}
    first = one_row(session, report(inbound("video", 0)), 1.0, previous)
    assert math.isnan(first["loss_fraction"])
    one_row(session, report(inbound("video", 50, lost=2)), 2.0, previous)
    stalled = one_row(session, report(inbound("video", 50, lost=2)), 3.0, previous)
    assert math.isnan(stalled["loss_fraction"])
    assert stalled["bitrate_kbps"] == 0.0


def test_recv_loss_never_negative() -> None:
    # packetsLost may go down (duplicates): the fraction is clamped at 0.
    previous: Previous
    session, previous = FakeSession(), {}
    one_row(session, report(inbound("audio", 100, lost=5)), 1.0, previous)
    row = one_row(session, report(inbound("audio", 200, lost=3)), 2.0, previous)
    assert row["loss_fraction"] == 0.0


def test_rtt_on_send_rows_and_nan_on_recv_rows() -> None:
    rep = report(
        outbound("audio", 100, 1),
        remote_inbound("audio", rtt=0.05),
        inbound("audio", 10),
    )
    rows = rows_by_key(session_rows(FakeSession(), rep, 1.0, {}))  # type: ignore[arg-type]
    assert rows[("send", "audio")]["rtt_ms"] == pytest.approx(50.0)
    assert math.isnan(rows[("recv", "audio")]["rtt_ms"])


def test_send_rows_without_remote_report_are_nan() -> None:
    row = one_row(FakeSession(), report(outbound("video", 100, 1)), 1.0)
    assert math.isnan(row["rtt_ms"])
    assert math.isnan(row["loss_fraction"])
    assert math.isnan(row["jitter_ms"])
    assert row["packets_lost"] == 0


def test_rtt_none_is_nan() -> None:
    rep = report(outbound("video", 100, 1), remote_inbound("video", rtt=None, fraction_lost=64))
    row = one_row(FakeSession(), rep, 1.0)
    assert math.isnan(row["rtt_ms"])
    assert row["loss_fraction"] == pytest.approx(0.25)


@pytest.mark.parametrize("direction", ["send", "recv"])
def test_frames_per_s_from_counter_deltas(direction: str) -> None:
    previous: Previous
    session, previous = FakeSession(), {}
    stat = outbound("video", 0, 0) if direction == "send" else inbound("video", 0)
    counter = session.counters[(direction, "video")]
    counter.frames = 15
    first = one_row(session, report(stat), 1.0, previous)
    assert first["frames_per_s"] == pytest.approx(15.0)
    counter.frames = 45
    second = one_row(session, report(stat), 3.0, previous)
    assert second["frames_per_s"] == pytest.approx(15.0)
    assert second["frames"] == 45


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (("host", "127.0.0.1:1", "host", "127.0.0.1:2"), "host"),
        (("relay", "203.0.113.1:3478", "srflx", "198.51.100.1:5"), "relay"),
        (None, None),  # no pair selected yet: missing (<NA> in the table), not ""
    ],
)
def test_candidate_type_from_selected_path(
    path: tuple[str, str, str, str] | None, expected: str | None
) -> None:
    row = one_row(FakeSession(path=path), report(inbound("audio", 1)), 1.0)
    assert row["candidate_type"] == expected


def test_rows_identify_peer_remote_direction_kind_and_time() -> None:
    rep = report(
        transport("t"),
        outbound("audio", 1, 1),
        outbound("video", 1, 1),
        inbound("audio", 1),
        inbound("video", 1),
        remote_inbound("audio"),
        remote_inbound("video"),
    )
    rows = session_rows(FakeSession(peer="p", remote="r"), rep, 4.5, {})  # type: ignore[arg-type]
    named = [dict(zip(STATS_COLUMNS, row, strict=True)) for row in rows]
    assert [(r["direction"], r["kind"]) for r in named] == [
        ("recv", "audio"),
        ("recv", "video"),
        ("send", "audio"),
        ("send", "video"),
    ]
    assert {(r["time_s"], r["peer"], r["remote"]) for r in named} == {(4.5, "p", "r")}


def test_no_rtp_stats_no_rows() -> None:
    assert session_rows(FakeSession(), report(transport("t")), 1.0, {}) == []  # type: ignore[arg-type]


# --- DataFrame ----------------------------------------------------------------------------------

EXPECTED_DTYPES = {
    "time_s": "float64",
    "peer": "string",
    "remote": "string",
    "direction": "string",
    "kind": "string",
    "bitrate_kbps": "float64",
    "rtt_ms": "float64",
    "loss_fraction": "float64",
    "jitter_ms": "float64",
    "frames_per_s": "float64",
    "candidate_type": "string",
    "packets": "int64",
    "packets_lost": "int64",
    "bytes": "int64",
    "frames": "int64",
    "target_kbps": "float64",
    "rtx_kbps": "float64",
    "wire_kbps": "float64",
    "estimate_kbps": "float64",
}


def test_send_rows_show_target_retransmissions_and_wire() -> None:
    previous: Previous
    session, previous = FakeSession(), {}
    sent = session.rate.counters["video"]
    session.target_bps = 400_000
    one_row(session, report(outbound("video", 1000, 10)), 1.0, previous)
    sent.rtx_bytes, sent.wire_bytes = 500, 4000
    row = one_row(session, report(outbound("video", 3000, 20)), 2.0, previous)
    assert row["target_kbps"] == pytest.approx(400.0)
    assert row["rtx_kbps"] == pytest.approx(4.0)
    assert row["wire_kbps"] == pytest.approx(32.0)
    assert row["bitrate_kbps"] == pytest.approx(16.0)  # payload only: the wire is more
    assert math.isnan(row["estimate_kbps"])


def test_recv_rows_show_the_receivers_estimate() -> None:
    session = FakeSession()
    row = one_row(session, report(inbound("video", 10)), 1.0)
    assert math.isnan(row["estimate_kbps"]) and math.isnan(row["wire_kbps"])
    session.counters[("recv", "video")].estimate_bps = 250_000
    row = one_row(session, report(inbound("video", 20)), 2.0)
    assert row["estimate_kbps"] == pytest.approx(250.0)


def test_stats_columns() -> None:
    assert list(EXPECTED_DTYPES) == STATS_COLUMNS
    assert len(set(STATS_COLUMNS)) == len(STATS_COLUMNS)
    doc = webrtclab.stats.__doc__ or ""
    for column in STATS_COLUMNS:
        assert f"``{column}``" in doc, f"{column} is not documented"


def test_stats_frame_columns_and_dtypes() -> None:
    rep = report(
        outbound("video", 1000, 10),
        remote_inbound("video", rtt=0.01),
        inbound("video", 10, lost=1, jitter=90),
    )
    rows = session_rows(FakeSession(), rep, 1.0, {})  # type: ignore[arg-type]
    frame = STATS.frame(rows)
    assert list(frame.columns) == STATS_COLUMNS
    assert {c: str(t) for c, t in frame.dtypes.items()} == EXPECTED_DTYPES
    assert len(frame) == 2
    assert frame["direction"].tolist() == ["recv", "send"]
    recv = frame[frame["direction"] == "recv"].iloc[0]
    assert pd.isna(recv["rtt_ms"])


def test_stats_frame_empty() -> None:
    frame = STATS.frame([])
    assert frame.empty
    assert list(frame.columns) == STATS_COLUMNS
    assert {c: str(t) for c, t in frame.dtypes.items()} == EXPECTED_DTYPES


# --- StatsSampler -------------------------------------------------------------------------------


@pytest.mark.parametrize("interval", [0, 0.001, -1, 3601, math.nan, math.inf])
def test_sampler_refuses_bad_intervals(interval: float) -> None:
    with pytest.raises(ConfigurationError, match="interval"):
        StatsSampler([], interval=interval)


def test_sampler_accepts_interval_limits() -> None:
    assert StatsSampler([], interval=0.01).interval == 0.01
    assert StatsSampler([], interval=3600).interval == 3600


async def test_sampler_sample_deltas_and_subscribers() -> None:
    session = FakeSession(
        reports=[
            report(outbound("video", 5000, 10)),
            report(outbound("video", 6000, 12)),
        ]
    )
    clock = FakeClock(1.0)
    batches: list[list[Any]] = []
    sampler = StatsSampler(
        [FakePeer({"bob": session})],  # type: ignore[list-item]
        interval=0.5,
        clock=clock,  # type: ignore[arg-type]
    )
    sampler.stats.subscribe(batches.append)
    first = await sampler.sample()
    clock.t = 1.5
    second = await sampler.sample()
    assert batches == [first, second]
    assert sampler.stats.rows == first + second
    frame = sampler.stats.dataframe()
    assert frame["time_s"].tolist() == [1.0, 1.5]
    assert frame["bitrate_kbps"].tolist() == pytest.approx([40.0, 16.0])
    await sampler.close()


async def test_sampler_skips_sessions_whose_getstats_fails() -> None:
    good = FakeSession(remote="bob", reports=[report(inbound("audio", 5))])
    bad = FakeSession(remote="carol", reports=[RuntimeError("closed")])
    batches: list[list[Any]] = []
    sampler = StatsSampler(
        [FakePeer({"carol": bad, "bob": good})],  # type: ignore[list-item]
        clock=FakeClock(1.0),  # type: ignore[arg-type]
    )
    sampler.stats.subscribe(batches.append)
    rows = await sampler.sample()
    assert [row[2] for row in rows] == ["bob"]
    assert len(batches) == 1


async def test_sampler_subscribers_not_called_without_rows() -> None:
    batches: list[list[Any]] = []
    sampler = StatsSampler([FakePeer()])  # type: ignore[list-item]
    sampler.stats.subscribe(batches.append)
    assert await sampler.sample() == []
    assert batches == []
    assert sampler.stats.dataframe().empty


async def test_sampler_follows_a_callable_peer_list() -> None:
    peers: list[FakePeer] = []
    sampler = StatsSampler(lambda: peers, clock=FakeClock(1.0))  # type: ignore[arg-type, return-value]
    assert await sampler.sample() == []
    peers.append(FakePeer({"bob": FakeSession(reports=[report(inbound("audio", 5))])}))
    assert len(await sampler.sample()) == 1


async def test_sampler_runs_in_background_and_close_is_idempotent() -> None:
    session = FakeSession(reports=[report(inbound("audio", 5))])
    sampler = StatsSampler([FakePeer({"bob": session})], interval=0.02)  # type: ignore[list-item]
    await sampler.close()  # never started: fine
    sampler.start()
    sampler.start()  # idempotent: still one loop
    async with asyncio.timeout(5):
        while len(sampler.stats.rows) < 3:
            await asyncio.sleep(0.01)
    await sampler.close()
    await sampler.close()
    count = len(sampler.stats.rows)
    await asyncio.sleep(0.1)
    assert len(sampler.stats.rows) == count, "no sampling after close()"
    times = sampler.stats.dataframe()["time_s"].tolist()
    assert times == sorted(times)
    # One loop only: samples are about one interval apart, never doubled up.
    assert all(b - a > 0.01 for a, b in zip(times, times[1:], strict=False))


async def test_sampler_subscribers_each_get_every_batch_until_they_unsubscribe() -> None:
    session = FakeSession(reports=[report(inbound("audio", 5))] * 3)
    sampler = StatsSampler([FakePeer({"bob": session})])  # type: ignore[list-item]
    first: list[int] = []
    second: list[int] = []

    def failing(rows: list[Any]) -> None:
        raise RuntimeError("consumer failed")

    sampler.stats.subscribe(failing)  # does not keep the others from their rows
    unsubscribe = sampler.stats.subscribe(lambda rows: first.append(len(rows)))
    sampler.stats.subscribe(lambda rows: second.append(len(rows)))
    await sampler.sample()
    unsubscribe()
    unsubscribe()  # idempotent
    await sampler.sample()
    assert first == [1] and second == [1, 1]


async def test_sampler_keeps_sampling_when_a_subscriber_fails() -> None:
    calls: list[int] = []

    def on_rows(rows: list[Any]) -> None:
        calls.append(len(rows))
        raise RuntimeError("consumer failed")

    session = FakeSession(reports=[report(inbound("audio", 5))])
    sampler = StatsSampler([FakePeer({"bob": session})], interval=0.02)  # type: ignore[list-item]
    sampler.stats.subscribe(on_rows)
    sampler.start()
    task = sampler._task
    try:
        async with asyncio.timeout(1):
            while len(calls) < 3:
                await asyncio.sleep(0.01)
    finally:
        await sampler.close()
        if task is not None and task.done() and not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" noise from this test
