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
from .loopback import LOOPBACK, REAL_INTERFACES
from .media import SYNTHETIC_SOURCES, FramePacer, MediaSpec, open_media, synthetic_video
from .negotiation import (
    Action,
    AddCandidate,
    Answer,
    ApplyAnswer,
    CancelOffer,
    Log,
    Negotiator,
    Offer,
    Retire,
    ScheduleOffer,
    SettleLoss,
)
from .netem.natbox import NatBox
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
from .tables import StatsRow

__all__ = ["CHAT_HIGH_WATER", "CURSOR_HIGH_WATER", "Peer", "PeerSession"]

logger = logging.getLogger(__name__)

# Wait after a session is lost before re-establishing it (see webrtclab.negotiation).
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
        for the real interfaces; an entry
        :data:`~webrtclab.loopback.REAL_INTERFACES` adds the real interfaces to the
        others (:data:`~webrtclab.loopback.LOOPBACK_AND_REAL`).  A peer that gathers
        on the real interfaces accepts remote candidates from any address.
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
    :param nat: a :class:`~webrtclab.netem.natbox.NatBox` this peer sits behind:
        ``host_addresses`` must then be private addresses of the box's network, its
        ICE sockets send through the box and hear only what it lets in (see
        :mod:`webrtclab.netem.natbox`).  :class:`~webrtclab.lab.Lab` sets this up
        from ``nat="symmetric"`` and the like.
    :param ice_check_retransmissions: how many times each STUN request of this peer's
        ICE (connectivity checks included) is retransmitted before it fails; ``None``
        keeps aioice's 6 (a check fails after 63.5 s), 2 fails it after 3.5 s.
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
        nat: NatBox | None = None,
        ice_check_retransmissions: int | None = None,
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
        self.nat = self._check_nat(nat, host_addresses)
        if ice_check_retransmissions is not None and (
            isinstance(ice_check_retransmissions, bool)
            or not isinstance(ice_check_retransmissions, int)
            or not 0 <= ice_check_retransmissions <= 10
        ):
            raise ConfigurationError(
                "ice_check_retransmissions must be an integer in 0-10 (or None), "
                f"got {ice_check_retransmissions!r}"
            )
        self.ice_check_retransmissions = ice_check_retransmissions
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
        self._changed = asyncio.Event()  # set when a session is added, changes state or goes
        self._switching = asyncio.Lock()
        self._retiring: set[PeerSession] = set()
        self._closed = False
        self._closing = CloseOnce()
        # Reconnection and re-establishment.
        self.reconnect = reconnect
        self.reestablish = reestablish
        self.reconnects = 0
        self._join_args: tuple[str, str | None, float] | None = None  # url, token, timeout
        self._refresh_token: Callable[[], str | None] | None = None
        self._rng = random.Random()
        #: who offers to whom: the pure state machine this peer carries out
        self.negotiation = Negotiator(
            user_id, reestablish=reestablish, retry_delay=self._retry_delay
        )
        self._offer_timers: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Serialises negotiation: the reader and scheduled re-offers both create sessions.
        self._negotiation = asyncio.Lock()
        self._stats = SessionStats()

    def __repr__(self) -> str:
        return f"Peer({self.user_id!r})"

    def _check_nat(self, nat: object, host_addresses: tuple[str, ...] | None) -> NatBox | None:
        if nat is None:
            return None
        if not isinstance(nat, NatBox):
            raise ConfigurationError(
                f'peer "{self.user_id}": nat must be a NatBox (a Lab takes preset names), '
                f"got {nat!r}"
            )
        if (
            not host_addresses
            or REAL_INTERFACES in host_addresses
            or not all(nat.reaches_directly((a, 0)) for a in host_addresses)
        ):
            raise ConfigurationError(
                f'peer "{self.user_id}" is behind {nat!r}: it must gather on private '
                f"addresses of {nat.private_network}, got host_addresses={host_addresses!r}"
            )
        return nat

    @property
    def roster(self) -> set[str]:
        """The room's other members, as signaling last told."""
        return self.negotiation.roster

    def accepts_candidate(self, candidate: RTCIceCandidate) -> bool:
        """Remote candidates a loopback peer may use: loopback ones only."""
        return self.accepts_address(candidate.ip)

    def accepts_address(self, host: str) -> bool:
        """Remote addresses this peer may talk to: loopback ones and its own ones only,
        unless it gathers on the real interfaces (then any)."""
        if self.host_addresses is None or REAL_INTERFACES in self.host_addresses:
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
        self.events.add(self.user_id, "", "joined", room_id)
        self._reader = asyncio.create_task(self._read_signaling(client))
        async with self._negotiation:
            await self._apply(self.negotiation.join(existing))
        return existing

    def _new_session(self, remote: str, generation: int, *, initiator: bool) -> PeerSession:
        session = PeerSession(self, remote, initiator=initiator, generation=generation)
        self.sessions[remote] = session
        self._changed.set()
        return session

    async def _send(self, message: m.Offer | m.Answer | m.IceCandidate) -> None:
        if self.signaling is not None:
            await self.signaling.send(message)

    async def _apply(self, actions: list[Action]) -> None:
        """Carry out what the negotiator decided (under ``self._negotiation``)."""
        for action in actions:
            remote = action.remote
            if isinstance(action, Log):
                self.events.add(self.user_id, remote, action.event, action.detail)
            elif isinstance(action, Retire):
                session = self.sessions.pop(remote, None)
                if session is not None:
                    self._changed.set()
                    await self._retire(session)
            elif isinstance(action, Offer):
                session = self._new_session(remote, action.generation, initiator=True)
                offer = await session.create_offer()
                description = m.SessionDescription(type="offer", sdp=offer.sdp)
                try:
                    await self._send(m.Offer(to=remote, sdp=description))
                except SignalingError as exc:
                    # The socket went away meanwhile: the re-join offers.
                    logger.info("%r: offer to %r failed: %s", self, remote, exc)
                    await self._apply(self.negotiation.offer_failed(remote))
            elif isinstance(action, Answer):
                session = self._new_session(remote, action.generation, initiator=False)
                for candidate in action.candidates:
                    await session.add_remote_candidate(candidate)
                answer = await session.accept_offer(action.sdp)
                description = m.SessionDescription(type="answer", sdp=answer.sdp)
                await self._send(m.Answer(to=remote, sdp=description))
            elif isinstance(action, ApplyAnswer | AddCandidate):
                session = self.sessions.get(remote)
                if session is None:
                    continue
                if isinstance(action, ApplyAnswer):
                    await session.accept_answer(action.sdp)
                else:
                    await session.add_remote_candidate(action.candidate)
            elif isinstance(action, ScheduleOffer):
                self._cancel_offer_timer(remote)
                task = asyncio.ensure_future(self._offer_later(remote, action.delay_s))
                self._offer_timers[remote] = task
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif isinstance(action, CancelOffer):
                self._cancel_offer_timer(remote)
            elif isinstance(action, SettleLoss):
                self._spawn(self._settle_loss(remote, action.generation))

    async def _read_signaling(self, client: SignalingClient) -> None:
        while True:
            try:
                message = await client.recv()
            except SignalingError as exc:
                if self._closed:
                    return
                self.negotiation.signaling_closed()
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
        negotiation = self.negotiation
        if isinstance(message, m.RelayedOffer):
            if message.sdp is not None:
                await self._apply(negotiation.offer_received(message.from_, message.sdp.sdp))
        elif isinstance(message, m.RelayedAnswer):
            if message.sdp is not None:
                await self._apply(negotiation.answer_received(message.from_, message.sdp.sdp))
        elif isinstance(message, m.RelayedIceCandidate):
            await self._apply(negotiation.candidate_received(message.from_, message.candidate))
        elif isinstance(message, m.PeerJoined):
            await self._apply(negotiation.peer_joined(message.peerId))
            self.emit("peer-joined", message.peerId)
        elif isinstance(message, m.PeerLeft):
            await self._apply(negotiation.peer_left(message.peerId))
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
            self.events.add(self.user_id, "", "signaling-reconnected", f"attempt {attempt}")
            logger.info("%r: signaling reconnected after %d attempt(s)", self, attempt)
            async with self._negotiation:
                # Connected sessions are kept; the others are re-offered or awaited.
                await self._apply(self.negotiation.rejoin(existing))
            return client

    def session_state_changed(self, session: PeerSession, state: str) -> None:
        """Called by a session when its connection state changes."""
        self._changed.set()
        actions = self.negotiation.session_state(
            session.remote,
            session.generation,
            state,
            closed_by_us=session.closing or self._closed,
        )
        if actions:
            self._spawn(self._locked(actions))
        self.emit("connectionstatechange", session.remote, state)

    async def _locked(self, actions: list[Action]) -> None:
        async with self._negotiation:
            await self._apply(actions)

    async def _settle_loss(self, remote: str, generation: int) -> None:
        await asyncio.sleep(LOST_SETTLE_S)
        async with self._negotiation:
            if not self._closed:
                await self._apply(self.negotiation.loss_settled(remote, generation))

    def _retry_delay(self, attempt: int) -> float:
        """Back-off before re-offer number ``attempt`` (1, 2, ...)."""
        return 0.0 if self.reconnect is None else self.reconnect.delay(attempt - 1, self._rng)

    def _cancel_offer_timer(self, remote: str) -> None:
        task = self._offer_timers.pop(remote, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _offer_later(self, remote: str, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self._negotiation:
            if self._offer_timers.get(remote) is asyncio.current_task():
                del self._offer_timers[remote]
            if not self._closed:
                await self._apply(self.negotiation.offer_due(remote))

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
            replaced = [t for s in list(self.sessions.values()) for t in s.replace_video(new)]
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
        self.negotiation.signaling_closed()
        if self.signaling is not None:
            with contextlib.suppress(SignalingError, ConnectionError):
                if self.room_id is not None and not self.signaling.closed:
                    await self.signaling.send(m.Leave(roomId=self.room_id))
            await self.signaling.close()
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
