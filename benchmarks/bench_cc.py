"""Rate adaptation on constrained links: lab peers (gcc, remb, none) and Chrome, one run.

Every call: two members, the emulated link between them (one-way delay, a drop-tail
queue of 300 ms, a capacity), figures over the steady part of the call from the link's
own counters (what entered the bottleneck, what its queue dropped, its queueing delay)
and the receiver's stats.  ``--quick`` shortens every call.

    .venv/bin/python benchmarks/bench_cc.py [--quick] [--no-browser]

Columns: ``in/cap`` bytes entering the link over its capacity; ``drops`` queue drops
over packets in; ``q p95`` the 95th percentile of the per-sample mean queueing delay;
``fps`` receiver frame rate over the source's; ``goodput`` received media over the
smaller of the cap and what the same call sends uncapped.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import resource
import statistics
import time
from dataclasses import dataclass

import pandas as pd

from webrtclab import Lab, MediaSpec
from webrtclab.netem import LinkConditions
from webrtclab.quality import QualityMonitor

SECTIONS = ("caps", "steps", "chrome")
SMALL = MediaSpec(width=320, height=240, fps=15, seed=3)
LARGE = MediaSpec(width=640, height=480, fps=30, seed=3)


@dataclass
class Outcome:
    name: str
    cap_kbps: float | None
    in_kbps: float
    drops: float
    queue_p95_ms: float
    fps_ratio: float
    recv_kbps: float
    note: str = ""


def _window(links: pd.DataFrame, src: str, since: float, until: float) -> pd.DataFrame:
    rows = links[(links["src"] == src) & (links["time_s"] >= since) & (links["time_s"] <= until)]
    return rows


def _measure(
    lab: Lab, sender: str, receiver: str, since: float, until: float, fps: float
) -> tuple[float, float, float, float, float]:
    links, stats = lab.links(), lab.stats()
    rows = _window(links, sender, since, until)
    first, last = rows.iloc[0], rows.iloc[-1]
    span = max(float(last["time_s"] - first["time_s"]), 1e-6)
    packets = max(float(last["packets_in"] - first["packets_in"]), 1.0)
    in_kbps = float(last["bytes_in"] - first["bytes_in"]) * 8 / span / 1000
    drops = float(last["dropped_queue"] - first["dropped_queue"]) / packets
    queue = float(rows["queue_delay_mean_ms"].quantile(0.95))
    recv = stats[
        (stats["peer"] == receiver)
        & (stats["remote"] == sender)
        & (stats["direction"] == "recv")
        & (stats["kind"] == "video")
        & (stats["time_s"] >= since)
        & (stats["time_s"] <= until)
    ]
    return (
        in_kbps,
        drops,
        queue,
        float(recv["frames_per_s"].mean()) / fps,
        float(recv["bitrate_kbps"].mean()),
    )


async def lab_call(
    mode: str, cap: float | None, media: MediaSpec, seconds: float, delay_ms: float = 25
) -> tuple[Outcome, float]:
    """A two lab-peer call; (outcome of alice -> bob, CPU seconds of the process)."""
    link = LinkConditions(delay_ms=delay_ms, rate_kbps=cap, queue_ms=300 if cap else None)
    cpu0 = time.process_time()
    async with Lab(link=link, seed=1) as lab:
        await lab.add_peer("alice", media=media, congestion_control=mode)
        await lab.add_peer("bob", media=media, congestion_control=mode)
        await lab.wait_connected(timeout=30)
        start = lab.clock.now()
        await asyncio.sleep(seconds)
        end = lab.clock.now()
    cpu = time.process_time() - cpu0
    since = start + min(10.0, seconds / 2)
    figures = _measure(lab, "alice", "bob", since, end, media.fps)
    name = f"lab {mode} {media.width}x{media.height}@{media.fps:g}"
    return Outcome(name, cap, *figures), cpu


async def schedule_call(
    steps: list[tuple[float, float]], seconds: float, delay_ms: float
) -> tuple[Lab, float, pd.DataFrame]:
    """A gcc call (640x480@30, so capacity and not the picture size limits it) whose
    capacity follows ``steps`` [(at_s, kbit/s)].

    Returns the closed lab (its tables stay), the lab time the schedule started and
    the frames table (for freezes).
    """
    first = steps[0][1]
    link = LinkConditions(delay_ms=delay_ms, rate_kbps=first, queue_ms=300)
    async with Lab(link=link, seed=1) as lab:
        monitor = QualityMonitor(lab, psnr_every=0)
        await lab.add_peer("alice", media=LARGE)
        await lab.add_peer("bob", media=LARGE)
        await lab.wait_connected(timeout=30)
        start = lab.clock.now()
        for at_s, kbps in steps[1:]:
            await asyncio.sleep(max(0.0, start + at_s - lab.clock.now()))
            lab.set_link(
                "alice",
                "bob",
                LinkConditions(delay_ms=delay_ms, rate_kbps=kbps, queue_ms=300),
                both=True,
            )
        await asyncio.sleep(max(0.0, start + seconds - lab.clock.now()))
        monitor.close()
    return lab, start, monitor.frames.dataframe()


def _rate_between(lab: Lab, since: float, until: float) -> float:
    rows = _window(lab.links(), "alice", since, until)
    span = max(float(rows["time_s"].iloc[-1] - rows["time_s"].iloc[0]), 1e-6)
    return float(rows["bytes_in"].iloc[-1] - rows["bytes_in"].iloc[0]) * 8 / span / 1000


async def _lab_and_chrome(lab: Lab) -> float:
    """A lab peer and Chrome, both with the synthetic 640x480@30, connected; the lab time."""
    await lab.add_peer("lab", media=LARGE)
    await lab.add_browser_peer(
        "chrome",
        width=LARGE.width,
        height=LARGE.height,
        fps=LARGE.fps,
        video="synthetic",
        seed=LARGE.seed,
    )
    await lab.wait_connected(timeout=30)
    return lab.clock.now()


async def chrome_call(cap: float | None, seconds: float) -> dict[str, dict[str, float]]:
    """Chrome and a lab peer, both sending the lab's synthetic 640x480@30 video.

    One call per link; each direction has its own emulated link.  Per sender: the
    link's counters, the receiver's goodput and fps, frame latency from the stamps
    (decoded at the lab peer, presented by Chrome), freezes, PSNR at the lab peer, and
    for Chrome its own estimate (``availableOutgoingBitrate``).
    """
    link = LinkConditions(delay_ms=25, rate_kbps=cap, queue_ms=300 if cap else None)
    async with Lab(link=link, seed=1) as lab:
        monitor = QualityMonitor(lab, psnr_every=5)
        start = await _lab_and_chrome(lab)
        await asyncio.sleep(seconds)
        end = lab.clock.now()
        raw = lab.browser_stats()
        monitor.close()
        frames = monitor.frames.dataframe()
    since = start + min(10.0, seconds / 2)
    estimate = raw[raw["metric"] == "availableOutgoingBitrate"]
    reached = estimate[estimate["value"] >= 1_500_000]
    out: dict[str, dict[str, float]] = {}
    for sender, receiver in (("chrome", "lab"), ("lab", "chrome")):
        in_kbps, drops, queue, fps, recv_kbps = _measure(lab, sender, receiver, since, end, 30)
        seen = frames[
            (frames["remote"] == sender)
            & (frames["peer"] == receiver)
            & (frames["time_s"] >= since)
        ]
        out[sender] = {
            "in_kbps": in_kbps,
            "drops": drops,
            "queue_p95_ms": queue,
            "fps": fps,
            "recv_kbps": recv_kbps,
            "latency_p50_ms": float(seen["latency_ms"].median()),
            "latency_p95_ms": float(seen["latency_ms"].quantile(0.95)),
            "freezes": float(seen["freeze"].sum()),
            "psnr_db": float(seen["psnr_db"].median()),
        }
    out["chrome"]["estimate_max_kbps"] = (
        float(estimate["value"].max() / 1000) if len(estimate) else math.nan
    )
    out["chrome"]["to_1500_s"] = (
        float(reached["time_s"].min() - start) if len(reached) else math.inf
    )
    return out


def _table(outcomes: list[Outcome], uncapped: dict[str, float]) -> None:
    print(
        f"{'call':34} {'cap':>6} {'in kbps':>8} {'in/cap':>7} {'drops':>7} "
        f"{'q p95':>7} {'fps':>5} {'goodput':>8}"
    )
    for o in outcomes:
        base = uncapped.get(o.name, math.nan)
        limit = min(o.cap_kbps, base) if o.cap_kbps else base
        ratio = o.in_kbps / o.cap_kbps if o.cap_kbps else math.nan
        print(
            f"{o.name:34} {o.cap_kbps or 0:6.0f} {o.in_kbps:8.0f} {ratio:7.2f} "
            f"{o.drops * 100:6.1f}% {o.queue_p95_ms:5.0f}ms {o.fps_ratio:5.2f} "
            f"{o.recv_kbps / limit if limit else math.nan:8.2f}"
        )


def _longest_gap_ms(frames: pd.DataFrame, receiver: str, since: float) -> float:
    """The longest interval between frames ``receiver`` got, after ``since``."""
    seen = frames[(frames["peer"] == receiver) & (frames["time_s"] >= since)]
    return float(seen["interval_ms"].max())


async def chrome_step_call(
    before: float, after: float, step_at: float, seconds: float, window: tuple[float, float]
) -> tuple[float, float]:
    """Chrome sending the synthetic 640x480@30 to a lab peer through a capacity step.

    Returns what entered the link in ``window`` (seconds after the step) and the
    longest frame gap at the lab peer after it: the same measures as the lab peers' step.
    """
    link = LinkConditions(delay_ms=25, rate_kbps=before, queue_ms=300)
    async with Lab(link=link, seed=1) as lab:
        monitor = QualityMonitor(lab, psnr_every=0)
        start = await _lab_and_chrome(lab)
        await asyncio.sleep(step_at)
        lab.set_link(
            "chrome", "lab", LinkConditions(delay_ms=25, rate_kbps=after, queue_ms=300), both=True
        )
        await asyncio.sleep(max(0.0, start + seconds - lab.clock.now()))
        monitor.close()
    rows = _window(lab.links(), "chrome", start + step_at + window[0], start + step_at + window[1])
    span = max(float(rows["time_s"].iloc[-1] - rows["time_s"].iloc[0]), 1e-6)
    rate = float(rows["bytes_in"].iloc[-1] - rows["bytes_in"].iloc[0]) * 8 / span / 1000
    gap = _longest_gap_ms(monitor.frames.dataframe(), "lab", start + step_at)
    return rate, gap


async def main(quick: bool, browser: bool, sections: set[str]) -> None:
    seconds = 14.0 if quick else 25.0
    if "caps" in sections:
        await fixed_caps(seconds)
    if "steps" in sections:
        await steps(quick, browser)
    if browser and "chrome" in sections:
        await chrome(seconds)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS {peak:.0f} MB")


async def fixed_caps(seconds: float) -> None:
    caps = [300, 500, 1000, 2000]
    outcomes: list[Outcome] = []
    uncapped: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for media in (SMALL, LARGE):
        free, cpu_gcc = await lab_call("gcc", None, media, seconds)
        uncapped[free.name] = free.recv_kbps
        outcomes.append(free)
        for cap in caps:
            outcome, _ = await lab_call("gcc", cap, media, seconds)
            outcomes.append(outcome)
        if media is SMALL:
            cpu["gcc"] = cpu_gcc
            remb_free, cpu["remb"] = await lab_call("remb", None, media, seconds)
            uncapped[remb_free.name] = remb_free.recv_kbps
            for mode in ("remb", "none"):
                outcome, _ = await lab_call(mode, 500, media, seconds)
                uncapped.setdefault(outcome.name, remb_free.recv_kbps)
                outcomes.append(outcome)
    print("\nFixed caps (25 ms each way, 300 ms queue; from 10 s on):")
    _table(outcomes, uncapped)
    # One call of each is too noisy for a 10 % comparison: two more pairs, alternated so
    # drifts in the machine's load hit both modes alike, and the medians.
    times: dict[str, list[float]] = {mode: [cpu[mode]] for mode in cpu}
    for _ in range(2):
        for mode in ("remb", "gcc"):
            times[mode].append((await lab_call(mode, None, SMALL, seconds))[1])
    gcc, remb = statistics.median(times["gcc"]), statistics.median(times["remb"])
    print(
        f"\nCPU time of an uncapped 320x240 call, median of 3: gcc {gcc:.1f} s, "
        f"remb {remb:.1f} s, ratio {gcc / remb:.2f} "
        f"(gcc {', '.join(f'{t:.1f}' for t in times['gcc'])}; "
        f"remb {', '.join(f'{t:.1f}' for t in times['remb'])})"
    )


async def steps(quick: bool, browser: bool) -> None:
    """Steps (2000 -> 500 and 500 -> 2000 at 20 s) and RFC 8867 section 5.1."""
    step_at = 10.0 if quick else 20.0
    down, s0, frames = await schedule_call([(0, 2000), (step_at, 500)], step_at + 10, 25)
    after = _rate_between(down, s0 + step_at + 3, s0 + step_at + 10)
    gap = _longest_gap_ms(frames, "bob", s0 + step_at)
    settled_gap = _longest_gap_ms(frames, "bob", s0 + step_at + 3)
    up, u0, _ = await schedule_call([(0, 500), (step_at, 2000)], step_at + 20, 25)
    reached = _rate_between(up, u0 + step_at + 15, u0 + step_at + 20)
    early = _rate_between(up, u0 + step_at + 5, u0 + step_at + 10)
    print("\nSteps, 640x480@30 (uncapped it sends about 1800 kbit/s):")
    print(
        f"Step 2000 -> 500 kbit/s: {after:.0f} kbit/s enters the link 3-10 s after "
        f"({after / 500:.2f}x the cap); longest frame gap after the step {gap:.0f} ms, "
        f"from 3 s after it on {settled_gap:.0f} ms"
    )
    print(
        f"Step 500 -> 2000 kbit/s: {reached:.0f} kbit/s 15-20 s after "
        f"({early:.0f} kbit/s 5-10 s after)"
    )
    if browser:
        chrome_rate, chrome_gap = await chrome_step_call(2000, 500, step_at, step_at + 10, (3, 10))
        print(
            f"Chrome, the same step 2000 -> 500: {chrome_rate:.0f} kbit/s 3-10 s after "
            f"({chrome_rate / 500:.2f}x); longest frame gap after the step {chrome_gap:.0f} ms"
        )
        chrome_up, _ = await chrome_step_call(500, 2000, step_at, step_at + 20, (15, 20))
        print(f"Chrome, the same step 500 -> 2000: {chrome_up:.0f} kbit/s 15-20 s after")
    scale = 0.25 if quick else 1.0
    rfc: list[tuple[float, float]] = [
        (0.0, 1000),
        (40 * scale, 2500),
        (60 * scale, 600),
        (80 * scale, 1000),
    ]
    var, v0, _ = await schedule_call(rfc, 100 * scale, 50)
    print(f"\nRFC 8867 5.1 variable capacity (50 ms one way, time x{scale:g}):")
    bounds = [t for t, _ in rfc] + [100 * scale]
    for (at, kbps), end in zip(rfc, bounds[1:], strict=False):
        rate = _rate_between(var, v0 + at + (end - at) / 2, v0 + end)
        print(
            f"  {at:5.0f}-{end:5.0f} s  capacity {kbps:5.0f}  sent {rate:6.0f} "
            f"({rate / kbps:.2f}x, second half of the segment)"
        )


async def chrome(seconds: float) -> None:
    """Chrome and a lab peer on the same links, both sending the synthetic video."""
    print(
        "\nChrome and a lab peer, both sending the lab's synthetic 640x480@30 (one call "
        "per link; from 10 s on; latency: capture to decoded at the lab peer, to "
        "presented in Chrome; PSNR at the lab peer):"
    )
    print(
        f"{'link':>6} {'sender':>7} {'in kbps':>8} {'in/cap':>7} {'drops':>7} {'q p95':>7} "
        f"{'goodput':>8} {'fps':>5} {'lat p50':>8} {'lat p95':>8} {'freezes':>8} "
        f"{'PSNR':>6} {'est max':>8} {'to 1500':>8}"
    )
    calls: dict[float | None, dict[str, dict[str, float]]] = {}
    for link_cap in (None, 2000.0, 1000.0):
        calls[link_cap] = await chrome_call(link_cap, seconds)
    for link_cap, call in calls.items():
        for sender, f in call.items():
            ratio = f["in_kbps"] / link_cap if link_cap else math.nan
            goodput = f["recv_kbps"] / link_cap if link_cap else math.nan
            print(
                f"{link_cap or 'clean':>6} {sender:>7} {f['in_kbps']:8.0f} {ratio:7.2f} "
                f"{f['drops'] * 100:6.1f}% {f['queue_p95_ms']:5.0f}ms {goodput:8.2f} "
                f"{f['fps']:5.2f} {f['latency_p50_ms']:6.0f}ms {f['latency_p95_ms']:6.0f}ms "
                f"{f['freezes']:8.0f} {f['psnr_db']:6.1f} "
                f"{f.get('estimate_max_kbps', math.nan):8.0f} "
                f"{f.get('to_1500_s', math.nan):7.1f}s"
            )
    chrome, lab_side = calls[1000.0]["chrome"], calls[1000.0]["lab"]
    goodput_ratio = lab_side["recv_kbps"] / chrome["recv_kbps"]
    queue_ratio = lab_side["queue_p95_ms"] / max(chrome["queue_p95_ms"], 1.0)
    print(
        f"  at 1000 kbit/s the lab peer's goodput is {goodput_ratio:.2f}x Chrome's, "
        f"its p95 queue delay {queue_ratio:.2f}x Chrome's (at least 1 ms)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument(
        "--section",
        action="append",
        choices=["caps", "steps", "chrome"],
        help="run only these sections (default: all)",
    )
    args = parser.parse_args()
    asyncio.run(main(args.quick, not args.no_browser, set(args.section or SECTIONS)))
