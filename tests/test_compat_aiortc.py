"""webrtclab.compat.aiortc on its own: the version gate, and each patch on a bare call.

Two ``RTCPeerConnection`` objects in this process, negotiated directly (no signaling,
no lab), with :class:`ConnectionHooks` installed the way a lab session installs them:
each patch must still do what it claims on the pinned aiortc.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiortc
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.codecs import CODECS, HEADER_EXTENSIONS
from helpers import wait_until

from webrtclab.cc import CongestionControl, RateControl
from webrtclab.cc.twcc import TWCC_URI
from webrtclab.codecs import Vp8Encoder
from webrtclab.compat import CompatibilityError, check_version
from webrtclab.compat.aiortc import (
    CHECKED_VERSIONS,
    ConnectionHooks,
    enable_transport_cc,
    encoder_target,
    negotiates_transport_cc,
    sent_counts,
)
from webrtclab.loopback import gather_on
from webrtclab.media import SyntheticVideoTrack
from webrtclab.sdp import strip_transport_cc


def test_the_pinned_aiortc_is_one_the_patches_were_checked_on() -> None:
    check_version("aiortc", aiortc.__version__, CHECKED_VERSIONS)


@pytest.mark.parametrize("found", ["1.17.0", "1.15.2", "1.160.0", "2.0"])
def test_another_version_is_refused_with_a_clear_error(found: str) -> None:
    with pytest.raises(CompatibilityError) as info:
        check_version("aiortc", found, ("1.16",))
    message = str(info.value)
    assert f"aiortc {found} is installed" in message and "1.16" in message


def test_transport_cc_is_offered_once_however_often_it_is_enabled() -> None:
    enable_transport_cc()
    enable_transport_cc()
    for kind in ("audio", "video"):
        assert [e.uri for e in HEADER_EXTENSIONS[kind]].count(TWCC_URI) == 1
        for codec in CODECS[kind]:
            types = [f.type for f in codec.rtcpFeedback]
            expected = 0 if codec.mimeType.lower().endswith("/rtx") else 1
            assert types.count("transport-cc") == expected, codec


@dataclass
class Side:
    pc: RTCPeerConnection
    rate: RateControl
    hooks: ConnectionHooks
    received: dict[str, _Counter]
    rtts: list[tuple[str, float]]


@dataclass
class _Counter:
    bytes: int = 0
    packets: int = 0
    estimate_bps: int | None = None


def side(mode: str) -> Side:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    rate = RateControl(CongestionControl(mode=mode))  # type: ignore[arg-type]
    received = {"audio": _Counter(), "video": _Counter()}
    rtts: list[tuple[str, float]] = []
    hooks = ConnectionHooks(pc, rate, received=received, on_rtt=lambda k, r: rtts.append((k, r)))
    return Side(pc, rate, hooks, received, rtts)


async def connect(offerer: Side, answerer: Side, strip: bool) -> None:
    def text(sdp: str) -> str:
        return strip_transport_cc(sdp) if strip else sdp

    offerer.pc.addTrack(SyntheticVideoTrack(width=160, height=120, fps=10))
    answerer.pc.addTrack(SyntheticVideoTrack(width=160, height=120, fps=10))
    with gather_on(("127.0.0.1",)):
        await offerer.pc.setLocalDescription(await offerer.pc.createOffer())
        offerer.hooks.install()
        offer = offerer.pc.localDescription
        await answerer.pc.setRemoteDescription(type(offer)(sdp=text(offer.sdp), type="offer"))
        answerer.hooks.install()
        await answerer.pc.setLocalDescription(await answerer.pc.createAnswer())
        answerer.hooks.install()
        answer = answerer.pc.localDescription
        await offerer.pc.setRemoteDescription(type(answer)(sdp=text(answer.sdp), type="answer"))
        offerer.hooks.install()


@pytest.fixture
async def gcc_pair() -> AsyncIterator[tuple[Side, Side]]:
    enable_transport_cc()
    a, b = side("gcc"), side("gcc")
    await connect(a, b, strip=False)
    yield a, b
    for s in (a, b):
        await s.hooks.close()
        await s.hooks.close()  # idempotent
        await s.pc.close()


async def test_every_patch_does_its_job_on_a_gcc_call(gcc_pair: tuple[Side, Side]) -> None:
    a, b = gcc_pair
    assert negotiates_transport_cc(a.pc) and negotiates_transport_cc(b.pc)
    # Receivers record arrivals, the tick sends transport feedback, senders consume it.
    await wait_until(lambda: a.rate.feedback_received > 5 and b.rate.feedback_received > 5)
    # The lab's sending loop runs the lab's encoder at the controller's target.
    sender = a.pc.getSenders()[0]
    encoder = getattr(sender, "_RTCRtpSender__encoder")
    assert isinstance(encoder, Vp8Encoder)
    await wait_until(lambda: encoder_target(sender) == a.rate.target_of("video"), timeout=5)
    # Packets leave through the pacer and are counted on the wire, headers included.
    assert a.rate.pacer.sent_packets > 0
    counters = a.rate.counters["video"]
    assert counters.wire_packets > 0 and counters.wire_bytes > 0
    # The payload counters read now are getStats' bytesSent/packetsSent; the wire
    # carries them plus headers.
    report = await sender.getStats()
    octets, packets = sent_counts(sender)
    outbound = next(s for s in report.values() if s.type == "outbound-rtp")
    assert 0 < outbound.bytesSent <= octets and 0 < outbound.packetsSent <= packets
    assert counters.wire_bytes > octets
    # Receivers count payload bytes; every RTCP report's RTT reaches the callback.
    assert b.received["video"].bytes > 0 and b.received["video"].packets > 0
    await wait_until(lambda: a.rtts and b.rtts, timeout=10)
    assert all(kind == "video" and 0 <= rtt < 1 for kind, rtt in a.rtts)
    # aiortc's REMB estimator is off where transport-wide feedback replaces it.
    receiver = b.pc.getReceivers()[0]
    assert getattr(receiver, "_RTCRtpReceiver__remote_bitrate_estimator") is None
    assert b.received["video"].estimate_bps is None


async def test_a_stripped_description_keeps_aiortcs_own_path() -> None:
    enable_transport_cc()
    a, b = side("remb"), side("remb")
    await connect(a, b, strip=True)
    try:
        assert not negotiates_transport_cc(a.pc) and not negotiates_transport_cc(b.pc)
        await wait_until(lambda: b.received["video"].packets > 20)
        sender = a.pc.getSenders()[0]
        # aiortc's encoder and loop: no pacer, no transport feedback.
        assert not isinstance(getattr(sender, "_RTCRtpSender__encoder"), Vp8Encoder)
        assert a.rate.pacer.sent_packets == 0 and a.rate.feedback_received == 0
        assert a.rate.counters["video"].wire_bytes > 0  # still counted on the wire
        await wait_until(lambda: b.received["video"].estimate_bps is not None, timeout=15)
    finally:
        for s in (a, b):
            await s.hooks.close()
            await s.pc.close()


async def test_bounded_recovery_replaces_aiortcs_nack_and_pli(
    gcc_pair: tuple[Side, Side],
) -> None:
    a, b = gcc_pair
    receiver = b.pc.getReceivers()[0]
    sent: list[tuple[int, list[int]]] = []
    original = b.hooks._send_nack[id(receiver)]

    async def record(media_ssrc: int, lost: list[int]) -> None:
        sent.append((media_ssrc, lost))
        await original(media_ssrc, lost)

    b.hooks._send_nack[id(receiver)] = record
    # aiortc's receiver asks for the whole missing set on each new gap; the policy
    # lets each number through once per RTT.
    b.rate.rtt_s = 10.0
    for _ in range(3):
        await receiver._send_rtcp_nack(1234, [7, 8, 9])
    assert [lost for _, lost in sent] == [[7, 8, 9]]
    # PLIs are throttled too.
    pli = b.rate.pli.allowed
    for _ in range(5):
        await receiver._send_rtcp_pli(1234)
    assert b.rate.pli.allowed - pli <= 1
