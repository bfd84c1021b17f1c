"""Google Congestion Control, send side: the delay-based and loss-based estimators.

Pure computation: no I/O, no clock, no asyncio.  Every method that needs the time takes
it as an argument (seconds, any monotonic origin), so tests replay simulated time.

The design follows draft-ietf-rmcat-gcc-02 and, for constants and details, libwebrtc's
``modules/congestion_controller/goog_cc/`` (inter_arrival_delta.cc, trendline_estimator.cc,
delay_based_bwe.cc, bitrate_estimator.cc, link_capacity_estimator.cc,
send_side_bandwidth_estimation.cc, probe_controller.cc, probe_bitrate_estimator.cc),
``modules/remote_bitrate_estimator/aimd_rate_control.cc``, and pion/interceptor
``pkg/gcc`` (arrival_group_accumulator.go, overuse_detector.go, rate_controller.go,
loss_based_bwe.go).  Each class names the parts it follows.

Pipeline for one transport-wide feedback (:meth:`GccController.on_feedback`)::

    received packets, by arrival --> InterArrival --> TrendlineEstimator --> OveruseDetector
                                 \\-> AcknowledgedBitrate ------------------------\\
                                                                   AimdRateControl --> delay_bps
    all packets (lost or not) --> LossBasedBwe (capped by delay_bps) ----------------> loss_bps
    target = clamp(min(delay_bps, loss_bps), min_bps, max_bps)

Probing is separate: :class:`ProbeController` says when to send which probe cluster,
:class:`ProbeBitrateEstimator` turns the feedback of a cluster into a rate, and
:meth:`GccController.on_probe_result` applies it.  The pacer that sends the clusters
lives elsewhere.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from webrtclab.cc.types import PacketResult
from webrtclab.exceptions import ConfigurationError

__all__ = [
    "AcknowledgedBitrate",
    "AimdRateControl",
    "GccController",
    "GccState",
    "GroupDelta",
    "InterArrival",
    "LossBasedBwe",
    "OveruseDetector",
    "ProbeBitrateEstimator",
    "ProbeCluster",
    "ProbeController",
    "TrendlineEstimator",
    "Usage",
]

#: The over-use detector's verdict (draft-ietf-rmcat-gcc-02 section 5.4).
Usage = Literal["normal", "overusing", "underusing"]


# --- arrival groups ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupDelta:
    """The difference between two consecutive send-time groups (seconds, bytes)."""

    send_delta_s: float
    arrival_delta_s: float
    size_delta: int


@dataclass(slots=True)
class _Group:
    first_send_s: float
    send_s: float  # latest send time seen in the group
    first_arrival_s: float
    complete_s: float  # arrival time of the group's last packet
    size: int
    system_s: float  # feedback time the last packet was reported at


class InterArrival:
    """Groups packets into send bursts and yields inter-group delay deltas.

    Follows libwebrtc inter_arrival_delta.cc (the draft's section 5.2 pre-filtering):
    packets sent within ``group_length_s`` (5 ms) of a group's first packet belong to
    it, and so does a packet that arrives within 5 ms of the group's last one while
    having *less* propagation delay (a burst the network compressed; at most 100 ms).
    Pion's arrival_group_accumulator.go uses the same 5 ms / 5 ms rules.  A group's
    arrival time is that of its last packet; its send time that of its latest packet.
    """

    _BURST_DELTA_S = 0.005
    _MAX_BURST_S = 0.100
    _REORDER_RESET = 3
    # A jump between the arrival clock and the feedback clock this large means the
    # receiver's clock was reset: start over instead of reading it as queueing.
    _CLOCK_OFFSET_RESET_S = 3.0

    def __init__(self, group_length_s: float = 0.005) -> None:
        self._group_length_s = group_length_s
        self._current: _Group | None = None
        self._previous: _Group | None = None
        self._reordered = 0

    def reset(self) -> None:
        """Forget both groups (after a stream timeout or clock jump)."""
        self._current = None
        self._previous = None
        self._reordered = 0

    def compute_deltas(
        self, send_s: float, arrival_s: float, now_s: float, size: int
    ) -> GroupDelta | None:
        """Add one received packet (in arrival order); return a delta when a group closes."""
        current = self._current
        if current is None:
            self._current = _Group(send_s, send_s, arrival_s, arrival_s, size, now_s)
            return None
        if send_s < current.first_send_s:
            return None  # reordered on the sender side: older than the open group
        delta: GroupDelta | None = None
        if self._new_group(current, send_s, arrival_s):
            previous = self._previous
            if previous is not None:
                send_delta = current.send_s - previous.send_s
                arrival_delta = current.complete_s - previous.complete_s
                system_delta = current.system_s - previous.system_s
                if arrival_delta - system_delta >= self._CLOCK_OFFSET_RESET_S:
                    self.reset()
                    return None
                if arrival_delta < 0:
                    # The whole group was reordered after it got its arrival stamp.
                    self._reordered += 1
                    if self._reordered >= self._REORDER_RESET:
                        self.reset()
                    return None
                self._reordered = 0
                delta = GroupDelta(send_delta, arrival_delta, current.size - previous.size)
            self._previous = current
            self._current = _Group(send_s, send_s, arrival_s, arrival_s, size, now_s)
            return delta
        current.send_s = max(current.send_s, send_s)
        current.size += size
        current.complete_s = arrival_s
        current.system_s = now_s
        return None

    def _new_group(self, current: _Group, send_s: float, arrival_s: float) -> bool:
        if self._belongs_to_burst(current, send_s, arrival_s):
            return False
        return send_s - current.first_send_s > self._group_length_s

    def _belongs_to_burst(self, current: _Group, send_s: float, arrival_s: float) -> bool:
        arrival_delta = arrival_s - current.complete_s
        send_delta = send_s - current.send_s
        if send_delta == 0:
            return True
        propagation_delta = arrival_delta - send_delta
        return (
            propagation_delta < 0
            and arrival_delta <= self._BURST_DELTA_S
            and arrival_s - current.first_arrival_s < self._MAX_BURST_S
        )


# --- delay trend and over-use detection ----------------------------------------------


class TrendlineEstimator:
    """Least-squares slope of the smoothed accumulated one-way delay variation.

    libwebrtc trendline_estimator.cc (UpdateTrendline / LinearFitSlope / Detect): each
    group delta ``d = recv_delta - send_delta`` (ms) is accumulated, smoothed with an
    exponential filter (``smoothing`` 0.9), and the slope of the last ``window`` (20)
    points against arrival time is the *trend*: about (send rate - capacity) / capacity
    while a queue builds.  The *modified trend* compared against the threshold is
    ``min(num_deltas, 60) * trend * threshold_gain`` (gain 4), so a young estimator with
    few samples needs a steeper slope to call over-use.
    """

    _MIN_NUM_DELTAS = 60
    _DELTA_COUNTER_MAX = 1000

    def __init__(
        self, window: int = 20, smoothing: float = 0.9, threshold_gain: float = 4.0
    ) -> None:
        if window < 2:
            raise ConfigurationError(f"the trendline window must be at least 2, got {window}")
        self._window = window
        self._smoothing = smoothing
        self._gain = threshold_gain
        self._num_deltas = 0
        self._first_arrival_ms: float | None = None
        self._accumulated_ms = 0.0
        self._smoothed_ms = 0.0
        self._points: deque[tuple[float, float]] = deque(maxlen=window)
        self.trend = 0.0
        self.modified_trend = 0.0

    @property
    def num_deltas(self) -> int:
        """Deltas seen so far (saturates at 1000)."""
        return self._num_deltas

    def update(self, recv_delta_ms: float, send_delta_ms: float, arrival_ms: float) -> float:
        """Add one group delta; return the new modified trend."""
        self._num_deltas = min(self._num_deltas + 1, self._DELTA_COUNTER_MAX)
        if self._first_arrival_ms is None:
            self._first_arrival_ms = arrival_ms
        self._accumulated_ms += recv_delta_ms - send_delta_ms
        a = self._smoothing
        self._smoothed_ms = a * self._smoothed_ms + (1 - a) * self._accumulated_ms
        self._points.append((arrival_ms - self._first_arrival_ms, self._smoothed_ms))
        if len(self._points) == self._window:
            # Keep the previous trend when the points are degenerate (all at one time).
            slope = _linear_fit_slope(self._points)
            if slope is not None:
                self.trend = slope
        if self._num_deltas < 2:
            self.modified_trend = 0.0
        else:
            n = min(self._num_deltas, self._MIN_NUM_DELTAS)
            self.modified_trend = n * self.trend * self._gain
        return self.modified_trend


def _linear_fit_slope(points: deque[tuple[float, float]]) -> float | None:
    n = len(points)
    x_avg = sum(p[0] for p in points) / n
    y_avg = sum(p[1] for p in points) / n
    numerator = 0.0
    denominator = 0.0
    for x, y in points:
        dx = x - x_avg
        numerator += dx * (y - y_avg)
        denominator += dx * dx
    if denominator == 0:
        return None
    return numerator / denominator


class OveruseDetector:
    """Compares the modified trend with an adaptive threshold (draft section 5.4).

    libwebrtc trendline_estimator.cc (Detect / UpdateThreshold) and pion
    overuse_detector.go / adaptive_threshold.go.  Over-use needs the trend above the
    threshold for more than ``overuse_time_ms`` (10 ms of send time) on at least two
    consecutive deltas, and a trend not falling: a single noisy group is not a queue.
    The threshold follows |modified trend| up slowly (``k_up`` 0.0087 /ms) and down
    faster (``k_down`` 0.039 /ms), within 6..600, starting at 12.5; samples more than
    15 above it (a sudden capacity drop) do not move it, so it cannot run away.
    """

    _MAX_ADAPT_OFFSET = 15.0
    _MAX_TIME_DELTA_MS = 100.0

    def __init__(
        self,
        *,
        k_up: float = 0.0087,
        k_down: float = 0.039,
        initial_threshold: float = 12.5,
        min_threshold: float = 6.0,
        max_threshold: float = 600.0,
        overuse_time_ms: float = 10.0,
    ) -> None:
        self._k_up = k_up
        self._k_down = k_down
        self._min = min_threshold
        self._max = max_threshold
        self._overuse_time_ms = overuse_time_ms
        self.threshold = initial_threshold
        self.usage: Usage = "normal"
        self._last_update_ms: float | None = None
        self._prev_trend = 0.0
        self._time_over_ms = -1.0  # -1: the over-use timer is not running
        self._over_count = 0

    def detect(
        self, modified_trend: float, trend: float, send_delta_ms: float, now_ms: float
    ) -> Usage:
        """Update the verdict with one sample; ``now_ms`` is on the arrival clock."""
        if modified_trend > self.threshold:
            if self._time_over_ms == -1:
                # Assume we have been over-using for half the time since the last sample.
                self._time_over_ms = send_delta_ms / 2
            else:
                self._time_over_ms += send_delta_ms
            self._over_count += 1
            if (
                self._time_over_ms > self._overuse_time_ms
                and self._over_count > 1
                and trend >= self._prev_trend
            ):
                self._time_over_ms = 0.0
                self._over_count = 0
                self.usage = "overusing"
            # Otherwise keep the previous verdict (libwebrtc does the same).
        elif modified_trend < -self.threshold:
            self._time_over_ms = -1.0
            self._over_count = 0
            self.usage = "underusing"
        else:
            self._time_over_ms = -1.0
            self._over_count = 0
            self.usage = "normal"
        self._prev_trend = trend
        self._update_threshold(modified_trend, now_ms)
        return self.usage

    def _update_threshold(self, modified_trend: float, now_ms: float) -> None:
        if self._last_update_ms is None:
            self._last_update_ms = now_ms
        magnitude = abs(modified_trend)
        if magnitude > self.threshold + self._MAX_ADAPT_OFFSET:
            self._last_update_ms = now_ms
            return
        k = self._k_down if magnitude < self.threshold else self._k_up
        dt = min(max(now_ms - self._last_update_ms, 0.0), self._MAX_TIME_DELTA_MS)
        self.threshold += k * (magnitude - self.threshold) * dt
        self.threshold = min(max(self.threshold, self._min), self._max)
        self._last_update_ms = now_ms


# --- acknowledged bitrate ------------------------------------------------------------


class AcknowledgedBitrate:
    """Receive rate of acknowledged packets: libwebrtc's Bayesian BitrateEstimator.

    bitrate_estimator.cc: bytes are summed over windows of arrival time (500 ms for
    the first sample, 150 ms after); each window's rate is a sample whose variance
    grows with its distance from the estimate (scale 10), so a lone outlier window
    barely moves it while a sustained change wins within a few windows.  The estimate
    variance grows by 5 per sample to model a rate that drifts.  Units inside: kbit/s.
    """

    _INITIAL_WINDOW_MS = 500.0
    _WINDOW_MS = 150.0
    _UNCERTAINTY_SCALE = 10.0

    def __init__(self) -> None:
        self._sum_bytes = 0
        self._window_ms = 0.0
        self._prev_ms: float | None = None
        self._estimate_kbps = -1.0
        self._variance = 50.0

    @property
    def bitrate_bps(self) -> int | None:
        """The estimate, or ``None`` before the first full window."""
        if self._estimate_kbps < 0:
            return None
        return int(self._estimate_kbps * 1000)

    def update(self, arrival_s: float, size: int) -> None:
        """Add one received packet; call in arrival order."""
        window = self._INITIAL_WINDOW_MS if self._estimate_kbps < 0 else self._WINDOW_MS
        sample = self._update_window(arrival_s * 1000.0, size, window)
        if sample is None:
            return
        if self._estimate_kbps < 0:
            self._estimate_kbps = sample
            return
        uncertainty = (
            self._UNCERTAINTY_SCALE
            * abs(self._estimate_kbps - sample)
            / max(self._estimate_kbps, 1e-9)
        )
        sample_var = uncertainty * uncertainty
        pred_var = self._variance + 5.0
        self._estimate_kbps = (sample_var * self._estimate_kbps + pred_var * sample) / (
            sample_var + pred_var
        )
        self._variance = sample_var * pred_var / (sample_var + pred_var)

    def _update_window(self, now_ms: float, size: int, window_ms: float) -> float | None:
        if self._prev_ms is not None and now_ms < self._prev_ms:
            # Time went backwards (reordered feedback): restart the window.
            self._prev_ms = None
            self._sum_bytes = 0
            self._window_ms = 0.0
        if self._prev_ms is not None:
            self._window_ms += now_ms - self._prev_ms
            if now_ms - self._prev_ms > window_ms:
                # Nothing received for a whole window: that silence is not a rate.
                self._sum_bytes = 0
                self._window_ms %= window_ms
        self._prev_ms = now_ms
        sample: float | None = None
        if self._window_ms >= window_ms:
            sample = 8.0 * self._sum_bytes / window_ms  # bytes per ms * 8 = kbit/s
            self._window_ms -= window_ms
            self._sum_bytes = 0
        self._sum_bytes += size
        return sample


# --- delay-based rate control --------------------------------------------------------


class _LinkCapacity:
    """Where the last over-uses happened: libwebrtc link_capacity_estimator.cc (kbit/s)."""

    def __init__(self) -> None:
        self.estimate_kbps: float | None = None
        self._deviation = 0.4  # variance normalised by the estimate, kept in 0.4..2.5

    def reset(self) -> None:
        self.estimate_kbps = None

    def upper_bps(self) -> float:
        if self.estimate_kbps is None:
            return math.inf
        return (self.estimate_kbps + 3 * self._deviation_kbps()) * 1000

    def lower_bps(self) -> float:
        if self.estimate_kbps is None:
            return 0.0
        return max(0.0, self.estimate_kbps - 3 * self._deviation_kbps()) * 1000

    def on_overuse(self, acked_bps: float) -> None:
        sample = acked_bps / 1000
        alpha = 0.05
        if self.estimate_kbps is None:
            self.estimate_kbps = sample
        else:
            self.estimate_kbps = (1 - alpha) * self.estimate_kbps + alpha * sample
        norm = max(self.estimate_kbps, 1.0)
        error = self.estimate_kbps - sample
        self._deviation = (1 - alpha) * self._deviation + alpha * error * error / norm
        self._deviation = min(max(self._deviation, 0.4), 2.5)

    def _deviation_kbps(self) -> float:
        assert self.estimate_kbps is not None
        return math.sqrt(self._deviation * self.estimate_kbps)


class _BoundedRate:
    """A rate kept within ``[min, max]``: what the delay- and loss-based estimators share."""

    def __init__(self, start_bps: float, min_bps: float, max_bps: float) -> None:
        self._min = float(min_bps)
        self._max = float(max_bps)
        self._bitrate = self._clamp(start_bps)

    def _clamp(self, bitrate_bps: float) -> float:
        return min(max(float(bitrate_bps), self._min), self._max)

    @property
    def estimate_bps(self) -> float:
        """The current rate."""
        return self._bitrate

    def set_bounds(self, min_bps: float, max_bps: float) -> None:
        """Change the limits; the estimate is clamped into them."""
        self._min = float(min_bps)
        self._max = float(max_bps)
        self._bitrate = self._clamp(self._bitrate)


class AimdRateControl(_BoundedRate):
    """The delay-based rate: AIMD driven by the over-use verdict (draft section 5.5).

    libwebrtc aimd_rate_control.cc (ChangeState / ChangeBitrate) and pion
    rate_controller.go.  *normal* increases: multiplicatively, 8 % per second, while
    the acknowledged rate is far from where the last over-uses happened (no link
    capacity estimate, or the rate went above it by 3 deviations); additively, about one
    packet per response time (RTT + 100 ms), near it.  *overusing* decreases to 0.85 x
    the acknowledged rate (never up) and then holds until the queue has drained
    (the next *normal*).  *underusing* holds: the queue is draining, rate is fine.  An
    increase never takes the rate above 1.5 x acknowledged + 10 kbit/s, so a sender that
    does not use its allowance (an encoder below target) cannot inflate the estimate.
    """

    _BETA = 0.85
    _DEFAULT_RTT_S = 0.2  # libwebrtc kDefaultRtt, until on_rtt says otherwise

    def __init__(self, start_bps: float, min_bps: float, max_bps: float) -> None:
        super().__init__(start_bps, min_bps, max_bps)
        self._latest_throughput = self._bitrate
        self._state: Literal["hold", "increase", "decrease"] = "hold"
        self._last_change_s: float | None = None
        self._last_decrease_s: float | None = None
        self._link = _LinkCapacity()
        self.rtt_s = self._DEFAULT_RTT_S

    def set_estimate(self, bitrate_bps: float, now_s: float) -> None:
        """Jump to a rate measured otherwise (a probe), ignoring the acked-rate limit.

        As libwebrtc's SetEstimate: a probe measured the path directly, so it may
        exceed 1.5 x acknowledged; later increases then wait for the sender to catch up.
        """
        previous = self._bitrate
        self._bitrate = self._clamp(bitrate_bps)
        self._last_change_s = now_s
        if self._bitrate < previous:
            self._last_decrease_s = now_s

    @property
    def increasing_without_capacity(self) -> bool:
        """Whether the rate grows multiplicatively: in *increase* with no link capacity
        estimate (none yet, or the acknowledged rate went far above the last one)."""
        return self._state == "increase" and self._link.estimate_kbps is None

    def time_to_reduce_further(self, now_s: float, acked_bps: float) -> bool:
        """Whether another over-use may cut again (libwebrtc TimeToReduceFurther).

        Once per RTT (clamped to 10..200 ms), or at once if the acknowledged rate is
        already below half the estimate (the estimate is stale).
        """
        interval = min(max(self.rtt_s, 0.010), 0.200)
        if self._last_change_s is None or now_s - self._last_change_s >= interval:
            return True
        return acked_bps < 0.5 * self._bitrate

    def initial_time_to_reduce_further(self, now_s: float) -> bool:
        """Over-use before any acknowledged rate: halve at most every 200 ms."""
        return self._last_decrease_s is None or now_s - self._last_decrease_s >= 0.200

    def update(self, usage: Usage, acked_bps: float | None, now_s: float) -> float:
        """Apply one verdict; return the new delay-based rate."""
        if acked_bps is not None:
            self._latest_throughput = acked_bps
        throughput = self._latest_throughput
        # State machine of draft section 5.5 (figure 2).
        if usage == "normal":
            if self._state == "hold":
                self._last_change_s = now_s
                self._state = "increase"
        elif usage == "overusing":
            self._state = "decrease"
        else:
            self._state = "hold"

        new = self._bitrate
        if self._state == "increase":
            if throughput > self._link.upper_bps():
                # Well above where we congested before: the link changed, probe fast.
                self._link.reset()
            limit = 1.5 * throughput + 10_000
            if self._bitrate < limit:
                since = 0.0 if self._last_change_s is None else now_s - self._last_change_s
                if self._link.estimate_kbps is not None:
                    increased = self._bitrate + self._additive_increase_bps_per_s() * since
                else:
                    alpha = 1.08 ** min(max(since, 0.0), 1.0)
                    increased = self._bitrate + max(self._bitrate * (alpha - 1.0), 1000.0)
                new = min(increased, limit)
            self._last_change_s = now_s
        elif self._state == "decrease":
            decreased = self._BETA * throughput
            if decreased > self._bitrate and self._link.estimate_kbps is not None:
                decreased = self._BETA * self._link.estimate_kbps * 1000
            if decreased < self._bitrate:  # an over-use never raises the rate
                new = decreased
            if throughput < self._link.lower_bps():
                # Far below the last congestion point: start a fresh estimate.
                self._link.reset()
            self._link.on_overuse(throughput)
            self._state = "hold"  # wait for the queue to drain before increasing
            self._last_change_s = now_s
            self._last_decrease_s = now_s
        self._bitrate = self._clamp(new)
        return self._bitrate

    def _additive_increase_bps_per_s(self) -> float:
        # libwebrtc GetNearMaxIncreaseRateBpsPerSecond: one average-sized packet of a
        # 30 fps frame per response time; the draft's response time is RTT + 100 ms.
        frame_bits = self._bitrate / 30
        packets_per_frame = math.ceil(frame_bits / (1200 * 8))
        packet_bits = frame_bits / max(packets_per_frame, 1)
        response_time_s = self.rtt_s + 0.100
        return max(4000.0, packet_bits / response_time_s)


# --- loss-based control --------------------------------------------------------------


class LossBasedBwe(_BoundedRate):
    """The loss-based rate (draft section 6, pion loss_based_bwe.go, libwebrtc
    send_side_bandwidth_estimation.cc UpdateEstimate).

    Loss is the fraction of packets the feedback reports as lost, counting every
    packet (retransmissions and padding too).  A fraction is only computed once at
    least 20 packets have been reported (libwebrtc kLimitNumPackets): at low rates one
    feedback holds a packet or two, and 1 lost of 2 is noise, not 50 % loss.  Below
    2 %: x1.05, at most once per 200 ms + RTT; above 10 %: x(1 - 0.5 loss), at most
    once per 300 ms + RTT; between: hold.  Like libwebrtc and pion, the rate is capped
    by the delay-based one, so a decrease bites at once instead of first descending
    from a stale high value; and during the first 2 s, while no loss was seen, it
    follows the delay-based rate up (startup probing must not be held back).
    """

    _MIN_PACKETS = 20
    LOW_LOSS = 0.02
    _HIGH_LOSS = 0.10
    _START_PHASE_S = 2.0

    def __init__(self, start_bps: float, min_bps: float, max_bps: float) -> None:
        super().__init__(start_bps, min_bps, max_bps)
        self._expected = 0
        self._lost = 0
        self.loss_fraction = 0.0
        self._seen_loss = False
        self._first_report_s: float | None = None
        self._last_increase_s: float | None = None
        self._last_decrease_s: float | None = None
        self.rtt_s = 0.0

    def set_estimate(self, bitrate_bps: float) -> None:
        """Jump to a rate measured otherwise (a probe result), as libwebrtc's SetSendBitrate."""
        self._bitrate = self._clamp(bitrate_bps)

    def update(self, lost: int, total: int, delay_bps: float, now_s: float) -> float:
        """Account one feedback (``lost`` of ``total`` reported); return the new rate."""
        if self._first_report_s is None and total > 0:
            self._first_report_s = now_s
        self._expected += total
        self._lost += lost
        if self._expected >= self._MIN_PACKETS:
            self.loss_fraction = self._lost / self._expected
            self._expected = 0
            self._lost = 0
            self._seen_loss = self._seen_loss or self.loss_fraction > 0
            self._apply(delay_bps, now_s)
        # Never above the delay-based rate (libwebrtc UpdateTargetBitrate's upper limit).
        self._bitrate = self._clamp(min(self._bitrate, delay_bps))
        return self._bitrate

    def _apply(self, delay_bps: float, now_s: float) -> None:
        assert self._first_report_s is not None
        if not self._seen_loss and now_s - self._first_report_s < self._START_PHASE_S:
            self._bitrate = max(self._bitrate, delay_bps)
            return
        loss = self.loss_fraction
        if loss < self.LOW_LOSS:
            last = self._last_increase_s
            if last is None or now_s - last >= 0.200 + self.rtt_s:
                self._bitrate *= 1.05
                self._last_increase_s = now_s
        elif loss > self._HIGH_LOSS:
            last = self._last_decrease_s
            if last is None or now_s - last >= 0.300 + self.rtt_s:
                self._bitrate *= 1 - 0.5 * loss
                self._last_decrease_s = now_s


# --- probing ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProbeCluster:
    """A burst the pacer should send at ``bitrate_bps``: at least ``min_probes`` packets
    and ``min_bytes`` bytes, every one of them tagged with ``id``."""

    id: int
    bitrate_bps: int
    min_probes: int
    min_bytes: int


class ProbeController:
    """When to probe and at which rate (libwebrtc probe_controller.cc, simplified).

    At the start, two clusters at 3x and 6x the start rate (InitiateExponentialProbing).
    While waiting for their result (at most 1 s), an estimate above 70 % of the last
    probed rate means the link took it: probe again at 2x that estimate, until the
    configured maximum is probed.

    Periodic probing (``periodic=True`` in :meth:`on_estimate`): libwebrtc probes at 2x
    the estimate every 5 s (``alr_probing_interval``, ``alr_probe_scale``) while the
    sender is application-limited; the lab also does so while the delay-based rate
    increases multiplicatively without loss (:meth:`GccController.wants_probe`: the
    link's capacity is unknown or changed), so a raised capacity is found in a few
    round trips instead of at 8 %/s.  A probe needs the estimate to be more than 5 %
    (``kProbeUncertainty``) below the maximum.  Not included: probing after a large
    drop or a raised maximum.
    """

    _FIRST_SCALE = 3.0
    _SECOND_SCALE = 6.0
    _FURTHER_THRESHOLD = 0.7
    _FURTHER_SCALE = 2.0
    _MAX_WAIT_S = 1.0
    _PERIODIC_SCALE = 2.0
    _PERIODIC_INTERVAL_S = 5.0
    _UNCERTAINTY = 0.05

    def __init__(
        self, *, max_bps: int, min_probe_duration_s: float = 0.015, min_probes: int = 5
    ) -> None:
        _check_positive("max_bps", max_bps)
        self._max = max_bps
        self._duration_s = min_probe_duration_s
        self._min_probes = min_probes
        self._next_id = 0
        self._waiting_since_s: float | None = None
        self._probe_further_above_bps: float | None = None
        self._last_probe_s: float | None = None

    def set_max(self, max_bps: int) -> None:
        """Change the highest rate ever probed."""
        _check_positive("max_bps", max_bps)
        self._max = max_bps

    def on_start(self, start_bps: int, now_s: float) -> list[ProbeCluster]:
        """The initial exponential probes; call once when media starts."""
        return self._initiate(
            [start_bps * self._FIRST_SCALE, start_bps * self._SECOND_SCALE], now_s
        )

    def on_estimate(
        self, estimate_bps: float, now_s: float, *, periodic: bool = False
    ) -> list[ProbeCluster]:
        """Feed the current target; returns the clusters to send now (often none).

        ``periodic``: a probe at 2x the estimate may help now (see the class); one is
        sent if no probing is under way and none started in the last 5 s.
        """
        if self._waiting_since_s is not None and now_s - self._waiting_since_s > self._MAX_WAIT_S:
            self._waiting_since_s = None  # no useful result in time: probing is over
            self._probe_further_above_bps = None
        if self._waiting_since_s is not None and self._probe_further_above_bps is not None:
            if estimate_bps > self._probe_further_above_bps:
                return self._initiate([estimate_bps * self._FURTHER_SCALE], now_s)
            return []
        if (
            periodic
            and (
                self._last_probe_s is None
                or now_s - self._last_probe_s >= self._PERIODIC_INTERVAL_S
            )
            and estimate_bps < (1 - self._UNCERTAINTY) * self._max
        ):
            return self._initiate([estimate_bps * self._PERIODIC_SCALE], now_s)
        return []

    def _initiate(self, rates: list[float], now_s: float) -> list[ProbeCluster]:
        clusters = []
        probe_further = True
        for rate in rates:
            if rate >= self._max:
                rate = self._max
                probe_further = False
            bitrate = int(rate)
            clusters.append(
                ProbeCluster(
                    id=self._next_id,
                    bitrate_bps=bitrate,
                    min_probes=self._min_probes,
                    min_bytes=math.ceil(bitrate * self._duration_s / 8),
                )
            )
            self._next_id += 1
            if not probe_further:
                break
        self._last_probe_s = now_s
        if probe_further:
            self._waiting_since_s = now_s
            self._probe_further_above_bps = self._FURTHER_THRESHOLD * clusters[-1].bitrate_bps
        else:
            self._waiting_since_s = None
            self._probe_further_above_bps = None
        return clusters


@dataclass(slots=True)
class _ClusterStats:
    first_send_s: float = math.inf
    last_send_s: float = -math.inf
    size_last_send: int = 0
    first_arrival_s: float = math.inf
    last_arrival_s: float = -math.inf
    size_first_arrival: int = 0
    size_total: int = 0
    count: int = 0


class ProbeBitrateEstimator:
    """Turns the feedback of a probe cluster into a rate (libwebrtc
    probe_bitrate_estimator.cc HandleProbeAndEstimateBitrate).

    Needs at least 80 % of the cluster's probes and bytes acknowledged.  The send rate
    leaves out the last packet sent, the receive rate the first packet received (an
    interval of n packets carries n - 1 of them).  A receive/send ratio above 2 is
    rejected as bogus; a receive rate below 90 % of the send rate means the probe hit
    the capacity, and 95 % of the receive rate is returned, else the lower of the two.
    """

    _MIN_RECEIVED_RATIO = 0.8
    _MAX_VALID_RATIO = 2.0
    _MIN_RATIO_UNSATURATED = 0.9
    _TARGET_UTILIZATION = 0.95
    _MAX_INTERVAL_S = 1.0
    _MAX_HISTORY_S = 1.0

    def __init__(self) -> None:
        self._clusters: dict[int, _ClusterStats] = {}

    def on_feedback(
        self, results: Sequence[PacketResult], clusters: Mapping[int, ProbeCluster]
    ) -> int | None:
        """Consume the probe packets of one feedback; ``clusters`` maps a probe packet's
        sequence number to its cluster.  Returns the latest estimate, if any completed."""
        estimate: int | None = None
        for result in results:
            cluster = clusters.get(result.sequence)
            if cluster is None or result.arrival_time_s is None:
                continue
            rate = self._handle(cluster, result, result.arrival_time_s)
            if rate is not None:
                estimate = rate
        return estimate

    def _handle(self, cluster: ProbeCluster, result: PacketResult, arrival_s: float) -> int | None:
        stale = arrival_s - self._MAX_HISTORY_S
        for cid in [c for c, s in self._clusters.items() if s.last_arrival_s < stale]:
            del self._clusters[cid]
        stats = self._clusters.setdefault(cluster.id, _ClusterStats())
        if result.send_time_s < stats.first_send_s:
            stats.first_send_s = result.send_time_s
        if result.send_time_s > stats.last_send_s:
            stats.last_send_s = result.send_time_s
            stats.size_last_send = result.size
        if arrival_s < stats.first_arrival_s:
            stats.first_arrival_s = arrival_s
            stats.size_first_arrival = result.size
        if arrival_s > stats.last_arrival_s:
            stats.last_arrival_s = arrival_s
        stats.size_total += result.size
        stats.count += 1

        if (
            stats.count < cluster.min_probes * self._MIN_RECEIVED_RATIO
            or stats.size_total < cluster.min_bytes * self._MIN_RECEIVED_RATIO
        ):
            return None
        send_interval = stats.last_send_s - stats.first_send_s
        receive_interval = stats.last_arrival_s - stats.first_arrival_s
        if not (0 < send_interval <= self._MAX_INTERVAL_S) or not (
            0 < receive_interval <= self._MAX_INTERVAL_S
        ):
            return None
        send_bps = 8 * (stats.size_total - stats.size_last_send) / send_interval
        receive_bps = 8 * (stats.size_total - stats.size_first_arrival) / receive_interval
        if receive_bps > self._MAX_VALID_RATIO * send_bps:
            return None
        rate = min(send_bps, receive_bps)
        if receive_bps < self._MIN_RATIO_UNSATURATED * send_bps:
            rate = self._TARGET_UTILIZATION * receive_bps
        return int(rate)


# --- the controller ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GccState:
    """A snapshot of :class:`GccController` for logs and plots."""

    target_bps: int
    delay_bps: int
    loss_bps: int
    acked_bps: int | None
    #: fraction lost in the last completed loss window (at least 20 packets)
    loss_fraction: float
    #: the modified trend, in the threshold's units
    trend: float
    threshold: float
    usage: Usage
    #: the last :meth:`GccController.on_rtt`, 0.2 s (libwebrtc's default) before any
    rtt_s: float


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive integer (bit/s), got {value!r}")


class GccController:
    """Send-side GCC: feed it transport-wide feedback, read the target rate.

    ``target_bps`` is ``min(delay-based, loss-based)`` clamped to ``[min_bps, max_bps]``.
    Call :meth:`on_feedback` for every feedback message with the packets it reports
    (received or lost) and :meth:`on_rtt` whenever an RTT measurement arrives.
    """

    # libwebrtc delay_based_bwe.cc kStreamTimeOut: after this long without feedback the
    # old groups say nothing about the queue any more.
    _STREAM_TIMEOUT_S = 2.0
    # libwebrtc goog_cc_network_control.cc kProbeDropThroughputFraction.
    _PROBE_DROP_THROUGHPUT_FRACTION = 0.85

    def __init__(
        self, *, start_bps: int = 300_000, min_bps: int = 30_000, max_bps: int = 2_500_000
    ) -> None:
        self._check_bounds(min_bps, max_bps)
        _check_positive("start_bps", start_bps)
        if not min_bps <= start_bps <= max_bps:
            raise ConfigurationError(
                f"start_bps must lie within [min_bps, max_bps] = [{min_bps}, {max_bps}],"
                f" got {start_bps}"
            )
        self._min = min_bps
        self._max = max_bps
        self._inter_arrival = InterArrival()
        self._trendline = TrendlineEstimator()
        self._detector = OveruseDetector()
        self._acked = AcknowledgedBitrate()
        self._aimd = AimdRateControl(start_bps, min_bps, max_bps)
        self._loss = LossBasedBwe(start_bps, min_bps, max_bps)
        self._last_feedback_s: float | None = None

    @staticmethod
    def _check_bounds(min_bps: int, max_bps: int) -> None:
        _check_positive("min_bps", min_bps)
        _check_positive("max_bps", max_bps)
        if min_bps > max_bps:
            raise ConfigurationError(
                f"min_bps must not exceed max_bps, got min_bps={min_bps} max_bps={max_bps}"
            )

    @property
    def target_bps(self) -> int:
        """The rate to send at: min(delay-based, loss-based), within the bounds."""
        rate = min(self._aimd.estimate_bps, self._loss.estimate_bps)
        return int(min(max(rate, self._min), self._max))

    def set_bounds(self, min_bps: int, max_bps: int) -> None:
        """Change the allowed range; both estimates are clamped into it at once."""
        self._check_bounds(min_bps, max_bps)
        self._min = min_bps
        self._max = max_bps
        self._aimd.set_bounds(min_bps, max_bps)
        self._loss.set_bounds(min_bps, max_bps)

    def on_rtt(self, rtt_s: float) -> None:
        """A new round-trip time measurement (seconds)."""
        if not math.isfinite(rtt_s) or rtt_s < 0:
            raise ConfigurationError(f"rtt_s must be a finite number >= 0, got {rtt_s!r}")
        self._aimd.rtt_s = rtt_s
        self._loss.rtt_s = rtt_s

    def on_feedback(self, results: Sequence[PacketResult], now_s: float) -> int:
        """Process one feedback message received at ``now_s``; return the new target."""
        if not results:
            return self.target_bps
        received = sorted(
            (r for r in results if r.arrival_time_s is not None),
            key=lambda r: r.arrival_time_s or 0.0,
        )
        if received:
            self._update_delay_based(received, now_s)
        self._loss.update(
            len(results) - len(received), len(results), self._aimd.estimate_bps, now_s
        )
        return self.target_bps

    def on_probe_result(self, bitrate_bps: int, now_s: float) -> int:
        """Apply a probe cluster's rate (from :class:`ProbeBitrateEstimator`).

        As libwebrtc's DelayBasedBwe: ignored while over-using; otherwise both
        estimates jump to it, but a probe below the current estimate may not cut it
        under 0.85 x the acknowledged rate (a probe that lost the race against media
        says little).  Returns the new target.
        """
        if self._detector.usage == "overusing":
            return self.target_bps
        rate = float(bitrate_bps)
        acked = self._acked.bitrate_bps
        if acked is not None:
            floor = min(self._aimd.estimate_bps, acked * self._PROBE_DROP_THROUGHPUT_FRACTION)
            rate = max(rate, floor)
        self._aimd.set_estimate(rate, now_s)
        self._loss.set_estimate(self._aimd.estimate_bps)
        return self.target_bps

    def wants_probe(self) -> bool:
        """Whether a periodic probe may find more capacity (:class:`ProbeController`).

        The delay-based rate increases multiplicatively (no link capacity estimate: the
        link is new, or the acknowledged rate went far above where it congested
        before, so it changed), the detector says *normal* and the last loss window
        lost under 2 %: libwebrtc sends no probe while delay- or loss-limited.
        """
        return (
            self._aimd.increasing_without_capacity
            and self._detector.usage == "normal"
            and self._loss.loss_fraction < LossBasedBwe.LOW_LOSS
        )

    def state(self) -> GccState:
        """A snapshot of every estimate and the detector."""
        return GccState(
            target_bps=self.target_bps,
            delay_bps=int(self._aimd.estimate_bps),
            loss_bps=int(self._loss.estimate_bps),
            acked_bps=self._acked.bitrate_bps,
            loss_fraction=self._loss.loss_fraction,
            trend=self._trendline.modified_trend,
            threshold=self._detector.threshold,
            usage=self._detector.usage,
            rtt_s=self._aimd.rtt_s,
        )

    def _update_delay_based(self, received: list[PacketResult], now_s: float) -> None:
        last = self._last_feedback_s
        if last is not None and now_s - last > self._STREAM_TIMEOUT_S:
            self._inter_arrival = InterArrival()
            self._trendline = TrendlineEstimator()
            self._detector = OveruseDetector()
        self._last_feedback_s = now_s

        for r in received:
            arrival_s = r.arrival_time_s
            assert arrival_s is not None
            self._acked.update(arrival_s, r.size)
            delta = self._inter_arrival.compute_deltas(r.send_time_s, arrival_s, now_s, r.size)
            if delta is None:
                continue
            send_ms = delta.send_delta_s * 1000
            arrival_ms = arrival_s * 1000
            modified = self._trendline.update(delta.arrival_delta_s * 1000, send_ms, arrival_ms)
            if self._trendline.num_deltas >= 2:
                self._detector.detect(modified, self._trendline.trend, send_ms, arrival_ms)

        # libwebrtc DelayBasedBwe::MaybeUpdateEstimate.
        acked = self._acked.bitrate_bps
        usage = self._detector.usage
        if usage == "overusing":
            if acked is not None:
                if self._aimd.time_to_reduce_further(now_s, acked):
                    self._aimd.update(usage, acked, now_s)
            elif self._aimd.initial_time_to_reduce_further(now_s):
                # No acknowledged rate yet to back off to: halve, every 200 ms at most.
                self._aimd.set_estimate(self._aimd.estimate_bps / 2, now_s)
        else:
            self._aimd.update(usage, acked, now_s)
