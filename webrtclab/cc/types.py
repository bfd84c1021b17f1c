"""Values shared by the congestion-control parts: what the feedback says of each packet."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PacketResult"]


@dataclass(frozen=True, slots=True)
class PacketResult:
    """The fate of one sent packet, as transport-wide feedback reports it.

    Times are seconds.  ``send_time_s`` is on the sender's clock; ``arrival_time_s``
    on the receiver's (only differences between arrivals are meaningful), ``None``
    when the feedback reports the packet as not received.
    """

    #: transport-wide sequence number, unwrapped (keeps growing past 65535)
    sequence: int
    send_time_s: float
    #: bytes the packet put on the wire (RTP header, extensions and payload)
    size: int
    arrival_time_s: float | None
    #: ``True`` for retransmissions and padding (not new media)
    is_retransmission: bool = False
