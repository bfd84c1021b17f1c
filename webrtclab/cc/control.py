"""What steers a connection's send rate: the choice per peer, and the per-connection state.

:class:`CongestionControl` is the choice a user makes (``"gcc"``, ``"remb"``,
``"none"``, ``"fixed:<bps>"``, ``"estimator:<spec>"``) with the encoder ranges;
:class:`RateControl` is one connection's controller state: the estimators, the target
and its split between audio and video, and the recovery policies.  It does no I/O: the aiortc seam
(:mod:`webrtclab.compat.aiortc`) feeds it packets and feedback and applies its targets.
"""

from __future__ import annotations

import collections
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ..exceptions import ConfigurationError
from .gcc import GccController, ProbeBitrateEstimator, ProbeCluster, ProbeController
from .pacer import Pacer
from .recovery import KeyframeThrottle, NackPolicy, RtxGuard
from .twcc import SendHistory, TransportFeedback

__all__ = [
    "ESTIMATOR_PREFIX",
    "MODES",
    "CongestionControl",
    "RateControl",
    "parse_congestion_control",
]

Mode = Literal["gcc", "remb", "none", "fixed", "estimator"]
MODES: tuple[str, ...] = ("gcc", "remb", "none", "fixed", "estimator")

# Audio's share of the target, within its range (libwebrtc's bitrate allocator gives
# audio its configured rate first; Opus speech is fine from ~16 kbit/s).
AUDIO_SHARE = 0.1
# libwebrtc FecControllerDefault::UpdateFecRates (modules/video_coding/
# fec_controller_default.cc): the video encoder gets the estimate minus the share
# protection (there NACK and FEC, here retransmissions) took of what was sent over the
# last second (the rate statistics' 1 s window), at most half.
PROTECTION_WINDOW_S = 1.0
MAX_PROTECTION = 0.5
_MAX_PROBES_IN_FLIGHT = 4096


@dataclass(frozen=True)
class CongestionControl:
    """How a peer adapts its send rate.

    ``mode``: ``"gcc"`` (Google Congestion Control on transport-wide feedback, the
    default), ``"remb"`` (aiortc as it ships: receiver-side REMB, its VP8 clamp and
    encoder rebuilds), ``"none"`` (no adaptation: encoders at ``fixed_bps``),
    ``"fixed"`` (the lab's encoders and pacer held at ``fixed_bps``), ``"estimator"``
    (a receiver-side estimator, see :mod:`webrtclab.bwe`: this peer's receivers feed
    ``estimator`` every packet and send its estimate back as REMB; this peer's senders
    follow the REMB they receive, with the lab's encoders and pacer).
    """

    mode: Mode = "gcc"
    #: start, and the bounds of the total target (bit/s)
    start_bps: int = 300_000
    min_bps: int = 50_000
    max_bps: int = 2_500_000
    #: encoder ranges (bit/s): the video floor lets video through a 150 kbit/s link
    video_min_bps: int = 30_000
    video_max_bps: int = 2_500_000
    audio_min_bps: int = 16_000
    audio_max_bps: int = 64_000
    #: the rate of ``"none"`` and ``"fixed"`` (video; audio takes its maximum)
    fixed_bps: int = 1_000_000
    #: pacing rate as a multiple of the target; retransmissions' share of the target
    pacing_factor: float = 2.5
    rtx_share: float = 0.25
    #: how often the receiver sends transport-wide feedback (s)
    feedback_interval_s: float = 0.05
    #: ``"estimator"``: the estimator (a spec ``"package.module:Class"``,
    #: ``"fixed:<bps>"``, ``"onnx:<path>"``, a class, or an instance shared by the
    #: peer's connections) and how often its estimate is polled and sent (s)
    estimator: Any = None
    estimator_interval_s: float = 0.2

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigurationError(
                f"congestion control must be one of {', '.join(MODES)}, got {self.mode!r}"
            )
        if (self.mode == "estimator") != (self.estimator is not None):
            raise ConfigurationError(
                f"mode={self.mode!r} with estimator={self.estimator!r}: an estimator goes "
                f'with mode="estimator" and only with it'
            )
        if self.estimator is not None:
            # Checked now (a bad spec fails where it is written), built per connection.
            from ..bwe.loader import estimator_factory

            estimator_factory(self.estimator)
        if not 0.01 <= self.estimator_interval_s <= 5.0:
            raise ConfigurationError(
                f"estimator_interval_s must be in [0.01, 5] s, got {self.estimator_interval_s}"
            )
        pairs = (
            ("min_bps", self.min_bps, "max_bps", self.max_bps),
            ("video_min_bps", self.video_min_bps, "video_max_bps", self.video_max_bps),
            ("audio_min_bps", self.audio_min_bps, "audio_max_bps", self.audio_max_bps),
        )
        for low_name, low, high_name, high in pairs:
            if not 1000 <= low <= high:
                raise ConfigurationError(
                    f"{low_name}={low} and {high_name}={high}: need 1000 <= {low_name} "
                    f"<= {high_name}"
                )
        if not self.min_bps <= self.start_bps <= self.max_bps:
            raise ConfigurationError(
                f"start_bps={self.start_bps} is outside [{self.min_bps}, {self.max_bps}]"
            )
        if self.fixed_bps < 1000:
            raise ConfigurationError(f"fixed_bps must be at least 1000, got {self.fixed_bps}")
        if not 1.0 <= self.pacing_factor <= 10.0:
            raise ConfigurationError(f"pacing_factor must be in [1, 10], got {self.pacing_factor}")
        if not 0.0 <= self.rtx_share <= 1.0:
            raise ConfigurationError(f"rtx_share must be in [0, 1], got {self.rtx_share}")
        if not 0.01 <= self.feedback_interval_s <= 1.0:
            raise ConfigurationError(
                f"feedback_interval_s must be in [0.01, 1] s, got {self.feedback_interval_s}"
            )

    @property
    def uses_twcc(self) -> bool:
        """Whether transport-wide feedback is offered (and generated and consumed)."""
        return self.mode in ("gcc", "fixed")

    @property
    def paced(self) -> bool:
        """Whether the lab's pacer and bounded recovery (NACKs, RTX, keyframes) are in use."""
        return self.mode in ("gcc", "fixed", "estimator")

    @property
    def adaptive(self) -> bool:
        """Whether the target follows the network (the encoders adapt to their picture)."""
        return self.mode in ("gcc", "estimator")

    @property
    def lab_sender(self) -> bool:
        """Whether the lab's encoders and pacer replace aiortc's sending loop."""
        return self.mode != "remb"

    def __str__(self) -> str:
        if self.mode == "fixed":
            return f"fixed:{self.fixed_bps}"
        if self.mode == "estimator":
            from ..bwe.loader import describe

            return f"estimator:{describe(self.estimator)}"
        return self.mode


_FIXED = re.compile(r"fixed:(\d+)(k?)")
ESTIMATOR_PREFIX = "estimator:"


def parse_congestion_control(spec: str | CongestionControl | Any | None) -> CongestionControl:
    """``"gcc"``, ``"remb"``, ``"none"``, ``"fixed:800000"`` (or ``"fixed:800k"``),
    ``"estimator:package.module:Class"`` (or ``"estimator:fixed:800000"``), or an
    estimator object (``report_states`` and ``get_estimated_bandwidth``)."""
    if spec is None:
        return CongestionControl()
    if isinstance(spec, CongestionControl):
        return spec
    if not isinstance(spec, str):
        if callable(getattr(spec, "report_states", None)) or isinstance(spec, type):
            return CongestionControl(mode="estimator", estimator=spec)
        raise ConfigurationError(
            f"congestion_control must be a string, a CongestionControl or an estimator "
            f"(report_states and get_estimated_bandwidth), got {spec!r}"
        )
    if spec.strip().lower().startswith(ESTIMATOR_PREFIX):
        return CongestionControl(
            mode="estimator", estimator=spec.strip()[len(ESTIMATOR_PREFIX) :].strip()
        )
    text = spec.strip().lower()
    match = _FIXED.fullmatch(text)
    if match is not None:
        bps = int(match.group(1)) * (1000 if match.group(2) else 1)
        return CongestionControl(
            mode="fixed", fixed_bps=bps, start_bps=max(50_000, min(bps, 2_500_000))
        )
    if text in ("gcc", "remb", "none"):
        return CongestionControl(mode=text)  # type: ignore[arg-type]
    raise ConfigurationError(
        f"unknown congestion control {spec!r}: use gcc, remb, none, fixed:<bps> or "
        f"estimator:<package.module:Class>"
    )


@dataclass
class StreamCounters:
    """What one sending stream (by kind) put on the network, cumulative."""

    rtx_packets: int = 0
    rtx_bytes: int = 0  # retransmitted RTP payload (not probes)
    probe_packets: int = 0  # probe packets: RTX copies of recent packets, to measure the link
    probe_bytes: int = 0
    wire_bytes: int = 0  # SRTP packets as sent: headers, payload, padding, auth tag
    wire_packets: int = 0


@dataclass
class RateControl:
    """One connection's rate control state (no I/O; see :mod:`webrtclab.compat.aiortc`)."""

    settings: CongestionControl = field(default_factory=CongestionControl)
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        s = self.settings
        #: the last REMB the remote sent (bit/s), the last RTT (s)
        self.remb_bps: int | None = None
        self.rtt_s: float | None = None
        #: whether the remote sends transport-wide feedback (set by the first report)
        self.twcc_negotiated = False
        self.feedback_received = 0
        self.gcc = GccController(start_bps=s.start_bps, min_bps=s.min_bps, max_bps=s.max_bps)
        self.history = SendHistory()
        # Probing (gcc with transport-wide feedback): clusters to send, and which
        # transport-wide sequence number (16 bits) carried which cluster's probe.
        self.probes = ProbeController(max_bps=s.max_bps)
        self.probe_estimator = ProbeBitrateEstimator()
        self.probing_started = False
        self._probe_queue: list[ProbeCluster] = []
        self._probe_of: dict[int, ProbeCluster] = {}
        self.pacer = Pacer(target_bps=self.target_bps, pacing_factor=s.pacing_factor)
        self.rtx = {"audio": RtxGuard(share=s.rtx_share), "video": RtxGuard(share=s.rtx_share)}
        self.keyframes = KeyframeThrottle()
        self.pli = KeyframeThrottle()
        self.nack = NackPolicy()
        self.counters = {"audio": StreamCounters(), "video": StreamCounters()}
        #: per-kind encoder target setters, registered by the seam
        self._encoders: dict[str, Callable[[int], None]] = {}
        #: per-kind highest useful rate reported by the encoder (its picture size's)
        self._stream_max: dict[str, int] = {}
        #: the share of video's bytes that were retransmissions over the last second
        self.protection = 0.0
        self._sent: collections.deque[tuple[float, int, int]] = collections.deque()
        self._targets = self.split(self.target_bps)

    # --- the target ------------------------------------------------------------------

    @property
    def target_bps(self) -> int:
        """The total target now (audio and video)."""
        s = self.settings
        if s.mode in ("none", "fixed"):
            return s.fixed_bps + s.audio_max_bps
        if s.mode == "estimator":
            # The remote receiver's estimate, as REMB (start_bps until the first one).
            remb = s.start_bps if self.remb_bps is None else self.remb_bps
            return max(s.min_bps, min(remb, s.max_bps))
        if s.mode == "gcc" and not self.twcc_negotiated and self.remb_bps is not None:
            # A remote without transport-wide feedback: follow its REMB.
            return max(s.min_bps, min(self.remb_bps, s.max_bps))
        return self.gcc.target_bps

    def split(self, total_bps: int) -> dict[str, int]:
        """The target of each kind: audio its share within its range, video the rest."""
        s = self.settings
        if s.mode in ("none", "fixed"):
            return {"audio": s.audio_max_bps, "video": s.fixed_bps}
        audio = int(min(s.audio_max_bps, max(s.audio_min_bps, total_bps * AUDIO_SHARE)))
        video_max = min(s.video_max_bps, self._stream_max.get("video", s.video_max_bps))
        media = (total_bps - audio) * (1 - self.protection)
        video = int(min(video_max, max(s.video_min_bps, media)))
        return {"audio": audio, "video": video}

    def _update_protection(self, now_s: float) -> None:
        """Measure retransmissions' share of video over the last second."""
        video = self.counters["video"]
        sent = self._sent
        sent.append((now_s, video.rtx_bytes, video.wire_bytes))
        while len(sent) > 2 and now_s - sent[1][0] >= PROTECTION_WINDOW_S:
            sent.popleft()
        _, rtx0, wire0 = sent[0]
        wire = video.wire_bytes - wire0
        share = (video.rtx_bytes - rtx0) / wire if wire > 0 else 0.0
        self.protection = min(MAX_PROTECTION, max(0.0, share))

    def set_stream_max(self, kind: str, bps: int) -> None:
        """The highest rate ``kind``'s encoder can use (for its picture size).

        The split gives it no more, and probing stops at what all streams can use, as
        libwebrtc's probe controller stops at the total allocatable rate.
        """
        if self._stream_max.get(kind) == bps:
            return
        self._stream_max[kind] = bps
        s = self.settings
        video = min(s.video_max_bps, self._stream_max.get("video", s.video_max_bps))
        self.probes.set_max(video + s.audio_max_bps)
        self._apply()

    def target_of(self, kind: str) -> int:
        """The current target of ``kind`` (bit/s)."""
        return self._targets.get(kind, 0)

    def register_encoder(self, kind: str, setter: Callable[[int], None]) -> None:
        """Call ``setter(bps)`` with ``kind``'s target now and at every change."""
        self._encoders[kind] = setter
        setter(self.target_of(kind))

    def _apply(self) -> None:
        if self.settings.paced:
            self._update_protection(self.clock())
        total = self.target_bps
        self.pacer.set_target(total)
        targets = self.split(total)
        for kind, bps in targets.items():
            if bps != self._targets.get(kind):
                setter = self._encoders.get(kind)
                if setter is not None:
                    setter(bps)
        self._targets = targets

    # --- inputs ----------------------------------------------------------------------

    def on_feedback(self, feedback: TransportFeedback) -> None:
        """Transport-wide feedback from the remote receiver."""
        self.twcc_negotiated = True
        self.feedback_received += 1
        results = self.history.on_feedback(feedback)
        if not results or self.settings.mode != "gcc":
            return
        now = self.clock()
        probed = {
            r.sequence: cluster
            for r in results
            if (cluster := self._probe_of.pop(r.sequence & 0xFFFF, None)) is not None
        }
        if probed:
            rate = self.probe_estimator.on_feedback(results, probed)
            if rate is not None:
                self.gcc.on_probe_result(rate, now)
        self.gcc.on_feedback(results, now)
        self._probe_queue.extend(
            self.probes.on_estimate(self.gcc.target_bps, now, periodic=self.gcc.wants_probe())
        )
        self._apply()

    # --- probing ---------------------------------------------------------------------

    def start_probing(self) -> None:
        """Queue the initial probes (once, when media flows with transport-wide feedback)."""
        if self.probing_started or self.settings.mode != "gcc":
            return
        self.probing_started = True
        self._probe_queue.extend(self.probes.on_start(self.gcc.target_bps, self.clock()))

    def take_probes(self) -> list[ProbeCluster]:
        """The clusters to send now (each once)."""
        clusters, self._probe_queue = self._probe_queue, []
        return clusters

    def probe_sent(self, sequence: int, cluster: ProbeCluster) -> None:
        """Packet ``sequence`` (16 bits) carried a probe of ``cluster``."""
        if len(self._probe_of) > _MAX_PROBES_IN_FLIGHT:
            self._probe_of.clear()  # never acknowledged: the feedback stopped
        self._probe_of[sequence & 0xFFFF] = cluster

    def on_rtt(self, rtt_s: float) -> None:
        """An RTT sample from an RTCP report."""
        self.rtt_s = rtt_s
        self.gcc.on_rtt(rtt_s)

    def on_remb(self, bps: int) -> None:
        """A REMB from the remote (used when it sends no transport-wide feedback)."""
        self.remb_bps = bps
        mode = self.settings.mode
        if mode == "estimator" or (mode == "gcc" and not self.twcc_negotiated):
            self._apply()
