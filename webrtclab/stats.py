"""Sampling getStats (and what aiortc does not measure) into a tidy pandas table.

One row per (time, peer, remote, direction, kind).  Columns (units in names):

==================  =====================================================================
``time_s``          seconds since the lab clock started (same base as events and links)
``peer``            the local peer's user id
``remote``          the remote member's user id
``direction``       ``"send"`` or ``"recv"``
``kind``            ``"audio"`` or ``"video"``
``bitrate_kbps``    payload bitrate over the last interval.  send: outbound-rtp
                    ``bytesSent`` delta; recv: RTP payload bytes counted as the receiver
                    gets them (aiortc has no per-stream ``bytesReceived``), retransmissions
                    included
``rtt_ms``          send rows: remote-inbound-rtp ``roundTripTime`` (from RTCP receiver
                    reports, refreshed every 0.5-1.5 s); recv rows: NaN (aiortc computes
                    no receive-side RTT)
``loss_fraction``   0-1.  send: remote-inbound-rtp ``fractionLost`` / 256 (the last RTCP
                    report's value); recv: lost / (lost + received) packets over the
                    interval, from inbound-rtp counters (NaN when no packet was expected)
``jitter_ms``       interarrival jitter converted from RTP clock ticks with the codec's
                    clock rate (90 kHz video, 48 kHz Opus).  send: as the remote reports it
``frames_per_s``    send: frames the source handed to the encoder; recv: frames decoded
                    and delivered to the application, counted at the receiver
``candidate_type``  local candidate type of the selected pair (host/srflx/prflx/relay;
                    missing before one is selected)
``packets``         cumulative packets (sent, or received)
``packets_lost``    cumulative packets lost (send: as the remote reports; recv: inbound-rtp)
``bytes``           cumulative payload bytes (sent, or received)
``frames``          cumulative frames (encoded, or decoded)
``target_kbps``     send: the rate controller's target for the stream (its encoder's
                    target under ``"remb"``); recv: NaN
``rtx_kbps``        send: retransmitted RTP payload (RTX packets); recv: NaN
``wire_kbps``       send: everything the stream put on the network (SRTP packets: media,
                    retransmissions, padding, RTP headers and extensions, auth tag; not
                    the UDP/IP headers); recv: NaN
``estimate_kbps``   recv: the receiver's own bandwidth estimate where it computes one
                    (REMB under ``"remb"``); NaN otherwise
==================  =====================================================================
"""

from __future__ import annotations

import asyncio
import logging
import math
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._tasks import cancel_and_wait
from .compat.aiortc import media_stream_stats, negotiated_codecs, sent_counts
from .events import LabClock
from .exceptions import ConfigurationError
from .member import Member
from .tables import LINKS, RTT, STATS, Feed, LinkRow, RttRow, StatsRow

if TYPE_CHECKING:
    from .netem.relay import Network
    from .session import PeerSession

__all__ = [
    "RTT_COLUMNS",
    "STATS_COLUMNS",
    "RttJournal",
    "StatsSampler",
    "session_rows",
]

logger = logging.getLogger(__name__)

STATS_COLUMNS = STATS.columns
# lab.rtt() and the results' "rtt" table: one row per RTCP report, unsmoothed.
RTT_COLUMNS = RTT.columns
DEFAULT_CLOCK_RATES = {"audio": 48000, "video": 90000}
NAN = math.nan


@dataclass
class _Previous:
    time_s: float
    bytes: int = 0
    packets: int = 0
    lost: int = 0
    frames: int = 0
    rtx_bytes: int = 0
    wire_bytes: int = 0


def _clock_rates(session: PeerSession) -> dict[str, int]:
    rates = dict(DEFAULT_CLOCK_RATES)
    for kind, codecs in negotiated_codecs(session.pc).items():
        if codecs:
            rates[kind] = codecs[0].clockRate
    return rates


def _media_streams(session: PeerSession) -> dict[str, list[Any]]:
    """Receive statistics of the media SSRCs (not RTX), by kind.

    The report's inbound-rtp counters are those of whichever SSRC came last (see
    :func:`~webrtclab.compat.aiortc.media_stream_stats`); empty where unavailable.
    """
    found: dict[str, list[Any]] = {}
    for transceiver in session.pc.getTransceivers():
        media = media_stream_stats(getattr(transceiver, "receiver", None))
        if media:
            found.setdefault(transceiver.kind, []).extend(media)
    return found


def session_rows(
    session: PeerSession,
    report: Any,
    now: float,
    previous: dict[tuple[str, str], _Previous],
) -> list[StatsRow]:
    """Turn one getStats report of ``session`` into rows; ``previous`` keeps the deltas."""
    rates = _clock_rates(session)
    sums: dict[tuple[str, str], dict[str, float]] = {}
    media_streams = _media_streams(session)
    for kind, streams in media_streams.items():
        acc = sums.setdefault(("recv", kind), {"packets": 0, "lost": 0, "jitter": 0})
        for stream in streams:
            acc["packets"] += stream.packets_received
            acc["lost"] += stream.packets_lost
            acc["jitter"] = max(acc["jitter"], stream.jitter)
    remote_in: dict[str, Any] = {}
    for stat in report.values():
        kind = str(getattr(stat, "kind", ""))
        if stat.type == "outbound-rtp":
            acc = sums.setdefault(("send", kind), {"bytes": 0, "packets": 0})
            acc["bytes"] += stat.bytesSent
            acc["packets"] += stat.packetsSent
        elif stat.type == "inbound-rtp" and kind not in media_streams:
            acc = sums.setdefault(("recv", kind), {"packets": 0, "lost": 0, "jitter": 0})
            acc["packets"] += stat.packetsReceived
            acc["lost"] += stat.packetsLost
            acc["jitter"] = max(acc["jitter"], stat.jitter)
        elif stat.type == "remote-inbound-rtp":
            remote_in[kind] = stat
    # The payload counters again, read now like the wire counters below: per interval,
    # wire bytes then never fall below payload bytes through getStats' timing.
    current: dict[str, tuple[int, int]] = {}
    for sender in session.pc.getSenders():
        octets, count = sent_counts(sender)
        before = current.get(sender.kind, (0, 0))
        current[sender.kind] = (before[0] + octets, before[1] + count)
    for kind, (octets, count) in current.items():
        if ("send", kind) in sums:
            sums[("send", kind)].update(bytes=octets, packets=count)
    path = session.selected_path()
    candidate_type = path[0] if path is not None else None  # <NA>: no pair selected yet
    rows: list[StatsRow] = []
    for (direction, kind), acc in sorted(sums.items()):
        counter = session.counters[(direction, kind)]
        prev = previous.get((direction, kind)) or _Previous(time_s=session.created_s)
        dt = max(now - prev.time_s, 1e-6)
        frames = counter.frames
        rtx_bytes = wire_bytes = 0
        target = rtx_kbps = wire_kbps = estimate = NAN
        if direction == "send":
            sent = session.rate.counters[kind]
            rtx_bytes, wire_bytes = sent.rtx_bytes, sent.wire_bytes
            rtx_kbps = (rtx_bytes - prev.rtx_bytes) * 8 / dt / 1000
            wire_kbps = (wire_bytes - prev.wire_bytes) * 8 / dt / 1000
            target_bps = session.send_target_bps(kind)
            target = target_bps / 1000 if target_bps is not None else NAN
            nbytes, packets = int(acc["bytes"]), int(acc["packets"])
            remote = remote_in.get(kind)
            if remote is not None:
                rtt = remote.roundTripTime * 1000 if remote.roundTripTime is not None else NAN
                loss = remote.fractionLost / 256
                jitter = remote.jitter / rates[kind] * 1000
                lost = int(remote.packetsLost)
            else:
                rtt = loss = jitter = NAN
                lost = 0
        else:
            nbytes, packets, lost = counter.bytes, int(acc["packets"]), int(acc["lost"])
            if counter.estimate_bps is not None:
                estimate = counter.estimate_bps / 1000
            rtt = NAN
            expected = (packets - prev.packets) + (lost - prev.lost)
            loss = max(0.0, (lost - prev.lost) / expected) if expected > 0 else NAN
            jitter = acc["jitter"] / rates[kind] * 1000
        rows.append(
            StatsRow(
                now,
                session.peer.user_id,
                session.remote,
                direction,
                kind,
                (nbytes - prev.bytes) * 8 / dt / 1000,
                rtt,
                loss,
                jitter,
                (frames - prev.frames) / dt,
                candidate_type,
                packets,
                lost,
                nbytes,
                frames,
                target,
                rtx_kbps,
                wire_kbps,
                estimate,
            )
        )
        previous[(direction, kind)] = _Previous(
            now, nbytes, packets, lost, frames, rtx_bytes, wire_bytes
        )
    return rows


class RttJournal:
    """Hands out the RTT samples of the peers' sessions, each once (for the ``rtt`` feed)."""

    def __init__(self) -> None:
        self._taken: weakref.WeakKeyDictionary[PeerSession, int] = weakref.WeakKeyDictionary()

    def take(self, members: Iterable[Any]) -> list[RttRow]:
        """Rows of the samples not taken before, from the members that have sessions."""
        rows: list[RttRow] = []
        for member in list(members):
            sessions: dict[str, PeerSession] = getattr(member, "sessions", {})
            for remote, session in list(sessions.items()):
                start = self._taken.get(session, 0)
                fresh = session.rtt_samples[start:]
                self._taken[session] = start + len(fresh)
                rows.extend(RttRow(t, member.user_id, remote, k, rtt) for t, k, rtt in fresh)
        return rows


class SessionStats:
    """getStats of a set of aiortc sessions and their rows: an aiortc peer's stats source.

    Keeps the previous counters of each session (weakly: a closed session's go with it)
    for the rates.
    """

    def __init__(self) -> None:
        self._previous: weakref.WeakKeyDictionary[PeerSession, dict[tuple[str, str], _Previous]] = (
            weakref.WeakKeyDictionary()
        )

    async def collect(self, sessions: Iterable[PeerSession]) -> list[tuple[PeerSession, Any]]:
        """Every session's getStats report (sessions whose getStats fails are left out)."""
        sessions = list(sessions)
        reports = await asyncio.gather(*(s.pc.getStats() for s in sessions), return_exceptions=True)
        collected = []
        for session, report in zip(sessions, reports, strict=True):
            if isinstance(report, BaseException):
                logger.debug("getStats failed for %r: %s", session, report)
            else:
                collected.append((session, report))
        return collected

    def rows(self, collected: Iterable[tuple[PeerSession, Any]], now: float) -> list[StatsRow]:
        """Stats rows of what :meth:`collect` returned, sampled at ``now``."""
        rows: list[StatsRow] = []
        for session, report in collected:
            previous = self._previous.setdefault(session, {})
            rows.extend(session_rows(session, report, now, previous))
        return rows


class StatsSampler:
    """Samples every member (aiortc and browser peers alike) every ``interval`` seconds.

    Each sample extends three feeds (see :mod:`webrtclab.tables`), all on one clock:
    :attr:`stats` (every member's rows, sharing the sample's time), :attr:`rtt` (the
    RTCP reports' round-trip times since the last sample) and, with a ``network``,
    :attr:`links` (its counters and conditions, so plots show cause and effect), with
    the rows of each of ``link_sources`` (called with the sample's time: the lab's NAT
    boxes' access links) in the same table.

    :param members: the members, or a callable returning them (members come and go).
    """

    def __init__(
        self,
        members: Iterable[Member] | Callable[[], Iterable[Member]],
        *,
        interval: float = 0.5,
        clock: LabClock | None = None,
        network: Network | None = None,
        link_sources: Iterable[Callable[[float], Iterable[LinkRow]]] = (),
    ) -> None:
        if not 0.01 <= interval <= 3600:
            raise ConfigurationError(f"stats interval must be in [0.01, 3600] s, got {interval}")
        self._members = members if callable(members) else (lambda m=list(members): m)
        self.interval = interval
        self.clock = clock or LabClock()
        self.network = network
        #: more producers of links rows (the lab's NAT boxes' access links), one table
        self.link_sources = list(link_sources)
        self.stats: Feed[StatsRow] = Feed(STATS)
        self.rtt: Feed[RttRow] = Feed(RTT)
        self.links: Feed[LinkRow] = Feed(LINKS)
        self._rtt = RttJournal()
        self._task: asyncio.Task[None] | None = None

    async def sample(self) -> list[StatsRow]:
        """Take one sample of every member now and return its stats rows."""
        members = list(self._members())
        raws = await asyncio.gather(
            *(member.collect_stats() for member in members), return_exceptions=True
        )
        now = self.clock.now()
        rows: list[StatsRow] = []
        for member, raw in zip(members, raws, strict=True):
            if isinstance(raw, BaseException):
                logger.debug("stats of %r failed: %s", member, raw)
                continue
            rows.extend(StatsRow(*row) for row in member.stats_rows(raw, now))
        self.stats.extend(rows)
        self.rtt.extend(self._rtt.take(members))
        links: list[LinkRow] = []
        if self.network is not None:
            links.extend(self.network.link_rows(now))
        for source in self.link_sources:
            links.extend(source(now))
        self.links.extend(links)
        return rows

    def take_rtt(self) -> None:
        """Move the RTT samples reported since the last sample into :attr:`rtt` now."""
        self.rtt.extend(self._rtt.take(self._members()))

    def start(self) -> None:
        """Start sampling in the background (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self.interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += self.interval
            try:
                await self.sample()
            except Exception:
                # One failed sample (or consumer) must not end the time series.
                logger.exception("stats sample failed")

    async def close(self) -> None:
        """Stop sampling; safe to call twice."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
