"""The link model, driven with synthetic timestamps: fidelity, determinism, live changes.

Statistical checks use fixed seeds and tolerances derived from the sampling error
(quoted next to each), so they hold for almost every seed, not only the one used.
"""

from __future__ import annotations

import math
import random
import statistics
import tomllib
from collections.abc import Iterable
from typing import Any

import pytest

from webrtclab.exceptions import ConfigurationError
from webrtclab.netem import (
    DROP_REASONS,
    PRESETS,
    Delivery,
    LinkConditions,
    LinkModel,
    Trace,
    conditions_at,
    link_from_mapping,
    link_pair,
    parse_schedule,
    preset,
)
from webrtclab.netem.traces import load_trace

Z_999 = 3.2905  # two-sided 99.9 % normal quantile


def send_many(
    model: LinkModel, packets: Iterable[tuple[int, float]]
) -> list[tuple[float, Delivery]]:
    """Submit (size, time) packets; (send time, delivery) for every copy."""
    return [(now, d) for size, now in packets for d in model.submit(size, now)]


def paced(count: int, interval_s: float, size: int = 1000) -> list[tuple[int, float]]:
    return [(size, i * interval_s) for i in range(count)]


def delivered_bits(
    results: Iterable[tuple[float, Delivery]], start: float, end: float, delay_s: float = 0.0
) -> int:
    """Bits whose serialization ended in [start, end) (release minus the fixed delay)."""
    return sum(
        d.size_bytes * 8
        for _, d in results
        if d.release_time is not None and start <= d.release_time - delay_s < end
    )


def released(results: Iterable[tuple[float, Delivery]]) -> list[tuple[float, float]]:
    """(send time, release time) of every delivered copy."""
    return [(now, d.release_time) for now, d in results if d.release_time is not None]


def binomial_bounds(p: float, n: int) -> tuple[float, float]:
    half = Z_999 * math.sqrt(p * (1 - p) / n)
    return p - half, p + half


def check_accounting(model: LinkModel) -> None:
    stats = model.stats
    assert stats.delivered + stats.dropped == stats.packets_in + stats.duplicated
    assert set(stats.dropped_by_reason) == set(DROP_REASONS)


# --- delay and jitter ----------------------------------------------------------------------


def test_fixed_delay_is_exact_and_never_early() -> None:
    model = LinkModel(LinkConditions(delay_ms=80.0), seed=1, start_time=100.0)
    rng = random.Random(7)
    now, packets = 100.0, []
    for _ in range(5000):
        now += rng.expovariate(200.0)
        packets.append((rng.randint(60, 1400), now))
    results = send_many(model, packets)
    delays = sorted(release - now for now, release in released(results))
    assert len(delays) == 5000
    for q in (0.0, 0.5, 0.99, 1.0):
        assert delays[int(q * (len(delays) - 1))] == pytest.approx(0.080, abs=1e-9)
    assert all(release >= now + 0.080 - 1e-12 for now, release in released(results))
    assert model.stats.queue_delay_max_s == 0.0
    check_accounting(model)


@pytest.mark.parametrize("keep_order", [True, False])
def test_jittered_packets_are_never_released_before_they_are_sent(keep_order: bool) -> None:
    # Jitter (30 ms) larger than the delay (10 ms): the total delay is clamped at 0.
    conditions = LinkConditions(
        delay_ms=10.0, jitter_ms=30.0, keep_order=keep_order, rate_kbps=5000.0
    )
    model = LinkModel(conditions, seed=3)
    results = send_many(model, paced(5000, 0.002, size=1200))
    serialization = 1200 * 8 / 5_000_000
    assert len(released(results)) == 5000
    assert all(release >= now + serialization - 1e-12 for now, release in released(results))


NORMAL = statistics.NormalDist()


def jitter_quantile(distribution: str, q: float) -> float:
    """Quantile of the unit-variance, zero-mean jitter distribution."""
    if distribution == "normal":
        return NORMAL.inv_cdf(q)
    if distribution == "uniform":
        return math.sqrt(3.0) * (2 * q - 1)
    return ((1 - q) ** (-1 / 3) - 1.5) / math.sqrt(0.75)


@pytest.mark.parametrize("distribution", ["normal", "uniform", "pareto"])
def test_jitter_distribution_matches_its_parameters(distribution: Any) -> None:
    sigma, n = 10.0, 20_000
    conditions = LinkConditions(
        delay_ms=100.0, jitter_ms=sigma, jitter_distribution=distribution, keep_order=False
    )
    model = LinkModel(conditions, seed=11)
    results = send_many(model, paced(n, 0.001))
    delays = sorted((release - now) * 1000 for now, release in released(results))
    # Mean: standard error sigma/sqrt(n) = 0.07 ms; allow ~4 of them.
    assert statistics.fmean(delays) == pytest.approx(100.0, abs=0.3)
    if distribution != "pareto":
        # Sample std of a light-tailed distribution: relative error ~1/sqrt(2n) = 0.5 %.
        assert statistics.pstdev(delays) == pytest.approx(sigma, rel=0.03)
    # Quantiles (the Pareto's sample std converges too slowly to test: its fourth moment
    # is infinite).  Standard errors at q = 0.9 are 0.12-0.18 ms.
    for q in (0.1, 0.5, 0.9):
        expected = 100.0 + sigma * jitter_quantile(distribution, q)
        assert delays[int(q * n)] == pytest.approx(expected, abs=0.6), q


def test_keep_order_means_release_times_never_decrease() -> None:
    def releases(keep_order: bool) -> list[float]:
        conditions = LinkConditions(delay_ms=50.0, jitter_ms=20.0, keep_order=keep_order)
        model = LinkModel(conditions, seed=5)
        return [release for _, release in released(send_many(model, paced(5000, 0.001)))]

    ordered = releases(True)
    assert all(a <= b for a, b in zip(ordered, ordered[1:], strict=False))
    # The same jitter without keep_order reorders plenty, so the check above means something.
    free = releases(False)
    assert sum(a > b for a, b in zip(free, free[1:], strict=False)) > 1000


# --- loss ----------------------------------------------------------------------------------


def test_random_loss_fraction_is_within_the_binomial_interval() -> None:
    p, n = 0.05, 20_000
    model = LinkModel(LinkConditions(loss=p), seed=2)
    results = send_many(model, paced(n, 0.001))
    lost = sum(d.dropped for _, d in results)
    low, high = binomial_bounds(p, n)
    assert low <= lost / n <= high
    assert model.stats.dropped_by_reason["loss"] == lost
    assert all(d.drop_reason == "loss" for _, d in results if d.dropped)
    check_accounting(model)


def loss_runs(lost: list[bool]) -> list[int]:
    runs, run = [], 0
    for flag in lost:
        if flag:
            run += 1
        elif run:
            runs.append(run)
            run = 0
    return runs


def test_gilbert_elliott_loss_is_bursty_with_the_stationary_average() -> None:
    # Simple Gilbert model: every packet in the bad state is lost, none in the good one.
    conditions = LinkConditions(ge_p=0.02, ge_r=0.25)
    n = 100_000
    model = LinkModel(conditions, seed=4)
    lost = [d.dropped for _, d in send_many(model, paced(n, 0.0005, size=200))]
    expected = 0.02 / (0.02 + 0.25)
    assert conditions.ge_stationary_loss == pytest.approx(expected)
    # ~1850 bursts of mean length 4: relative errors ~3 % (loss) and ~2 % (burst length).
    assert sum(lost) / n == pytest.approx(expected, rel=0.10)
    runs = loss_runs(lost)
    assert statistics.fmean(runs) == pytest.approx(1 / 0.25, rel=0.08)
    # Bursty: a loss follows a loss with probability 1 - r, not with the average rate.
    after_loss = [b for a, b in zip(lost, lost[1:], strict=False) if a]
    assert sum(after_loss) / len(after_loss) == pytest.approx(0.75, abs=0.03)
    assert model.stats.dropped_by_reason["burst"] == sum(lost)


def test_gilbert_elliott_with_loss_in_both_states() -> None:
    conditions = LinkConditions(ge_p=0.05, ge_r=0.2, ge_loss_good=0.01, ge_loss_bad=0.6)
    n = 50_000
    model = LinkModel(conditions, seed=8)
    lost = sum(d.dropped for _, d in send_many(model, paced(n, 0.001, size=200)))
    # pi_bad = p / (p + r) = 0.2: 0.8 * 0.01 + 0.2 * 0.6 = 0.128
    assert conditions.ge_stationary_loss == pytest.approx(0.128)
    assert lost / n == pytest.approx(0.128, rel=0.08)


# --- capacity and queue --------------------------------------------------------------------


def test_rate_limit_delivers_the_configured_rate_and_drops_the_excess() -> None:
    # 2 Mbit/s offered into 1 Mbit/s for 10 s, 100 ms of queue.
    conditions = LinkConditions(rate_kbps=1000.0, queue_ms=100.0, delay_ms=20.0)
    assert conditions.queue_limit_bytes == 12_500
    model = LinkModel(conditions, seed=0)
    results = send_many(model, paced(2500, 0.004, size=1000))
    rate_kbps = delivered_bits(results, 0.0, 10.0, delay_s=0.020) / 10.0 / 1000
    assert rate_kbps == pytest.approx(1000.0, rel=0.01)
    assert model.stats.dropped_by_reason["queue"] > 1000
    # Queueing delay (waiting plus transmission) is bounded by queue_ms, and reached.
    assert 0.090 < model.stats.queue_delay_max_s <= 0.100 + 1e-9
    for now, d in results:
        if d.release_time is not None:
            assert d.release_time - 0.020 - now <= 0.100 + 1e-9
    check_accounting(model)


def test_queue_bytes_is_a_drop_tail_limit_on_queued_bytes() -> None:
    model = LinkModel(LinkConditions(rate_kbps=100.0, queue_bytes=5000), seed=0)
    burst = [d for _ in range(10) for d in model.submit(1000, 0.0)]
    assert [d.drop_reason for d in burst] == [None] * 5 + ["queue"] * 5
    # Serialized back to back, 80 ms each.
    assert [d.release_time for d in burst[:5]] == pytest.approx([0.08, 0.16, 0.24, 0.32, 0.40])
    assert model.backlog_bytes(0.0) == 5000
    assert model.backlog_bytes(0.16) == 3000
    assert model.submit(2000, 0.16)[0].drop_reason is None
    assert model.submit(1, 0.16)[0].drop_reason == "queue"


def offered_overload(trace_max_kbps: float, seconds: float, seed: int) -> list[tuple[int, float]]:
    """Random-size packets at 1.3 x the trace's best second, so its queue never empties."""
    rng = random.Random(seed)
    mean_size = 850
    interval = mean_size * 8 / (1.3 * trace_max_kbps * 1000)
    count = int(seconds / interval)
    return [(rng.randint(200, 1500), i * interval) for i in range(count)]


@pytest.mark.parametrize("name", ["step-down", "lte-like", "3g-like"])
def test_trace_replay_delivers_the_trace_capacity(name: str) -> None:
    trace = load_trace(name)
    seconds = trace.period_ms // 1000
    per_second = [trace.rate_kbps_between(s * 1000, (s + 1) * 1000) for s in range(seconds)]
    model = LinkModel(LinkConditions(trace=trace, queue_ms=300.0), seed=0)
    results = send_many(model, offered_overload(max(per_second), seconds, seed=1))
    assert model.stats.dropped_by_reason["queue"] > 0
    total_kbps = delivered_bits(results, 0.0, seconds) / seconds / 1000
    assert total_kbps == pytest.approx(trace.mean_rate_kbps, rel=0.01)
    for second, capacity in enumerate(per_second):
        got = delivered_bits(results, second, second + 1) / 1000
        assert got == pytest.approx(capacity, rel=0.05), second


def test_trace_opportunities_are_shared_and_wasted_like_mahimahi() -> None:
    # Opportunities at 10, 20, 30 ... ms, 1500 bytes each.
    model = LinkModel(LinkConditions(trace=Trace((10,))), seed=0)
    # Two 700-byte packets share the opportunity at 10 ms ...
    assert [d.release_time for d in model.submit(700, 0.0)] == [0.010]
    assert [d.release_time for d in model.submit(700, 0.0)] == [0.010]
    # ... a third needs the 100 bytes left there and 600 of the next one.
    assert [d.release_time for d in model.submit(700, 0.0)] == [0.020]
    # A packet bigger than an opportunity spans several.
    assert [d.release_time for d in model.submit(3000, 0.0)] == [0.040]
    # The queue is empty after 40 ms: the rest of that opportunity is lost.
    assert [d.release_time for d in model.submit(100, 0.045)] == [0.050]


# --- outages, duplication, reordering ------------------------------------------------------


def test_outages_drop_everything_inside_the_windows_and_nothing_outside() -> None:
    windows = [(1.0, 2.0), (3.5, 4.0)]
    model = LinkModel(LinkConditions(delay_ms=5.0, outages=windows), seed=0, start_time=50.0)
    results = send_many(model, [(500, 50.0 + i * 0.01) for i in range(500)])
    for now, d in results:
        inside = any(start <= now - 50.0 < end for start, end in windows)
        assert d.dropped == inside, now
        assert d.drop_reason == ("outage" if inside else None)
    assert model.stats.dropped_by_reason["outage"] == 100 + 50


def test_duplication_fraction() -> None:
    p, n = 0.1, 20_000
    model = LinkModel(LinkConditions(duplicate=p, delay_ms=10.0), seed=6)
    results = send_many(model, paced(n, 0.001, size=321))
    copies = [d for _, d in results if d.duplicate]
    low, high = binomial_bounds(p, n)
    assert low <= len(copies) / n <= high
    assert model.stats.duplicated == len(copies)
    assert len(results) == n + len(copies)
    assert all(d.size_bytes == 321 and not d.dropped for d in copies)
    check_accounting(model)


def test_reorder_sends_some_packets_ahead_of_the_delay_line() -> None:
    p, n = 0.25, 20_000
    conditions = LinkConditions(delay_ms=50.0, reorder=p)
    model = LinkModel(conditions, seed=9)
    results = send_many(model, paced(n, 0.005))
    releases = [release for _, release in released(results)]
    overtakes = sum(a > b for a, b in zip(releases, releases[1:], strict=False))
    assert overtakes > 1000
    low, high = binomial_bounds(p, n)
    assert low <= model.stats.reordered / n <= high
    immediate = sum(d.release_time == now for now, d in results)
    assert immediate == model.stats.reordered


def test_reorder_gap_delays_gap_minus_one_packets_between_reorders() -> None:
    model = LinkModel(LinkConditions(delay_ms=50.0, reorder=1.0, reorder_gap=5), seed=0)
    results = send_many(model, paced(20, 0.001))
    reordered = [i for i, (now, d) in enumerate(results) if d.release_time == now]
    assert reordered == [4, 9, 14, 19]


# --- determinism ---------------------------------------------------------------------------

EVERYTHING = LinkConditions(
    delay_ms=40.0,
    jitter_ms=8.0,
    jitter_distribution="pareto",
    loss=0.02,
    ge_p=0.01,
    ge_r=0.3,
    rate_kbps=800.0,
    queue_ms=150.0,
    duplicate=0.05,
    reorder=0.05,
    outages=[(2.0, 2.5)],
)


def run_everything(seed: int) -> tuple[list[Delivery], dict[str, float]]:
    model = LinkModel(EVERYTHING, seed=seed)
    rng = random.Random(99)
    packets = [(rng.randint(100, 1400), i * 0.003) for i in range(2000)]
    return [d for _, d in send_many(model, packets)], model.stats.as_dict()


def test_same_seed_same_fate_different_seed_different_fate() -> None:
    first, first_stats = run_everything(seed=1)
    second, second_stats = run_everything(seed=1)
    assert first == second
    assert first_stats == second_stats
    other, _ = run_everything(seed=2)
    assert other != first
    assert {d.drop_reason for d in first} == {None, "loss", "burst", "queue", "outage"}


def test_link_pair_directions_draw_independently() -> None:
    forward, backward = link_pair(LinkConditions(loss=0.5), LinkConditions(loss=0.5), seed=3)
    assert (forward.name, backward.name) == ("a_to_b", "b_to_a")
    assert forward.seed != backward.seed
    a = [d.dropped for _, d in send_many(forward, paced(200, 0.01))]
    b = [d.dropped for _, d in send_many(backward, paced(200, 0.01))]
    assert a != b


# --- live changes and schedules ------------------------------------------------------------


def test_set_conditions_mid_stream_keeps_the_queued_packets() -> None:
    before = LinkConditions(rate_kbps=2000.0, queue_bytes=50_000)
    model = LinkModel(before, seed=0)
    # 3 Mbit/s offered: the queue fills to its 50 kB limit.
    first = send_many(model, paced(1250, 0.004, size=1500))
    last_old_release = max(release for _, release in released(first))
    backlog = model.backlog_bytes(5.0)
    assert backlog > 45_000

    model.set_conditions(before.replace(rate_kbps=500.0, queue_bytes=10_000), now=5.0)
    # Nothing already queued is dropped by the smaller limit ...
    assert model.backlog_bytes(5.0) == backlog
    assert model.stats.dropped_by_reason["queue"] == sum(d.dropped for _, d in first)
    second = send_many(model, [(1500, 5.0 + i * 0.004) for i in range(1250)])
    # ... new packets are refused until it drains below the new limit ...
    assert second[0][1].drop_reason == "queue"
    # ... and queue behind the old ones, served at the new rate.
    assert min(release for _, release in released(second)) > last_old_release
    rate_kbps = delivered_bits(second, 6.0, 10.0) / 4.0 / 1000
    assert rate_kbps == pytest.approx(500.0, rel=0.02)
    check_accounting(model)


def test_switching_between_rate_and_trace_keeps_fifo_order() -> None:
    model = LinkModel(LinkConditions(rate_kbps=120.0), seed=0)  # 100 ms per 1500 bytes
    first = [d.release_time for d in model.submit(1500, 0.0) + model.submit(1500, 0.0)]
    assert first == pytest.approx([0.1, 0.2])
    # One opportunity every 50 ms: new packets wait for the queue to drain (at 200 ms),
    # then take the opportunities at or after that.
    model.set_conditions(LinkConditions(trace=Trace((50,))), now=0.05)
    assert [d.release_time for d in model.submit(1500, 0.05)] == pytest.approx([0.20])
    assert [d.release_time for d in model.submit(1500, 0.05)] == pytest.approx([0.25])
    # 10 ms per 1500 bytes, after the last trace-served packet.
    model.set_conditions(LinkConditions(rate_kbps=1200.0), now=0.06)
    assert [d.release_time for d in model.submit(1500, 0.06)] == pytest.approx([0.26])
    assert model.backlog_bytes(0.255) == 1500
    check_accounting(model)


def test_a_schedule_step_at_zero_is_in_force_from_the_start() -> None:
    schedule = parse_schedule([{"at_s": 0, "delay_ms": 30}])
    model = LinkModel(LinkConditions(delay_ms=10), seed=0, start_time=5.0, schedule=schedule)
    assert model.conditions.delay_ms == 30


def test_conditions_at_applies_steps_in_time_order() -> None:
    base = LinkConditions(rate_kbps=1500.0, delay_ms=20.0)
    schedule = parse_schedule(
        [
            {"at_s": 20, "reset": True},
            {"at_s": 10, "rate_kbps": 300},
            {"at_s": 15, "loss": 0.1},
        ]
    )
    assert [at for at, _ in schedule] == [10.0, 15.0, 20.0]
    assert conditions_at(base, schedule, 5.0) == base
    assert conditions_at(base, schedule, 10.0) == base.replace(rate_kbps=300)
    assert conditions_at(base, schedule, 17.0) == base.replace(rate_kbps=300, loss=0.1)
    assert conditions_at(base, schedule, 25.0) == base


def test_a_scheduled_link_changes_rate_at_the_given_times() -> None:
    base = LinkConditions(rate_kbps=1500.0, queue_ms=200.0)
    schedule = parse_schedule([{"at_s": 10, "rate_kbps": 300}, {"at_s": 20, "rate_kbps": 1500}])
    model = LinkModel(base, seed=0, start_time=1000.0, schedule=schedule)
    results = send_many(model, [(1000, 1000.0 + i * 0.004) for i in range(7500)])
    for start, end, expected in [(2, 10, 1500.0), (11, 20, 300.0), (21, 30, 1500.0)]:
        got = delivered_bits(results, 1000.0 + start, 1000.0 + end) / (end - start) / 1000
        assert got == pytest.approx(expected, rel=0.01), (start, end)
    assert model.conditions == base


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"rate_kbps": 300}], "has no at_s"),
        ([{"at_s": -1, "rate_kbps": 300}], r"at_s=-1 is not a finite number >= 0"),
        ([{"at_s": 1, "bandwidth": 300}], "schedule step 0: unknown link condition 'bandwidth'"),
        ([{"at_s": 1}, {"at_s": 2, "rate_kbps": 0}], r"rate_kbps=0 is not a finite number > 0"),
        ([{"at_s": 1, "reset": "yes"}], "reset='yes' is not a bool"),
        (["at 10 s"], "is not a table"),
    ],
)
def test_bad_schedules_are_refused(entries: list[Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_schedule(entries)


# --- presets, validation, scenario tables --------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid_conditions(name: str) -> None:
    conditions = preset(name)
    assert isinstance(conditions, LinkConditions)
    assert conditions.replace() == conditions  # validates again
    model = LinkModel(conditions, seed=0)
    results = send_many(model, paced(500, 0.02))
    assert all(release >= now for now, release in released(results))
    check_accounting(model)


def test_preset_numbers() -> None:
    assert set(PRESETS) == {"3g", "lte", "satellite", "lossy-wifi", "none"}
    assert preset("satellite").delay_ms * 2 >= 558  # RFC 2488: GEO RTT of at least 558 ms
    assert preset("lossy-wifi").expected_loss == pytest.approx(0.01 / 0.26 * 0.5)
    assert preset("none") == LinkConditions()


def test_unknown_preset_lists_the_valid_names() -> None:
    with pytest.raises(ConfigurationError, match="'5g'.*3g, lossy-wifi, lte, none, satellite"):
        preset("5g")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"delay_ms": -1}, r"delay_ms=-1 is not a finite number >= 0"),
        ({"delay_ms": math.inf}, r"delay_ms=inf"),
        ({"delay_ms": "10"}, r"delay_ms='10'"),
        ({"jitter_ms": -0.5}, r"jitter_ms=-0.5"),
        ({"jitter_distribution": "gamma"}, r"jitter_distribution='gamma' is not one of"),
        ({"keep_order": 1}, r"keep_order=1 is not a bool"),
        ({"loss": 1.5}, r"loss=1.5 is outside \[0, 1\]"),
        ({"loss": -0.1}, r"loss=-0.1 is outside"),
        ({"loss": math.nan}, r"loss=nan is outside"),
        ({"loss": True}, r"loss=True is outside"),
        ({"ge_p": 2}, r"ge_p=2 is outside"),
        ({"ge_p": 0.1, "ge_r": 0}, r"ge_r=0 with ge_p=0.1"),
        ({"ge_loss_good": 1.1}, r"ge_loss_good=1.1"),
        ({"ge_loss_bad": -1}, r"ge_loss_bad=-1"),
        ({"rate_kbps": 0}, r"rate_kbps=0 is not a finite number > 0"),
        ({"rate_kbps": -300}, r"rate_kbps=-300"),
        ({"queue_bytes": 0}, r"queue_bytes=0 is not an integer >= 1"),
        ({"queue_bytes": 1500.0}, r"queue_bytes=1500.0 is not an integer"),
        ({"queue_ms": 0}, r"queue_ms=0 is not a finite number > 0"),
        ({"duplicate": 1.01}, r"duplicate=1.01 is outside"),
        ({"reorder": -0.2}, r"reorder=-0.2 is outside"),
        ({"reorder_gap": 0}, r"reorder_gap=0 is not an integer >= 1"),
        ({"outages": [(2.0, 1.0)]}, r"outage \(2.0, 1.0\) is not a \(start_s, end_s\) pair"),
        ({"outages": [(1.0,)]}, r"outage \(1.0,\)"),
        ({"outages": 5}, r"outages=5 is not a list"),
        ({"trace": 42}, r"trace=42 is not a Trace"),
        ({"trace": "step-down", "rate_kbps": 300}, r"both rate_kbps=300 and a trace"),
    ],
)
def test_bad_conditions_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        LinkConditions(**changes)
    with pytest.raises(ValueError, match=message):
        LinkConditions().replace(**changes)


def test_replace_names_an_unknown_field() -> None:
    with pytest.raises(ConfigurationError, match="unknown link condition 'latency'"):
        LinkConditions().replace(latency=10)


def test_bad_packets_and_times_are_refused() -> None:
    model = LinkModel(LinkConditions(), seed=0, start_time=10.0)
    with pytest.raises(ConfigurationError, match="packet size 0"):
        model.submit(0, 10.0)
    with pytest.raises(ConfigurationError, match="before the link start"):
        model.submit(100, 9.0)
    model.submit(100, 12.0)
    with pytest.raises(ConfigurationError, match="time 11.0 is before the last packet"):
        model.submit(100, 11.0)


def test_trace_conditions_resolve_names_and_convert_queue_ms_with_the_mean_rate() -> None:
    conditions = LinkConditions(trace="step-down", queue_ms=100.0)
    trace = conditions.capacity_trace
    assert trace is not None and trace.name == "step-down"
    assert conditions.queue_limit_bytes == int(trace.mean_rate_kbps * 100 / 8)
    assert LinkConditions(queue_ms=100.0).queue_limit_bytes is None  # no capacity, no queue
    assert LinkConditions(rate_kbps=800, queue_ms=100, queue_bytes=5000).queue_limit_bytes == 5000


SCENARIO = """
[link]
delay_ms = 40
jitter_ms = 5
loss = 0.01
rate_kbps = 1000
queue_ms = 200
outages = [[5, 6.5]]

[link.b_to_a]
rate_kbps = 300
jitter_distribution = "uniform"

[link.a_to_b]
delay_ms = 60
"""


def test_link_from_mapping_reads_a_scenario_table_with_direction_overrides() -> None:
    a_to_b, b_to_a = link_from_mapping(tomllib.loads(SCENARIO)["link"])
    shared = LinkConditions(
        delay_ms=40, jitter_ms=5, loss=0.01, rate_kbps=1000, queue_ms=200, outages=[(5, 6.5)]
    )
    assert a_to_b == shared.replace(delay_ms=60)
    assert b_to_a == shared.replace(rate_kbps=300, jitter_distribution="uniform")
    assert a_to_b.outages == ((5.0, 6.5),)


def test_link_from_mapping_with_presets_and_traces() -> None:
    a_to_b, b_to_a = link_from_mapping(
        {"preset": "3g", "loss": 0, "b_to_a": {"preset": "lte", "rate_kbps": None}}
    )
    assert a_to_b == preset("3g").replace(loss=0)
    assert b_to_a == preset("lte").replace(loss=0, rate_kbps=None)
    a_to_b, b_to_a = link_from_mapping({"trace": "lte-like", "queue_ms": 100})
    assert a_to_b == b_to_a
    assert a_to_b.capacity_trace == load_trace("lte-like")
    assert link_from_mapping({}) == (LinkConditions(), LinkConditions())


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"bandwidth_kbps": 300}, r"^link: unknown key 'bandwidth_kbps'"),
        ({"a_to_b": {"lossy": 0.1}}, r"^link.a_to_b: unknown key 'lossy'"),
        ({"b_to_a": 5}, r"link.b_to_a = 5 is not a table"),
        ({"a_to_b": {"b_to_a": {}}}, r"link.a_to_b: unknown key 'b_to_a'"),
        ({"loss": 2}, r"loss=2 is outside"),
        ({"preset": "moon"}, r"unknown link preset 'moon'"),
        ({"trace": "no-such-trace"}, r"'no-such-trace' does not exist"),
    ],
)
def test_link_from_mapping_refuses_bad_tables(mapping: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        link_from_mapping(mapping)
