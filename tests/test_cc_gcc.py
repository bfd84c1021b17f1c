"""GCC send-side estimators: unit tests and closed-loop runs on a simulated bottleneck.

Everything is deterministic and in simulated time: a tiny discrete-event link (capacity,
drop-tail queue, one-way delay, optional random loss and arrival jitter), a sender pacing
1200-byte packets at the controller's target (and the probe clusters it asks for), and a
receiver sending transport-wide feedback every 50 ms.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from webrtclab.cc.gcc import (
    AcknowledgedBitrate,
    AimdRateControl,
    GccController,
    GccState,
    InterArrival,
    LossBasedBwe,
    OveruseDetector,
    ProbeBitrateEstimator,
    ProbeCluster,
    ProbeController,
    TrendlineEstimator,
)
from webrtclab.cc.types import PacketResult
from webrtclab.exceptions import ConfigurationError

PACKET = 1200  # bytes
FEEDBACK_S = 0.05

# --- the simulator ------------------------------------------------------------------------


@dataclass
class _Sent:
    seq: int
    send_s: float
    size: int
    arrival_s: float | None  # None: dropped (queue or random loss)
    queue_s: float  # time spent waiting in the bottleneck queue
    queue_drop: bool


@dataclass
class _Probe:
    cluster: ProbeCluster
    left: int  # packets still to send


@dataclass
class SimResult:
    duration_s: float
    packets: list[_Sent]
    #: (time at the sender, state after that feedback)
    states: list[tuple[float, GccState]] = field(default_factory=list)

    def send_rate_bps(self, start_s: float, end_s: float) -> float:
        bits = sum(8 * p.size for p in self.packets if start_s <= p.send_s < end_s)
        return bits / (end_s - start_s)

    def queue_drop_fraction(self) -> float:
        return sum(p.queue_drop for p in self.packets) / len(self.packets)

    def queue_delay_p95_s(self, start_s: float) -> float:
        delays = sorted(p.queue_s for p in self.packets if p.send_s >= start_s and p.arrival_s)
        return delays[int(0.95 * (len(delays) - 1))]

    def first_time_target_at_least(self, bps: float, after_s: float = 0.0) -> float | None:
        for t, state in self.states:
            if t >= after_s and state.target_bps >= bps:
                return t
        return None

    def first_time_rate_at_least(self, bps: float, after_s: float) -> float | None:
        """End of the first 1 s window (sliding by 100 ms) sending at ``bps`` or more."""
        t = after_s + 1.0
        while t <= self.duration_s:
            if self.send_rate_bps(t - 1.0, t) >= bps:
                return t
            t += 0.1
        return None


def simulate(
    *,
    duration_s: float,
    capacity_bps: Sequence[tuple[float, float]] | None,
    queue_ms: float = 300.0,
    one_way_s: float = 0.025,
    loss: float = 0.0,
    jitter_s: float = 0.0,
    start_bps: int = 300_000,
    max_bps: int = 2_500_000,
    probing: bool = True,
    seed: int = 1,
) -> SimResult:
    """Run a sender driven by :class:`GccController` over one bottleneck.

    ``capacity_bps`` is a step schedule ``[(from_s, bps), ...]`` (``None``: no
    bottleneck).  The bottleneck is FIFO; a packet that would wait more than
    ``queue_ms`` is dropped (drop tail).  After it, random ``loss`` and uniform arrival
    jitter of ``±jitter_s``.  The receiver reports every 50 ms all packets that arrived
    since its last report, and as lost those dropped before the newest arrival; the
    report reaches the sender ``one_way_s`` later.  The sender paces evenly at the
    target; while a probe cluster is pending, every packet is a probe at its rate.
    """
    rng = random.Random(seed)
    gcc = GccController(start_bps=start_bps, max_bps=max_bps)
    probe_ctrl = ProbeController(max_bps=max_bps)
    probe_est = ProbeBitrateEstimator()
    probe_of: dict[int, ProbeCluster] = {}
    pending: deque[_Probe] = deque()

    def enqueue(clusters: list[ProbeCluster]) -> None:
        for c in clusters:
            pending.append(_Probe(c, max(c.min_probes, math.ceil(c.min_bytes / PACKET))))

    def capacity_at(t: float) -> float:
        assert capacity_bps is not None
        rate = capacity_bps[0][1]
        for start, bps in capacity_bps:
            if t >= start:
                rate = bps
        return rate

    result = SimResult(duration_s, [])
    packets = result.packets
    link_free_s = 0.0
    reported = 0  # packets[:reported] are all reported
    unreported: list[_Sent] = []  # sent, not yet in a report
    next_send_s = 0.0
    next_feedback_s = FEEDBACK_S  # receiver clock = simulation clock
    if probing:
        enqueue(probe_ctrl.on_start(start_bps, 0.0))

    while True:
        feedback_at_sender_s = next_feedback_s + one_way_s
        if min(next_send_s, feedback_at_sender_s) >= duration_s:
            break
        if next_send_s <= feedback_at_sender_s:
            now = next_send_s
            seq = len(packets)
            rate = gcc.target_bps
            if pending:
                probe = pending[0]
                probe_of[seq] = probe.cluster
                rate = probe.cluster.bitrate_bps
                probe.left -= 1
                if probe.left == 0:
                    pending.popleft()
            # Through the bottleneck.
            queue_s = 0.0
            departure_s: float | None = now
            queue_drop = False
            if capacity_bps is not None:
                start = max(now, link_free_s)
                queue_s = start - now
                if queue_s > queue_ms / 1000:
                    departure_s = None
                    queue_drop = True
                else:
                    link_free_s = start + 8 * PACKET / capacity_at(start)
                    departure_s = link_free_s
            arrival_s: float | None = None
            if departure_s is not None and rng.random() >= loss:
                arrival_s = departure_s + one_way_s + rng.uniform(-jitter_s, jitter_s)
            sent = _Sent(seq, now, PACKET, arrival_s, queue_s, queue_drop)
            packets.append(sent)
            unreported.append(sent)
            next_send_s = now + 8 * PACKET / rate
        else:
            now = feedback_at_sender_s
            t_rx = next_feedback_s
            next_feedback_s += FEEDBACK_S
            arrived = [p for p in unreported if p.arrival_s is not None and p.arrival_s <= t_rx]
            if not arrived:
                continue
            newest = max(p.seq for p in arrived)
            report = [
                p
                for p in unreported
                if (p.arrival_s is not None and p.arrival_s <= t_rx)
                or (p.arrival_s is None and p.seq < newest)
            ]
            reported_ids = {p.seq for p in report}
            unreported = [p for p in unreported if p.seq not in reported_ids]
            reported += len(report)
            results = [
                PacketResult(p.seq, p.send_s, p.size, p.arrival_s)
                for p in sorted(report, key=lambda p: p.seq)
            ]
            # RTT as transport-cc gives it: send of the newest packet to the feedback,
            # minus the time the receiver held it.
            last = max(arrived, key=lambda p: p.arrival_s or 0.0)
            assert last.arrival_s is not None
            gcc.on_rtt(now - last.send_s - (t_rx - last.arrival_s))
            gcc.on_feedback(results, now)
            if probing:
                probe_bps = probe_est.on_feedback(results, probe_of)
                if probe_bps is not None:
                    gcc.on_probe_result(probe_bps, now)
                enqueue(probe_ctrl.on_estimate(gcc.target_bps, now, periodic=gcc.wants_probe()))
                if pending:
                    next_send_s = now
            result.states.append((now, gcc.state()))
            # Re-pace at the new target from the last send.
            if packets and not pending:
                next_send_s = max(now, packets[-1].send_s + 8 * PACKET / gcc.target_bps)
    return result


# --- closed loop on a bottleneck ----------------------------------------------------------


@pytest.mark.parametrize("cap_kbps", [300, 500, 1000, 2000])
def test_converges_on_a_capped_link(cap_kbps: int) -> None:
    cap = cap_kbps * 1000
    run = simulate(duration_s=60.0, capacity_bps=[(0.0, cap)], queue_ms=300, one_way_s=0.025)
    rate = run.send_rate_bps(10.0, 60.0)
    assert 0.70 * cap <= rate <= 1.10 * cap, rate / cap
    assert run.queue_drop_fraction() < 0.02
    assert run.queue_delay_p95_s(10.0) < 0.150


def test_capacity_drop_is_followed_within_3_s() -> None:
    run = simulate(duration_s=40.0, capacity_bps=[(0.0, 2_000_000), (20.0, 500_000)], queue_ms=300)
    assert run.send_rate_bps(15.0, 20.0) > 1_400_000  # it had found the 2 Mbit/s first
    assert run.send_rate_bps(22.5, 23.0) <= 1.1 * 500_000
    assert run.send_rate_bps(23.0, 40.0) <= 1.1 * 500_000


def test_capacity_rise_is_found_within_20_s() -> None:
    run = simulate(duration_s=45.0, capacity_bps=[(0.0, 500_000), (20.0, 2_000_000)], queue_ms=300)
    assert run.send_rate_bps(10.0, 20.0) <= 1.1 * 500_000
    reached = run.first_time_rate_at_least(0.8 * 2_000_000, after_s=20.0)
    assert reached is not None and reached - 20.0 <= 20.0, reached


def test_periodic_probing_finds_a_capacity_rise_within_8_s() -> None:
    # Without probing after the start, 8 %/s from 500 kbit/s takes ~18 s to 1.6 Mbit/s.
    run = simulate(duration_s=40.0, capacity_bps=[(0.0, 500_000), (20.0, 2_000_000)], queue_ms=300)
    reached = run.first_time_rate_at_least(0.8 * 2_000_000, after_s=20.0)
    assert reached is not None and reached - 20.0 <= 8.0, reached
    assert run.queue_drop_fraction() < 0.02


def test_clean_link_ramps_from_300_to_1500_kbps_within_20_s() -> None:
    run = simulate(duration_s=20.0, capacity_bps=None, start_bps=300_000)
    reached = run.first_time_target_at_least(1_500_000)
    assert reached is not None and reached <= 20.0


def test_high_random_loss_lowers_the_target() -> None:
    run = simulate(duration_s=20.0, capacity_bps=None, loss=0.20, probing=False)
    targets = [s.target_bps for _, s in run.states]
    assert targets[-1] < 300_000
    assert max(targets[-20:]) < 0.5 * 300_000
    assert run.states[-1][1].loss_fraction > 0.1


def test_low_random_loss_still_lets_the_target_rise() -> None:
    run = simulate(duration_s=20.0, capacity_bps=None, loss=0.01, probing=False)
    assert run.states[-1][1].target_bps > 1.5 * 300_000


def test_arrival_jitter_on_an_idle_link_is_not_congestion() -> None:
    """A steady 500 kbit/s stream, ±3 ms uniform arrival noise: the target only grows.

    The limit 1.5 x acknowledged + 10 kbit/s caps what a 500 kbit/s stream can justify
    at 760 kbit/s, so the maximum is set just under it.
    """
    rng = random.Random(7)
    gcc = GccController(start_bps=300_000, max_bps=700_000)
    gcc.on_rtt(0.05)
    interval = 8 * PACKET / 500_000
    seq = 0
    pending: list[PacketResult] = []
    targets: list[int] = []
    usages: set[str] = set()
    t = 0.0
    next_feedback = FEEDBACK_S
    while t < 30.0:
        arrival = t + 0.025 + rng.uniform(-0.003, 0.003)
        pending.append(PacketResult(seq, t, PACKET, arrival))
        seq += 1
        t += interval
        while next_feedback <= t:
            ready = [p for p in pending if (p.arrival_time_s or 0.0) <= next_feedback]
            pending = [p for p in pending if (p.arrival_time_s or 0.0) > next_feedback]
            if ready:
                targets.append(gcc.on_feedback(ready, next_feedback + 0.025))
                usages.add(gcc.state().usage)
            next_feedback += FEEDBACK_S
    assert "overusing" not in usages
    assert all(b >= a for a, b in zip(targets, targets[1:])), "the target went down"
    assert targets[-1] == 700_000


def test_arrival_jitter_at_full_rate_keeps_the_target_at_max() -> None:
    """The same noise in closed loop on an uncapped link, up to 2.5 Mbit/s (a packet
    every 3.8 ms, so every 5 ms group is jittered): probes find the max and it stays."""
    run = simulate(duration_s=30.0, capacity_bps=None, jitter_s=0.003, seed=3)
    assert all(s.usage != "overusing" for _, s in run.states)
    reached = run.first_time_target_at_least(2_500_000)
    assert reached is not None and reached < 10.0
    assert min(s.target_bps for t, s in run.states if t > reached) == 2_500_000


# --- components ---------------------------------------------------------------------------


def test_inter_arrival_groups_5_ms_bursts() -> None:
    ia = InterArrival()
    deltas = []
    # Three bursts of three packets 1 ms apart, bursts 20 ms apart, 2 ms queueing growth.
    for burst in range(3):
        for i in range(3):
            send = burst * 0.020 + i * 0.001
            arrival = 0.050 + send + burst * 0.002
            deltas.append(ia.compute_deltas(send, arrival, arrival, 100))
    closed = [d for d in deltas if d is not None]
    assert len(closed) == 1  # the 2nd group closes when the 3rd starts
    assert closed[0].send_delta_s == pytest.approx(0.020)
    assert closed[0].arrival_delta_s == pytest.approx(0.022)
    assert closed[0].size_delta == 0


def test_inter_arrival_ignores_packets_older_than_the_open_group() -> None:
    ia = InterArrival()
    assert ia.compute_deltas(0.100, 0.200, 0.2, 100) is None
    assert ia.compute_deltas(0.050, 0.201, 0.2, 100) is None  # sent before the group


def test_trendline_sees_a_growing_queue() -> None:
    tl = TrendlineEstimator()
    for i in range(40):
        tl.update(recv_delta_ms=12.0, send_delta_ms=10.0, arrival_ms=i * 12.0)
    assert tl.trend == pytest.approx(2 / 12, rel=0.3)
    assert tl.modified_trend > 12.5


def test_detector_needs_sustained_overuse_and_adapts_its_threshold() -> None:
    det = OveruseDetector()
    assert det.detect(20.0, 0.1, send_delta_ms=5.0, now_ms=0.0) == "normal"  # one sample
    assert det.detect(20.0, 0.1, send_delta_ms=5.0, now_ms=5.0) == "normal"  # 7.5 ms
    assert det.detect(20.0, 0.1, send_delta_ms=5.0, now_ms=10.0) == "overusing"
    assert det.detect(-30.0, -0.2, send_delta_ms=5.0, now_ms=15.0) == "underusing"
    det2 = OveruseDetector()
    for i in range(200):
        det2.detect(0.0, 0.0, send_delta_ms=10.0, now_ms=i * 10.0)
    assert det2.threshold == pytest.approx(6.0)  # fell to the floor
    for i in range(200, 2000):
        det2.detect(20.0, 0.0, send_delta_ms=10.0, now_ms=i * 10.0)
    assert 6.0 < det2.threshold <= 20.0  # followed the larger |trend| slowly


def test_acknowledged_bitrate_measures_the_receive_rate() -> None:
    ack = AcknowledgedBitrate()
    assert ack.bitrate_bps is None
    for i in range(200):  # 1000 bytes per 10 ms = 800 kbit/s
        ack.update(i * 0.010, 1000)
    assert ack.bitrate_bps == pytest.approx(800_000, rel=0.05)


def test_aimd_multiplicative_then_backoff_then_additive() -> None:
    aimd = AimdRateControl(500_000, 30_000, 10_000_000)
    aimd.rtt_s = 0.05
    for i in range(11):
        aimd.update("normal", 1_000_000, i * 0.1)
    assert aimd.estimate_bps == pytest.approx(500_000 * 1.08, rel=0.01)  # 8 % in 1 s
    aimd.update("overusing", 600_000, 1.1)
    assert aimd.estimate_bps == pytest.approx(0.85 * 600_000)
    aimd.update("underusing", 600_000, 1.2)
    assert aimd.estimate_bps == pytest.approx(0.85 * 600_000)  # hold
    before = aimd.estimate_bps
    for i in range(13, 24):
        aimd.update("normal", 600_000, i * 0.1)
    gained = aimd.estimate_bps - before
    # Near the congestion point: ~ one 8.5 kbit packet per 150 ms response time.
    assert 30_000 < gained < 80_000


def test_aimd_increase_is_limited_by_the_acknowledged_rate() -> None:
    aimd = AimdRateControl(300_000, 30_000, 10_000_000)
    for i in range(200):
        aimd.update("normal", 200_000, i * 0.1)
    assert aimd.estimate_bps == pytest.approx(1.5 * 200_000 + 10_000)


def test_loss_based_rules() -> None:
    lb = LossBasedBwe(1_000_000, 30_000, 10_000_000)
    lb.rtt_s = 0.1
    # In the start phase without loss it follows the delay-based rate (startup probes).
    lb.update(0, 100, 1_000_000, 0.0)
    assert lb.estimate_bps == 1_000_000
    # Past it, 1 % loss: x1.05 at most once per 300 ms (200 ms + RTT).
    lb.update(1, 100, 5_000_000, 3.0)
    assert lb.estimate_bps == pytest.approx(1_050_000)
    lb.update(1, 100, 5_000_000, 3.1)
    assert lb.estimate_bps == pytest.approx(1_050_000)
    # 5 %: hold.  20 %: x0.9, at most once per 400 ms (300 ms + RTT).
    lb.update(5, 100, 5_000_000, 3.5)
    assert lb.estimate_bps == pytest.approx(1_050_000)
    lb.update(20, 100, 5_000_000, 3.6)
    assert lb.estimate_bps == pytest.approx(1_050_000 * 0.9)
    lb.update(20, 100, 5_000_000, 3.7)
    assert lb.estimate_bps == pytest.approx(1_050_000 * 0.9)
    assert lb.loss_fraction == pytest.approx(0.2)
    # Never above the delay-based rate.
    lb.update(0, 100, 500_000, 5.0)
    assert lb.estimate_bps == 500_000


def test_loss_is_measured_over_at_least_20_packets() -> None:
    lb = LossBasedBwe(1_000_000, 30_000, 10_000_000)
    lb.update(0, 1, 5_000_000, 0.0)
    lb.update(1, 2, 5_000_000, 3.0)  # 1 of 3: not yet a fraction
    assert lb.loss_fraction == 0.0
    lb.update(0, 17, 5_000_000, 3.05)
    assert lb.loss_fraction == pytest.approx(1 / 20)


def test_retransmissions_count_as_packets_for_loss() -> None:
    gcc = GccController()
    results = [
        PacketResult(i, i * 0.01, PACKET, None if i < 3 else 0.05 + i * 0.01, i % 2 == 0)
        for i in range(20)
    ]
    gcc.on_feedback(results, 0.3)
    assert gcc.state().loss_fraction == pytest.approx(3 / 20)


# --- probing ------------------------------------------------------------------------------


def test_probe_controller_probes_exponentially_then_stops_at_max() -> None:
    pc = ProbeController(max_bps=2_500_000)
    first = pc.on_start(300_000, 0.0)
    assert [c.bitrate_bps for c in first] == [900_000, 1_800_000]
    for c in first:
        assert c.min_probes == 5
        assert c.min_bytes == math.ceil(c.bitrate_bps * 0.015 / 8)  # 15 ms worth
    assert pc.on_estimate(1_000_000, 0.2) == []  # below 70 % of 1.8 Mbit/s
    further = pc.on_estimate(1_800_000, 0.3)
    assert [c.bitrate_bps for c in further] == [2_500_000]  # 2x, capped at the max
    assert pc.on_estimate(2_500_000, 0.5) == []  # the max was probed: done
    assert len({c.id for c in first + further}) == 3


def test_probe_controller_gives_up_after_a_second() -> None:
    pc = ProbeController(max_bps=10_000_000)
    pc.on_start(300_000, 0.0)
    assert pc.on_estimate(1_700_000, 1.5) == []
    assert pc.on_estimate(1_700_000, 1.6) == []


def test_probe_controller_periodic_probes_at_2x_every_5_s() -> None:
    pc = ProbeController(max_bps=2_000_000)
    assert [c.bitrate_bps for c in pc.on_start(300_000, 0.0)] == [900_000, 1_800_000]
    assert pc.on_estimate(500_000, 1.5) == []  # the start's probing timed out
    assert pc.on_estimate(500_000, 4.0, periodic=True) == []  # within 5 s of the last
    first = pc.on_estimate(500_000, 5.0, periodic=True)
    assert [c.bitrate_bps for c in first] == [1_000_000]
    # Waiting for its result: the estimate reached 70 % of it, probe further at 2x.
    further = pc.on_estimate(900_000, 5.2, periodic=True)
    assert [c.bitrate_bps for c in further] == [1_800_000]
    assert pc.on_estimate(1_200_000, 5.4) == []  # below 70 % of 1.8 Mbit/s
    assert pc.on_estimate(1_500_000, 9.0, periodic=True) == []  # 5 s after the last
    assert pc.on_estimate(1_500_000, 10.3) == []  # not asked for
    assert [c.bitrate_bps for c in pc.on_estimate(1_500_000, 10.4, periodic=True)] == [
        2_000_000
    ]  # capped at the max: nothing further to probe
    assert pc.on_estimate(1_800_000, 10.6, periodic=True) == []
    # Within 5 % of the max there is nothing to find.
    assert pc.on_estimate(1_950_000, 20.0, periodic=True) == []


def test_gcc_wants_a_probe_only_while_increasing_without_capacity_estimate() -> None:
    gcc = GccController(start_bps=500_000)
    assert not gcc.wants_probe()  # no verdict yet: holding
    seq, t = 0, 0.0
    for _ in range(40):  # 2 s at 500 kbit/s over a clean link
        batch = []
        for _ in range(5):
            batch.append(PacketResult(seq, t, PACKET, t + 0.02))
            seq, t = seq + 1, t + 0.01
        gcc.on_feedback(batch, t + 0.02)
    assert gcc.state().usage == "normal"
    assert gcc.wants_probe()  # multiplicative increase: the capacity is unknown
    gcc = GccController(start_bps=1_000_000)
    _overload(gcc, 3.0)
    assert gcc.state().usage == "overusing"
    assert not gcc.wants_probe()


def _probe_results(rate_bps: float, recv_bps: float, n: int = 6) -> list[PacketResult]:
    send_gap = 8 * PACKET / rate_bps
    recv_gap = 8 * PACKET / recv_bps
    return [PacketResult(i, i * send_gap, PACKET, 0.05 + i * recv_gap) for i in range(n)]


def test_probe_estimator_reports_the_lower_rate_or_95_percent_of_capacity() -> None:
    cluster = ProbeCluster(id=0, bitrate_bps=1_000_000, min_probes=5, min_bytes=1875)
    est = ProbeBitrateEstimator()
    results = _probe_results(1_000_000, 1_000_000)
    assert est.on_feedback(results, {r.sequence: cluster for r in results}) == pytest.approx(
        1_000_000, rel=1e-6
    )
    cluster = ProbeCluster(id=1, bitrate_bps=2_000_000, min_probes=5, min_bytes=3750)
    results = _probe_results(2_000_000, 500_000)
    rate = ProbeBitrateEstimator().on_feedback(results, {r.sequence: cluster for r in results})
    assert rate == pytest.approx(0.95 * 500_000, rel=1e-6)


def test_probe_estimator_needs_most_of_the_cluster() -> None:
    cluster = ProbeCluster(id=0, bitrate_bps=1_000_000, min_probes=10, min_bytes=1875)
    results = _probe_results(1_000_000, 1_000_000, n=6)
    est = ProbeBitrateEstimator()
    assert est.on_feedback(results, {r.sequence: cluster for r in results}) is None
    # Packets that are not probes are ignored.
    assert est.on_feedback(results, {}) is None


def _overload(gcc: GccController, seconds: float) -> float:
    """Feed ``gcc`` a 1 Mbit/s stream through a 500 kbit/s bottleneck; return the time."""
    seq, t, free, pending = 0, 0.0, 0.0, []
    next_feedback = FEEDBACK_S
    while t < seconds:
        free = max(t, free) + 8 * PACKET / 500_000
        pending.append(PacketResult(seq, t, PACKET, free + 0.02))
        seq, t = seq + 1, t + 8 * PACKET / 1_000_000
        if t >= next_feedback:
            ready = [p for p in pending if (p.arrival_time_s or 0.0) <= next_feedback]
            pending = pending[len(ready) :]
            if ready:
                gcc.on_feedback(ready, next_feedback + 0.02)
            next_feedback += FEEDBACK_S
    return t


def test_a_queue_building_up_is_overuse_and_cuts_to_085_of_acked() -> None:
    gcc = GccController(start_bps=1_000_000)
    gcc.on_rtt(0.05)
    _overload(gcc, 3.0)
    state = gcc.state()
    assert state.usage == "overusing"
    assert state.trend > state.threshold
    assert state.acked_bps is not None
    assert state.acked_bps == pytest.approx(500_000, rel=0.1)
    assert state.delay_bps <= 0.85 * state.acked_bps * 1.05


def test_probe_result_moves_the_controller_but_not_while_overusing() -> None:
    gcc = GccController(start_bps=300_000)
    assert gcc.on_probe_result(1_800_000, 0.2) == 1_800_000
    state = gcc.state()
    assert state.delay_bps == state.loss_bps == 1_800_000

    gcc = GccController(start_bps=1_000_000)
    now = _overload(gcc, 3.0)
    assert gcc.state().usage == "overusing"
    before = gcc.target_bps
    assert gcc.on_probe_result(2_000_000, now) == before


# --- API ----------------------------------------------------------------------------------


def test_state_snapshot() -> None:
    gcc = GccController(start_bps=400_000, min_bps=50_000, max_bps=1_000_000)
    state = gcc.state()
    assert state.target_bps == gcc.target_bps == 400_000
    assert state.acked_bps is None
    assert state.usage == "normal"
    assert state.threshold == 12.5
    assert state.rtt_s == 0.2  # libwebrtc's default until measured
    gcc.on_rtt(0.08)
    assert gcc.state().rtt_s == 0.08
    with pytest.raises(AttributeError):
        state.target_bps = 1  # type: ignore[misc]
    assert gcc.on_feedback([], 1.0) == 400_000


def test_set_bounds_clamps_the_target() -> None:
    gcc = GccController(start_bps=400_000)
    gcc.set_bounds(50_000, 200_000)
    assert gcc.target_bps == 200_000
    gcc.set_bounds(500_000, 600_000)
    assert gcc.target_bps == 500_000
    assert gcc.state().delay_bps == 500_000


@pytest.mark.parametrize(
    ("min_bps", "max_bps", "message"),
    [
        (0, 1_000_000, "min_bps must be a positive integer (bit/s), got 0"),
        (-5, 1_000_000, "got -5"),
        (100_000, 0, "max_bps must be a positive integer (bit/s), got 0"),
        (100_000, 1.5e6, "got 1500000.0"),
        (True, 1_000_000, "got True"),
        (2_000_000, 1_000_000, "min_bps=2000000 max_bps=1000000"),
    ],
)
def test_set_bounds_refuses_bad_values(min_bps: int, max_bps: int, message: str) -> None:
    gcc = GccController()
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        gcc.set_bounds(min_bps, max_bps)
    assert gcc.target_bps == 300_000  # unchanged
    with pytest.raises(ValueError):  # ConfigurationError is a ValueError
        GccController(min_bps=min_bps, max_bps=max_bps, start_bps=300_000)


def test_constructor_refuses_a_start_outside_the_bounds() -> None:
    with pytest.raises(ConfigurationError, match=r"\[30000, 2500000\], got 5000000"):
        GccController(start_bps=5_000_000)
    with pytest.raises(ConfigurationError, match="start_bps"):
        GccController(start_bps=0)


def test_on_rtt_refuses_nonsense() -> None:
    gcc = GccController()
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ConfigurationError, match="rtt_s"):
            gcc.on_rtt(bad)
