"""Unit tests of the congestion-control building blocks.

The pacer runs on a virtual clock: ``webrtclab.cc.pacer``'s ``time.monotonic`` and
``asyncio.sleep`` are replaced, so a sleep advances the clock at once and rates are
measured exactly, independent of how busy the machine is.  The recovery policies take
the time as an argument; the configuration and rate control are plain objects.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import types
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import webrtclab.cc.pacer as pacer_module
from webrtclab.cc.control import CongestionControl, RateControl, parse_congestion_control
from webrtclab.cc.pacer import (
    PRIORITY_AUDIO,
    PRIORITY_RTX,
    PRIORITY_VIDEO,
    PacedPacket,
    Pacer,
)
from webrtclab.cc.recovery import KeyframeThrottle, NackPolicy, RtxGuard
from webrtclab.cc.twcc import TWCC_URI, TransportFeedback
from webrtclab.exceptions import ConfigurationError
from webrtclab.sdp import strip_transport_cc

WAIT_S = 5.0  # real-time bound for "the pacer gets there"; success never depends on it

_real_sleep = asyncio.sleep


# --- the pacer, on a virtual clock ------------------------------------------------------


class VirtualClock:
    """``time.monotonic`` and ``asyncio.sleep`` for the pacer: sleeping advances the clock."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0.0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, delay: float, result: Any = None) -> Any:
        # A real sleep lasts at least a few microseconds; without a floor, a sleep below
        # the float resolution of ``now`` would leave the clock (and the budget) unchanged.
        delay = max(1e-6, delay)
        self.now += delay
        self.slept += delay
        await _real_sleep(0)
        return result


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> VirtualClock:
    virtual = VirtualClock()
    monkeypatch.setattr(pacer_module, "time", types.SimpleNamespace(monotonic=virtual.monotonic))
    fake_asyncio = types.SimpleNamespace(
        Event=asyncio.Event, ensure_future=asyncio.ensure_future, sleep=virtual.sleep
    )
    monkeypatch.setattr(pacer_module, "asyncio", fake_asyncio)
    return virtual


SendLog = list[tuple[str, float]]


def packet(
    clock: VirtualClock,
    log: SendLog,
    name: str,
    *,
    size: int = 1000,
    priority: int = PRIORITY_VIDEO,
    send: Callable[[], Awaitable[Any]] | None = None,
) -> PacedPacket:
    """A packet that records (name, virtual send time) in ``log`` when it leaves."""

    async def record() -> None:
        log.append((name, clock.now))
        if send is not None:
            await send()

    return PacedPacket(size=size, priority=priority, send=record, enqueued_s=clock.now)


async def until(condition: Callable[[], bool]) -> None:
    async def poll() -> None:
        while not condition():
            await _real_sleep(0)

    await asyncio.wait_for(poll(), WAIT_S)


@pytest.fixture
async def make_pacer() -> Any:
    pacers: list[Pacer] = []

    def factory(**kwargs: Any) -> Pacer:
        pacer = Pacer(**kwargs)
        pacers.append(pacer)
        return pacer

    yield factory
    for pacer in pacers:
        await pacer.close()


async def test_pacer_sends_audio_then_rtx_then_video(clock: VirtualClock, make_pacer: Any) -> None:
    pacer = make_pacer(target_bps=300_000)
    log: SendLog = []
    for name, priority in [
        ("video1", PRIORITY_VIDEO),
        ("rtx1", PRIORITY_RTX),
        ("audio1", PRIORITY_AUDIO),
        ("video2", PRIORITY_VIDEO),
        ("audio2", PRIORITY_AUDIO),
        ("rtx2", PRIORITY_RTX),
    ]:
        pacer.enqueue(packet(clock, log, name, priority=priority))
    assert pacer.queued_bytes == 6000
    pacer.start()
    await until(lambda: len(log) == 6)
    assert [name for name, _ in log] == ["audio1", "audio2", "rtx1", "rtx2", "video1", "video2"]
    assert pacer.queued_bytes == 0
    assert pacer.sent_packets == 6


async def test_pacer_rate_is_target_times_pacing_factor(
    clock: VirtualClock, make_pacer: Any
) -> None:
    target, factor, size = 400_000, 2.5, 1250
    pacer = make_pacer(target_bps=target, pacing_factor=factor)
    expected_bps = target * factor
    count = int(0.3 * expected_bps / 8 / size)  # ~0.3 s of video at the pacing rate
    log: SendLog = []
    for i in range(count):
        pacer.enqueue(packet(clock, log, f"v{i}", size=size))
    start = clock.now
    pacer.start()
    await until(lambda: len(log) == count)
    # The first packet leaves at once; each later one waits for its budget.
    assert log[0][1] == pytest.approx(start)
    elapsed = log[-1][1] - log[0][1]
    assert 0.2 < elapsed < 0.4
    measured_bps = (count - 1) * size * 8 / elapsed
    assert measured_bps == pytest.approx(expected_bps, rel=0.4)
    # Nothing went out faster than the rate (plus the burst allowance) at any point.
    for (_, t0), (_, t1) in zip(log, log[1:]):
        assert t1 - t0 >= size * 8 / expected_bps * 0.9


async def test_pacer_keeps_pacing_after_idle(clock: VirtualClock, make_pacer: Any) -> None:
    pacer = make_pacer(target_bps=400_000)
    log: SendLog = []
    pacer.start()
    pacer.enqueue(packet(clock, log, "a", size=1250))
    await until(lambda: len(log) == 1)
    clock.now += 10.0  # a long idle period must not build up more than the burst
    for i in range(10):
        pacer.enqueue(packet(clock, log, f"b{i}", size=1250))
    await until(lambda: len(log) == 11)
    elapsed = log[-1][1] - log[1][1]
    # 9 gaps of 10 ms at 1 Mbit/s; a 5 ms burst may save at most one of them
    assert elapsed >= 0.08 - 1e-9


def test_pacer_set_target_has_a_lower_bound(clock: VirtualClock) -> None:
    pacer = Pacer(target_bps=300_000, pacing_factor=2.5, min_rate_bps=50_000)
    assert pacer.rate_bps == pytest.approx(750_000)
    pacer.set_target(1_000_000)
    assert pacer.rate_bps == pytest.approx(2_500_000)
    pacer.set_target(10_000)
    assert pacer.rate_bps == pytest.approx(50_000)
    pacer.set_target(0)
    assert pacer.rate_bps == pytest.approx(50_000)
    assert Pacer(target_bps=0, min_rate_bps=80_000).rate_bps == pytest.approx(80_000)
    assert "kbit/s" in repr(pacer)


async def test_pacer_long_queue_drains_within_max_queue_s(
    clock: VirtualClock, make_pacer: Any
) -> None:
    max_queue_s = 0.5
    pacer = make_pacer(target_bps=10_000, min_rate_bps=50_000, max_queue_s=max_queue_s)
    assert pacer.rate_bps == pytest.approx(50_000)
    log: SendLog = []
    count, size = 200, 1000  # 1.6 Mbit: 32 s at the base rate
    for i in range(count):
        pacer.enqueue(packet(clock, log, f"v{i}", size=size))
    assert pacer.rate_bps >= count * size * 8 / max_queue_s
    start = clock.now
    pacer.start()
    await until(lambda: len(log) == count)
    assert log[-1][1] - start <= max_queue_s * 1.1
    # ...and it does not just dump the queue at once either.
    assert log[-1][1] - start >= max_queue_s * 0.5
    assert pacer.queue_time_s() == 0.0
    assert pacer.rate_bps == pytest.approx(50_000)


async def test_pacer_queue_time(clock: VirtualClock) -> None:
    pacer = Pacer()
    assert pacer.queue_time_s() == 0.0
    log: SendLog = []
    pacer.enqueue(packet(clock, log, "a"))
    clock.now += 0.25
    pacer.enqueue(packet(clock, log, "b", priority=PRIORITY_AUDIO))
    assert pacer.queue_time_s() == pytest.approx(0.25)
    await pacer.close()


async def test_pacer_close_twice_drops_the_queue(clock: VirtualClock) -> None:
    pacer = Pacer(target_bps=300_000)
    await pacer.close()  # never started: fine
    log: SendLog = []
    blocked = asyncio.Event()
    release = asyncio.Event()

    async def stuck() -> None:
        blocked.set()
        await release.wait()

    pacer.enqueue(packet(clock, log, "first", send=stuck))
    for i in range(5):
        pacer.enqueue(packet(clock, log, f"v{i}"))
    pacer.start()
    pacer.start()  # idempotent
    await asyncio.wait_for(blocked.wait(), WAIT_S)
    assert pacer.queued_bytes == 5000
    await pacer.close()
    assert pacer.queued_bytes == 0
    assert pacer.queue_time_s() == 0.0
    await pacer.close()
    release.set()
    await _real_sleep(0)
    assert [name for name, _ in log] == ["first"]


async def test_pacer_survives_failing_sends(
    clock: VirtualClock, make_pacer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    pacer = make_pacer(target_bps=300_000)
    log: SendLog = []

    async def closed() -> None:
        raise ConnectionError("transport closed")

    async def broken() -> None:
        raise RuntimeError("boom")

    caplog.set_level(logging.DEBUG, logger="webrtclab.cc.pacer")
    pacer.enqueue(packet(clock, log, "closed", send=closed))
    pacer.enqueue(packet(clock, log, "broken", send=broken))
    pacer.enqueue(packet(clock, log, "ok"))
    pacer.start()
    await until(lambda: len(log) == 3)
    assert [name for name, _ in log] == ["closed", "broken", "ok"]
    failures = [r for r in caplog.records if r.name == "webrtclab.cc.pacer"]
    assert len(failures) == 1  # the ConnectionError is expected and not logged
    (record,) = failures
    assert record.levelno == logging.ERROR
    assert "sending a paced packet failed" in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    # Still running: later packets go out too.
    pacer.enqueue(packet(clock, log, "later"))
    await until(lambda: len(log) == 4)
    assert pacer.sent_packets == 4


# --- NackPolicy -------------------------------------------------------------------------


def test_nack_at_once_then_once_per_rtt() -> None:
    policy = NackPolicy()
    policy.update({5}, 0.0)
    assert len(policy) == 1
    assert policy.due(0.0, 0.1) == ([5], [], False)
    assert policy.due(0.05, 0.1) == ([], [], False)
    assert policy.due(0.099, 0.1) == ([], [], False)
    assert policy.due(0.11, 0.1) == ([5], [], False)
    assert policy.due(0.15, 0.1) == ([], [], False)
    # a longer RTT spaces the NACKs further
    assert policy.due(0.25, 0.3) == ([], [], False)
    assert policy.due(0.42, 0.3) == ([5], [], False)
    assert policy.nacked == 3
    assert policy.given_up == 0


def test_nack_default_rtt_and_new_gaps() -> None:
    policy = NackPolicy()
    policy.update({1, 2}, 0.0)
    assert policy.due(0.0, None) == ([1, 2], [], False)
    policy.update({1, 2, 7}, 0.02)
    assert policy.due(0.02, None) == ([7], [], False)  # only the new one
    assert policy.due(0.09, None) == ([], [], False)  # 100 ms without an RTT
    assert policy.due(0.105, None) == ([1, 2], [], False)
    assert policy.nacked == 5


def test_nack_gives_up_after_max_retries() -> None:
    policy = NackPolicy(max_retries=3, max_age_s=100.0)
    policy.update({9}, 0.0)
    nacks = 0
    given_up: list[int] = []
    keyframe = False
    for step in range(10):
        due, dropped, keyframe = policy.due(step * 0.2, 0.1)
        nacks += due.count(9)
        if dropped:
            given_up = dropped
            break
    assert nacks == 3
    assert given_up == [9]
    assert keyframe
    assert len(policy) == 0
    assert policy.nacked == 3
    assert policy.given_up == 1
    assert policy.due(5.0, 0.1) == ([], [], False)


def test_nack_gives_up_after_max_age() -> None:
    policy = NackPolicy(max_retries=100, max_age_s=1.0)
    policy.update({3}, 0.0)
    assert policy.due(0.0, 0.1) == ([3], [], False)
    policy.update({3, 4}, 0.9)
    assert policy.due(0.95, 0.1) == ([3, 4], [], False)
    due, dropped, keyframe = policy.due(1.06, 0.1)
    assert dropped == [3]
    assert due == [4]
    assert keyframe
    assert policy.given_up == 1
    assert len(policy) == 1


def test_nack_recovered_packets_are_not_nacked() -> None:
    policy = NackPolicy()
    policy.update({1, 2, 3}, 0.0)
    assert policy.due(0.0, 0.05)[0] == [1, 2, 3]
    policy.update({1, 3}, 0.03)  # 2 arrived (retransmitted)
    assert len(policy) == 2
    assert policy.due(0.1, 0.05) == ([1, 3], [], False)
    policy.update(set(), 0.12)
    assert policy.due(0.3, 0.05) == ([], [], False)
    assert policy.given_up == 0
    assert policy.nacked == 5


def test_nack_too_many_missing_gives_up_and_asks_keyframe() -> None:
    policy = NackPolicy(max_missing=5)
    policy.update(set(range(10, 15)), 0.0)  # exactly the limit: NACKed normally
    assert policy.due(0.0, 0.1) == ([10, 11, 12, 13, 14], [], False)
    policy.update(set(range(10, 16)), 0.01)
    due, dropped, keyframe = policy.due(0.02, 0.1)
    assert due == []
    assert dropped == [10, 11, 12, 13, 14, 15]
    assert keyframe
    assert len(policy) == 0
    assert policy.given_up == 6
    assert policy.nacked == 5


# --- RtxGuard ---------------------------------------------------------------------------


def test_rtx_guard_refuses_repeats_within_an_rtt() -> None:
    guard = RtxGuard(min_bucket=100_000)
    assert guard.allow(1, 1000, 0.0, 1_000_000, 0.1)
    assert not guard.allow(1, 1000, 0.05, 1_000_000, 0.1)
    assert guard.repeats == 1
    assert guard.allow(2, 1000, 0.05, 1_000_000, 0.1)  # another packet is fine
    assert guard.allow(1, 1000, 0.11, 1_000_000, 0.1)
    assert not guard.allow(1, 1000, 0.15, 1_000_000, None)  # default RTT 100 ms
    assert guard.allow(1, 1000, 0.22, 1_000_000, None)
    assert guard.repeats == 2
    assert guard.over_budget == 0


def test_rtx_guard_budget_refills_at_share_of_target() -> None:
    target, share = 1_000_000, 0.25
    guard = RtxGuard(share=share, burst_s=0.5, min_bucket=6000)
    # The bucket starts with min_bucket bytes: five 1200-byte packets.
    assert all(guard.allow(seq, 1200, 0.0, target, 0.1) for seq in range(5))
    assert not guard.allow(5, 1200, 0.0, target, 0.1)
    assert guard.over_budget == 1
    refill_s = 1200 * 8 / (target * share)  # 38.4 ms for one packet
    assert not guard.allow(5, 1200, refill_s * 0.9, target, 0.1)
    assert guard.over_budget == 2
    assert guard.allow(5, 1200, refill_s * 1.05, target, 0.1)
    assert not guard.allow(6, 1200, refill_s * 1.05, target, 0.1)
    assert guard.over_budget == 3
    assert guard.repeats == 0
    # A long pause fills the bucket to burst_s of the share, not more.
    now = 100.0
    capacity = target * share * 0.5 / 8  # 15625 B
    allowed = 0
    for seq in range(100, 200):
        if guard.allow(seq, 1000, now, target, 0.1):
            allowed += 1
    assert allowed == int(capacity // 1000)


def test_rtx_guard_min_bucket_at_tiny_targets() -> None:
    guard = RtxGuard(share=0.25, burst_s=0.5, min_bucket=6000)
    results = [guard.allow(seq, 1200, 0.0, 10_000, 0.1) for seq in range(8)]
    assert results == [True] * 5 + [False] * 3
    assert guard.over_budget == 3
    # Later, the bucket refills (slowly) up to min_bucket, not to the tiny capacity.
    results = [guard.allow(seq, 1200, 1000.0, 10_000, 0.1) for seq in range(10, 18)]
    assert results == [True] * 5 + [False] * 3
    # Without the minimum, nothing gets through at first.
    tiny = RtxGuard(share=0.25, burst_s=0.5, min_bucket=0)
    assert not tiny.allow(1, 1200, 0.0, 10_000, 0.1)
    assert tiny.over_budget == 1


# --- KeyframeThrottle -------------------------------------------------------------------


def test_keyframe_throttle_interval() -> None:
    throttle = KeyframeThrottle(interval_s=0.5)
    assert throttle.allow(0.0)
    assert not throttle.allow(0.1)
    assert not throttle.allow(0.49)
    assert throttle.allow(0.51)
    assert not throttle.allow(0.6, 0.05)  # a short RTT does not shorten the interval
    assert throttle.allow(1.02, 0.05)
    assert throttle.allowed == 3
    assert throttle.suppressed == 3


def test_keyframe_throttle_waits_an_rtt_when_longer() -> None:
    throttle = KeyframeThrottle(interval_s=0.5)
    assert throttle.allow(10.0, 2.0)
    assert not throttle.allow(10.6, 2.0)
    assert not throttle.allow(11.9, 2.0)
    assert throttle.allow(12.1, 2.0)
    assert throttle.allowed == 2
    assert throttle.suppressed == 2


# --- CongestionControl and parse_congestion_control -------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "quoted"),
    [
        ({"mode": "bogus"}, "'bogus'"),
        ({"min_bps": 200_000, "max_bps": 100_000, "start_bps": 150_000}, "200000"),
        ({"min_bps": 500}, "500"),
        ({"video_min_bps": 90_000, "video_max_bps": 80_000}, "90000"),
        ({"audio_min_bps": 70_000}, "70000"),
        ({"start_bps": 10_000}, "10000"),
        ({"start_bps": 3_000_000}, "3000000"),
        ({"fixed_bps": 999}, "999"),
        ({"pacing_factor": 0.5}, "0.5"),
        ({"pacing_factor": 11.0}, "11.0"),
        ({"pacing_factor": float("nan")}, "nan"),
        ({"rtx_share": 1.5}, "1.5"),
        ({"rtx_share": -0.1}, "-0.1"),
        ({"feedback_interval_s": 0.001}, "0.001"),
        ({"feedback_interval_s": 2.0}, "2.0"),
    ],
)
def test_congestion_control_refusals(kwargs: dict[str, Any], quoted: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        CongestionControl(**kwargs)
    assert quoted in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("spec", "quoted"),
    [
        ("bbr", "'bbr'"),
        ("fixed:abc", "'fixed:abc'"),
        ("fixed:", "'fixed:'"),
        ("fixed:-5", "'fixed:-5'"),
        ("fixed:800m", "'fixed:800m'"),
        ("", "''"),
        (123, "123"),
        (b"gcc", "b'gcc'"),
        (["gcc"], "['gcc']"),
        ("fixed:0", "0"),
    ],
)
def test_parse_congestion_control_refusals(spec: Any, quoted: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_congestion_control(spec)
    assert quoted in str(info.value)


def test_parse_congestion_control_values() -> None:
    assert parse_congestion_control(None) == CongestionControl()
    settings = CongestionControl(mode="remb", start_bps=400_000)
    assert parse_congestion_control(settings) is settings
    fixed = parse_congestion_control("fixed:800k")
    assert fixed.mode == "fixed"
    assert fixed.fixed_bps == 800_000
    assert fixed.min_bps <= fixed.start_bps <= fixed.max_bps
    assert parse_congestion_control(" FIXED:800K ") == fixed
    assert parse_congestion_control("fixed:800000") == fixed
    assert parse_congestion_control("fixed:20000").fixed_bps == 20_000  # below min_bps
    assert parse_congestion_control("fixed:9000000").fixed_bps == 9_000_000
    for mode in ("gcc", "remb", "none"):
        assert parse_congestion_control(mode).mode == mode
        assert parse_congestion_control(mode.upper()).mode == mode


@pytest.mark.parametrize("spec", ["gcc", "remb", "none", "fixed:800000", "fixed:1000"])
def test_congestion_control_str_round_trip(spec: str) -> None:
    settings = parse_congestion_control(spec)
    assert str(settings) == spec
    assert parse_congestion_control(str(settings)) == settings


def test_congestion_control_str_of_k_suffix() -> None:
    assert str(parse_congestion_control("fixed:800k")) == "fixed:800000"
    assert str(CongestionControl(mode="fixed", fixed_bps=123_456)) == "fixed:123456"


@pytest.mark.parametrize(
    ("mode", "uses_twcc", "lab_sender"),
    [
        ("gcc", True, True),
        ("fixed", True, True),
        ("none", False, True),
        ("remb", False, False),
    ],
)
def test_congestion_control_mode_properties(mode: Any, uses_twcc: bool, lab_sender: bool) -> None:
    settings = CongestionControl(mode=mode)
    assert settings.uses_twcc is uses_twcc
    assert settings.lab_sender is lab_sender


# --- RateControl ------------------------------------------------------------------------


def empty_feedback() -> TransportFeedback:
    return TransportFeedback(
        sender_ssrc=1,
        media_ssrc=2,
        base_sequence=0,
        reference_time_64ms=0,
        feedback_count=0,
        packets=(),
    )


def test_rate_control_split() -> None:
    s = CongestionControl()
    control = RateControl(s)
    assert control.split(300_000) == {"audio": 30_000, "video": 270_000}
    assert control.split(100_000) == {"audio": 16_000, "video": 84_000}
    assert control.split(2_000_000) == {"audio": 64_000, "video": 1_936_000}
    assert control.split(40_000) == {"audio": 16_000, "video": 30_000}
    assert control.split(0)["video"] == s.video_min_bps
    assert control.split(10_000_000)["video"] == s.video_max_bps
    for total in range(0, 4_000_001, 7_919):
        split = control.split(total)
        assert s.audio_min_bps <= split["audio"] <= s.audio_max_bps
        assert s.video_min_bps <= split["video"] <= s.video_max_bps
        rest = total - split["audio"]
        if s.video_min_bps <= rest <= s.video_max_bps:
            assert split["video"] == rest
    assert control.target_of("audio") + control.target_of("video") == s.start_bps
    assert control.target_of("data") == 0


@pytest.mark.parametrize("mode", ["none", "fixed"])
def test_rate_control_fixed_modes(mode: Any) -> None:
    settings = CongestionControl(mode=mode, fixed_bps=700_000)
    control = RateControl(settings)
    fixed = {"audio": settings.audio_max_bps, "video": 700_000}
    assert control.split(50_000) == fixed
    assert control.split(5_000_000) == fixed
    assert control.target_bps == 700_000 + settings.audio_max_bps
    assert control.target_of("video") == 700_000
    assert control.pacer.rate_bps == pytest.approx(control.target_bps * settings.pacing_factor)
    calls: list[int] = []
    control.register_encoder("video", calls.append)
    control.on_remb(100_000)
    control.on_feedback(empty_feedback())
    assert control.target_bps == 700_000 + settings.audio_max_bps
    assert calls == [700_000]


def test_rate_control_register_encoder_calls_on_changes_only() -> None:
    control = RateControl(CongestionControl())
    video: list[int] = []
    audio: list[int] = []
    control.register_encoder("video", video.append)
    control.register_encoder("audio", audio.append)
    assert video == [270_000]
    assert audio == [30_000]
    control.on_remb(1_000_000)
    assert video == [270_000, 936_000]
    assert audio == [30_000, 64_000]
    control.on_remb(1_000_000)  # no change: no call
    control.on_remb(1_100_000)  # audio stays at its maximum
    assert video == [270_000, 936_000, 1_036_000]
    assert audio == [30_000, 64_000]
    assert control.pacer.rate_bps == pytest.approx(1_100_000 * 2.5)


def test_rate_control_remb_drives_gcc_until_transport_feedback() -> None:
    settings = CongestionControl()
    control = RateControl(settings)
    start = control.target_bps
    assert start == settings.start_bps
    control.on_remb(800_000)
    assert control.remb_bps == 800_000
    assert control.target_bps == 800_000
    control.on_remb(1_000)  # clamped to the range
    assert control.target_bps == settings.min_bps
    control.on_remb(10**9)
    assert control.target_bps == settings.max_bps
    assert control.pacer.rate_bps == pytest.approx(settings.max_bps * 2.5)
    control.on_remb(600_000)
    assert control.target_bps == 600_000
    calls: list[int] = []
    control.register_encoder("video", calls.append)
    control.on_feedback(empty_feedback())
    assert control.twcc_negotiated
    assert control.feedback_received == 1
    control.on_remb(200_000)  # ignored now: GCC decides
    assert control.target_bps == control.gcc.target_bps
    assert calls == [600_000 - 60_000]


def test_rate_control_remb_mode_leaves_the_target_alone() -> None:
    control = RateControl(CongestionControl(mode="remb"))
    calls: list[int] = []
    control.register_encoder("video", calls.append)
    control.on_remb(1_500_000)
    assert control.remb_bps == 1_500_000
    assert control.target_bps == 300_000
    assert calls == [270_000]


def test_changed_settings_are_validated() -> None:
    control = RateControl(CongestionControl())
    assert dataclasses.replace(control.settings, rtx_share=0.5).rtx_share == 0.5
    with pytest.raises(ConfigurationError, match="3.0"):
        dataclasses.replace(control.settings, rtx_share=3.0)
    control.on_rtt(0.08)
    assert control.rtt_s == 0.08


# --- strip_transport_cc -----------------------------------------------------------------

SDP_LINES = [
    "v=0",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0 1",
    "a=extmap-allow-mixed",
    "a=msid-semantic: WMS",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111",
    "c=IN IP4 0.0.0.0",
    "a=mid:0",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
    f"a=extmap:5 {TWCC_URI}",
    "a=rtpmap:111 opus/48000/2",
    "a=rtcp-fb:111 transport-cc",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97",
    "c=IN IP4 0.0.0.0",
    "a=mid:1",
    f"a=extmap:3/sendrecv {TWCC_URI}",
    "a=extmap:4 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "a=rtpmap:96 VP8/90000",
    "a=rtcp-fb:96 goog-remb",
    "a=rtcp-fb:96 transport-cc",
    "a=rtcp-fb:96 ccm fir",
    "a=rtcp-fb:96 nack",
    "a=rtcp-fb:96 nack pli",
    "a=rtcp-fb:96 transport-cc-like",
    "a=x-note:transport-cc",
    "a=rtpmap:97 rtx/90000",
    "a=fmtp:97 apt=96",
    "a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host",
]


def _is_twcc(line: str) -> bool:
    return (
        line.endswith(TWCC_URI) or line.startswith("a=rtcp-fb:") and line.endswith(" transport-cc")
    )


@pytest.mark.parametrize("eol", ["\r\n", "\n"])
def test_strip_transport_cc(eol: str) -> None:
    sdp = eol.join(SDP_LINES) + eol
    expected = eol.join(line for line in SDP_LINES if not _is_twcc(line)) + eol
    assert sum(_is_twcc(line) for line in SDP_LINES) == 4
    stripped = strip_transport_cc(sdp)
    assert stripped == expected
    assert TWCC_URI not in stripped
    assert "a=rtcp-fb:96 transport-cc-like" + eol in stripped
    assert strip_transport_cc(stripped) == stripped


def test_strip_transport_cc_keeps_other_sdp_unchanged() -> None:
    plain = "\r\n".join(line for line in SDP_LINES if not _is_twcc(line)) + "\r\n"
    assert strip_transport_cc(plain) == plain
    assert strip_transport_cc("") == ""
    # mixed line ends and a last line without one are kept as they are
    mixed = "v=0\r\ns=-\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 transport-cc\r\na=mid:1"
    assert strip_transport_cc(mixed) == "v=0\r\ns=-\na=rtcp-fb:96 nack\r\na=mid:1"
    last = "v=0\r\na=rtcp-fb:96 transport-cc"
    assert strip_transport_cc(last) == "v=0\r\n"


def test_strip_transport_cc_is_byte_for_byte_elsewhere() -> None:
    # Odd characters that str.splitlines() treats as line breaks stay where they are.
    session = "s=caf\u00e9 \u2028 \x0c \x85 x\r\n"
    odd = f"v=0\r\n{session}a=rtcp-fb:96 transport-cc \r\na=ice-ufrag:ab\r\n"
    assert strip_transport_cc(odd) == f"v=0\r\n{session}a=ice-ufrag:ab\r\n"


def test_rate_control_probes_a_clean_link_up_to_what_the_streams_can_use() -> None:
    # A virtual link of 2 Mbit/s: each probe packet arrives after the previous one has
    # been serialised at that rate, so a cluster's receive rate is the link's.
    now = [0.0]
    control = RateControl(CongestionControl(), clock=lambda: now[0])
    control.set_stream_max("video", 1_700_000)  # 640x480: libwebrtc's 1700 kbit/s
    assert control.take_probes() == []  # nothing before media
    control.start_probing()
    control.start_probing()  # once
    clusters = control.take_probes()
    # 3x and 6x the 300 kbit/s start, the second capped at what the streams can use
    # (1.7 Mbit/s of video and Opus's 64 kbit/s).
    assert [c.bitrate_bps for c in clusters] == [900_000, 1_764_000]
    assert control.take_probes() == []
    link_bps, size = 2_000_000, 1200
    arrival = 0.0
    for cluster in clusters:
        packets = []
        for _ in range(max(cluster.min_probes, -(-cluster.min_bytes // size))):
            sequence = control.history.next_sequence()
            control.history.sent(sequence, now[0], size, is_retransmission=True)
            control.probe_sent(sequence, cluster)
            arrival = max(arrival, now[0]) + size * 8 / link_bps
            packets.append((sequence, arrival))
            now[0] += size * 8 / cluster.bitrate_bps
        now[0] += 0.02
        control.on_feedback(
            TransportFeedback(
                sender_ssrc=1,
                media_ssrc=2,
                base_sequence=packets[0][0],
                reference_time_64ms=0,
                feedback_count=0,
                packets=tuple(packets),
            )
        )
    # The 1.76 Mbit/s cluster went through: the estimate jumps to it (not 8 % a second),
    # and with the maximum probed there is nothing further to probe.
    assert control.gcc.target_bps >= 1_600_000
    assert control.take_probes() == []


def test_rate_control_takes_retransmissions_off_the_video_target() -> None:
    # libwebrtc FecControllerDefault: the encoder gets the estimate minus the share
    # protection took of what was sent over the last second, at most half.
    now = [0.0]
    control = RateControl(CongestionControl(), clock=lambda: now[0])
    video: list[int] = []
    control.register_encoder("video", video.append)
    counters = control.counters["video"]
    control.on_remb(1_000_000)  # a change of target: applied (gcc without feedback)
    assert video[-1] == 936_000 and control.protection == 0.0
    for _ in range(10):  # 0.5 s: 100 kB sent, a fifth of it retransmissions
        now[0] += 0.05
        counters.wire_bytes += 10_000
        counters.rtx_bytes += 2_000
        control.on_remb(1_000_000)
    assert control.protection == pytest.approx(0.2)
    assert video[-1] == pytest.approx(0.8 * 936_000, abs=1)
    for _ in range(30):  # then 1.5 s without retransmissions: the window forgets them
        now[0] += 0.05
        counters.wire_bytes += 10_000
        control.on_remb(1_000_000)
    assert control.protection == 0.0
    assert video[-1] == 936_000
    for _ in range(30):  # nothing but retransmissions: the encoder still gets half
        now[0] += 0.05
        counters.wire_bytes += 10_000
        counters.rtx_bytes += 10_000
        control.on_remb(1_000_000)
    assert control.protection == 0.5
    assert video[-1] == 468_000


# --- the encoder's side: resolution changes under a moving target ---------------------


def _synthetic_frames(width: int, height: int, fps: int, count: int) -> list[Any]:
    import fractions

    from webrtclab.media import SyntheticVideoTrack, yuv420p_frame

    track = SyntheticVideoTrack(width, height, fps, seed=3)
    frames = []
    for index in range(count):
        frame = yuv420p_frame(track.render(index))
        frame.pts = index * 90_000 // fps
        frame.time_base = fractions.Fraction(1, 90_000)
        frames.append(frame)
    return frames


def test_vp8_scales_up_only_after_the_target_held_and_with_a_small_keyframe() -> None:
    from webrtclab.codecs.vp8 import SCALE_HOLD_S, SCALE_UP_HOLD_S, Vp8Encoder

    fps, high = 30, 1_000_000
    frames = _synthetic_frames(320, 240, fps, 6 * fps)
    fresh = Vp8Encoder(bitrate=high, framerate=fps)
    first_keyframe = len(b"".join(fresh.encode(frames[0])[0]))
    fresh.close()
    encoder = Vp8Encoder(bitrate=50_000, framerate=fps, min_bits_per_pixel=0.07)
    sizes: dict[int, int] = {}
    blip = int(SCALE_HOLD_S * fps) + 5  # halved by then
    for index, frame in enumerate(frames):
        if index == blip:
            encoder.target_bitrate = high  # a jump (a probe) ...
        elif index == blip + int(SCALE_UP_HOLD_S * fps) // 2:
            encoder.target_bitrate = 50_000  # ... that falls back within the hold
        elif index == 4 * fps:
            encoder.target_bitrate = high  # and one that lasts
        inits = encoder.inits
        payload = b"".join(encoder.encode(frame)[0])
        if encoder.inits != inits:
            sizes[index] = len(payload)
    encoder.close()
    assert list(sizes)[1] == int(SCALE_HOLD_S * fps) - 1  # halved after the hold
    # No rebuild for the blip; back to full size once the target held SCALE_UP_HOLD_S.
    assert list(sizes)[2:] == [4 * fps + int(SCALE_UP_HOLD_S * fps) - 1]
    assert encoder.scale == 1.0 and encoder.inits == 3
    # The keyframe of the rebuild: a 300 % intra cap (~3-4 frames), not a first
    # keyframe's 900 %.
    resized_keyframe = sizes[list(sizes)[2]]
    assert resized_keyframe * 8 <= 5 * high / fps
    assert resized_keyframe < 0.6 * first_keyframe


def test_rate_control_stream_max_limits_the_video_split() -> None:
    control = RateControl(CongestionControl())
    control.set_stream_max("video", 600_000)
    assert control.split(2_000_000) == {"audio": 64_000, "video": 600_000}
    assert control.split(300_000) == {"audio": 30_000, "video": 270_000}


@pytest.mark.parametrize("mode", ["none", "fixed", "remb"])
def test_rate_control_probes_only_under_gcc(mode: Any) -> None:
    control = RateControl(CongestionControl(mode=mode))
    control.start_probing()
    assert control.take_probes() == []
