"""Lab peers: an aiortc peer that joins a room and negotiates with every member.

A :class:`Peer` holds one :class:`PeerSession` (an ``RTCPeerConnection`` plus
the seed's ``chat`` and ``cursors`` data channels) per remote member.  As in
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
import json
import logging
import os
import random
import weakref
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceCandidate,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from pyee.asyncio import AsyncIOEventEmitter

from ._tasks import cancel_and_wait
from .events import EventLog
from .exceptions import ConfigurationError, LabTimeoutError, SignalingError
from .loopback import LOOPBACK, gather_on
from .media import SYNTHETIC_SOURCES, FramePacer, MediaSpec, open_media, synthetic_video
from .recording import Recorder
from .sdp import filter_candidates, is_loopback, parse_candidate
from .signaling import messages as m
from .signaling.client import Backoff, SignalingClient

__all__ = ["CHAT_HIGH_WATER", "CURSOR_HIGH_WATER", "Peer", "PeerSession", "watch_peers"]

logger = logging.getLogger(__name__)

# Back-pressure thresholds on bufferedAmount, as in the seed (64 KiB for cursors).
CURSOR_HIGH_WATER = 64 * 1024
CHAT_HIGH_WATER = 1024 * 1024
CHAT_LOW_WATER = 256 * 1024
# Candidates kept per remote that trickled before its offer (bounds a hostile flood).
MAX_EARLY_CANDIDATES = 64
# Wait after a session is lost before re-establishing it (see Peer._on_failed).
LOST_SETTLE_S = 0.3

FrameListener = Callable[["PeerSession", str, av.AudioFrame | av.VideoFrame], None]
PeerCallback = Callable[
    [
        "Peer",
    ],
    None,
]

# Callbacks for peers created with a given event log (one per lab): how a quality
# monitor attached to a lab also attaches to the peers added after it.
_WATCHERS: weakref.WeakKeyDictionary[EventLog, list[PeerCallback]] = weakref.WeakKeyDictionary()


def watch_peers(events: EventLog, callback: PeerCallback) -> Callable[[], None]:
    """Call ``callback(peer)`` for every :class:`Peer` created from now on with ``events``.

    Returns the function that stops watching.
    """
    callbacks = _WATCHERS.setdefault(events, [])
    callbacks.append(callback)

    def unwatch() -> None:
        with contextlib.suppress(ValueError):
            callbacks.remove(callback)

    return unwatch


@dataclass
class MediaCounter:
    """Counts of what crossed one (direction, kind) of a session."""

    frames: int = 0
    bytes: int = 0
    packets: int = 0


class _CountingTrack(MediaStreamTrack):
    """Forwards a source track to one sender, counting the frames it takes."""

    def __init__(self, source: MediaStreamTrack, counter: MediaCounter) -> None:
        super().__init__()
        self.kind = source.kind
        self._source = source
        self._counter = counter
        # Clear while the sender waits in recv(): a replaced track may only be
        # stopped once its sender has moved on (see Peer.switch_video).
        self.idle = asyncio.Event()
        self.idle.set()

    async def recv(self) -> Any:
        self.idle.clear()
        try:
            frame = await self._source.recv()
        finally:
            self.idle.set()
        self._counter.frames += 1
        return frame

    def stop(self) -> None:
        super().stop()
        self._source.stop()


class PeerSession:
    """The connection between a local :class:`Peer` and one remote member."""

    def __init__(self, peer: Peer, remote: str, *, initiator: bool) -> None:
        self.peer = peer
        self.remote = remote
        self.initiator = initiator
        self.created_s = peer.events.clock.now()
        self.pc = RTCPeerConnection(
            RTCConfiguration(
                iceServers=list(peer.ice_servers),
                iceTransportPolicy=(
                    RTCIceTransportPolicy.RELAY if peer.relay_only else RTCIceTransportPolicy.ALL
                ),
            )
        )
        self.chat: RTCDataChannel | None = None
        self.cursors: RTCDataChannel | None = None
        self.counters: dict[tuple[str, str], MediaCounter] = {
            (d, k): MediaCounter() for d in ("send", "recv") for k in ("audio", "video")
        }
        self.last_video_frame: av.VideoFrame | None = None
        self.chat_log: list[tuple[float, str, dict[str, Any]]] = []
        # Received tracks by kind, each behind a relay: the consumer and any
        # recorder get their own subscription.
        self.received: dict[str, MediaStreamTrack] = {}
        self.recv_relay = MediaRelay()
        self._seq = {"chat": 0, "cursors": 0}
        self.connected = asyncio.Event()
        self.failed = asyncio.Event()
        self._pending: list[RTCIceCandidate] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._close_task: asyncio.Task[None] | None = None
        self._chat_low = asyncio.Event()
        self.pc.on("connectionstatechange", self._on_state)
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._adopt_channel)

    def __repr__(self) -> str:
        return f"PeerSession({self.peer.user_id!r} -> {self.remote!r})"

    @property
    def state(self) -> str:
        return str(self.pc.connectionState)

    # --- negotiation ------------------------------------------------------------------

    def _add_tracks(self, kinds: set[str] | None = None) -> None:
        for kind, track in (("audio", self.peer.audio), ("video", self.peer.video)):
            if track is not None and (kinds is None or kind in kinds):
                self.pc.addTrack(self._sending(track))

    def _sending(self, source: MediaStreamTrack) -> _CountingTrack:
        proxy = self.peer.relay.subscribe(source, buffered=False)
        return _CountingTrack(proxy, self.counters[("send", source.kind)])

    def _replace_video(self, source: MediaStreamTrack) -> list[_CountingTrack]:
        """Put ``source`` on the video sender (no renegotiation); returns the replaced tracks."""
        replaced = []
        for sender in self.pc.getSenders():
            old = sender.track
            if isinstance(old, _CountingTrack) and old.kind == "video":
                sender.replaceTrack(self._sending(source))
                replaced.append(old)
        return replaced

    async def create_offer(self) -> RTCSessionDescription:
        self._add_tracks()
        self._adopt_channel(self.pc.createDataChannel("chat", ordered=True))
        self._adopt_channel(self.pc.createDataChannel("cursors", ordered=False, maxRetransmits=0))
        await self._set_local(await self.pc.createOffer())
        return self.pc.localDescription

    async def accept_offer(self, sdp: str) -> RTCSessionDescription:
        await self._set_remote(RTCSessionDescription(sdp=sdp, type="offer"))
        # After the remote offer, and only for offered kinds: aiortc then reuses the
        # offered transceivers (a new one would have no offer direction and fail).
        self._add_tracks({t.kind for t in self.pc.getTransceivers()})
        await self._set_local(await self.pc.createAnswer())
        return self.pc.localDescription

    async def accept_answer(self, sdp: str) -> None:
        await self._set_remote(RTCSessionDescription(sdp=sdp, type="answer"))

    async def add_remote_candidate(self, init: m.IceCandidateInit | None) -> None:
        """Add a trickled candidate; buffered until the remote description is set."""
        if init is None or not init.candidate:
            return  # end-of-candidates: aiortc has nothing to do with it
        candidate = parse_candidate(init.candidate)
        candidate.sdpMid = init.sdpMid
        candidate.sdpMLineIndex = init.sdpMLineIndex
        if not self.peer.accepts_candidate(candidate):
            return
        if self.pc.remoteDescription is None:
            self._pending.append(candidate)
        else:
            await self.pc.addIceCandidate(candidate)

    async def _set_local(self, description: RTCSessionDescription) -> None:
        self._guard_ice()
        with gather_on(self.peer.host_addresses):
            await self.pc.setLocalDescription(description)

    def _guard_ice(self) -> None:
        """Ignore ICE checks that come from addresses this peer does not accept.

        Filtering signaled candidates is not enough: a remote that also gathers on
        other interfaces (Chromium: 192.0.2.2 and 127.0.0.1) sends checks from them
        to our loopback candidate, and aioice would answer, learn the source as a
        peer-reflexive candidate and, if the remote nominates that pair, send all
        media to it.  Unanswered, such checks fail and the loopback pair wins.
        Runs before gathering, so before any socket can receive a check; with
        BUNDLE there is one aioice connection for every transceiver.
        """
        if self.peer.host_addresses is None:
            return
        transports = [t.receiver.transport for t in self.pc.getTransceivers()]
        if self.pc.sctp is not None:
            transports.append(self.pc.sctp.transport)
        for dtls in transports:
            connection = getattr(getattr(dtls, "transport", None), "_connection", None)
            if connection is None or getattr(connection, "_webrtclab_guarded", False):
                continue
            original = connection.request_received

            def request_received(
                message: Any, addr: tuple[str, int], protocol: Any, _orig: Any = original
            ) -> None:
                if self.peer.accepts_address(addr[0]):
                    _orig(message, addr, protocol)
                else:
                    logger.debug("%r: ignored an ICE check from %s", self, addr[0])

            connection.request_received = request_received
            connection._webrtclab_guarded = True

    async def _set_remote(self, description: RTCSessionDescription) -> None:
        sdp = filter_candidates(description.sdp, self.peer.accepts_candidate)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=description.type))
        self._count_received_bytes()
        pending, self._pending = self._pending, []
        for candidate in pending:
            await self.pc.addIceCandidate(candidate)

    def _count_received_bytes(self) -> None:
        # aiortc has no per-stream bytesReceived: count RTP payload bytes as the
        # receiver gets them (retransmissions included, as the spec's counter).
        for transceiver in self.pc.getTransceivers():
            receiver = transceiver.receiver
            if getattr(receiver, "_webrtclab_counted", False):
                continue
            counter = self.counters[("recv", transceiver.kind)]
            original = receiver._handle_rtp_packet

            async def counted(
                packet: Any, arrival_time_ms: int, _orig: Any = original, _c: MediaCounter = counter
            ) -> None:
                _c.bytes += len(packet.payload)
                _c.packets += 1
                await _orig(packet, arrival_time_ms=arrival_time_ms)

            receiver._handle_rtp_packet = counted  # type: ignore[method-assign]
            receiver._webrtclab_counted = True  # type: ignore[attr-defined]

    # --- events ---------------------------------------------------------------------------

    async def _on_state(self) -> None:
        state = self.pc.connectionState
        self.peer.events.add(self.peer.user_id, self.remote, "connection-state", state)
        if state == "connected":
            path = self.selected_path()
            if path is not None:
                self.peer.events.add(
                    self.peer.user_id,
                    self.remote,
                    "selected-path",
                    f"{path[0]} {path[1]} -> {path[2]} {path[3]}",
                )
            self.connected.set()
        elif state == "failed":
            self.failed.set()
        self.peer._changed.set()
        self.peer._session_state(self, state)
        self.peer.emit("connectionstatechange", self.remote, state)

    def _on_track(self, track: MediaStreamTrack) -> None:
        self.peer.events.add(self.peer.user_id, self.remote, "track", track.kind)
        self.received[track.kind] = track
        self._spawn(self._consume(self.subscribe(track.kind)))
        self.peer.emit("track", self.remote, track)

    def subscribe(self, kind: str) -> MediaStreamTrack:
        """A copy of the received ``kind`` track that takes no frames from anyone else.

        Buffered: every frame is delivered.  Stop it when done.
        """
        track = self.received.get(kind)
        if track is None:
            raise ConfigurationError(f'{self!r} has received no {kind} track from "{self.remote}"')
        return self.recv_relay.subscribe(track, buffered=True)

    async def _consume(self, track: MediaStreamTrack) -> None:
        # Received tracks must be read or aiortc's decoded-frame queue grows forever.
        counter = self.counters[("recv", track.kind)]
        listeners = self.peer.frame_listeners
        failed: list[FrameListener] = []
        try:
            while True:
                frame = await track.recv()
                counter.frames += 1
                if isinstance(frame, av.VideoFrame):
                    self.last_video_frame = frame
                elif not isinstance(frame, av.AudioFrame):
                    continue
                for listener in listeners:
                    try:
                        listener(self, track.kind, frame)
                    except Exception:
                        # A broken listener must not stop the consumer: unread frames
                        # would pile up in aiortc's queue.
                        if listener not in failed:
                            failed.append(listener)
                            logger.exception("%r: frame listener %r failed", self, listener)
        except MediaStreamError:
            pass
        finally:
            track.stop()

    def _adopt_channel(self, channel: RTCDataChannel) -> None:
        if channel.label == "chat":
            self.chat = channel
            channel.bufferedAmountLowThreshold = CHAT_LOW_WATER
            channel.on("bufferedamountlow", self._chat_low.set)
        elif channel.label == "cursors":
            self.cursors = channel
        label = channel.label

        def on_message(data: str | bytes) -> None:
            self._on_message(label, data)

        channel.on("message", on_message)

    def _on_message(self, label: str, data: str | bytes) -> None:
        payload: Any
        try:
            payload = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            payload = data
        if label == "chat" and isinstance(payload, dict):
            self.chat_log.append((self.peer.events.clock.now(), "recv", payload))
            if self.peer.echo_chat and payload.get("type") == "chat" and not payload.get("echo"):
                self._send_json(self.chat, {**payload, "echo": True, "from": self.peer.user_id})
        self.peer.emit("message", self.remote, label, payload)

    # --- data channels ---------------------------------------------------------------------

    def _send_json(self, channel: RTCDataChannel | None, payload: dict[str, Any]) -> bool:
        if channel is None or channel.readyState != "open":
            return False
        channel.send(json.dumps(payload, separators=(",", ":")))
        return True

    async def send_chat(self, text: str, **extra: Any) -> None:
        """Send a chat message (reliable, ordered), waiting while the buffer is full."""
        channel = self.chat
        if channel is None or channel.readyState != "open":
            raise ConfigurationError(
                f'cannot send chat to "{self.remote}": the chat channel is not open'
            )
        while channel.bufferedAmount > CHAT_HIGH_WATER:
            self._chat_low.clear()
            await self._chat_low.wait()
        payload = {"type": "chat", "text": text, **self._sequence("chat"), **extra}
        self._send_json(channel, payload)
        self._seq["chat"] += 1
        self.chat_log.append((self.peer.events.clock.now(), "send", payload))

    def send_cursor(self, x: float, y: float, **extra: Any) -> bool:
        """Send a cursor position (unordered, no retransmits); False if dropped by back-pressure.

        Like chat messages, cursor messages carry ``seq`` (0, 1, ... per session)
        and ``sent_ms`` (lab clock), so a receiver can measure latency and loss;
        a message refused by back-pressure takes no sequence number.
        """
        channel = self.cursors
        if channel is None or channel.bufferedAmount >= CURSOR_HIGH_WATER:
            return False
        payload = {"type": "cursor", "x": x, "y": y, **self._sequence("cursors"), **extra}
        if not self._send_json(channel, payload):
            return False
        self._seq["cursors"] += 1
        return True

    def _sequence(self, label: str) -> dict[str, Any]:
        return {"seq": self._seq[label], "sent_ms": round(self.peer.events.clock.now() * 1000, 3)}

    # --- introspection and teardown ---------------------------------------------------------

    def selected_path(self) -> tuple[str, str, str, str] | None:
        """(local type, local address, remote type, remote address) of the nominated pair."""
        for transceiver in self.pc.getTransceivers():
            pair = _nominated_pair(transceiver.receiver.transport)
            if pair is not None:
                return pair
        sctp = self.pc.sctp
        return _nominated_pair(sctp.transport) if sctp is not None else None

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, timeout: float = 5.0) -> None:
        """Close the connection; bounded by ``timeout`` (aiortc's close can hang).

        Safe to call twice, and to cancel: the closing runs in a task of its own,
        which a later call awaits, so a cancelled caller cannot leave the ICE
        sockets open half-way (the peer's reader is cancelled while it closes the
        session of a peer that left).
        """
        if self._close_task is None:
            self._closed = True
            self._close_task = asyncio.ensure_future(self._close(timeout))
        await asyncio.shield(self._close_task)

    async def _close(self, timeout: float) -> None:
        await cancel_and_wait(*self._tasks)
        try:
            async with asyncio.timeout(timeout):
                await self.pc.close()
        except TimeoutError:
            logger.warning("%r: RTCPeerConnection.close() timed out after %.1f s", self, timeout)
        # aiortc ends a received track only if its receiver was started (the connection
        # got that far): a session closed while still connecting (a re-establishment
        # during an outage) would leave our relay's reader waiting forever.
        for track in self.received.values():
            queue = getattr(track, "_queue", None)
            if track.readyState == "live" and isinstance(queue, asyncio.Queue):
                queue.put_nowait(None)
        self.connected.clear()


def _is_turn(server: RTCIceServer) -> bool:
    urls = [server.urls] if isinstance(server.urls, str) else server.urls
    return any(url.startswith(("turn:", "turns:")) for url in urls)


def _usable(session: PeerSession) -> bool:
    """Negotiated (both descriptions set) and not failed or closed."""
    return session.pc.remoteDescription is not None and session.state not in ("failed", "closed")


def _nominated_pair(dtls: Any) -> tuple[str, str, str, str] | None:
    try:
        connection = dtls.transport._connection
        pair = connection._nominated.get(1)
    except AttributeError:
        return None
    if pair is None:
        return None
    local, remote = pair.local_candidate, pair.remote_candidate
    return (local.type, f"{local.host}:{local.port}", remote.type, f"{remote.host}:{remote.port}")


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
        for callback in list(_WATCHERS.get(self.events, ())):
            callback(self)

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
            raise ConfigurationError(f"{self!r} is closed")
        if self.signaling is not None:
            raise ConfigurationError(f'{self!r} already joined room "{self.room_id}"')
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
            if kept is not None and _usable(kept):
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
            if session is not None and _usable(session):
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
        return remote in self._lost or (session is not None and not _usable(session))

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

    def send_cursor(self, x: float, y: float, to: str | None = None) -> int:
        """Send a cursor position to one remote or to all; returns how many took it."""
        return sum(session.send_cursor(x, y) for session in self._targets(to))

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
            raise ConfigurationError(f"{self!r} is closed")
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
        """Leave the room and close every session; safe to call twice, bounded in time."""
        if self._closed:
            return
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
