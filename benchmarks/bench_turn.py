"""What the TURN relay costs on loopback: connect time, RTT and frame latency.

Interleaves direct lab calls with relay-only calls through a real coturn (one
coturn for the whole run, like a class server), so machine noise hits both alike.
Ratios relayed/direct are what to watch: the relay should add a TURN allocation
to connect time and a fraction of a millisecond to each packet.

    .venv/bin/python benchmarks/bench_turn.py [--runs N] [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from webrtclab import Lab, MediaSpec, QualityMonitor
from webrtclab.turn import TurnServer

MEDIA = MediaSpec(width=320, height=240, fps=15)


async def call(turn: TurnServer | None, seconds: float) -> tuple[float, float, float]:
    """(join-to-connected s, median RTT ms, median frame latency ms) of one call."""
    options = {"turn": turn, "relay_only": True} if turn is not None else {}
    async with Lab(stats_interval=0.25, **options) as lab:  # type: ignore[arg-type]
        quality = QualityMonitor(lab, psnr_every=0)
        await lab.add_peer("alice", media=MEDIA)
        t0 = time.perf_counter()
        await lab.add_peer("bob", media=MEDIA)
        await lab.wait_connected()
        connect = time.perf_counter() - t0
        await asyncio.sleep(seconds)
        stats = lab.stats()
        frames = quality.frames.dataframe()
        quality.close()
    rtt = stats[(stats["direction"] == "send") & stats["rtt_ms"].notna()]["rtt_ms"]
    latency = frames["latency_ms"].dropna()
    return connect, float(rtt.median()), float(latency.median())


async def main(runs: int, seconds: float) -> dict[str, float]:
    results: dict[str, list[tuple[float, float, float]]] = {"direct": [], "relayed": []}
    async with TurnServer() as turn:
        await call(None, 1.0)  # warm-up: imports, codecs, DTLS
        await call(turn, 1.0)
        for _ in range(runs):
            results["direct"].append(await call(None, seconds))
            results["relayed"].append(await call(turn, seconds))
    medians = {
        name: tuple(statistics.median(r[i] for r in rows) for i in range(3))
        for name, rows in results.items()
    }
    print(f"{'call (median of runs)':<24}{'connect ms':>12}{'RTT ms':>10}{'latency ms':>12}")
    for name, (connect, rtt, latency) in medians.items():
        print(f"{name:<24}{connect * 1e3:>12.1f}{rtt:>10.2f}{latency:>12.1f}")
    d, r = medians["direct"], medians["relayed"]
    print(
        f"relayed - direct: connect +{(r[0] - d[0]) * 1e3:.0f} ms ({r[0] / d[0]:.2f}x), "
        f"RTT +{r[1] - d[1]:.2f} ms, frame latency +{r[2] - d[2]:.1f} ms; runs={runs}"
    )
    return {
        "connect_ratio": r[0] / d[0],
        "rtt_added_ms": r[1] - d[1],
        "latency_added_ms": r[2] - d[2],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.seconds))
