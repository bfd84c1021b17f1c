"""The receiver-side estimator interface, in the shape OpenNetLab's AlphaRTC uses.

An estimator is any object with two methods (OpenNetLab's ``BandwidthEstimator.py``
layout, https://github.com/OpenNetLab/AlphaRTC#pyinfer):

- ``report_states(stats: dict)``: called for every RTP packet the receiver gets, with
  the keys of :data:`PACKET_STATS_KEYS`;
- ``get_estimated_bandwidth() -> int``: the estimate in bit/s, polled every 200 ms by
  default (``CongestionControl.estimator_interval_s``) and sent to the remote sender
  as REMB (draft-alvestrand-rmcat-remb-03), whose target then follows it.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["PACKET_STATS_KEYS", "Estimator", "PacketStats"]

#: The keys of the dict given to ``report_states``, as AlphaRTC passes them:
#: ``send_time_ms`` (the sender's abs-send-time, unwrapped, in ms on the sender's clock),
#: ``arrival_time_ms`` (the receiver's clock, ms), ``payload_type``,
#: ``sequence_number``, ``ssrc``, ``padding_length``, ``header_length`` (RTP header
#: with CSRCs and header extensions) and ``payload_size`` (bytes).
PACKET_STATS_KEYS: tuple[str, ...] = (
    "send_time_ms",
    "arrival_time_ms",
    "payload_type",
    "sequence_number",
    "ssrc",
    "padding_length",
    "header_length",
    "payload_size",
)

PacketStats = dict[str, Any]


@runtime_checkable
class Estimator(Protocol):
    """A receiver-side bandwidth estimator (OpenNetLab's ``Estimator`` shape)."""

    def report_states(self, stats: PacketStats) -> None:
        """One received packet (keys: :data:`PACKET_STATS_KEYS`)."""

    def get_estimated_bandwidth(self) -> int:
        """The estimate now, in bit/s."""
        ...
