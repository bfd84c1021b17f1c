"""Congestion control for lab peers: rate adaptation that holds on constrained links.

The parts, in the order data flows through a connection:

- :mod:`~webrtclab.cc.twcc` -- transport-wide feedback: receivers record each packet's
  arrival and report it (RTCP RTPFB FMT 15); senders match reports to what they sent.
- :mod:`~webrtclab.cc.gcc` -- Google Congestion Control's estimators
  (draft-ietf-rmcat-gcc-02): delay-based (trendline, adaptive threshold, AIMD) and
  loss-based; the target is the lower of the two.
- :mod:`~webrtclab.cc.pacer` -- a leaky-bucket pacer for media and retransmissions.
- :mod:`~webrtclab.cc.recovery` -- NACKs once per RTT with a retry limit, retransmissions
  within a budget, throttled keyframe requests.
- :mod:`~webrtclab.cc.control` -- the per-peer choice (:class:`CongestionControl`) and a
  connection's state (:class:`RateControl`), which :mod:`webrtclab.compat.aiortc` plugs
  into aiortc.
"""

from .control import MODES, CongestionControl, RateControl, parse_congestion_control
from .gcc import GccController, GccState
from .pacer import Pacer
from .recovery import KeyframeThrottle, NackPolicy, RtxGuard
from .twcc import FeedbackRecorder, SendHistory, TransportFeedback
from .types import PacketResult

__all__ = [
    "CongestionControl",
    "FeedbackRecorder",
    "GccController",
    "GccState",
    "KeyframeThrottle",
    "MODES",
    "NackPolicy",
    "Pacer",
    "PacketResult",
    "RateControl",
    "RtxGuard",
    "SendHistory",
    "TransportFeedback",
    "parse_congestion_control",
]
