"""Soak benchmark: one long lab call, the process's memory sampled throughout.

Run it from the repository root (it is not part of ``benchmarks/run.py`` by default;
``run.py --soak`` or ``WEBRTCLAB_SOAK=1`` adds it)::

    .venv/bin/python benchmarks/bench_soak.py                  # 10 minutes
    .venv/bin/python benchmarks/bench_soak.py --duration 120   # a 2-minute version

Two aiortc peers (synthetic video and a tone) call each other through the network
emulator (a mild link: 20 ms each way, 0.5 % loss), chat once a second and move cursors
at 10 Hz, with stats sampled every 0.5 s, as a long experiment would.  Every
``--interval`` seconds the script records the process's RSS, open descriptors, threads
and asyncio tasks.  Growth is measured from the end of the warm-up (codecs, buffers and
the congestion controller settle in the first minute) to the end of the call; the target
is under 10 %.  The stats table itself grows by design (a few hundred bytes per row):
its size is printed so it can be told apart from a leak.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from webrtclab import Lab, MediaSpec  # noqa: E402
from webrtclab.netem import LinkConditions  # noqa: E402

TARGET_GROWTH = 0.10


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def sample(t0: float) -> dict[str, Any]:
    return {
        "t": time.monotonic() - t0,
        "rss": rss_mb(),
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": threading.active_count(),
        "tasks": len(asyncio.all_tasks()),
    }


def slope_per_min(points: list[dict[str, Any]]) -> float:
    """Least-squares slope of RSS (MB per minute) over ``points``."""
    if len(points) < 2:
        return float("nan")
    xs = [p["t"] / 60 for p in points]
    ys = [p["rss"] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else float("nan")


async def soak(args: argparse.Namespace) -> list[dict[str, Any]]:
    media = MediaSpec(width=args.width, height=args.height, fps=args.fps)
    link = LinkConditions(delay_ms=20, loss=0.005)
    samples: list[dict[str, Any]] = []
    async with Lab(link=link, seed=7) as lab:
        alice = await lab.add_peer("alice", media=media)
        await lab.add_peer("bob", media=media, echo_chat=True)
        await lab.wait_connected()
        t0 = time.monotonic()
        next_sample = next_chat = 0.0
        n = 0
        while True:
            now = time.monotonic() - t0
            if now >= next_sample:
                row = sample(t0)
                row["stats_rows"] = len(lab.sampler.stats.rows)
                row["events"] = len(lab.event_log.rows)
                row["state"] = alice.sessions["bob"].state
                samples.append(row)
                if args.progress:
                    print(
                        f"  t={row['t']:6.0f} s  RSS {row['rss']:7.1f} MB  fds {row['fds']:4d}  "
                        f"threads {row['threads']:3d}  tasks {row['tasks']:4d}",
                        flush=True,
                    )
                next_sample += args.interval
            if now >= args.duration:
                break
            if now >= next_chat:
                await alice.send_chat(f"soak {n}")
                n += 1
                next_chat += 1.0
            alice.send_cursor((n % 100) / 100, 0.5)
            await asyncio.sleep(0.1)
    return samples


def report(samples: list[dict[str, Any]], args: argparse.Namespace) -> bool:
    warm = [s for s in samples if s["t"] >= args.warmup]
    if len(warm) < 2:
        print("not enough samples after the warm-up: lengthen --duration")
        return False
    start, end = warm[0], warm[-1]
    growth = end["rss"] / start["rss"] - 1
    peak = max(s["rss"] for s in warm)
    ok = growth < TARGET_GROWTH and all(s["state"] == "connected" for s in warm)
    print()
    print(
        f"soak: one 2-peer call, {args.width}x{args.height} at {args.fps:g} fps, through the "
        f"emulator, {args.duration:g} s; RSS every {args.interval:g} s; growth measured "
        f"after {args.warmup:g} s of warm-up"
    )
    header = (
        f"{'':<22}{'RSS MB':>9}{'fds':>6}{'threads':>9}{'tasks':>7}{'events':>8}{'stats rows':>12}"
    )
    print(header)
    print("-" * len(header))
    for label, s in (("first sample", samples[0]), ("after warm-up", start), ("end", end)):
        print(
            f"{label:<22}{s['rss']:>9.1f}{s['fds']:>6}{s['threads']:>9}{s['tasks']:>7}"
            f"{s['events']:>8}{s['stats_rows']:>12}"
        )
    print("-" * len(header))
    print(f"{'growth after warm-up':<22}{growth:>+9.1%}   (target < {TARGET_GROWTH:.0%})")
    print(f"{'peak after warm-up':<22}{peak:>9.1f}")
    print(f"{'slope after warm-up':<22}{slope_per_min(warm):>+9.2f} MB/min")
    print(
        f"\n{'PASS' if ok else 'FAIL'}: RSS grew {growth:+.1%} over {end['t'] - start['t']:.0f} s"
    )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of call")
    parser.add_argument("--warmup", type=float, default=None, help="default: min(60, 20 %%)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--progress", action="store_true", help="print every sample")
    args = parser.parse_args()
    if not args.duration > 0 or not args.interval > 0:
        parser.error("--duration and --interval must be positive")
    if args.warmup is None:
        args.warmup = min(60.0, args.duration * 0.2)
    if not 0 <= args.warmup < args.duration:
        parser.error("--warmup must be in [0, duration)")
    started = time.monotonic()
    samples = asyncio.run(soak(args))
    ok = report(samples, args)
    print(f"total time {time.monotonic() - started:.0f} s")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
