"""Sweep benchmark: parallel speed-up, metric fidelity and concurrent-call capacity.

Run it from the repository root::

    .venv/bin/python benchmarks/bench_sweep.py            # ~5 minutes
    .venv/bin/python benchmarks/bench_sweep.py --quick    # ~1.5 minutes

Every run goes through :func:`webrtclab.experiment.sweep.sweep`, exactly as
``webrtclab sweep`` does: a spawned process pool, one real-time call (two peers,
320x240 @ 15 fps, default traffic and quality monitoring) per run, a result folder per
run in a temporary directory that is removed afterwards.

1. Speed-up.  A grid of four runs (``link.delay_ms`` = 20, 40 x ``link.loss`` = 0,
   0.02) with ``workers=1`` (the serial baseline), the default workers (one per core)
   and ``workers=4`` (all at once).  Wall time is measured around the whole ``sweep()``
   call, so it includes spawning the pool, importing the package in every worker and
   writing the summary; the target is wall < half the sum of the run durations.
2. Fidelity.  The same four grid points run alone (``workers=1``, each call has the
   machine to itself) and in parallel, per point and metric.  The serial sweep is
   run three times (once with ``--quick``), interleaved with the parallel sweeps, to
   measure run-to-run noise: ``sigma`` is the pooled standard deviation of the alone runs
   over the points with the same ``link.loss`` (loss is what makes a run noisy:
   retransmissions), and a parallel run differs from the mean of ``k`` alone runs
   "within noise" when ``|diff| <= t95 * sigma * sqrt(1 + 1/k)`` (a 95 % band; t95 is
   Student's quantile for the pooled degrees of freedom, 4 here).
3. Capacity.  N identical unimpaired calls at once (``workers=N``, the grid only varies
   the scenario's name); per N the lowest and mean received frame rate over the calls
   (``recv_fps``: decoded frames/s, both directions averaged, after the first second),
   the worst single direction, RTT, frame latency, freezes, and CPU: system-wide busy %
   sampled every second while the sweep runs (median and mean of the samples, and the
   hypervisor's steal) and the CPU seconds the worker processes used, start-up included.
   A call is sustained at >= 90 % of 15 fps, i.e. recv_fps >= 13.5; a frame rate can
   hold while the machine is saturated, so N calls also count as undistorted only if
   their RTT and median frame latency stay within 5 ms, and their worst frame latency
   p95 within 25 ms, of one call alone.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import multiprocessing
import os
import resource
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import psutil

from webrtclab.experiment.results import load
from webrtclab.experiment.scenario import Scenario
from webrtclab.experiment.summary import WARMUP_S
from webrtclab.experiment.sweep import default_workers, sweep

FPS = 15
SUSTAINED_FPS = 0.9 * FPS
DISTORTION_MS = 5.0  # N calls distort a call when its RTT or median frame latency grows more
DISTORTION_P95_MS = 25.0  # ... or its frame latency p95 more than this, over one call alone
GRID = {"link.delay_ms": [20, 40], "link.loss": [0, 0.02]}
# Frame latencies come from millisecond stamps: a 1 ms difference is one step, not noise.
RESOLUTION = {"frame_latency_ms_p50": 1.0, "frame_latency_ms_p95": 1.0}
COMPARED = [
    ("recv_fps", "{:.2f}"),
    ("rtt_ms_median", "{:.1f}"),
    ("loss_fraction", "{:.4f}"),
    ("frame_latency_ms_p50", "{:.1f}"),
    ("frame_latency_ms_p95", "{:.1f}"),
]


def scenario(duration: float, *, link: bool) -> Scenario:
    data: dict[str, Any] = {
        "name": "bench-sweep",
        "duration_s": duration,
        "seed": 1,
        "stats_interval_s": 0.5,
        "peers": [
            {"name": "alice", "width": 320, "height": 240, "fps": FPS},
            {"name": "bob", "width": 320, "height": 240, "fps": FPS},
        ],
    }
    if link:
        data["link"] = {"delay_ms": 20, "loss": 0}
    return Scenario.from_mapping(data)


class CpuMonitor:
    """System-wide CPU samples every ``interval`` s, in a thread, while in the ``with``."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.busy: list[float] = []
        self.steal: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._mean = math.nan

    def _loop(self) -> None:
        psutil.cpu_times_percent(interval=None)
        while not self._stop.wait(self.interval):
            sample = psutil.cpu_times_percent(interval=None)
            idle = sample.idle + getattr(sample, "iowait", 0.0)
            self.busy.append(100.0 - idle)
            self.steal.append(getattr(sample, "steal", 0.0))

    def __enter__(self) -> CpuMonitor:
        self._start = psutil.cpu_times()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        end = psutil.cpu_times()
        self._stop.set()
        self._thread.join()
        delta = {f: getattr(end, f) - getattr(self._start, f) for f in end._fields}
        # guest time is already counted in user time on Linux
        total = sum(v for f, v in delta.items() if f not in ("guest", "guest_nice"))
        idle = delta["idle"] + delta.get("iowait", 0.0)
        self._mean = 100.0 * (1 - idle / total) if total > 0 else math.nan

    def median(self) -> float:
        return statistics.median(self.busy) if self.busy else math.nan

    def mean(self) -> float:
        """Busy % over exactly the whole ``with`` (not only the full 1 s samples)."""
        return self._mean

    def mean_steal(self) -> float:
        return statistics.fmean(self.steal) if self.steal else math.nan


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _own_cpu() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


@dataclass
class Measured:
    workers: int
    wall_s: float
    frame: pd.DataFrame
    cpu: CpuMonitor
    children_cpu_s: float
    own_cpu_s: float
    worst_direction_fps: list[float] = field(default_factory=list)

    def others_cpu(self) -> float:
        """Mean busy % of all cores minus what this benchmark used: other load."""
        ours = (self.children_cpu_s + self.own_cpu_s) / (self.wall_s * (os.cpu_count() or 1))
        return self.cpu.mean() - 100 * ours


def measure(base: Scenario, grid: dict[str, list[Any]], workers: int) -> Measured:
    """One sweep in a fresh temporary folder, timed end to end."""
    with tempfile.TemporaryDirectory(prefix="bench-sweep-", ignore_cleanup_errors=True) as tmp:
        cpu_before = _children_cpu()
        own_before = _own_cpu()
        with CpuMonitor() as cpu:
            t0 = time.perf_counter()
            frame = sweep(base, grid, tmp, workers=workers, progress=False)
            wall = time.perf_counter() - t0
        used = _children_cpu() - cpu_before
        own = _own_cpu() - own_before
        worst = []
        for path, status in zip(frame["path"], frame["status"], strict=True):
            worst.append(_worst_direction_fps(path) if status == "completed" else math.nan)
    failed = frame[frame["status"] != "completed"]
    for _, row in failed.iterrows():
        print(f"  !! {row['run']}: {row['status']} {row['error']}")
    return Measured(workers, wall, frame, cpu, used, own, worst)


def _worst_direction_fps(path: str) -> float:
    """The lowest mean decoded frame rate of one receiving direction in a run."""
    stats = load(path).stats
    video = stats[(stats["direction"] == "recv") & (stats["kind"] == "video")]
    video = video[video["time_s"] >= stats["time_s"].min() + WARMUP_S]
    if video.empty:
        return math.nan
    return float(video.groupby(["peer", "remote"])["frames_per_s"].mean().min())


def _nothing() -> None:
    return None


def startup_cost() -> float:
    """Seconds to spawn one pool worker and have it ready (it imports this script's imports,
    webrtclab.experiment among them, as every sweep worker does)."""
    context = multiprocessing.get_context("spawn")
    t0 = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        pool.submit(_nothing).result()
        return time.perf_counter() - t0


def speedup_table(runs: list[tuple[str, Measured]], n_runs: int, duration: float) -> None:
    total = n_runs * duration
    print(
        f"\n1. Sweep wall time: {n_runs} runs x {duration:g} s (sum {total:g} s), "
        f"2 peers 320x240 @ {FPS} fps, grid link.delay_ms x link.loss, "
        f"{os.cpu_count()} cores"
    )
    print(
        f"{'sweep':<24}{'workers':>8}{'wall s':>9}{'wall/sum':>10}{'ideal s':>9}"
        f"{'overhead s':>12}{'CPU busy %':>12}{'others %':>10}{'worker CPU-s':>14}"
    )
    for name, m in runs:
        ideal = math.ceil(n_runs / m.workers) * duration
        print(
            f"{name:<24}{m.workers:>8}{m.wall_s:>9.1f}{m.wall_s / total:>10.2f}{ideal:>9.0f}"
            f"{m.wall_s - ideal:>12.1f}{m.cpu.mean():>12.0f}{m.others_cpu():>10.0f}"
            f"{m.children_cpu_s:>14.1f}"
        )
    print(
        "  ideal = ceil(runs / workers) x duration; overhead = wall - ideal (pool spawn, "
        "imports, connection set-up, teardown, summaries)"
    )
    print(
        "  CPU busy %: all cores, mean over the sweep; others %: that minus this benchmark's "
        "own processes (load from outside)"
    )
    for name, m in runs:
        if m.workers == default_workers():
            verdict = "MET" if m.wall_s < total / 2 else "MISSED"
            print(
                f"  target wall < sum/2 = {total / 2:g} s with default workers "
                f"({m.workers}): {m.wall_s:.1f} s, ratio {m.wall_s / total:.2f} -> {verdict}"
            )
            break


def _t95(dof: int) -> float:
    """Two-sided 95 % Student t quantile (small samples make the noise band wider)."""
    table = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 8: 2.31, 10: 2.23}
    if dof in table:
        return table[dof]
    below = [d for d in table if d < dof]
    return table[max(below)] if below else math.inf


def fidelity_table(alone: list[Measured], parallel: list[tuple[str, Measured]]) -> dict[str, int]:
    """Per point and metric, parallel vs the mean of the alone runs; returns, per parallel
    sweep, how many differences fell outside the noise band (only with >= 2 alone runs)."""
    k = len(alone)
    print(
        f"\n2. Same grid points alone (workers=1, {k} run{'s' if k > 1 else ''} each) vs in "
        "parallel; diff = parallel - mean(alone)"
    )
    if k > 1:
        print(
            "  noise: sigma = pooled sd of the alone runs over the points with the same "
            "link.loss; ok = |diff| <= band = t95 * sigma * sqrt(1 + 1/k), at least the "
            "1 ms step of frame latencies"
        )
    key = ["link.delay_ms", "link.loss"]
    runs = [m.frame.set_index(key) for m in alone]
    others = [(name, m.frame.set_index(key)) for name, m in parallel]
    points = list(runs[0].index)
    header = f"{'point':<21}{'metric':<22}{'alone':>9}{'range':>8}"
    for name, _ in others:
        header += f"{name:>10}{'diff':>9}{'':>4}"
    print(header + f"{'band':>9}")
    flags: dict[str, list[str]] = {name: [] for name, _ in others}
    compared = 0
    for metric, fmt in COMPARED:
        bands: dict[Any, float] = {}
        if k > 1:
            for loss in {p[1] for p in points}:
                group = [p for p in points if p[1] == loss]
                ss, dof = 0.0, 0
                for p in group:
                    values = [float(r.loc[p, metric]) for r in runs]
                    values = [v for v in values if not math.isnan(v)]
                    if len(values) > 1:
                        mean = statistics.fmean(values)
                        ss += sum((v - mean) ** 2 for v in values)
                        dof += len(values) - 1
                if dof:
                    sigma = math.sqrt(ss / dof)
                    band = _t95(dof) * sigma * math.sqrt(1 + 1 / k)
                    bands[loss] = max(band, RESOLUTION.get(metric, 0.0))
        for p in points:
            values = [float(r.loc[p, metric]) for r in runs]
            a = statistics.fmean(values)
            band = bands.get(p[1], math.nan)
            line = f"{f'delay={p[0]} loss={p[1]}':<21}{metric:<22}{fmt.format(a):>9}"
            line += f"{fmt.format(max(values) - min(values)) if k > 1 else '':>8}"
            for name, frame in others:
                v = float(frame.loc[p, metric])
                diff = v - a
                mark = ""
                if not math.isnan(band):
                    ok = abs(diff) <= band
                    compared += name == others[0][0]
                    if not ok:
                        flags[name].append(f"{metric} {diff:+.3g} at {p[0]}/{p[1]}")
                    mark = "ok" if ok else "!!"
                line += f"{fmt.format(v):>10}{fmt.format(diff):>9}{mark:>4}"
            print(line + f"{fmt.format(band) if not math.isnan(band) else 'n/a':>9}")
    if k == 1:
        print("  no noise estimate (--quick runs the alone sweep once)")
        return {}
    for name, flagged in flags.items():
        print(
            f"  {name}: {len(flagged)} of {compared} outside the band "
            f"(~{0.05 * compared:.0f} expected by chance)" + (":" if flagged else "")
        )
        for flag in flagged:
            print(f"      {flag}")
    return {name: len(flagged) for name, flagged in flags.items()}


def capacity_table(results: list[tuple[int, Measured]], duration: float) -> tuple[int, int]:
    """Returns the largest N sustained, and the largest N sustained and undistorted."""
    print(
        f"\n3. N simultaneous 2-peer calls (320x240 @ {FPS} fps, no impairment, "
        f"{duration:g} s, workers=N); fps ok = every call recv_fps >= {SUSTAINED_FPS:g}"
    )
    print(
        f"{'N':>3}{'wall s':>8}{'fps min':>9}{'fps mean':>10}{'worst dir':>11}"
        f"{'rtt ms':>8}{'lat p50':>9}{'p95 max':>9}{'freezes':>9}{'CPU med %':>11}"
        f"{'CPU mean %':>12}{'others %':>10}{'steal %':>9}{'CPU-s/call':>12}{'fps ok':>8}"
        f"{'undistorted':>13}"
    )
    largest = [0, 0]
    still = [True, True]
    reference: tuple[float, float, float] | None = None
    for n, m in results:
        done = m.frame[m.frame["status"] == "completed"]
        fps = [float(v) for v in m.frame["recv_fps"]]
        complete = len(done) == n and not any(math.isnan(v) for v in fps)
        fps_min = min(fps) if complete else math.nan
        sustained = complete and fps_min >= SUSTAINED_FPS
        worst = min((v for v in m.worst_direction_fps if not math.isnan(v)), default=math.nan)
        rtt = float(done["rtt_ms_median"].median())
        p50 = float(done["frame_latency_ms_p50"].median())
        p95 = float(done["frame_latency_ms_p95"].max())
        if reference is None:
            reference = (rtt, p50, p95)
        undistorted = (
            sustained
            and rtt <= reference[0] + DISTORTION_MS
            and p50 <= reference[1] + DISTORTION_MS
            and p95 <= reference[2] + DISTORTION_P95_MS
        )
        for i, ok in enumerate((sustained, undistorted)):
            still[i] = still[i] and ok
            if still[i]:
                largest[i] = n
        print(
            f"{n:>3}{m.wall_s:>8.1f}{fps_min:>9.2f}{statistics.fmean(fps):>10.2f}"
            f"{worst:>11.2f}{rtt:>8.1f}{p50:>9.1f}{p95:>9.1f}"
            f"{done['freezes'].sum():>9.0f}"
            f"{m.cpu.median():>11.0f}{m.cpu.mean():>12.0f}{m.others_cpu():>10.0f}"
            f"{m.cpu.mean_steal():>9.1f}"
            f"{m.children_cpu_s / n:>12.1f}{'yes' if sustained else 'NO':>8}"
            f"{'yes' if undistorted else 'NO':>13}"
        )
    print(
        "  fps: recv_fps over the calls; worst dir: lowest single receiving direction; "
        "rtt, lat p50: medians over the calls; p95 max: highest frame latency p95 of a call;"
    )
    print(
        "  CPU med %: median of 1 s samples, mean: over the whole sweep (all cores); "
        "others %: mean minus this benchmark's processes;\n  CPU-s/call: worker CPU seconds "
        "per call, start-up included;"
    )
    print(
        f"  undistorted: fps ok, rtt and lat p50 within +{DISTORTION_MS:g} ms and p95 max "
        f"within +{DISTORTION_P95_MS:g} ms of N=1"
    )
    print(f"  largest N with every call >= {SUSTAINED_FPS:g} fps: {largest[0]}")
    print(f"  largest N with every call >= {SUSTAINED_FPS:g} fps and undistorted: {largest[1]}")
    return largest[0], largest[1]


def main(quick: bool) -> None:
    duration = 5.0 if quick else 10.0
    ns = (1, 2, 3) if quick else (1, 2, 3, 4, 6, 8)
    n_runs = math.prod(len(v) for v in GRID.values())
    workers = default_workers()
    print(f"cores: {os.cpu_count()}, default workers: {workers}, quick: {quick}", flush=True)

    # Warm the page cache (imports, codecs) so the first timed sweep is not penalised.
    measure(scenario(1.0, link=True), {"link.delay_ms": [20]}, 1)
    spawn = [startup_cost() for _ in range(3)]
    print(
        "pool worker start-up (spawn, imports, first task): "
        + ", ".join(f"{s:.2f} s" for s in spawn),
        flush=True,
    )

    # Alone and parallel sweeps interleaved, so a drift of the machine hits both.
    base = scenario(duration, link=True)
    alone = [measure(base, GRID, 1)]
    parallel = [(f"par w={workers}", measure(base, GRID, workers))]
    if not quick:
        alone.append(measure(base, GRID, 1))
    if workers != n_runs:
        parallel.append((f"par w={n_runs}", measure(base, GRID, n_runs)))
    if not quick:
        alone.append(measure(base, GRID, 1))

    runs = [(f"serial #{i + 1} (alone)", m) for i, m in enumerate(alone)]
    runs += [(f"parallel {name[4:]}", m) for name, m in parallel]
    speedup_table(runs, n_runs, duration)
    faithful = fidelity_table(alone, parallel)

    call = scenario(duration, link=False)
    capacity = []
    for n in ns:
        capacity.append((n, measure(call, {"name": [f"call-{i}" for i in range(n)]}, n)))
    largest, undistorted = capacity_table(capacity, duration)
    verdict = "within" if workers <= undistorted else "ABOVE"
    print(
        f"  default workers = one per core = {workers}: {verdict} the undistorted capacity "
        f"({undistorted} calls at once; {largest} keep the frame rate)"
        + (
            f"; its parallel runs: {faithful[parallel[0][0]]} differences outside the noise band"
            if faithful
            else ""
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="4 runs of 5 s, N in 1, 2, 3")
    args = parser.parse_args()
    main(args.quick)
