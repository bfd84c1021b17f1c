"""Join-to-connected time: two lab peers vs two raw aiortc peers in the same process.

Both sides send the same media (synthetic video and a tone) and open the same two
data channels, and both gather on loopback only, so the ratio is the cost of the
lab itself: signaling over WebSocket, SDP handling and session bookkeeping.
Runs are interleaved so machine noise hits both alike.

    .venv/bin/python benchmarks/bench_connect.py [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from aiortc import RTCConfiguration, RTCPeerConnection

from webrtclab import Lab, MediaSpec
from webrtclab.loopback import LOOPBACK, gather_on
from webrtclab.media import SyntheticVideoTrack, ToneAudioTrack


async def raw_pair() -> float:
    """Offer to "connected" for two RTCPeerConnections wired directly."""
    t0 = time.perf_counter()
    a = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    b = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    connected = {a: asyncio.Event(), b: asyncio.Event()}
    for pc in (a, b):
        pc.on(
            "connectionstatechange",
            lambda pc=pc: connected[pc].set() if pc.connectionState == "connected" else None,
        )
    tracks = [ToneAudioTrack(), SyntheticVideoTrack(), ToneAudioTrack(), SyntheticVideoTrack()]
    a.addTrack(tracks[0])
    a.addTrack(tracks[1])
    a.createDataChannel("chat")
    a.createDataChannel("cursors", ordered=False, maxRetransmits=0)
    with gather_on(LOOPBACK):
        await a.setLocalDescription(await a.createOffer())
        await b.setRemoteDescription(a.localDescription)
        b.addTrack(tracks[2])
        b.addTrack(tracks[3])
        await b.setLocalDescription(await b.createAnswer())
        await a.setRemoteDescription(b.localDescription)
    await asyncio.gather(connected[a].wait(), connected[b].wait())
    elapsed = time.perf_counter() - t0
    await asyncio.gather(a.close(), b.close())
    for track in tracks:
        track.stop()
    return elapsed


async def lab_pair() -> float:
    """From the second peer's join to both lab peers connected."""
    async with Lab(stats_interval=60) as lab:
        await lab.add_peer("alice", media=MediaSpec())
        t0 = time.perf_counter()
        await lab.add_peer("bob", media=MediaSpec())
        await lab.wait_connected()
        return time.perf_counter() - t0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(runs: int) -> dict[str, float]:
    raw: list[float] = []
    lab: list[float] = []
    await raw_pair()  # warm-up: imports, codec and DTLS setup
    await lab_pair()
    for _ in range(runs):
        raw.append(await raw_pair())
        lab.append(await lab_pair())
    rows = [("raw aiortc pair", raw), ("webrtclab Lab pair", lab)]
    print(f"{'join-to-connected':<22}{'median ms':>12}{'p90 ms':>10}{'min ms':>10}")
    for name, values in rows:
        print(
            f"{name:<22}{statistics.median(values) * 1e3:>12.1f}"
            f"{pct(values, 0.9) * 1e3:>10.1f}{min(values) * 1e3:>10.1f}"
        )
    ratio = statistics.median(lab) / statistics.median(raw)
    print(f"ratio lab/raw (median): {ratio:.2f}x   (target <= 1.2x), runs={runs}")
    return {
        "raw_ms": statistics.median(raw) * 1e3,
        "lab_ms": statistics.median(lab) * 1e3,
        "ratio": ratio,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.runs))
