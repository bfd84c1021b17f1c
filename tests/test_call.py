"""Calls between lab peers over loopback, through the real signaling server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import wait_until as wait_for

from webrtclab import InvalidStateError, Lab, LabTimeoutError, Peer, SignalingServer
from webrtclab.media import MediaSpec
from webrtclab.sdp import sdp_candidates
from webrtclab.signaling import messages as m

SMALL = MediaSpec(width=160, height=120, fps=10)


async def open_channels(peer: Peer, remote: str) -> None:
    session = peer.sessions[remote]
    await wait_for(
        lambda: (
            session.chat is not None
            and session.chat.readyState == "open"
            and session.cursors is not None
            and session.cursors.readyState == "open"
        )
    )


async def test_two_peer_call_video_and_chat_round_trip() -> None:
    async with Lab() as lab:
        alice = await lab.add_peer("alice", media=SMALL)
        bob = await lab.add_peer("bob", media=SMALL, echo_chat=True)
        await lab.wait_connected()
        session = alice.sessions["bob"]

        # video frames from bob are decoded at alice
        await wait_for(lambda: session.counters[("recv", "video")].frames >= 5)
        frame = session.last_video_frame
        assert frame is not None and (frame.width, frame.height) == (160, 120)
        await wait_for(lambda: session.counters[("recv", "audio")].frames >= 5)

        # chat round-trips through bob's echo
        echoed: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        alice.on(
            "message",
            lambda remote, label, payload: echoed.put_nowait(payload) if label == "chat" else None,
        )
        await open_channels(alice, "bob")
        assert await alice.send_chat("hello bob") == 1
        async with asyncio.timeout(5):
            reply = await echoed.get()
        # seq and sent_ms (lab clock) travel with every chat message, and back in the echo
        sent_ms = reply.pop("sent_ms")
        assert reply == {"type": "chat", "text": "hello bob", "seq": 0, "echo": True, "from": "bob"}
        assert 0 < sent_ms <= lab.clock.now() * 1000
        # bob logged what it received
        assert [p["text"] for _, d, p in bob.sessions["alice"].chat_log if d == "recv"] == [
            "hello bob"
        ]


async def test_cursor_channel_is_unordered_and_unreliable() -> None:
    async with Lab() as lab:
        alice = await lab.add_peer("alice", media=MediaSpec(video="none", audio="none"))
        bob = await lab.add_peer("bob", media=MediaSpec(video="none", audio="none"))
        await lab.wait_connected()
        await open_channels(alice, "bob")
        await open_channels(bob, "alice")
        channel = alice.sessions["bob"].cursors
        assert channel is not None
        assert channel.ordered is False and channel.maxRetransmits == 0
        got: list[Any] = []
        bob.on("message", lambda r, label, p: got.append(p) if label == "cursors" else None)
        assert await alice.send_cursor(10, 20) == 1
        assert await alice.send_cursor(11, 21) == 1
        await wait_for(lambda: len(got) == 2)
        assert sorted(p["seq"] for p in got) == [0, 1]
        for payload in got:
            assert payload.pop("sent_ms") <= lab.clock.now() * 1000
        assert sorted(got, key=lambda p: p["seq"]) == [
            {"type": "cursor", "x": 10, "y": 20, "seq": 0},
            {"type": "cursor", "x": 11, "y": 21, "seq": 1},
        ]


async def test_back_pressure_drops_cursor_updates_when_buffer_is_full() -> None:
    async with Lab() as lab:
        alice = await lab.add_peer("alice", media=MediaSpec(video="none", audio="none"))
        await lab.add_peer("bob", media=MediaSpec(video="none", audio="none"))
        await lab.wait_connected()
        await open_channels(alice, "bob")
        session = alice.sessions["bob"]
        # Queue far more than the high-water mark in one go: later sends are refused.
        results = [session.send_cursor(i, i, pad="x" * 4000) for i in range(100)]
        assert results[0] is True
        assert results[-1] is False


async def test_three_peer_mesh_newcomer_offers() -> None:
    async with Lab() as lab:
        peers = [await lab.add_peer(name, media=SMALL) for name in ("a", "b", "c")]
        await lab.wait_connected()
        for peer in peers:
            assert sorted(peer.sessions) == sorted(p.user_id for p in peers if p is not peer)
        # the newcomer is the initiator towards those already there
        assert peers[2].sessions["a"].initiator and not peers[0].sessions["c"].initiator
        # peer-left closes the session at the others
        await lab.remove_peer("c")
        await wait_for(lambda: "c" not in peers[0].sessions and "c" not in peers[1].sessions)


async def test_trickled_candidates_are_buffered_until_remote_description() -> None:
    """A browser trickles candidates; some may arrive before the offer they belong to."""
    async with SignalingServer() as server:
        bob = Peer("bob", media=SMALL)
        alice = Peer("alice", media=SMALL)
        try:
            await bob.join(server.url, "r")
            # Play alice's part by hand: offer from a raw aiortc peer whose SDP has no
            # candidates, and trickle them first, before the offer.
            from aiortc import RTCConfiguration, RTCPeerConnection

            from webrtclab.loopback import LOOPBACK, gather_on
            from webrtclab.signaling.client import SignalingClient

            raw = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            raw.addTransceiver("video")
            raw.createDataChannel("chat")
            with gather_on(LOOPBACK):
                await raw.setLocalDescription(await raw.createOffer())
            sdp = raw.localDescription.sdp
            candidates = sdp_candidates(sdp)
            assert candidates and all(c.ip == "127.0.0.1" for c in candidates)
            # A trickling browser's offer has neither candidates nor end-of-candidates.
            bare = "\r\n".join(
                line
                for line in sdp.splitlines()
                if not line.startswith(("a=candidate:", "a=end-of-candidates"))
            )
            client = SignalingClient(server.url)
            await client.join("r", "trickler")
            for line in sdp.splitlines():
                if line.startswith("a=candidate:"):
                    await client.send(
                        m.IceCandidate(
                            to="bob",
                            candidate=m.IceCandidateInit(
                                candidate=line[2:], sdpMid="0", sdpMLineIndex=0
                            ),
                        )
                    )
            await client.send(
                m.IceCandidate(to="bob", candidate=m.IceCandidateInit(candidate=""))
            )  # end-of-candidates is ignored
            await client.send(
                m.Offer(to="bob", sdp=m.SessionDescription(type="offer", sdp=bare + "\r\n"))
            )
            async with asyncio.timeout(10):
                reply = await client.recv()
                while not isinstance(reply, m.RelayedAnswer):
                    reply = await client.recv()
            assert reply.from_ == "bob" and reply.sdp is not None
            await raw.setRemoteDescription(
                __import__("aiortc").RTCSessionDescription(sdp=reply.sdp.sdp, type="answer")
            )
            await bob.wait_connected(1, timeout=10)
            assert bob.sessions["trickler"].state == "connected"
            await raw.close()
            await client.close()
        finally:
            await alice.close()
            await bob.close()


async def test_loopback_peer_ignores_non_loopback_remote_candidates() -> None:
    peer = Peer("x", media=MediaSpec(video="none", audio="none"))
    try:
        from webrtclab.sdp import parse_candidate

        assert peer.accepts_candidate(
            parse_candidate("candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host")
        )
        assert not peer.accepts_candidate(
            parse_candidate("candidate:1 1 udp 2130706431 192.0.2.7 5000 typ host")
        )
        assert not peer.accepts_candidate(
            parse_candidate("candidate:1 1 udp 2130706431 abcd.local 5000 typ host")
        )
    finally:
        await peer.close()


async def test_peer_close_is_idempotent_and_bounded() -> None:
    async with Lab() as lab:
        alice = await lab.add_peer("alice", media=SMALL)
        await lab.add_peer("bob", media=SMALL)
        await lab.wait_connected()
        async with asyncio.timeout(10):
            await alice.close()
            await alice.close()
        assert alice.sessions == {}
        with pytest.raises(Exception, match="closed"):
            await alice.join(lab.url, "lab")


async def test_wait_connected_times_out_with_states() -> None:
    async with Lab() as lab:
        alice = await lab.add_peer("alice", media=SMALL)
        with pytest.raises(LabTimeoutError, match="not reached"):
            await alice.wait_connected(1, timeout=0.2)


async def test_second_join_on_a_peer_is_refused() -> None:
    async with Lab() as lab:
        alice = await lab.add_peer("alice", media=SMALL)
        with pytest.raises(InvalidStateError, match="already joined"):
            await alice.join(lab.url, "other")
        assert lab.server.dispatcher.rooms() == {"lab": ["alice"]}


async def test_a_newcomer_without_camera_or_microphone_still_receives_both() -> None:
    # The newcomer offers; with nothing to send it offers to receive audio and video
    # (recvonly), as a browser's offerToReceive, so the others' media reaches it.
    async with Lab() as lab:
        await lab.add_peer("camera", media=SMALL)
        viewer = await lab.add_peer("viewer", media=MediaSpec(video="none", audio="none"))
        await lab.wait_connected()
        session = viewer.sessions["camera"]
        await wait_for(lambda: session.counters[("recv", "video")].frames >= 5)
        await wait_for(lambda: session.counters[("recv", "audio")].packets >= 5)
        directions = {t.kind: t.direction for t in session.pc.getTransceivers()}
        assert directions == {"audio": "recvonly", "video": "recvonly"}
