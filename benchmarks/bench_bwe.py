"""Bandwidth-estimation kit: per-packet plumbing cost, gym speed, and an evaluation table.

1. **Plumbing per packet**: what the lab adds to each received packet before the
   estimator's ``report_states`` (abs-send-time unwrapping, header size, the stats
   dict), measured against a baseline in the same run -- the same no-op estimator
   called with a ready-made dict -- and as a ratio to it.  Target: < 20 us per packet.
2. **Gym speed**: a 30-step episode (200 ms steps) of ``webrtclab.gym`` against its
   simulated time (target: < 1.5x), with and without the reset that starts the call.
3. **Evaluation**: ``webrtclab.bwe.evaluate`` of gcc, ``estimator:fixed:800000`` and
   ``ReceiveRateEstimator`` on the three shipped traces (20 s cells; 6 s with --quick).

    .venv/bin/python benchmarks/bench_bwe.py [--quick] [--skip-evaluation]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from webrtclab.cc.twcc import TWCC_URI
from webrtclab.compat.aiortc import ABS_SEND_TIME_URI, TWCC_EXTENSION_ID, PacketReporter

PACKETS = 200_000


class NoOp:
    def report_states(self, stats: dict[str, Any]) -> None:
        pass

    def get_estimated_bandwidth(self) -> int:
        return 1_000_000


def packets(count: int) -> list[RtpPacket]:
    mapping = HeaderExtensionsMap()
    mapping.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
                RTCRtpHeaderExtensionParameters(id=3, uri=ABS_SEND_TIME_URI),
                RTCRtpHeaderExtensionParameters(id=TWCC_EXTENSION_ID, uri=TWCC_URI),
            ]
        )
    )
    out = []
    for i in range(count):
        packet = RtpPacket(payload_type=97, sequence_number=i & 0xFFFF, ssrc=1, payload=bytes(1100))
        packet.extensions.mid = "0"
        packet.extensions.abs_send_time = (i * 262) & 0xFFFFFF  # 1 ms apart, wrapping
        packet.extensions.transport_sequence_number = i & 0xFFFF
        out.append(RtpPacket.parse(packet.serialize(mapping), mapping))
    return out


def plumbing(count: int) -> dict[str, float]:
    batch = packets(min(count, 20_000))
    estimator = NoOp()
    ready = {
        "send_time_ms": 1.0,
        "arrival_time_ms": 2,
        "payload_type": 97,
        "sequence_number": 1,
        "ssrc": 1,
        "padding_length": 0,
        "header_length": 28,
        "payload_size": 1100,
    }
    rounds = max(1, count // len(batch))
    best_base = best_lab = float("inf")
    for _ in range(5):  # best of 5: the machine is shared
        start = time.perf_counter()
        for _ in range(rounds):
            for _packet in batch:
                estimator.report_states(ready)
        best_base = min(best_base, time.perf_counter() - start)
        reporter = PacketReporter(estimator)
        start = time.perf_counter()
        for r in range(rounds):
            for i, packet in enumerate(batch):
                reporter.report(packet, r * 20_000 + i)
        best_lab = min(best_lab, time.perf_counter() - start)
    n = rounds * len(batch)
    base_us, lab_us = best_base / n * 1e6, best_lab / n * 1e6
    return {
        "packets": n,
        "baseline_us": base_us,
        "lab_us": lab_us,
        "added_us": lab_us - base_us,
        "ratio": lab_us / base_us,
    }


def gym_speed(steps: int = 30, step_s: float = 0.2) -> dict[str, float]:
    from webrtclab.gym import BandwidthEstimationEnv

    env = BandwidthEstimationEnv(step_s=step_s, max_steps=steps)
    try:
        start = time.monotonic()
        env.reset(seed=1)
        reset_s = time.monotonic() - start
        steps_start = time.monotonic()
        for i in range(steps):
            env.step(800_000 if i < steps // 2 else 400_000)
        steps_s = time.monotonic() - steps_start
    finally:
        env.close()
    simulated = steps * step_s
    return {
        "simulated_s": simulated,
        "reset_s": reset_s,
        "steps_s": steps_s,
        "steps_ratio": steps_s / simulated,
        "with_reset_ratio": (steps_s + reset_s) / simulated,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-evaluation", action="store_true")
    args = parser.parse_args()
    failed = False

    p = plumbing(PACKETS // 4 if args.quick else PACKETS)
    print("\nPer-packet plumbing (best of 5, no-op estimator)")
    print(
        "| packets | baseline: report_states(dict) | lab: PacketReporter.report | added | ratio |"
    )
    print("|---|---|---|---|---|")
    print(
        f"| {p['packets']:.0f} | {p['baseline_us']:.2f} us | {p['lab_us']:.2f} us "
        f"| {p['added_us']:.2f} us | {p['ratio']:.1f}x |"
    )
    if p["added_us"] >= 20:
        print("FAIL: the lab's plumbing adds 20 us or more per packet")
        failed = True

    g = gym_speed()
    print("\nGym: a 30-step episode (200 ms steps, step-down trace)")
    print("| simulated | reset (call set-up) | 30 steps | steps / simulated | with reset |")
    print("|---|---|---|---|---|")
    print(
        f"| {g['simulated_s']:.1f} s | {g['reset_s']:.2f} s | {g['steps_s']:.2f} s "
        f"| {g['steps_ratio']:.2f}x | {g['with_reset_ratio']:.2f}x |"
    )
    if g["steps_ratio"] >= 1.5:
        print("FAIL: the episode runs 1.5x its simulated time or slower")
        failed = True

    if not args.skip_evaluation:
        from webrtclab.bwe import EVALUATION_METRICS, evaluate

        estimators = [
            "gcc",
            "estimator:fixed:800000",
            "estimator:webrtclab.bwe.builtin:ReceiveRateEstimator",
        ]
        traces = ["step-down", "lte-like", "3g-like"]
        with tempfile.TemporaryDirectory() as tmp:
            table = evaluate(
                estimators,
                traces,
                Path(tmp) / "evaluation",
                duration_s=6.0 if args.quick else 20.0,
                workers=2,
                progress=False,
            )
        columns = EVALUATION_METRICS  # the table evaluate() writes, in its order
        print("\nEvaluation (alice -> bob, 320x240 at 15 fps, 25 ms, 300 ms queue)")
        print("| estimator | trace | " + " | ".join(columns) + " |")
        print("|---|---|" + "---|" * len(columns))
        for _, row in table.iterrows():
            cells = " | ".join(
                f"{row[c]:.2f}" if "over" in c or "loss" in c else f"{row[c]:.0f}" for c in columns
            )
            print(f"| {row['estimator']} | {row['trace']} | {cells} |")
        if (table["status"] != "completed").any():
            print("FAIL: some evaluation cells did not complete")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
