"""One connection of a lab peer: an RTCPeerConnection to one remote member.

A :class:`PeerSession` owns the ``RTCPeerConnection``, the seed's ``chat`` and
``cursors`` data channels (with back-pressure) and the counters of what crossed it.
Its owner (a :class:`~webrtclab.peer.Peer`) creates, negotiates and retires
sessions; a session sees it only through :class:`SessionOwner`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import av
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

from ._tasks import cancel_and_wait
from .bwe.loader import estimator_factory
from .cc.control import CongestionControl, RateControl
from .compat.aioice import check_list, gather_on, guard_checks, ice_connection, ice_sockets
from .compat.aiortc import (
    ConnectionHooks,
    encoder_target,
    end_unstarted_track,
    nominated_pair,
)
from .events import EventLog
from .exceptions import ConfigurationError
from .sdp import filter_candidates, parse_candidate, sdp_candidates, strip_transport_cc
from .signaling import messages as m

if TYPE_CHECKING:
    from .netem.natbox import NatBox

__all__ = [
    "CHAT_HIGH_WATER",
    "CURSOR_HIGH_WATER",
    "FrameListener",
    "MediaCounter",
    "PeerSession",
    "SessionOwner",
]

logger = logging.getLogger(__name__)

# Back-pressure thresholds on bufferedAmount, as in the seed (64 KiB for cursors).
CURSOR_HIGH_WATER = 64 * 1024
CHAT_HIGH_WATER = 1024 * 1024
CHAT_LOW_WATER = 256 * 1024

FrameListener = Callable[["PeerSession", str, av.AudioFrame | av.VideoFrame], None]


class SessionOwner(Protocol):
    """What a session needs from the peer that owns it (a :class:`~webrtclab.peer.Peer`)."""

    user_id: str
    events: EventLog
    #: the local sources, fanned out to every session's senders
    relay: MediaRelay
    audio: MediaStreamTrack | None
    video: MediaStreamTrack | None
    host_addresses: tuple[str, ...] | None
    ice_servers: list[RTCIceServer]
    relay_only: bool
    congestion_control: CongestionControl
    echo_chat: bool
    frame_listeners: list[FrameListener]
    #: the NAT box this peer sits behind, if any
    nat: NatBox | None
    ice_check_retransmissions: int | None

    def accepts_candidate(self, candidate: RTCIceCandidate) -> bool: ...

    def accepts_address(self, host: str) -> bool: ...

    def session_state_changed(self, session: PeerSession, state: str) -> None: ...

    def emit(self, event: str, *args: Any) -> bool: ...


@dataclass
class MediaCounter:
    """Counts of what crossed one (direction, kind) of a session."""

    frames: int = 0
    bytes: int = 0
    packets: int = 0
    #: recv: the receiver's own bandwidth estimate (REMB), where it makes one
    estimate_bps: int | None = None


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

    def __init__(
        self, peer: SessionOwner, remote: str, *, initiator: bool, generation: int = 0
    ) -> None:
        self.peer = peer
        self.remote = remote
        self.initiator = initiator
        #: which of the sessions with ``remote`` this is (see :mod:`webrtclab.negotiation`)
        self.generation = generation
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
        #: the rate control of this connection (see :mod:`webrtclab.cc`)
        self.rate = RateControl(peer.congestion_control)
        settings = peer.congestion_control
        #: ``"estimator"`` mode: this connection's receiver-side estimator
        self.estimator = (
            estimator_factory(settings.estimator)() if settings.estimator is not None else None
        )
        self.hooks = ConnectionHooks(
            self.pc,
            self.rate,
            received={k: self.counters[("recv", k)] for k in ("audio", "video")},
            on_rtt=self._on_rtt,
            estimator=self.estimator,
        )
        # (lab time s, kind, ms): the RTT of every RTCP report, unsmoothed.
        self.rtt_samples: list[tuple[float, str, float]] = []
        self.chat_log: list[tuple[float, str, dict[str, Any]]] = []
        # Received tracks by kind, each behind a relay: the consumer and any
        # recorder get their own subscription.
        self.received: dict[str, MediaStreamTrack] = {}
        self.recv_relay = MediaRelay()
        self._seq = {"chat": 0, "cursors": 0}
        self.connected = asyncio.Event()
        self.failed = asyncio.Event()
        #: this side's candidates, as gathered (from its local description)
        self.local_candidates: list[RTCIceCandidate] = []
        #: seconds from the session's creation to ICE connected (None until then)
        self.ice_time_s: float | None = None
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

    @property
    def closing(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def usable(self) -> bool:
        """Negotiated (both descriptions set) and not failed or closed."""
        return self.pc.remoteDescription is not None and self.state not in ("failed", "closed")

    # --- negotiation ------------------------------------------------------------------

    def _add_tracks(self, kinds: set[str] | None = None) -> None:
        for kind, track in (("audio", self.peer.audio), ("video", self.peer.video)):
            if track is not None and (kinds is None or kind in kinds):
                self.pc.addTrack(self._sending(track))

    def _sending(self, source: MediaStreamTrack) -> _CountingTrack:
        proxy = self.peer.relay.subscribe(source, buffered=False)
        return _CountingTrack(proxy, self.counters[("send", source.kind)])

    def replace_video(self, source: MediaStreamTrack) -> list[_CountingTrack]:
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
        offered = {t.kind for t in self.pc.getTransceivers()}
        for kind in ("audio", "video"):
            if kind not in offered:
                # Nothing of this kind to send, but the remote may have some: offer to
                # receive it (a browser's offerToReceive), or a newcomer without a camera
                # would never get the others' video.
                self.pc.addTransceiver(kind, direction="recvonly")
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
        if not self.rate.settings.uses_twcc:
            description = RTCSessionDescription(
                sdp=strip_transport_cc(description.sdp), type=description.type
            )
        peer = self.peer
        sockets = (
            ice_sockets(peer.nat, check_retransmissions=peer.ice_check_retransmissions)
            if peer.nat is not None or peer.ice_check_retransmissions is not None
            else contextlib.nullcontext()
        )
        with gather_on(peer.host_addresses), sockets:
            await self.pc.setLocalDescription(description)
        self.hooks.install()
        self.local_candidates = sdp_candidates(self.pc.localDescription.sdp)
        peer.events.add(
            peer.user_id,
            self.remote,
            "ice-candidates",
            # BUNDLE repeats the candidates in every media section: each once.
            ", ".join(dict.fromkeys(f"{c.type} {c.ip}:{c.port}" for c in self.local_candidates)),
        )

    def _guard_ice(self) -> None:
        """Ignore ICE checks that come from addresses this peer does not accept.

        Filtering signaled candidates is not enough: a remote that also gathers on
        other interfaces sends checks from them (see
        :func:`~webrtclab.compat.aioice.guard_checks`).  Unanswered, such checks fail
        and the loopback pair wins.  Runs before gathering, so before any socket can
        receive a check; with BUNDLE there is one ICE connection for every transceiver.
        """
        if self.peer.host_addresses is None:
            return
        transports = [t.receiver.transport for t in self.pc.getTransceivers()]
        if self.pc.sctp is not None:
            transports.append(self.pc.sctp.transport)
        for dtls in transports:
            connection = ice_connection(getattr(dtls, "transport", None))
            if connection is not None:
                guard_checks(connection, self.peer.accepts_address, owner=self)

    async def _set_remote(self, description: RTCSessionDescription) -> None:
        sdp = filter_candidates(description.sdp, self.peer.accepts_candidate)
        if not self.rate.settings.uses_twcc:
            # Not offered or accepted: aiortc negotiates what both descriptions hold.
            sdp = strip_transport_cc(sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=description.type))
        # Before aiortc's connect task runs (it starts the senders and receivers).
        self.hooks.install()
        pending, self._pending = self._pending, []
        for candidate in pending:
            await self.pc.addIceCandidate(candidate)

    def _on_rtt(self, kind: str, rtt_s: float) -> None:
        # aiortc's roundTripTime keeps 85 % of its last value at each report, so a
        # change takes ~10 s to show; keep each report's own RTT too.
        self.rtt_samples.append((self.peer.events.clock.now(), kind, rtt_s * 1000))

    # --- events ---------------------------------------------------------------------------

    async def _on_state(self) -> None:
        state = self.pc.connectionState
        self.peer.events.add(self.peer.user_id, self.remote, "connection-state", state)
        if state in ("connected", "failed"):
            self._log_checks(state)
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
        self.peer.session_state_changed(self, state)

    def _log_checks(self, state: str) -> None:
        """Events for the end of ICE: each pair's check outcome and the time ICE took."""
        events, user = self.peer.events, self.peer.user_id
        elapsed = events.clock.now() - self.created_s
        connection = ice_connection(getattr(self._dtls(), "transport", None))
        if connection is not None:
            checks = check_list(connection)
            events.add(
                user,
                self.remote,
                "ice-checks",
                "; ".join(f"{a} {b} -> {c} {d}: {e}" for a, b, c, d, e in checks),
            )
        if state == "connected":
            self.ice_time_s = elapsed
            events.add(user, self.remote, "ice-connected", f"{elapsed:.3f} s")
        else:
            events.add(user, self.remote, "ice-failed", f"{elapsed:.3f} s")

    def _dtls(self) -> Any:
        for transceiver in self.pc.getTransceivers():
            return transceiver.receiver.transport
        sctp = self.pc.sctp
        return sctp.transport if sctp is not None else None

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

    def send_target_bps(self, kind: str) -> int | None:
        """The target of the ``kind`` stream this session sends (bit/s), if it has one."""
        if self.rate.settings.lab_sender:
            return self.rate.target_of(kind)
        for sender in self.pc.getSenders():
            if sender.kind == kind:
                return encoder_target(sender)
        return None

    def selected_path(self) -> tuple[str, str, str, str] | None:
        """(local type, local address, remote type, remote address) of the nominated pair.

        Behind a NAT, aioice reports the host candidate the packets leave from; the
        local side is then the address the NAT gives them, typed as RFC 8445 section
        7.2.5.3.1 types the local candidate of a valid pair: ``srflx`` if it is this
        side's server-reflexive candidate (the STUN server saw the same mapping), else
        ``prflx`` (a mapping learned only in the checks, as with a symmetric NAT).
        """
        for transceiver in self.pc.getTransceivers():
            pair = nominated_pair(transceiver.receiver.transport)
            if pair is not None:
                return self._behind_nat(pair)
        sctp = self.pc.sctp
        pair = nominated_pair(sctp.transport) if sctp is not None else None
        return self._behind_nat(pair) if pair is not None else None

    def _behind_nat(self, path: tuple[str, str, str, str]) -> tuple[str, str, str, str]:
        box = self.peer.nat
        if box is None or path[0] != "host":
            return path
        local_host, _, local_port = path[1].rpartition(":")
        remote_host, _, remote_port = path[3].rpartition(":")
        public = box.public_address((local_host, int(local_port)), (remote_host, int(remote_port)))
        if public is None:
            return path  # the same private network: no translation
        reflexive = {(c.ip, c.port) for c in self.local_candidates if c.type == "srflx"}
        kind = "srflx" if public in reflexive else "prflx"
        return (kind, f"{public[0]}:{public[1]}", path[2], path[3])

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
        await self.hooks.close()
        try:
            async with asyncio.timeout(timeout):
                await self.pc.close()
        except TimeoutError:
            logger.warning("%r: RTCPeerConnection.close() timed out after %.1f s", self, timeout)
        # aiortc ends a received track only if its receiver was started (the connection
        # got that far): a session closed while still connecting (a re-establishment
        # during an outage) would leave our relay's reader waiting forever.
        for track in self.received.values():
            end_unstarted_track(track)
        self.connected.clear()
