"""Rate adaptation in real lab calls: two aiortc peers through the network emulator.

Looser versions of the benchmark's targets (``benchmarks/bench_cc.py``): a call holds a
500 kbit/s cap with ``"gcc"``, floods it with ``"remb"`` (aiortc as it ships) and
``"none"``, and ``"fixed:<bps>"`` sets the sender's target.  The link's own counters
(what entered the emulated bottleneck, what its queue dropped) are the ground truth.
"""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest
from helpers import wait_until

from webrtclab import Lab, MediaSpec
from webrtclab.cc import CongestionControl
from webrtclab.netem import LinkConditions

MEDIA = MediaSpec(width=320, height=240, fps=15, seed=7)
CAP_KBPS = 500


def capped(rate_kbps: int = CAP_KBPS) -> LinkConditions:
    return LinkConditions(delay_ms=25, rate_kbps=rate_kbps, queue_ms=300)


def link_window(links: pd.DataFrame, src: str, since_s: float) -> dict[str, float]:
    """What entered the ``src`` -> other link since ``since_s``: kbit/s, packets, drops."""
    rows = links[(links["src"] == src) & (links["time_s"] >= since_s)]
    first, last = rows.iloc[0], rows.iloc[-1]
    span = float(last["time_s"] - first["time_s"])
    packets = float(last["packets_in"] - first["packets_in"])
    return {
        "kbps_in": float(last["bytes_in"] - first["bytes_in"]) * 8 / span / 1000,
        "packets": packets,
        "drop_fraction": float(last["dropped_queue"] - first["dropped_queue"]) / packets,
        "queue_delay_ms": float(rows["queue_delay_mean_ms"].mean()),
    }


def video_rows(stats: pd.DataFrame, peer: str, direction: str, since_s: float) -> pd.DataFrame:
    return stats[
        (stats["peer"] == peer)
        & (stats["direction"] == direction)
        & (stats["kind"] == "video")
        & (stats["time_s"] >= since_s)
    ]


async def call(mode: str | CongestionControl, link: LinkConditions, seconds: float) -> Lab:
    """A two-peer call of ``seconds`` under ``mode``; returns the closed lab (tables kept)."""
    async with Lab(link=link, seed=11) as lab:
        await lab.add_peer("alice", media=MEDIA, congestion_control=mode)
        await lab.add_peer("bob", media=MEDIA, congestion_control=mode)
        await lab.wait_connected(timeout=20)
        await asyncio.sleep(seconds)
    return lab


async def test_gcc_holds_a_500_kbps_cap() -> None:
    lab = await call("gcc", capped(), 14)
    stats, links = lab.stats(), lab.links()
    since = float(stats["time_s"].max()) - 7  # the second half
    window = link_window(links, "alice", since)
    # aiortc as it ships puts ~4.4 Mbit/s into this link and loses ~60 % at its queue.
    assert window["kbps_in"] <= 1.2 * CAP_KBPS, window
    assert window["drop_fraction"] <= 0.03, window
    assert window["queue_delay_ms"] <= 150, window
    received = video_rows(stats, "bob", "recv", since)
    assert received["frames_per_s"].mean() >= 0.8 * MEDIA.fps
    # Goodput: most of the cap is used, not given away.
    assert received["bitrate_kbps"].mean() >= 0.4 * CAP_KBPS
    sent = video_rows(stats, "alice", "send", since)
    assert (sent["target_kbps"] < CAP_KBPS).all()
    # The wire carries more than the payload (headers, SRTP tag, retransmissions).
    # Both counters are read at the same instant, so this holds in every interval.
    assert (sent["wire_kbps"] >= sent["bitrate_kbps"]).all()
    assert sent["wire_kbps"].sum() > sent["bitrate_kbps"].sum()
    assert sent["rtx_kbps"].notna().all()


@pytest.mark.parametrize("mode", ["remb", "none"])
async def test_without_gcc_the_call_floods_the_same_link(mode: str) -> None:
    """``"remb"`` (aiortc's behaviour, kept for comparison) and ``"none"`` overrun the cap."""
    lab = await call(mode, capped(), 8)
    stats, links = lab.stats(), lab.links()
    window = link_window(links, "alice", float(stats["time_s"].max()) - 4)
    assert window["kbps_in"] >= 1.4 * CAP_KBPS, window
    assert window["drop_fraction"] >= 0.1, window


async def test_none_sends_at_the_configured_rate_whatever_the_link() -> None:
    control = CongestionControl(mode="none", fixed_bps=400_000)
    lab = await call(control, LinkConditions(delay_ms=10), 6)
    stats = lab.stats()
    sent = video_rows(stats, "alice", "send", float(stats["time_s"].max()) - 3)
    assert (sent["target_kbps"] == 400).all()
    assert 250 <= sent["bitrate_kbps"].mean() <= 550


async def test_a_fixed_target_reaches_the_encoder_and_the_link() -> None:
    async with Lab(link=LinkConditions(delay_ms=10), seed=2) as lab:
        alice = await lab.add_peer("alice", media=MEDIA, congestion_control="fixed:800000")
        await lab.add_peer("bob", media=MEDIA)
        await lab.wait_connected(timeout=20)
        session = alice.sessions["bob"]
        assert session.send_target_bps("video") == 800_000
        await asyncio.sleep(5)
        stats = lab.stats()
    sent = video_rows(stats, "alice", "send", float(stats["time_s"].max()) - 2.5)
    assert (sent["target_kbps"] == 800).all()
    # The synthetic picture is simple enough that the encoder may stay under its target.
    assert 300 <= sent["bitrate_kbps"].mean() <= 900


async def test_probing_finds_a_clean_link_at_once() -> None:
    # Without probing GCC climbs 8 % a second from 300 kbit/s; the probes (RTX copies
    # of recent video packets) take it to what 320x240 can use (600 kbit/s) at once.
    async with Lab(link=LinkConditions(delay_ms=10), seed=5) as lab:
        alice = await lab.add_peer("alice", media=MEDIA)
        await lab.add_peer("bob", media=MEDIA)
        await lab.wait_connected(timeout=20)
        rate = alice.sessions["bob"].rate
        # 5 s: without probes 300 -> 600 kbit/s takes about 9 s.
        await wait_until(lambda: rate.gcc.target_bps >= 600_000, 5.0)
        counters = rate.counters["video"]
        # One cluster at least (900 kbit/s is over what 320x240 uses); media sent
        # meanwhile counts toward its 5 packets, as in libwebrtc's pacer.
        assert counters.probe_packets >= 1
        assert counters.rtx_packets == 0  # probes are not counted as retransmissions
        assert rate.target_of("video") <= 600_000  # libwebrtc's cap for 320x240
        await asyncio.sleep(3)
        stats = lab.stats()
    sent = video_rows(stats, "alice", "send", float(stats["time_s"].max()) - 2)
    assert (sent["rtx_kbps"] == 0).all()
    assert sent["bitrate_kbps"].mean() >= 400  # the encoder was told 600 and uses it


async def test_transport_feedback_flows_both_ways_and_replaces_remb() -> None:
    async with Lab(link=LinkConditions(delay_ms=5), seed=4) as lab:
        alice = await lab.add_peer("alice", media=MEDIA)
        bob = await lab.add_peer("bob", media=MEDIA)
        await lab.wait_connected(timeout=20)
        sessions = [alice.sessions["bob"], bob.sessions["alice"]]
        await wait_until(lambda: all(s.rate.feedback_received > 10 for s in sessions))
        for session in sessions:
            assert session.rate.twcc_negotiated
            state = session.rate.gcc.state()
            assert state.acked_bps is not None and state.acked_bps > 0
        await wait_until(lambda: len(lab.rtt()) >= 2)
        stats = lab.stats()
    recv = stats[stats["direction"] == "recv"]
    # aiortc's REMB estimator is off where transport-wide feedback replaces it.
    assert recv["estimate_kbps"].isna().all()


async def test_remb_peers_report_their_receive_estimate() -> None:
    async with Lab(link=LinkConditions(delay_ms=5), seed=4) as lab:
        await lab.add_peer("alice", media=MEDIA, congestion_control="remb")
        bob = await lab.add_peer("bob", media=MEDIA, congestion_control="remb")
        await lab.wait_connected(timeout=20)
        assert "transport-cc" not in bob.sessions["alice"].pc.localDescription.sdp

        def estimated() -> bool:
            frame = lab.stats()
            rows = frame[(frame["direction"] == "recv") & (frame["kind"] == "video")]
            return bool(rows["estimate_kbps"].notna().any())

        await wait_until(estimated, timeout=15)


@pytest.mark.parametrize("gcc_offers", [False, True])
async def test_a_gcc_peer_and_a_remb_peer_use_remb_both_ways(gcc_offers: bool) -> None:
    """Mixed call: nothing negotiates transport-wide feedback; each side gets REMB.

    The newcomer offers: a gcc offerer's own offer lists transport-wide feedback, which
    the remb peer declines; its receivers must still send REMB.
    """
    first, second = ("remb", "gcc") if gcc_offers else ("gcc", "remb")
    async with Lab(link=LinkConditions(delay_ms=5), seed=4) as lab:
        a = await lab.add_peer("a", media=MEDIA, congestion_control=first)
        b = await lab.add_peer("b", media=MEDIA, congestion_control=second)
        await lab.wait_connected(timeout=20)
        sessions = [a.sessions["b"], b.sessions["a"]]
        for session in sessions:
            assert "transport-cc" not in session.pc.remoteDescription.sdp
        await wait_until(lambda: all(s.rate.remb_bps is not None for s in sessions), timeout=15)
        gcc = sessions[1] if gcc_offers else sessions[0]
        assert not gcc.rate.twcc_negotiated
        settings, remb = gcc.rate.settings, gcc.rate.remb_bps or 0
        assert gcc.rate.target_bps == max(settings.min_bps, min(remb, settings.max_bps))
