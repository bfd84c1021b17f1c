"""Estimators that ship with the lab: a fixed rate, and a small delay-based AIMD one."""

from __future__ import annotations

from collections import deque

from ..exceptions import ConfigurationError
from .interface import PacketStats

__all__ = ["FixedEstimator", "ReceiveRateEstimator"]


class FixedEstimator:
    """Always estimates ``bps``: the sender is held at that rate through REMB.

    ``"fixed:<bps>"`` as a congestion-control mode sets the *sender's* rate at once and
    needs no feedback; ``"estimator:fixed:<bps>"`` is this class on the *receiver*,
    whose REMB brings the remote sender there (what a receiver-side estimator does).
    """

    def __init__(self, bps: int = 1_000_000) -> None:
        if isinstance(bps, bool) or not isinstance(bps, int) or bps < 1000:
            raise ConfigurationError(f"FixedEstimator needs an int >= 1000 bit/s, got {bps!r}")
        self.bps = bps
        #: packets reported so far
        self.packets = 0

    def __repr__(self) -> str:
        return f"FixedEstimator({self.bps})"

    def report_states(self, stats: PacketStats) -> None:
        self.packets += 1

    def get_estimated_bandwidth(self) -> int:
        return self.bps


class ReceiveRateEstimator:
    """A small delay-based AIMD estimator: a baseline, not a contender.

    It keeps the receive rate over the last ``window_ms`` and the one-way delay
    (arrival minus send time) above the lowest seen.  Queueing delay over
    ``threshold_ms`` cuts the estimate to 0.85x the receive rate (GCC's decrease,
    draft-ietf-rmcat-gcc-02 section 5.5); otherwise it grows 8 % a poll.
    """

    def __init__(
        self, start_bps: int = 300_000, window_ms: float = 500.0, threshold_ms: float = 40.0
    ) -> None:
        self.estimate = start_bps
        self.window_ms = window_ms
        self.threshold_ms = threshold_ms
        self._packets: deque[tuple[float, int]] = deque()  # (arrival ms, bytes)
        self._bytes = 0
        self._min_delay = float("inf")
        self._delay = 0.0

    def report_states(self, stats: PacketStats) -> None:
        arrival = float(stats["arrival_time_ms"])
        size = int(stats["payload_size"]) + int(stats["header_length"])
        self._packets.append((arrival, size))
        self._bytes += size
        while self._packets and self._packets[0][0] < arrival - self.window_ms:
            self._bytes -= self._packets.popleft()[1]
        delay = arrival - float(stats["send_time_ms"])
        self._min_delay = min(self._min_delay, delay)
        self._delay = delay - self._min_delay

    def receive_rate_bps(self) -> float:
        return self._bytes * 8 * 1000 / self.window_ms

    def get_estimated_bandwidth(self) -> int:
        if self._delay > self.threshold_ms:
            self.estimate = int(max(50_000, 0.85 * self.receive_rate_bps()))
        else:
            self.estimate = int(min(self.estimate * 1.08, 1.5 * self.receive_rate_bps() + 50_000))
        return self.estimate
