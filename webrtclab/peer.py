"""Lab peers: an aiortc peer that joins a room and negotiates with every member.

A :class:`Peer` holds one :class:`~webrtclab.session.PeerSession` (an
``RTCPeerConnection`` plus the seed's ``chat`` and ``cursors`` data channels) per
remote member, reconnects to signaling when it goes away, and re-establishes
sessions lost to outages.  As in
the seed, the newcomer offers to the members already in the room.  aiortc does
not trickle, so local candidates travel in the SDP; remote candidates trickled
by browsers are buffered until the remote description is set.

Media fans out through aiortc relays (``MediaRelay``): the local sources to every
session's sender, and each received track to the session's own consumer (which
counts frames and calls the frame listeners) and to any recorder, so that a
recorder never takes frames from the consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any

import numpy as np
from aiortc import (
    RTCIceCandidate,
    RTCIceServer,
)
from aiortc.contrib.media import MediaRelay
from pyee.asyncio import AsyncIOEventEmitter

from ._tasks import CloseOnce, cancel_and_wait
from .cc.control import CongestionControl, parse_congestion_control
from .compat.aiortc import enable_transport_cc
from .events import EventLog
from .exceptions import ConfigurationError, InvalidStateError, LabTimeoutError, SignalingError
from .loopback import LOOPBACK
from .media import SYNTHETIC_SOURCES, FramePacer, MediaSpec, open_media, synthetic_video
from .member import StatsRow
from .recording import Recorder
from .sdp import is_loopback
from .session import (
    CHAT_HIGH_WATER,
    CURSOR_HIGH_WATER,
    FrameListener,
    PeerSession,
)
from .signaling import messages as m
from .signaling.client import Backoff, SignalingClient
from .stats import SessionStats

__all__ = ["CHAT_HIGH_WATER", "CURSOR_HIGH_WATER", "Peer", "PeerSession"]

logger = logging.getLogger(__name__)

# Candidates kept per remote that trickled before its offer (bounds a hostile flood).
MAX_EARLY_CANDIDATES = 64
# Wait after a session is lost before re-establishing it (see Peer._on_failed).
LOST_SETTLE_S = 0.3


def _is_turn(server: RTCIceServer) -> bool:
    urls = [server.urls] if isinstance(server.urls, str) else server.urls
    return any(url.startswith(("turn:", "turns:")) for url in urls)


class Peer(AsyncIOEventEmitter):
    """An aiortc peer in a lab room.

    Events: ``connectionstatechange(remote, state)``, ``track(remote, track)``,
    ``message(remote, label, payload)``, ``peer-joined(remote)``, ``peer-left(remote)``.
    The ``track`` of that event is the relay's source: read received media through
    :meth:`PeerSession.subscribe` (or a frame listener), not from it.

    :param user_id: the id this peer joins with.
    :param media: what to send (synthetic video and a tone by default).
    :param host_addresses: addresses ICE gathers on; loopback by default, ``None``
        for the real interfaces.
    :param ice_servers: STUN/TURN servers; empty by default so nothing leaves the host.
    :param relay_only: gather relay (TURN) candidates only, so every path goes
        through the TURN server (``iceTransportPolicy: "relay"``).
    :param echo_chat: send every received chat message back to its sender (bots).
    :param reconnect: how to reconnect when the signaling socket closes (``None``: do
        not); sessions that are still connected are kept across the reconnection.
    :param reestablish: replace a session that goes ``failed`` (or is closed by the
        other side) with a new RTCPeerConnection and a new offer (aiortc has no ICE
        restart).  Of two peers that had a session, the one with the lower user id
        makes the new offer, so that both do not; a first contact follows the seed
        (the newcomer offers).
    :param congestion_control: ``"gcc"`` (the default: Google Congestion Control on
        transport-wide feedback, a pacer, bounded retransmissions), ``"remb"`` (aiortc
        as it ships), ``"none"`` (no adaptation), ``"fixed:<bps>"``, or a
        :class:`~webrtclab.cc.CongestionControl`.
    """

    def __init__(
        self,
        user_id: str,
        *,
        media: MediaSpec | None = None,
        host_addresses: tuple[str, ...] | None = LOOPBACK,
        ice_servers: Iterable[RTCIceServer] = (),
        relay_only: bool = False,
        echo_chat: bool = False,
        events: EventLog | None = None,
        close_timeout: float = 5.0,
        reconnect: Backoff | None = Backoff(),
        reestablish: bool = True,
        congestion_control: str | CongestionControl | None = None,
    ) -> None:
        super().__init__()
        if not user_id or len(user_id) > m.MAX_ID_LENGTH:
            raise ConfigurationError(
                f"user id must have 1-{m.MAX_ID_LENGTH} characters, got {user_id!r}"
            )
        self.user_id = user_id
        self.media = media or MediaSpec()
        self.host_addresses = host_addresses
        self.ice_servers = list(ice_servers)
        if relay_only and not any(_is_turn(server) for server in self.ice_servers):
            raise ConfigurationError(
                f'peer "{user_id}" cannot be relay-only without a TURN server in ice_servers'
            )
        self.relay_only = relay_only
        #: how this peer's connections adapt their send rate (see :mod:`webrtclab.cc`)
        self.congestion_control = parse_congestion_control(congestion_control)
        enable_transport_cc()
        self.echo_chat = echo_chat
        self.events = events or EventLog()
        self.close_timeout = close_timeout
        self.sessions: dict[str, PeerSession] = {}
        self.frame_listeners: list[FrameListener] = []
        self.relay = MediaRelay()
        self.audio, self.video, self._player = open_media(self.media, clock=self.events.clock.now)
        # "camera" or "screen" (see switch_video), else the spec's "none" or file path.
        self.video_source = SYNTHETIC_SOURCES.get(self.media.video, self.media.video)
        self.recorders: set[Recorder] = set()
        self.room_id: str | None = None
        self.signaling: SignalingClient | None = None
        self._reader: asyncio.Task[None] | None = None
        self._early_candidates: dict[str, list[m.IceCandidateInit | None]] = {}
        self._changed = asyncio.Event()  # set when a session is added, changes state or goes
        self._switching = asyncio.Lock()
        self._retiring: set[PeerSession] = set()
        self._closed = False
        self._closing = CloseOnce()
        # Reconnection and re-establishment.
        self.reconnect = reconnect
        self.reestablish = reestablish
        self.roster: set[str] = set()  # the room's other members, as signaling last told
        self.reconnects = 0
        self._join_args: tuple[str, str | None, float] | None = None  # url, token, timeout
        self._refresh_token: Callable[[], str | None] | None = None
        self._joined = False  # the signaling socket is open and in the room
        # Remotes we had a session with that is gone (failed, closed by them, or
        # retired on peer-left): a re-join of theirs or ours is not a first contact.
        self._lost: set[str] = set()
        self._attempts: dict[str, int] = {}  # re-offers since the last connected session
        self._offer_timers: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Serialises negotiation: the reader and scheduled re-offers both create sessions.
        self._negotiation = asyncio.Lock()
        self._rng = random.Random()
        self._stats = SessionStats()

    def __repr__(self) -> str:
        return f"Peer({self.user_id!r})"

    def accepts_candidate(self, candidate: RTCIceCandidate) -> bool:
        """Remote candidates a loopback peer may use: loopback ones only."""
        return self.accepts_address(candidate.ip)

    def accepts_address(self, host: str) -> bool:
        """Remote addresses a loopback peer may talk to: loopback ones only."""
        if self.host_addresses is None:
            return True
        return is_loopback(host) or host in self.host_addresses

    # --- room membership --------------------------------------------------------------

    async def join(
        self,
        url: str,
        room_id: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        refresh_token: Callable[[], str | None] | None = None,
    ) -> list[str]:
        """Join ``room_id`` through the signaling server at ``url`` and offer to its members.

        ``refresh_token`` gives the token for each reconnection (default: ``token``).
        """
        if self._closed:
            raise InvalidStateError(f"{self!r} is closed")
        if self.signaling is not None:
            raise InvalidStateError(f'{self!r} already joined room "{self.room_id}"')
        client = SignalingClient(url, token=token)
        self.signaling = client
        existing = await client.join(room_id, self.user_id, timeout=timeout)
        self.room_id = room_id
        self._join_args = (url, token, timeout)
        self._refresh_token = refresh_token
        self._joined = True
        self.roster = set(existing)
        self.events.add(self.user_id, "", "joined", room_id)
        self._reader = asyncio.create_task(self._read_signaling(client))
        async with self._negotiation:
            for remote in existing:
                await self._offer_to(remote)
        return existing

    async def _offer_to(self, remote: str) -> None:
        old = self.sessions.get(remote)
        if old is not None:
            await self._retire(old)
        session = self._new_session(remote, initiator=True)
        offer = await session.create_offer()
        await self._send(m.Offer(to=remote, sdp=m.SessionDescription(type="offer", sdp=offer.sdp)))

    def _new_session(self, remote: str, *, initiator: bool) -> PeerSession:
        session = PeerSession(self, remote, initiator=initiator)
        self.sessions[remote] = session
        self._changed.set()
        return session

    async def _send(self, message: m.Offer | m.Answer | m.IceCandidate) -> None:
        if self.signaling is not None:
            await self.signaling.send(message)

    async def _read_signaling(self, client: SignalingClient) -> None:
        while True:
            try:
                message = await client.recv()
            except SignalingError as exc:
                if self._closed:
                    return
                self._joined = False
                self.events.add(self.user_id, "", "signaling-closed", str(exc))
                logger.info("%r: %s", self, exc)
                await client.close()
                if self.reconnect is None:
                    return
                client = await self._reconnect(self.reconnect)
                continue
            try:
                async with self._negotiation:
                    await self._handle(message)
            except Exception as exc:
                # A bad SDP or candidate from one remote must not stop the others.
                logger.warning("%r: cannot handle %s: %s", self, type(message).__name__, exc)
                self.events.add(self.user_id, "", "signaling-error", str(exc))

    async def _handle(self, message: m.ServerMessage) -> None:
        if isinstance(message, m.RelayedOffer):
            if message.sdp is None:
                return
            old = self.sessions.get(message.from_)
            if old is not None and old.pc.signalingState == "have-local-offer":
                # Both offered (re-establishment can cross a re-join): the lower user
                # id keeps its offer, the other side answers it.
                if self.user_id < message.from_:
                    self.events.add(self.user_id, message.from_, "offer-collision", "kept ours")
                    return
                self.events.add(self.user_id, message.from_, "offer-collision", "took theirs")
            if old is not None:
                # A new offer from a known peer means it restarted: start over.
                await self._retire(old)
            self._lost.discard(message.from_)
            self._cancel_offer_timer(message.from_)
            session = self._new_session(message.from_, initiator=False)
            for candidate in self._early_candidates.pop(message.from_, []):
                await session.add_remote_candidate(candidate)
            answer = await session.accept_offer(message.sdp.sdp)
            await self._send(
                m.Answer(to=message.from_, sdp=m.SessionDescription(type="answer", sdp=answer.sdp))
            )
        elif isinstance(message, m.RelayedAnswer):
            known = self.sessions.get(message.from_)
            if known is None or message.sdp is None:
                return
            if known.pc.signalingState != "have-local-offer":
                # An answer to an offer we replaced (a collision, a re-offer): stale.
                self.events.add(self.user_id, message.from_, "stale-answer")
                return
            await known.accept_answer(message.sdp.sdp)
        elif isinstance(message, m.RelayedIceCandidate):
            known = self.sessions.get(message.from_)
            if known is not None:
                await known.add_remote_candidate(message.candidate)
            else:
                # Trickled ahead of the offer it belongs to: keep it for that session.
                early = self._early_candidates.setdefault(message.from_, [])
                if len(early) < MAX_EARLY_CANDIDATES:
                    early.append(message.candidate)
        elif isinstance(message, m.PeerJoined):
            remote = message.peerId
            self.events.add(self.user_id, remote, "peer-joined")
            self.roster.add(remote)
            kept = self.sessions.get(remote)
            if kept is not None and kept.usable:
                # Its signaling came back (a server restart); the media never left.
                self.events.add(self.user_id, remote, "session-kept", kept.state)
            elif self._known(remote) and self._offers_to(remote):
                self._schedule_offer(remote, self._retry_delay(remote))
            self.emit("peer-joined", remote)
        elif isinstance(message, m.PeerLeft):
            self.events.add(self.user_id, message.peerId, "peer-left")
            self.roster.discard(message.peerId)
            self._attempts.pop(message.peerId, None)
            self._cancel_offer_timer(message.peerId)
            self._early_candidates.pop(message.peerId, None)
            gone = self.sessions.pop(message.peerId, None)
            if gone is not None:
                if self.reestablish:
                    self._lost.add(message.peerId)
                await self._retire(gone)
            self._changed.set()
            self.emit("peer-left", message.peerId)
        elif isinstance(message, m.Error):
            self.events.add(
                self.user_id, "", "signaling-error", f"{message.code}: {message.message}"
            )
            logger.warning("%r: server error %s: %s", self, message.code, message.message)

    # --- reconnection and re-establishment ---------------------------------------------

    async def _reconnect(self, backoff: Backoff) -> SignalingClient:
        """Connect and re-join until it works (the reader's task; cancelled by close)."""
        assert self._join_args is not None and self.room_id is not None
        url, token, timeout = self._join_args
        attempt = 0
        while True:
            await asyncio.sleep(backoff.delay(attempt, self._rng))
            attempt += 1
            if self._refresh_token is not None:
                token = self._refresh_token()
            client = SignalingClient(url, token=token)
            try:
                existing = await client.join(self.room_id, self.user_id, timeout=timeout)
            except (SignalingError, LabTimeoutError) as exc:
                # Refused too (user-id-taken while the server still holds our old
                # socket, room-full): all may pass, so keep trying.
                await client.close()
                self.events.add(self.user_id, "", "signaling-reconnect-failed", str(exc))
                continue
            except BaseException:
                await client.close()
                raise
            self.signaling = client
            self.reconnects += 1
            self._joined = True
            self.events.add(self.user_id, "", "signaling-reconnected", f"attempt {attempt}")
            logger.info("%r: signaling reconnected after %d attempt(s)", self, attempt)
            async with self._negotiation:
                await self._rejoined(existing)
            return client

    async def _rejoined(self, existing: list[str]) -> None:
        """Reconcile sessions with the roster after a re-join; connected ones are kept."""
        self.roster = set(existing)
        for remote in existing:
            session = self.sessions.get(remote)
            if session is not None and session.usable:
                self.events.add(self.user_id, remote, "session-kept", session.state)
            elif self._known(remote) and not self._offers_to(remote):
                self.events.add(self.user_id, remote, "reestablish", "waiting for an offer")
            else:
                # A first contact (the seed's newcomer offers), or ours to re-offer.
                self._lost.discard(remote)
                self._cancel_offer_timer(remote)
                self.events.add(self.user_id, remote, "reestablish", "offer after re-join")
                await self._offer_to(remote)

    def _session_state(self, session: PeerSession, state: str) -> None:
        if state == "connected":
            self._attempts.pop(session.remote, None)
            return
        # aiortc reports an expired consent as "closed" as often as "failed" (the DTLS
        # transport sees the ICE connection end first); a remote that closed its side
        # also makes ours "closed".  Either way the session is dead unless we closed it.
        lost = state == "failed" or (state == "closed" and not session._closed)
        if (
            lost
            and self.reestablish
            and not self._closed
            and self.sessions.get(session.remote) is session
        ):
            self.events.add(self.user_id, session.remote, "connection-lost", state)
            self._spawn(self._on_failed(session))

    async def _on_failed(self, session: PeerSession) -> None:
        remote = session.remote
        # A remote that is leaving closes its connections right after its "leave":
        # give the peer-left a moment to arrive, so that we do not offer to it.
        await asyncio.sleep(LOST_SETTLE_S)
        async with self._negotiation:
            if self.sessions.get(remote) is not session:
                return  # replaced meanwhile
            del self.sessions[remote]
            self._changed.set()
            await self._retire(session)
            self._lost.add(remote)
            # The lower user id offers again, so that both do not.  Unlike "the side
            # that offered first", both sides know this even when one has forgotten
            # the session (it retired it on a peer-left, or its process restarted).
            ours = self._offers_to(remote)
            if ours:
                self._schedule_offer(remote, self._retry_delay(remote))
            self.events.add(
                self.user_id,
                remote,
                "reestablish",
                "will offer" if ours else "waiting for an offer",
            )

    def _offers_to(self, remote: str) -> bool:
        """Whether a re-established session with ``remote`` is ours to offer."""
        return self.user_id < remote

    def _known(self, remote: str) -> bool:
        """Whether we had a session with ``remote`` (so its join is not a first contact)."""
        session = self.sessions.get(remote)
        return remote in self._lost or (session is not None and not session.usable)

    def _retry_delay(self, remote: str) -> float:
        attempt = self._attempts.get(remote, 0)
        if attempt == 0 or self.reconnect is None:
            return 0.0
        return self.reconnect.delay(attempt - 1, self._rng)

    def _schedule_offer(self, remote: str, delay: float) -> None:
        self._cancel_offer_timer(remote)
        task = asyncio.ensure_future(self._offer_later(remote, delay))
        self._offer_timers[remote] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _cancel_offer_timer(self, remote: str) -> None:
        task = self._offer_timers.pop(remote, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _offer_later(self, remote: str, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self._negotiation:
            if self._offer_timers.get(remote) is asyncio.current_task():
                del self._offer_timers[remote]
            if (
                self._closed
                or not self._joined
                or remote not in self.roster
                or not self._known(remote)
            ):
                return  # a re-join or peer-joined will try again
            attempt = self._attempts[remote] = self._attempts.get(remote, 0) + 1
            self.events.add(self.user_id, remote, "reestablish", f"offer (attempt {attempt})")
            self._lost.discard(remote)
            try:
                await self._offer_to(remote)
            except SignalingError as exc:
                # The socket went away meanwhile: the re-join offers.
                self._lost.add(remote)
                logger.info("%r: re-offer to %r failed: %s", self, remote, exc)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _retire(self, session: PeerSession) -> None:
        # Tracked until closed: close() awaits it if it cancels us half-way.
        self._retiring.add(session)
        await session.close(self.close_timeout)
        self._retiring.discard(session)

    # --- use --------------------------------------------------------------------------------

    async def wait_connected(self, count: int = 1, timeout: float = 15.0) -> list[PeerSession]:
        """Wait until at least ``count`` sessions are connected."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    self._changed.clear()
                    ready = [s for s in self.sessions.values() if s.connected.is_set()]
                    if len(ready) >= count:
                        return ready
                    await self._changed.wait()
        except TimeoutError:
            states = {r: s.state for r, s in self.sessions.items()}
            raise LabTimeoutError(
                f"{self!r}: {count} connected session(s) not reached in {timeout} s; "
                f"states: {states}"
            ) from None

    async def send_chat(self, text: str, to: str | None = None) -> int:
        """Send chat text to one remote or to all; returns how many sessions got it."""
        sent = 0
        for session in self._targets(to):
            if session.chat is not None and session.chat.readyState == "open":
                await session.send_chat(text)
                sent += 1
        return sent

    async def send_cursor(self, x: float, y: float, to: str | None = None) -> int:
        """Send a cursor position to one remote or to all; returns how many took it.

        Never waits (the channel drops what it cannot take); async like every
        member's, so a browser peer and an aiortc peer are driven the same way.
        """
        return sum(session.send_cursor(x, y) for session in self._targets(to))

    async def collect_stats(self) -> list[tuple[PeerSession, Any]]:
        """Every session's getStats report, now (see :class:`~webrtclab.stats.StatsSampler`)."""
        return await self._stats.collect(list(self.sessions.values()))

    def stats_rows(self, raw: list[tuple[PeerSession, Any]], now: float) -> list[StatsRow]:
        """Rows with :data:`~webrtclab.stats.STATS_COLUMNS` from :meth:`collect_stats`."""
        return self._stats.rows(raw, now)

    # --- video source switching and reference frames -------------------------------------

    async def switch_video(self, source: str, *, timeout: float = 5.0) -> None:
        """Send ``source`` (``"camera"`` or ``"screen"``) instead of the current video.

        Every session's video sender gets the new source with ``replaceTrack``
        (no renegotiation) and the switch is logged as a ``source-switch`` event.
        The new source shares the old one's :class:`~webrtclab.media.FramePacer`,
        so frame numbers (and stamps and RTP timestamps) continue monotonically
        across the switch.  Switching to the current source does nothing.
        """
        old = self.video
        pacer = getattr(old, "pacer", None)
        if old is None or not isinstance(pacer, FramePacer):
            raise ConfigurationError(
                f'{self!r} cannot switch video to "{source}": it sends {self.media.video!r}, '
                "not a synthetic source"
            )
        name = SYNTHETIC_SOURCES.get(source)
        if name is None or source == "synthetic":
            raise ConfigurationError(f'video source must be "camera" or "screen", got {source!r}')
        async with self._switching:
            if name == self.video_source:
                return
            old = self.video
            assert old is not None
            new = synthetic_video(name, self.media, clock=self.events.clock.now, pacer=pacer)
            self.video, self.video_source = new, name
            replaced = [t for s in list(self.sessions.values()) for t in s._replace_video(new)]
            self.events.add(self.user_id, "", "source-switch", name)
            # A sender waiting in the old track's recv() gets one more old frame, then
            # moves on; only then may the old source end, or that wait would end the
            # sender's RTP loop (an ended relay hands it None).
            waits = [asyncio.ensure_future(t.idle.wait()) for t in replaced]
            try:
                if waits:
                    _, pending = await asyncio.wait(waits, timeout=timeout)
                    if pending:
                        logger.warning(
                            "%r: %d sender(s) still on the old video after %.1f s",
                            self,
                            len(pending),
                            timeout,
                        )
            finally:
                await cancel_and_wait(*waits)
                # Even when cancelled: a live old source would keep taking frame
                # numbers from the pacer the new one shares.
                old.stop()
                for track in replaced:
                    track.stop()

    def sent_frame_index(self, number: int) -> int | None:
        """Index of the latest video frame sent with number ``number`` (mod 65536).

        None when the video is not synthetic (a file) or no such frame was sent.
        """
        pacer = getattr(self.video, "pacer", None)
        return pacer.resolve(number) if isinstance(pacer, FramePacer) else None

    def reference_frame(self, index: int, *, luma: bool = False) -> np.ndarray | None:
        """The picture of sent video frame ``index`` (without its stamp), re-rendered.

        RGB, or with ``luma`` its luma plane as the encoder sees it.  Across source
        switches, rendered by the source that sent that frame; None when the video
        is not synthetic or that frame was not sent.
        """
        pacer = getattr(self.video, "pacer", None)
        if not isinstance(pacer, FramePacer):
            return None
        source = pacer.source_of(index)
        render = getattr(source, "render_luma" if luma else "render", None)
        return render(index) if render is not None else None

    # --- recording -------------------------------------------------------------------------

    async def record(
        self,
        remote: str | None,
        path: str | os.PathLike[str],
        *,
        kinds: Sequence[str] = ("audio", "video"),
        timeout: float = 5.0,
        **options: Any,
    ) -> Recorder:
        """Record what this peer receives from ``remote`` (or from every remote) to a file.

        Returns a started :class:`~webrtclab.recording.Recorder`; stop it with
        ``await recorder.stop()``; closing the peer stops it too.  ``options`` go
        to the recorder (``video_codec``, ``audio_codec``, ``video_options``).
        """
        if self._closed:
            raise InvalidStateError(f"{self!r} is closed")
        tracks = [
            (f"{session.remote}/{kind}", session.subscribe(kind))
            for session in self._targets(remote)
            for kind in kinds
            if kind in session.received
        ]
        if not tracks:
            raise ConfigurationError(
                f"{self!r} has received no {' or '.join(kinds)} from "
                f"{'any remote' if remote is None else repr(remote)} to record"
            )
        try:
            recorder = Recorder(
                path, tracks, clock=self.events.clock.now, on_stop=self.recorders.discard, **options
            )
        except BaseException:
            for _, track in tracks:
                track.stop()
            raise
        self.recorders.add(recorder)
        try:
            await recorder.start(timeout)
        except BaseException:
            await recorder.stop()
            raise
        return recorder

    def _targets(self, to: str | None) -> list[PeerSession]:
        if to is None:
            return list(self.sessions.values())
        if to not in self.sessions:
            raise ConfigurationError(f'{self!r} has no session with "{to}"')
        return [self.sessions[to]]

    # --- teardown ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Leave the room and close every session; safe to call twice, bounded in time.

        A second caller waits for the first close to end.
        """
        await self._closing.run(self._close)

    async def _close(self) -> None:
        self._closed = True
        # Recordings first, each in its own task: the files are finalised even when
        # the task closing the peer was cancelled and later steps re-raise that.
        results = await asyncio.gather(
            *(r.stop() for r in list(self.recorders)), return_exceptions=True
        )
        for error in results:
            if isinstance(error, BaseException):
                logger.warning("%r: error while stopping a recorder: %r", self, error)
        # The reader first: it may be reconnecting, which would replace self.signaling.
        await cancel_and_wait(self._reader)
        await cancel_and_wait(*self._tasks)
        self._offer_timers.clear()
        if self.signaling is not None:
            with contextlib.suppress(SignalingError, ConnectionError):
                if self.room_id is not None and not self.signaling.closed:
                    await self.signaling.send(m.Leave(roomId=self.room_id))
            await self.signaling.close()
        self._joined = False
        sessions = [*self.sessions.values(), *self._retiring]
        self.sessions, self._retiring = {}, set()
        await asyncio.gather(*(s.close(self.close_timeout) for s in sessions))
        for track in (self.audio, self.video):
            if track is not None:
                track.stop()
        self.events.add(self.user_id, "", "closed")

    async def __aenter__(self) -> Peer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
