"""Loss recovery that cannot storm: NACK pacing, bounded retransmissions, keyframe throttles.

aiortc's receiver lists every outstanding missing packet again on each new gap, and its
sender resends every listed packet at once, so on a congested link retransmissions
multiply the load that caused the loss.  The rules here follow libwebrtc
(``modules/video_coding/nack_requester.cc``: a packet is NACKed again only after an RTT,
at most ``kMaxNackRetries`` = 10 times, a keyframe is requested instead when the list
grows too long; ``modules/rtp_rtcp/source/rtp_sender.cc``: a packet is not resent
within an RTT of its last send) and the fixes other stacks made to the same problem
(janus-gateway#150, str0m#744).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KeyframeThrottle", "NackPolicy", "RtxGuard"]

DEFAULT_RTT_S = 0.1


def _rtt(rtt_s: float | None) -> float:
    return DEFAULT_RTT_S if rtt_s is None else max(rtt_s, 0.005)


@dataclass(slots=True)
class _Missing:
    first_s: float
    last_nack_s: float | None = None
    retries: int = 0


class NackPolicy:
    """Receiver side: which missing sequence numbers to NACK now.

    :param max_retries: NACKs per packet before giving up on it.
    :param max_missing: more missing packets than this: give up on all, ask a keyframe.
    :param max_age_s: a packet missing for longer is given up.
    """

    def __init__(
        self, *, max_retries: int = 10, max_missing: int = 1000, max_age_s: float = 1.0
    ) -> None:
        self.max_retries = max_retries
        self.max_missing = max_missing
        self.max_age_s = max_age_s
        self._missing: dict[int, _Missing] = {}
        #: NACK entries sent and packets given up on (cumulative)
        self.nacked = 0
        self.given_up = 0

    def __len__(self) -> int:
        return len(self._missing)

    def update(self, missing: set[int], now_s: float) -> None:
        """Track the receiver's current missing set (new gaps in, recovered packets out)."""
        for seq in list(self._missing):
            if seq not in missing:
                del self._missing[seq]
        for seq in missing:
            if seq not in self._missing:
                self._missing[seq] = _Missing(first_s=now_s)

    def due(self, now_s: float, rtt_s: float | None) -> tuple[list[int], list[int], bool]:
        """(sequence numbers to NACK now, numbers given up, whether to ask a keyframe)."""
        if len(self._missing) > self.max_missing:
            dropped = sorted(self._missing)
            self.given_up += len(dropped)
            self._missing.clear()
            return [], dropped, True
        rtt = _rtt(rtt_s)
        send: list[int] = []
        dropped = []
        for seq, entry in self._missing.items():
            if entry.retries >= self.max_retries or now_s - entry.first_s > self.max_age_s:
                dropped.append(seq)
            elif entry.last_nack_s is None or now_s - entry.last_nack_s >= rtt:
                entry.last_nack_s = now_s
                entry.retries += 1
                send.append(seq)
        for seq in dropped:
            del self._missing[seq]
        self.nacked += len(send)
        self.given_up += len(dropped)
        return sorted(send), dropped, bool(dropped)


class RtxGuard:
    """Sender side: resend a packet at most once per RTT, within a byte budget.

    The budget is a token bucket filled at ``share`` of the target bitrate, holding at
    most ``burst_s`` of it (and never less than a few packets, so a slow link can still
    repair a loss).
    """

    def __init__(
        self, *, share: float = 0.25, burst_s: float = 0.5, min_bucket: int = 6000
    ) -> None:
        self.share = share
        self.burst_s = burst_s
        self.min_bucket = min_bucket
        self._last_sent: dict[int, float] = {}
        self._tokens = float(min_bucket)
        self._at: float | None = None
        #: requests ignored as repeats within an RTT, and for the budget (cumulative)
        self.repeats = 0
        self.over_budget = 0

    def allow(
        self, seq: int, size: int, now_s: float, target_bps: float, rtt_s: float | None
    ) -> bool:
        """Whether to resend ``seq`` (of ``size`` bytes) now; spends the budget if so."""
        capacity = max(self.min_bucket, target_bps * self.share * self.burst_s / 8)
        if self._at is not None:
            refill = (now_s - self._at) * target_bps * self.share / 8
            self._tokens = min(capacity, self._tokens + refill)
        self._at = now_s
        last = self._last_sent.get(seq)
        if last is not None and now_s - last < _rtt(rtt_s):
            self.repeats += 1
            return False
        if self._tokens < size:
            self.over_budget += 1
            return False
        self._tokens -= size
        self._last_sent[seq] = now_s
        if len(self._last_sent) > 4096:
            # Forget the oldest half: sequence numbers that old are out of history anyway.
            for old in sorted(self._last_sent, key=self._last_sent.__getitem__)[:2048]:
                del self._last_sent[old]
        return True


class KeyframeThrottle:
    """Let one keyframe request through per ``interval_s`` (or per RTT, if longer)."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self._last: float | None = None
        #: requests let through and suppressed (cumulative)
        self.allowed = 0
        self.suppressed = 0

    def allow(self, now_s: float, rtt_s: float | None = None) -> bool:
        wait = max(self.interval_s, _rtt(rtt_s))
        if self._last is not None and now_s - self._last < wait:
            self.suppressed += 1
            return False
        self._last = now_s
        self.allowed += 1
        return True
