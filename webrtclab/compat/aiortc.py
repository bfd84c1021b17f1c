"""aiortc's internals that the lab replaces or reads, checked against aiortc 1.16.

What is patched, per connection (never aiortc's classes, so a ``"remb"`` peer in the
same process keeps aiortc's behaviour), and why:

- **Sending** (``RTCRtpSender._run_rtp``, ``_retransmit``, ``_send_keyframe``): aiortc
  sends each packet as it is produced, resends every NACKed packet at once and forces a
  keyframe on every PLI.  The lab's loop uses encoders whose rate changes in place
  (:mod:`webrtclab.codecs`), stamps the transport-wide sequence number, sends through a
  pacer, and bounds retransmissions and keyframes (:mod:`webrtclab.cc`).  Probe clusters
  (GCC's bandwidth probes) leave as RTX copies of the latest video packets, spaced at
  the probed rate, as libwebrtc's payload padding does; paced packets that leave
  meanwhile belong to the cluster too, as in libwebrtc's pacer.
- **RTCP in** (``RTCDtlsTransport._handle_rtcp_data``): aiortc parses transport-wide
  feedback (RTPFB FMT 15) as a NACK; the lab takes those packets out first.
- **Receiving** (``RTCRtpReceiver._handle_rtp_packet``, ``_send_rtcp_nack``,
  ``_send_rtcp_pli``): arrivals are recorded for transport-wide feedback, NACKs are
  sent at most once per RTT per packet with a retry limit, PLIs are throttled, and
  aiortc's REMB estimator is switched off where transport-wide feedback replaces it.
- **Receiver-side estimators** (``"estimator"`` mode, :mod:`webrtclab.bwe`): every
  received RTP packet is reported to the connection's estimator in OpenNetLab's
  ``report_states`` shape (send time from the abs-send-time extension), aiortc's own
  REMB estimator is switched off, and the estimate is polled and sent as REMB.
- **Counting**: RTP payload received, RTT of every RTCP report, and what each stream
  puts on the wire (``RTCDtlsTransport._send_rtp``, the ICE transport's ``_send``).
- **Negotiation**: the transport-wide sequence number header extension and the
  ``transport-cc`` feedback are added to aiortc's capabilities (module lists, so once
  per process); peers that must not use them strip them from their SDP
  (:func:`webrtclab.sdp.strip_transport_cc`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import traceback
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import aiortc
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender
from aiortc import clock as aiortc_clock
from aiortc.codecs import CODECS, HEADER_EXTENSIONS
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import (
    RTCRtcpFeedback,
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
)
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTP_HISTORY_SIZE,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpSrPacket,
    RtpPacket,
    is_rtcp,
    pack_remb_fci,
    unpack_remb_fci,
    wrap_rtx,
)
from aiortc.utils import random16, random32, uint16_add, uint32_add

from .._tasks import cancel_and_wait
from ..bwe.interface import Estimator
from ..cc.control import CongestionControl, RateControl
from ..cc.gcc import ProbeCluster
from ..cc.pacer import PRIORITY_AUDIO, PRIORITY_RTX, PRIORITY_VIDEO, PacedPacket
from ..cc.twcc import TWCC_URI, FeedbackError, FeedbackRecorder, parse_feedback, split_compound
from ..codecs import make_encoder
from . import check_version

__all__ = [
    "CHECKED_VERSIONS",
    "TWCC_EXTENSION_ID",
    "ConnectionHooks",
    "enable_transport_cc",
    "encoder_target",
    "media_stream_stats",
    "negotiated_codecs",
    "negotiates_transport_cc",
    "sent_counts",
]

logger = logging.getLogger(__name__)

CHECKED_VERSIONS = ("1.16",)
check_version("aiortc", aiortc.__version__, CHECKED_VERSIONS)

# aiortc uses 1 (mid), 2 (audio level) and 3 (abs-send-time); the id space is shared
# across media under BUNDLE.
TWCC_EXTENSION_ID = 5
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
ABS_SEND_TIME_ID = 3  # aiortc's id for it on video
# Video packets kept as the payload of probe packets: the latest ones, so a receiver's
# jitter buffer (aiortc drops packets up to 100 behind, libwebrtc keeps a history)
# takes the copies as duplicates.
_PROBE_SOURCE_PACKETS = 16
_SENDER = "_RTCRtpSender__"
_RECEIVER = "_RTCRtpReceiver__"


def enable_transport_cc() -> None:
    """Offer and accept transport-wide-cc (and abs-send-time on audio) in every connection
    of this process (idempotent).

    aiortc parses the header extension but never negotiates it; its capability lists
    are module-level, so this is process-wide.  Peers that must not use it strip it
    from their descriptions instead.
    """
    for kind in ("audio", "video"):
        extensions = HEADER_EXTENSIONS[kind]
        if not any(e.uri == TWCC_URI for e in extensions):
            extensions.append(RTCRtpHeaderExtensionParameters(id=TWCC_EXTENSION_ID, uri=TWCC_URI))
        # abs-send-time on audio too (aiortc offers it on video only, Chrome on both):
        # receiver-side estimators (webrtclab.bwe) get a send time for every packet.
        if not any(e.uri == ABS_SEND_TIME_URI for e in extensions):
            extensions.append(
                RTCRtpHeaderExtensionParameters(id=ABS_SEND_TIME_ID, uri=ABS_SEND_TIME_URI)
            )
        for codec in CODECS[kind]:
            feedback = RTCRtcpFeedback(type="transport-cc")
            if codec.mimeType.lower() != f"{kind}/rtx" and feedback not in codec.rtcpFeedback:
                codec.rtcpFeedback.append(feedback)


def negotiated_codecs(pc: RTCPeerConnection) -> dict[str, list[RTCRtpCodecParameters]]:
    """The negotiated codecs of each kind (empty before negotiation)."""
    found: dict[str, list[RTCRtpCodecParameters]] = {}
    for transceiver in pc.getTransceivers():
        found[transceiver.kind] = list(getattr(transceiver, "_codecs", None) or [])
    return found


def negotiates_transport_cc(pc: RTCPeerConnection) -> bool:
    """Whether both sides agreed on the transport-wide sequence number extension."""
    return any(
        e.uri == TWCC_URI
        for t in pc.getTransceivers()
        for e in getattr(t, "_headerExtensions", None) or []
    )


def encoder_target(sender: RTCRtpSender) -> int | None:
    """The sender's encoder target (bit/s), where its encoder has one."""
    encoder = getattr(sender, _SENDER + "encoder", None)
    target = getattr(encoder, "target_bitrate", None)
    return int(target) if isinstance(target, int) else None


def sent_counts(sender: RTCRtpSender) -> tuple[int, int]:
    """The payload bytes and packets ``sender`` has sent, read now.

    The same counters as its outbound-rtp ``bytesSent``/``packetsSent``, but read
    synchronously: getStats takes them at some point while it awaits other transports,
    so next to counters read after it they are skewed by a packet or two.
    """
    octets = getattr(sender, _SENDER + "octet_count", 0)
    packets = getattr(sender, _SENDER + "packet_count", 0)
    return int(octets), int(packets)


def media_stream_stats(receiver: RTCRtpReceiver | None) -> list[Any]:
    """aiortc's receive statistics of the media SSRCs (not RTX) of ``receiver``.

    aiortc's getStats gives every SSRC of a receiver the same inbound-rtp id, so once
    retransmissions (RTX, another SSRC) arrive their counters replace the media
    stream's in the report; the receiver keeps both.
    """
    streams = getattr(receiver, _RECEIVER + "remote_streams", None)
    rtx = getattr(receiver, _RECEIVER + "rtx_ssrc", None)
    if not isinstance(streams, dict) or not isinstance(rtx, dict):
        return []
    return [stream for ssrc, stream in streams.items() if ssrc not in rtx]


def end_unstarted_track(track: Any) -> None:
    """End a received track whose receiver never started (aiortc leaves it waiting)."""
    queue = getattr(track, "_queue", None)
    if track.readyState == "live" and isinstance(queue, asyncio.Queue):
        queue.put_nowait(None)


def nominated_pair(dtls: Any) -> tuple[str, str, str, str] | None:
    """(local type, local address, remote type, remote address) of ICE's nominated pair."""
    try:
        pair = dtls.transport._connection._nominated.get(1)
    except AttributeError:
        return None
    if pair is None:
        return None
    local, remote = pair.local_candidate, pair.remote_candidate
    return (local.type, f"{local.host}:{local.port}", remote.type, f"{remote.host}:{remote.port}")


class ReceiveCounter(Protocol):
    """Where a receiver's counts go: RTP payload bytes and packets, its REMB estimate."""

    bytes: int
    packets: int
    estimate_bps: int | None


RttCallback = Callable[[str, float], None]

# abs-send-time: 24 bits of 6.18 fixed-point seconds (wraps every 64 s).
_ABS_SEND_UNITS_PER_MS = (1 << 18) / 1000
_ABS_SEND_PERIOD = 1 << 24
_ABS_SEND_PERIOD_MS = _ABS_SEND_PERIOD / _ABS_SEND_UNITS_PER_MS
# One-byte header-extension element sizes (RFC 8285 section 4.2) by HeaderExtensions field.
_EXTENSION_SIZES = {
    "abs_send_time": 4,
    "audio_level": 2,
    "transmission_offset": 4,
    "transport_sequence_number": 3,
}


class PacketReporter:
    """Turns each received ``RtpPacket`` into ``report_states``' dict, cheaply.

    ``send_time_ms`` is the abs-send-time extension (RFC 5450-style 6.18 seconds,
    http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time) unwrapped; its first
    value is put on the 64 s period nearest the arrival time, so with one clock (a lab
    on one host) ``arrival_time_ms - send_time_ms`` is the one-way delay.
    ``header_length`` is the RTP header with CSRCs and one-byte header extensions, as
    the sender serialized it.
    """

    __slots__ = ("estimator", "packets", "ssrcs", "_last", "_offset")

    def __init__(self, estimator: Estimator) -> None:
        self.estimator = estimator
        self.packets = 0
        #: the SSRCs reported (the REMB names them)
        self.ssrcs: set[int] = set()
        self._last: int | None = None
        self._offset = 0.0

    def report(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        extensions = packet.extensions
        raw = extensions.abs_send_time
        if raw is None:
            return  # not from a sender that stamps it (the lab's and aiortc's do)
        last = self._last
        if last is None:
            raw_ms = raw / _ABS_SEND_UNITS_PER_MS
            periods = round((arrival_time_ms - raw_ms) / _ABS_SEND_PERIOD_MS)
            self._offset = periods * _ABS_SEND_PERIOD_MS
            self._last = raw
            offset = self._offset
        elif raw < last - (_ABS_SEND_PERIOD >> 1):  # wrapped forward
            self._offset += _ABS_SEND_PERIOD_MS
            self._last = raw
            offset = self._offset
        elif raw > last + (_ABS_SEND_PERIOD >> 1):  # reordered from before a wrap
            offset = self._offset - _ABS_SEND_PERIOD_MS
        else:
            if raw > last:
                self._last = raw
            offset = self._offset
        header = 12 + 4 * len(packet.csrc)
        elements = 0
        if extensions.mid is not None:
            elements += 1 + len(extensions.mid)
        for name, size in _EXTENSION_SIZES.items():
            if getattr(extensions, name) is not None:
                elements += size
        if elements:
            header += 4 + (elements + 3) // 4 * 4
        ssrc = packet.ssrc
        self.ssrcs.add(ssrc)
        self.packets += 1
        self.estimator.report_states(
            {
                "send_time_ms": raw / _ABS_SEND_UNITS_PER_MS + offset,
                "arrival_time_ms": arrival_time_ms,
                "payload_type": packet.payload_type,
                "sequence_number": packet.sequence_number,
                "ssrc": ssrc,
                "padding_length": packet.padding_size,
                "header_length": header,
                "payload_size": len(packet.payload),
            }
        )


def _skip_past(receiver: RTCRtpReceiver, given_up: list[int]) -> None:
    """Let aiortc's jitter buffer go on past packets that will not come.

    It assembles frames in sequence order and waits at a hole until 512 packets
    overflow it (seconds of frozen video); with a bounded number of NACKs, a packet
    given up must not hold back the frames after it.  Drops whole frames up to the
    last given-up packet, as the buffer does on overflow; the keyframe requested with
    the give-up repairs the picture.
    """
    buffer = getattr(receiver, _RECEIVER + "jitter_buffer", None)
    origin = getattr(buffer, "_origin", None)
    if buffer is None or origin is None:
        return
    ahead = [uint16_add(seq, -origin) for seq in given_up]
    ahead = [d for d in ahead if d < buffer.capacity]
    if ahead:
        buffer.smart_remove(max(ahead) + 1)


def _rtp_header_length(data: bytes) -> int:
    length = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10 and len(data) >= length + 4:
        length += 4 + 4 * int.from_bytes(data[length + 2 : length + 4], "big")
    return length


class ConnectionHooks:
    """The lab's patches on one ``RTCPeerConnection``, and the tasks they need.

    Call :meth:`install` after each description is set (it is idempotent and picks
    up new transceivers), :meth:`close` when the connection closes.

    :param received: per kind, the counters of what the receivers get.
    :param on_rtt: called with (kind, seconds) for every RTCP report's RTT.
    """

    def __init__(
        self,
        pc: RTCPeerConnection,
        control: RateControl,
        *,
        received: Mapping[str, ReceiveCounter],
        on_rtt: RttCallback | None = None,
        estimator: Estimator | None = None,
    ) -> None:
        self.pc = pc
        self.control = control
        self.on_rtt = on_rtt
        self.received = received
        self._patched: weakref.WeakSet[Any] = weakref.WeakSet()
        self._ssrcs: dict[int, tuple[str, bool]] = {}  # ssrc -> (kind, is retransmission)
        self._recorder: FeedbackRecorder | None = None
        self._receivers: list[tuple[str, RTCRtpReceiver]] = []
        self._nack_ssrc: dict[int, int] = {}  # id(receiver) -> media ssrc
        self._send_nack: dict[int, Any] = {}  # id(receiver) -> aiortc's _send_rtcp_nack
        #: whether transport-wide feedback is in use; None until negotiation is done
        self._twcc: bool | None = None
        self._tick: asyncio.Task[None] | None = None
        # The latest video packets of each lab sender, the payload of probe packets.
        self._recent: dict[RTCRtpSender, collections.deque[RtpPacket]] = {}
        self._raw_send_rtp: dict[int, Callable[[bytes], Awaitable[None]]] = {}  # id(dtls)
        self._probe_queue: collections.deque[ProbeCluster] = collections.deque()
        self._probe_task: asyncio.Task[None] | None = None
        # The cluster being sent: paced packets that leave meanwhile belong to it too.
        self._probing: ProbeCluster | None = None
        self._probing_bytes = 0  # paced packets sent during it: bytes and count
        self._probing_packets = 0
        #: ``"estimator"`` mode: the receiver-side estimator's reporter, and every
        #: estimate sent as REMB: (time.monotonic() s, bit/s)
        self.reporter = PacketReporter(estimator) if estimator is not None else None
        self.estimates: list[tuple[float, int]] = []
        self._estimator_task: asyncio.Task[None] | None = None
        self._estimator_failed: set[str] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"ConnectionHooks({self.control.settings})"

    @property
    def settings(self) -> CongestionControl:
        return self.control.settings

    # --- installation ------------------------------------------------------------------

    def install(self) -> None:
        """Patch every transceiver and transport of the connection not patched yet."""
        if self._closed:
            return
        for transceiver in self.pc.getTransceivers():
            kind = transceiver.kind
            sender, receiver = transceiver.sender, transceiver.receiver
            if sender not in self._patched:
                self._patched.add(sender)
                self._patch_sender(kind, sender)
            if receiver not in self._patched:
                self._patched.add(receiver)
                self._receivers.append((kind, receiver))
                self._patch_receiver(kind, receiver)
            dtls = sender.transport
            if dtls not in self._patched:
                self._patched.add(dtls)
                self._patch_transport(dtls)
        if self._twcc is None and self.pc.localDescription and self.pc.remoteDescription:
            self._negotiated()
        if self._estimator_task is None and self.reporter is not None and self._receivers:
            self._estimator_task = asyncio.ensure_future(self._run_estimator())
        if self._tick is None and self.settings.paced and self._receivers:
            # Pacing, feedback and NACK timing are the lab's; "remb" and "none" leave
            # all three to aiortc and need no timer.
            self.control.pacer.start()
            self._tick = asyncio.ensure_future(self._run_tick())

    def _negotiated(self) -> None:
        """Decide what the finished negotiation allows (once: aiortc cannot renegotiate
        codecs or extensions on a live connection).

        Not earlier: an offerer's own offer lists transport-wide feedback that the
        answer may decline.
        """
        self._twcc = self.settings.uses_twcc and negotiates_transport_cc(self.pc)
        if not self._twcc:
            return
        self._recorder = FeedbackRecorder(sender_ssrc=random32())
        # Transport-wide feedback replaces REMB: a REMB from aiortc's old estimator
        # would also cap the remote's send-side estimate (libwebrtc applies both).
        for _, receiver in self._receivers:
            if getattr(receiver, _RECEIVER + "remote_bitrate_estimator", None) is not None:
                setattr(receiver, _RECEIVER + "remote_bitrate_estimator", None)

    async def close(self) -> None:
        """Stop the pacer and the periodic work; safe to call twice."""
        self._closed = True
        task, self._tick = self._tick, None
        await cancel_and_wait(task)
        task, self._estimator_task = self._estimator_task, None
        await cancel_and_wait(task)
        self._probe_queue.clear()
        await cancel_and_wait(self._probe_task)
        await self.control.pacer.close()

    # --- senders -----------------------------------------------------------------------

    def _patch_sender(self, kind: str, sender: RTCRtpSender) -> None:
        self._ssrcs[sender._ssrc] = (kind, False)
        self._ssrcs[sender._rtx_ssrc] = (kind, True)
        original_rtcp = sender._handle_rtcp_packet
        lab_sender = self.settings.lab_sender

        async def handle_rtcp(packet: Any) -> None:
            if isinstance(packet, RtcpRrPacket | RtcpSrPacket):
                self._rtt_sample(kind, sender, packet)
            elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
                try:
                    bitrate, ssrcs = unpack_remb_fci(packet.fci)
                except ValueError:
                    return
                if sender._ssrc in ssrcs:
                    self.control.on_remb(bitrate)
                if lab_sender:
                    return  # aiortc would set the encoder's rate from it
            await original_rtcp(packet)

        setattr(sender, "_handle_rtcp_packet", handle_rtcp)
        if lab_sender:
            setattr(sender, "_run_rtp", lambda codec: self._run_rtp(kind, sender, codec))
            setattr(sender, "_retransmit", lambda seq: self._retransmit(kind, sender, seq))
            setattr(sender, "_send_keyframe", lambda: self._send_keyframe(sender))

    def _rtt_sample(self, kind: str, sender: RTCRtpSender, packet: Any) -> None:
        # RFC 3550 section 6.4.1: RTT = now - LSR time - DLSR, as aiortc computes it
        # before smoothing it (85 % of the last value kept at each report).
        lsr_time = getattr(sender, _SENDER + "lsr_time", None)
        lsr = getattr(sender, _SENDER + "lsr", None)
        if lsr_time is None:
            return
        for report in packet.reports:
            if report.ssrc == sender._ssrc and report.lsr == lsr and report.dlsr:
                rtt = time.time() - lsr_time - report.dlsr / 65536
                self.control.on_rtt(rtt)
                if self.on_rtt is not None:
                    self.on_rtt(kind, rtt)

    def _send_keyframe(self, sender: RTCRtpSender) -> None:
        bounded = self.settings.paced
        if not bounded or self.control.keyframes.allow(time.monotonic(), self.control.rtt_s):
            setattr(sender, _SENDER + "force_keyframe", True)

    async def _run_rtp(self, kind: str, sender: RTCRtpSender, codec: RTCRtpCodecParameters) -> None:
        """aiortc's ``RTCRtpSender._run_rtp`` with the lab's encoder, pacer and stamps."""
        getattr(sender, _SENDER + "rtp_started").set()
        s = self.settings
        encoder = make_encoder(
            codec,
            video_range=(s.video_min_bps, s.video_max_bps),
            audio_range=(s.audio_min_bps, s.audio_max_bps),
            start_bps=self.control.target_of(kind),
            adaptive=s.adaptive,  # "fixed" and "none" send at their set rate
        )
        setattr(sender, _SENDER + "encoder", encoder)
        if hasattr(encoder, "target_bitrate"):
            # The lab's encoders apply a new target between frames (aiortc encodes in
            # an executor thread); aiortc's own (H.264) only read it when they encode.

            def set_target(bps: int) -> None:
                encoder.target_bitrate = bps

            self.control.register_encoder(kind, set_target)
        history: dict[int, RtpPacket] = getattr(sender, _SENDER + "rtp_history")
        mid = getattr(sender, _SENDER + "mid")
        sequence_number = random16() % 32768  # lower half: no early wrap (as aiortc)
        timestamp_origin = random32()
        priority = PRIORITY_AUDIO if kind == "audio" else PRIORITY_VIDEO
        payload_type = int(codec.payloadType or 0)  # set by negotiation before send()
        recent = None
        if kind == "video":
            recent = self._recent[sender] = collections.deque(maxlen=_PROBE_SOURCE_PACKETS)
        try:
            while True:
                if not sender.track:
                    await asyncio.sleep(0.02)
                    continue
                frame = await sender._next_encoded_frame(codec)
                if frame is None:
                    continue
                size_max = getattr(encoder, "size_max_bitrate", None)
                if size_max is not None:
                    self.control.set_stream_max(kind, size_max)
                timestamp = uint32_add(timestamp_origin, frame.timestamp)
                last = len(frame.payloads) - 1
                for i, payload in enumerate(frame.payloads):
                    packet = RtpPacket(
                        payload_type=payload_type,
                        sequence_number=sequence_number,
                        timestamp=timestamp,
                    )
                    packet.ssrc = sender._ssrc
                    packet.payload = payload
                    packet.marker = 1 if i == last else 0
                    packet.extensions.mid = mid
                    if frame.audio_level is not None:
                        packet.extensions.audio_level = (False, -frame.audio_level)
                    history[sequence_number % RTP_HISTORY_SIZE] = packet
                    if recent is not None:
                        recent.append(packet)
                    await self._send(kind, sender, packet, priority, media=True)
                    sequence_number = uint16_add(sequence_number, 1)
        except (asyncio.CancelledError, ConnectionError, MediaStreamError):
            pass
        except Exception:
            # aiortc's stop() waits for the exited event: never leave without it.
            logger.warning("%r: RTP sender failed:\n%s", self, traceback.format_exc())
        track = sender.track
        if track is not None:
            track.stop()
            setattr(sender, _SENDER + "track", None)  # as aiortc's loop leaves it
        setattr(sender, _SENDER + "encoder", None)
        close = getattr(encoder, "close", None)
        if callable(close):
            close()
        self._recent.pop(sender, None)
        getattr(sender, _SENDER + "rtp_exited").set()

    async def _retransmit(self, kind: str, sender: RTCRtpSender, sequence_number: int) -> None:
        """aiortc's ``RTCRtpSender._retransmit``, once per RTT per packet, within a budget."""
        history: dict[int, RtpPacket] = getattr(sender, _SENDER + "rtp_history")
        packet = history.get(sequence_number % RTP_HISTORY_SIZE)
        if packet is None or packet.sequence_number != sequence_number:
            return
        control = self.control
        if self.settings.paced and not control.rtx[kind].allow(
            sequence_number,
            len(packet.payload),
            time.monotonic(),
            control.target_bps,
            control.rtt_s,
        ):
            return
        rtx_payload_type = getattr(sender, _SENDER + "rtx_payload_type")
        if rtx_payload_type is not None:
            rtx_sequence = getattr(sender, _SENDER + "rtx_sequence_number")
            packet = wrap_rtx(
                packet,
                payload_type=rtx_payload_type,
                sequence_number=rtx_sequence,
                ssrc=sender._rtx_ssrc,
            )
            setattr(sender, _SENDER + "rtx_sequence_number", uint16_add(rtx_sequence, 1))
        await self._send(kind, sender, packet, PRIORITY_RTX, media=False)

    async def _send(
        self, kind: str, sender: RTCRtpSender, packet: RtpPacket, priority: int, *, media: bool
    ) -> None:
        """Pace ``packet`` (or send it now, without a pacer)."""
        dtls = sender.transport
        extension_map = getattr(sender, _SENDER + "rtp_header_extensions_map")
        control = self.control
        twcc = bool(self._twcc)

        async def send_now() -> None:
            now = time.monotonic()
            packet.extensions.abs_send_time = (aiortc_clock.current_ntp_time() >> 14) & 0xFFFFFF
            if twcc:
                sequence = control.history.next_sequence()
                packet.extensions.transport_sequence_number = sequence
            else:
                packet.extensions.transport_sequence_number = None
            data = packet.serialize(extension_map)
            if twcc:
                control.history.sent(sequence, now, len(data), is_retransmission=not media)
                if self._probing is not None:
                    # libwebrtc's pacer tags every packet it sends during a cluster
                    # with it: the cluster measures what the link took of all of them,
                    # not the probes' share next to the media, and probes only fill
                    # the cluster up to its rate.
                    control.probe_sent(sequence, self._probing)
                    self._probing_bytes += len(data)
                    self._probing_packets += 1
            await dtls._send_rtp(data)
            if media:
                setattr(sender, _SENDER + "ntp_timestamp", aiortc_clock.current_ntp_time())
                setattr(sender, _SENDER + "rtp_timestamp", packet.timestamp)
                octets = getattr(sender, _SENDER + "octet_count")
                setattr(sender, _SENDER + "octet_count", octets + len(packet.payload))
                count = getattr(sender, _SENDER + "packet_count")
                setattr(sender, _SENDER + "packet_count", count + 1)

        if self.settings.paced:
            size = len(packet.payload) + 40  # RTP header, extensions and SRTP tag, roughly
            control.pacer.enqueue(PacedPacket(size=size, priority=priority, send=send_now))
        else:
            await send_now()

    # --- transports --------------------------------------------------------------------

    def _patch_transport(self, dtls: Any) -> None:
        original_rtcp = dtls._handle_rtcp_data
        original_send_rtp = dtls._send_rtp
        control = self.control
        ssrcs = self._ssrcs
        counters = control.counters

        async def handle_rtcp(data: bytes) -> None:
            feedback, rest = split_compound(data)
            for raw in feedback:
                try:
                    control.on_feedback(parse_feedback(raw))
                except FeedbackError as exc:
                    logger.debug("%r: bad transport feedback: %s", self, exc)
            if rest:
                await original_rtcp(rest)

        async def send_rtp(data: bytes) -> None:
            if len(data) >= 12 and not is_rtcp(data):
                found = ssrcs.get(int.from_bytes(data[8:12], "big"))
                if found is not None and found[1]:
                    counter = counters[found[0]]
                    counter.rtx_packets += 1
                    # The payload of an RTX packet: the original sequence number and payload.
                    counter.rtx_bytes += len(data) - _rtp_header_length(data) - 2
            await original_send_rtp(data)

        dtls._handle_rtcp_data = handle_rtcp
        dtls._send_rtp = send_rtp
        self._raw_send_rtp[id(dtls)] = original_send_rtp  # probes: not counted as RTX
        ice = dtls.transport
        original_send = ice._send

        async def send(data: bytes) -> None:
            # SRTP leaves the RTP header in the clear: count every SRTP packet by SSRC.
            if len(data) >= 12 and 127 < data[0] < 192 and not is_rtcp(data):
                found = ssrcs.get(int.from_bytes(data[8:12], "big"))
                if found is not None:
                    counter = counters[found[0]]
                    counter.wire_bytes += len(data)
                    counter.wire_packets += 1
            await original_send(data)

        ice._send = send

    # --- receivers ---------------------------------------------------------------------

    def _patch_receiver(self, kind: str, receiver: RTCRtpReceiver) -> None:
        counter = self.received[kind]
        original_rtp = receiver._handle_rtp_packet
        bounded = self.settings.paced
        reporter = self.reporter
        estimator = getattr(receiver, _RECEIVER + "remote_bitrate_estimator", None)
        if reporter is not None:
            # The estimator's REMB replaces aiortc's (two would fight over the sender).
            setattr(receiver, _RECEIVER + "remote_bitrate_estimator", None)
        elif estimator is not None:
            original_add = estimator.add

            def add(*args: Any, **kwargs: Any) -> Any:
                remb = original_add(*args, **kwargs)
                if remb is not None:
                    counter.estimate_bps = int(remb[0])
                return remb

            estimator.add = add

        async def handle_rtp(packet: RtpPacket, arrival_time_ms: int) -> None:
            counter.bytes += len(packet.payload)
            counter.packets += 1
            recorder = self._recorder
            sequence = packet.extensions.transport_sequence_number
            if recorder is not None and sequence is not None:
                recorder.record(sequence, time.monotonic(), packet.ssrc)
            if reporter is not None:
                try:
                    reporter.report(packet, arrival_time_ms)
                except Exception:
                    self._estimator_error("report_states")
            await original_rtp(packet, arrival_time_ms=arrival_time_ms)

        setattr(receiver, "_handle_rtp_packet", handle_rtp)
        if not bounded:
            return
        self._send_nack[id(receiver)] = receiver._send_rtcp_nack
        original_pli = receiver._send_rtcp_pli
        policy = self.control.nack

        async def send_nack(media_ssrc: int, lost: list[int]) -> None:
            self._nack_ssrc[id(receiver)] = media_ssrc
            policy.update(set(lost), time.monotonic())
            await self._nack_due(receiver, media_ssrc)

        async def send_pli(media_ssrc: int) -> None:
            if self.control.pli.allow(time.monotonic(), self.control.rtt_s):
                await original_pli(media_ssrc)

        setattr(receiver, "_send_rtcp_nack", send_nack)
        setattr(receiver, "_send_rtcp_pli", send_pli)

    async def _nack_due(self, receiver: RTCRtpReceiver, media_ssrc: int) -> None:
        """Send the NACKs that are due (through aiortc's own sender), give up the rest."""
        generator = getattr(receiver, _RECEIVER + "nack_generator", None)
        now = time.monotonic()
        due, given_up, keyframe = self.control.nack.due(now, self.control.rtt_s)
        if generator is not None:
            for seq in given_up:
                generator.missing.discard(seq)
        if given_up:
            _skip_past(receiver, given_up)
        if due:
            await self._send_nack[id(receiver)](media_ssrc, due)
        if keyframe:
            await receiver._send_rtcp_pli(media_ssrc)

    # --- periodic work -----------------------------------------------------------------

    async def _run_tick(self) -> None:
        """Send transport-wide feedback, and re-send NACKs that are due, every few ms."""
        interval = min(0.02, self.settings.feedback_interval_s)
        last_feedback = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            try:
                recorder = self._recorder
                if (
                    recorder is not None
                    and recorder.pending
                    and (now - last_feedback >= self.settings.feedback_interval_s)
                ):
                    last_feedback = now
                    # The first transceiver's transport: BUNDLE's primary, once negotiated.
                    dtls = self.pc.getTransceivers()[0].sender.transport
                    for packet in recorder.build():
                        await dtls._send_rtp(packet)
                await self._resend_nacks()
                self._start_probes()
            except ConnectionError:
                pass
            except Exception:
                logger.exception("%r: periodic feedback failed", self)

    # --- receiver-side estimator --------------------------------------------------------

    def _estimator_error(self, method: str) -> None:
        # Logged once per connection: a broken estimator must not flood the log or
        # stop the receiver (media keeps flowing; the sender keeps its last target).
        if method not in self._estimator_failed:
            self._estimator_failed.add(method)
            logger.warning(
                "%r: the estimator's %s failed (logged once):\n%s",
                self,
                method,
                traceback.format_exc(),
            )

    async def _run_estimator(self) -> None:
        """Poll the estimator and send its estimate as REMB (draft-alvestrand-rmcat-remb)."""
        reporter = self.reporter
        assert reporter is not None
        interval = self.settings.estimator_interval_s
        while True:
            await asyncio.sleep(interval)
            if not reporter.packets or not self._receivers:
                continue  # nothing received yet: no estimate to give
            try:
                value = reporter.estimator.get_estimated_bandwidth()
                bps = int(value)
                if bps <= 0:
                    raise ValueError(f"get_estimated_bandwidth() returned {value!r}")
            except Exception:
                self._estimator_error("get_estimated_bandwidth")
                continue
            self.estimates.append((time.monotonic(), bps))
            video = self.received.get("video")
            if video is not None:
                video.estimate_bps = bps
            receiver = self._receivers[0][1]
            rtcp_ssrc = getattr(receiver, _RECEIVER + "rtcp_ssrc", None)
            if rtcp_ssrc is None:
                continue
            packet = RtcpPsfbPacket(
                fmt=RTCP_PSFB_APP,
                ssrc=rtcp_ssrc,
                media_ssrc=0,
                fci=pack_remb_fci(bps, sorted(reporter.ssrcs)),
            )
            try:
                await receiver._send_rtcp(packet)
            except ConnectionError:
                pass

    # --- probing -----------------------------------------------------------------------

    def _start_probes(self) -> None:
        if not self._twcc:
            return
        control = self.control
        if not control.probing_started:
            if not any(self._recent.values()):
                return  # probe once video flows (its packets are the probes' payload)
            control.start_probing()
        self._probe_queue.extend(control.take_probes())
        if self._probe_queue and self._probe_task is None:
            self._probe_task = asyncio.ensure_future(self._run_probes())

    async def _run_probes(self) -> None:
        # One cluster after the other, as libwebrtc's pacer: interleaved clusters would
        # each be measured at a fraction of their rate.
        try:
            while self._probe_queue:
                await self._probe(self._probe_queue.popleft())
        finally:
            self._probe_task = None

    async def _probe(self, cluster: ProbeCluster) -> None:
        """Send one probe cluster: RTX copies of the latest video packets at its rate."""
        for sender, recent in self._recent.items():
            rtx_payload_type = getattr(sender, _SENDER + "rtx_payload_type", None)
            if recent and rtx_payload_type is not None:
                break
        else:
            return  # no RTX: nothing a receiver would discard, so no probing
        dtls = sender.transport
        raw_send = self._raw_send_rtp.get(id(dtls))
        if raw_send is None:
            return
        extension_map = getattr(sender, _SENDER + "rtp_header_extensions_map")
        counter = self.control.counters["video"]
        history = self.control.history
        packets = sorted(recent, key=lambda p: len(p.payload), reverse=True)
        start = time.monotonic()
        sent_bytes = count = 0
        self._probing = cluster
        self._probing_bytes = self._probing_packets = 0
        try:
            while (
                count + self._probing_packets < cluster.min_probes
                or sent_bytes + self._probing_bytes < cluster.min_bytes
            ):
                rtx_sequence = getattr(sender, _SENDER + "rtx_sequence_number")
                packet = wrap_rtx(
                    packets[count % len(packets)],
                    payload_type=rtx_payload_type,
                    sequence_number=rtx_sequence,
                    ssrc=sender._rtx_ssrc,
                )
                setattr(sender, _SENDER + "rtx_sequence_number", uint16_add(rtx_sequence, 1))
                now = time.monotonic()
                packet.extensions.abs_send_time = (aiortc_clock.current_ntp_time() >> 14) & 0xFFFFFF
                sequence = history.next_sequence()
                packet.extensions.transport_sequence_number = sequence
                data = packet.serialize(extension_map)
                history.sent(sequence, now, len(data), is_retransmission=True)
                self.control.probe_sent(sequence, cluster)
                await raw_send(data)
                counter.probe_packets += 1
                counter.probe_bytes += len(packet.payload)
                sent_bytes += len(data)
                count += 1
                # Spaced at the cluster's rate: packet n leaves when the bytes before it
                # (media sent meanwhile included) would have at that rate (the
                # estimator leaves the last one out).
                total = sent_bytes + self._probing_bytes
                await asyncio.sleep(
                    max(0.0, start + total * 8 / cluster.bitrate_bps - time.monotonic())
                )
        except ConnectionError:
            pass
        finally:
            self._probing = None

    async def _resend_nacks(self) -> None:
        for kind, receiver in self._receivers:
            if kind != "video":
                continue
            media_ssrc = self._nack_ssrc.get(id(receiver))
            generator = getattr(receiver, _RECEIVER + "nack_generator", None)
            if media_ssrc is None or generator is None:
                continue
            self.control.nack.update(set(generator.missing), time.monotonic())
            if len(self.control.nack):
                await self._nack_due(receiver, media_ssrc)
