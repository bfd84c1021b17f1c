"""SDP helpers: reading and filtering ICE candidates.

aiortc puts every local candidate in the SDP (no trickle), so candidate policy
(loopback only, relay only) and address rewriting happen on SDP text and on
trickled ``candidate:`` strings alike.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import msgspec
from aiortc import RTCIceCandidate
from aiortc.sdp import candidate_from_sdp

from .cc.twcc import TWCC_URI
from .exceptions import ProtocolError
from .signaling import messages as m
from .signaling.rooms import Relayed

__all__ = [
    "filter_candidates",
    "is_loopback",
    "parse_candidate",
    "rewrite_candidates",
    "rewrite_relayed",
    "sdp_candidates",
    "strip_transport_cc",
]


def parse_candidate(text: str) -> RTCIceCandidate:
    """Parse ``candidate:...`` (with or without the ``a=`` / ``candidate:`` prefix)."""
    value = text.strip()
    if value.startswith("a="):
        value = value[2:]
    if value.startswith("candidate:"):
        value = value[len("candidate:") :]
    try:
        candidate = candidate_from_sdp(value)
        valid = (
            value.split()[6] == "typ"
            and candidate.component >= 1
            and 0 <= candidate.port <= 65535
            and (candidate.relatedPort is None or 0 <= candidate.relatedPort <= 65535)
        )
    except (AssertionError, ValueError, IndexError) as exc:
        raise ProtocolError("invalid-candidate", f"cannot parse ICE candidate {text!r}") from exc
    if not valid:
        # An out-of-range port makes aioice's sendto raise and close the socket.
        raise ProtocolError("invalid-candidate", f"invalid ICE candidate {text!r}")
    return candidate


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8 and ::1 (names such as ``x.local`` are not loopback)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def sdp_candidates(sdp: str) -> list[RTCIceCandidate]:
    """Every ``a=candidate`` line of ``sdp``, parsed."""
    return [parse_candidate(line) for line in sdp.splitlines() if line.startswith("a=candidate:")]


def filter_candidates(sdp: str, keep: Callable[[RTCIceCandidate], bool]) -> str:
    """``sdp`` without the ``a=candidate`` lines for which ``keep`` is false (or that
    do not parse)."""

    def kept(text: str) -> str | None:
        try:
            return text if keep(parse_candidate(text)) else None
        except ProtocolError:
            return None

    return rewrite_candidates(sdp, kept)


def rewrite_candidates(sdp: str, rewrite: Callable[[str], str | None]) -> str:
    """``sdp`` with each ``a=candidate`` line's value (``candidate:...``) replaced by
    ``rewrite(value)``; lines for which it returns None are dropped."""
    lines = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            rewritten = rewrite(line[2:])
            if rewritten is None:
                continue
            line = "a=" + rewritten
        lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def rewrite_relayed(message: Relayed, candidate: Callable[[str], str | None]) -> Relayed | None:
    """``message`` with every ICE candidate it carries (the ``a=candidate`` lines of an
    offer's or answer's SDP, or a trickled one) replaced by ``candidate(text)``, where
    ``text`` is ``candidate:...``; a None drops the line, or the whole trickled message.
    End-of-candidates (an empty trickled candidate) passes unchanged.  For the
    signaling hooks that move candidates (:data:`~webrtclab.signaling.rooms.Rewrite`:
    the network emulator, NAT gateways)."""
    if isinstance(message, m.RelayedOffer | m.RelayedAnswer) and message.sdp is not None:
        sdp = msgspec.structs.replace(
            message.sdp, sdp=rewrite_candidates(message.sdp.sdp, candidate)
        )
        return msgspec.structs.replace(message, sdp=sdp)
    if isinstance(message, m.RelayedIceCandidate) and message.candidate is not None:
        text = message.candidate.candidate
        if not text:
            return message
        rewritten = candidate(text)
        if rewritten is None:
            return None
        trickled = msgspec.structs.replace(message.candidate, candidate=rewritten)
        return msgspec.structs.replace(message, candidate=trickled)
    return message


def strip_transport_cc(sdp: str) -> str:
    """``sdp`` without transport-wide congestion control (its extmap and ``transport-cc``).

    What a description does not hold is not negotiated: a peer that uses REMB or no
    congestion control strips both from what it sends and from what it applies.
    """
    lines = sdp.splitlines(keepends=True)
    kept = [
        line
        for line in lines
        if not (line.startswith("a=extmap:") and TWCC_URI in line)
        and not (line.startswith("a=rtcp-fb:") and line.rstrip().endswith(" transport-cc"))
    ]
    return "".join(kept)
