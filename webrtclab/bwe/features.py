"""The observation of the MMSys 2024 offline-RL bandwidth-estimation challenge.

150 features: 15 per-interval statistics over 5 short (60 ms) and 5 long (600 ms)
monitor intervals (MIs), reaching 300 ms and 3 s back.  Feature ``f`` (1-15) over short
MI ``k`` (1 = the latest) is at index ``(f - 1) * 10 + k - 1``, over long MI ``k`` at
``(f - 1) * 10 + 5 + k - 1``; one observation every 60 ms.  The definitions follow the
challenge's data description
(https://www.microsoft.com/en-us/research/academic-program/bandwidth-estimation-challenge/data/,
also repeated in the challenge's public entries):

1. receiving rate (bit/s); 2. received packets; 3. received bytes; 4. queuing delay:
mean delay minus the lowest delay seen so far (ms); 5. delay: mean delay minus a fixed
200 ms; 6. lowest delay seen so far; 7. delay ratio: mean over lowest delay in the MI;
8. mean minus lowest delay in the MI; 9. mean packet interarrival (ms); 10. jitter:
standard deviation of interarrivals (ms); 11. packet loss ratio; 12. mean number of
packets lost per loss event; 13-15. shares of video, audio and probing packets.

What the description leaves open, decided here (and so possibly unlike Teams' own
numbers, which trained the challenge's models):

- *delay* is arrival minus send time (``arrival_time_ms - send_time_ms``); in the lab
  both clocks are the host's, so it is the one-way delay.
- *loss* counts sequence-number gaps per SSRC between packets received in the MI (a
  packet lost at an MI's edge counts in the MI after the gap); reordered packets are
  not losses.
- *probing packets*: which packets Teams counts is not documented; here they are the
  packets whose payload type is in ``probe_payload_types`` (by default aiortc's RTX
  types: the lab's probes are RTX packets, so are its retransmissions).
- an MI with no packets gives 0 for every feature but *lowest delay seen*.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection

import numpy as np

from .interface import PacketStats

__all__ = [
    "FEATURES",
    "LONG_MI_MS",
    "OBSERVATION_SIZE",
    "SHORT_MI_MS",
    "MmsysObservation",
    "feature_index",
]

FEATURES: tuple[str, ...] = (
    "receiving_rate",
    "received_packets",
    "received_bytes",
    "queuing_delay",
    "delay",
    "min_seen_delay",
    "delay_ratio",
    "delay_min_difference",
    "interarrival",
    "jitter",
    "loss_ratio",
    "average_lost_packets",
    "video_probability",
    "audio_probability",
    "probing_probability",
)
SHORT_MI_MS = 60.0
LONG_MI_MS = 600.0
MIS = 5
OBSERVATION_SIZE = len(FEATURES) * 2 * MIS
_BASE_DELAY_MS = 200.0
_HISTORY_MS = LONG_MI_MS * MIS + 100.0

# aiortc's payload types (webrtclab peers offer aiortc's codec table).
AIORTC_AUDIO_TYPES = frozenset({0, 8, 9, 96})
AIORTC_VIDEO_TYPES = frozenset({97, 99, 101})
AIORTC_RTX_TYPES = frozenset({98, 100, 102})


def feature_index(feature: str, mi: int, *, long: bool = False) -> int:
    """Where ``feature`` over MI ``mi`` (1 = the latest) is in the observation."""
    if not 1 <= mi <= MIS:
        raise ValueError(f"mi must be 1-{MIS}, got {mi}")
    return FEATURES.index(feature) * 2 * MIS + (MIS if long else 0) + mi - 1


class MmsysObservation:
    """Keeps the last 3 s of packets and computes the 150-feature observation."""

    def __init__(
        self,
        *,
        audio_payload_types: Collection[int] = AIORTC_AUDIO_TYPES,
        video_payload_types: Collection[int] = AIORTC_VIDEO_TYPES,
        probe_payload_types: Collection[int] = AIORTC_RTX_TYPES,
    ) -> None:
        self.audio_types = frozenset(audio_payload_types)
        self.video_types = frozenset(video_payload_types)
        self.probe_types = frozenset(probe_payload_types)
        # (arrival ms, delay ms, bytes, kind 0 audio / 1 video / 2 probe / 3 other,
        #  ssrc, sequence number)
        self._packets: deque[tuple[float, float, int, int, int, int]] = deque()
        self.min_seen_delay_ms = float("inf")
        self.last_arrival_ms: float | None = None

    def report(self, stats: PacketStats) -> None:
        """One received packet, as ``report_states`` gets it."""
        arrival = float(stats["arrival_time_ms"])
        delay = arrival - float(stats["send_time_ms"])
        if delay < self.min_seen_delay_ms:
            self.min_seen_delay_ms = delay
        pt = int(stats["payload_type"])
        kind = (
            1
            if pt in self.video_types
            else 0
            if pt in self.audio_types
            else 2
            if pt in self.probe_types
            else 3
        )
        size = int(stats["payload_size"]) + int(stats["header_length"])
        size += int(stats["padding_length"])
        self._packets.append(
            (arrival, delay, size, kind, int(stats["ssrc"]), int(stats["sequence_number"]))
        )
        self.last_arrival_ms = arrival
        while self._packets and self._packets[0][0] < arrival - _HISTORY_MS:
            self._packets.popleft()

    def observe(self, now_ms: float | None = None) -> np.ndarray:
        """The observation at ``now_ms`` (default: the last arrival), float32[150]."""
        out = np.zeros(OBSERVATION_SIZE, dtype=np.float32)
        min_seen = self.min_seen_delay_ms if self._packets else 0.0
        for f in range(2 * MIS):
            out[FEATURES.index("min_seen_delay") * 2 * MIS + f] = min_seen
        now = self.last_arrival_ms if now_ms is None else now_ms
        if now is None or not self._packets:
            return out
        data = np.array(self._packets, dtype=np.float64)
        for long, span in ((False, SHORT_MI_MS), (True, LONG_MI_MS)):
            for k in range(MIS):
                end = now - k * span
                rows = data[(data[:, 0] > end - span) & (data[:, 0] <= end)]
                self._fill(out, rows, span, k + (MIS if long else 0))
        return out

    def _fill(self, out: np.ndarray, rows: np.ndarray, span_ms: float, column: int) -> None:
        n = len(rows)
        if n == 0:
            return

        def put(feature: str, value: float) -> None:
            out[FEATURES.index(feature) * 2 * MIS + column] = value

        nbytes = float(rows[:, 2].sum())
        delays = rows[:, 1]
        mean_delay = float(delays.mean())
        low = float(delays.min())
        put("receiving_rate", nbytes * 8 * 1000 / span_ms)
        put("received_packets", n)
        put("received_bytes", nbytes)
        put("queuing_delay", mean_delay - self.min_seen_delay_ms)
        put("delay", mean_delay - _BASE_DELAY_MS)
        put("delay_ratio", mean_delay / low if low > 0 else 1.0)
        put("delay_min_difference", mean_delay - low)
        if n > 1:
            gaps = np.diff(np.sort(rows[:, 0]))
            put("interarrival", float(gaps.mean()))
            put("jitter", float(gaps.std()))
        lost = events = 0
        for ssrc in np.unique(rows[:, 4]):
            seqs = rows[rows[:, 4] == ssrc][:, 5].astype(np.int64)
            steps = (np.diff(seqs) % 65536) - 1
            steps = steps[(steps > 0) & (steps < 32768)]
            lost += int(steps.sum())
            events += len(steps)
        if lost:
            put("loss_ratio", lost / (lost + n))
            put("average_lost_packets", lost / events)
        kinds = rows[:, 3]
        put("video_probability", float((kinds == 1).sum()) / n)
        put("audio_probability", float((kinds == 0).sum()) / n)
        put("probing_probability", float((kinds == 2).sum()) / n)
