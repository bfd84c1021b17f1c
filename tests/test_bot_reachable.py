"""``webrtclab peer`` is reachable by default from a WebRTC stack on a real interface.

The bot gathers on 127.0.0.1 and on the machine's real interfaces unless given
``--loopback-only``, and never on a STUN server's word: its ICE servers are an
explicit empty list (aiortc's default would be Google's STUN server).

The reachability test calls a ``webrtclab peer`` subprocess from a second process
(this file run as a script): plain aiortc that gathers on this host's own
non-loopback IPv4 address only, as an independent implementation (a browser) does.
Traffic stays on this machine: that process gathers on the host's own address only
and keeps only the bot's candidates on that same address, so every packet goes from
the host to itself (the kernel delivers it locally, it never leaves the host).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import sys
from pathlib import Path
from typing import Any

import aioice.ice
import pytest
from aiortc import (
    RTCConfiguration,
    RTCIceGatherer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack
from test_cli import ROOT, _env, read_line, spawn, stop

from webrtclab import MediaSpec, Peer, SignalingServer
from webrtclab.cli import _bot, _parser
from webrtclab.cli import main as cli_main
from webrtclab.compat.aioice import guard_checks, ice_connection
from webrtclab.compat.aiortc import nominated_pair
from webrtclab.loopback import LOOPBACK, gather_on
from webrtclab.sdp import filter_candidates, parse_candidate
from webrtclab.signaling import messages as m
from webrtclab.signaling.client import SignalingClient

CALL_S = 20.0  # the caller's bound on its whole call


def own_ipv4() -> str | None:
    """This host's own non-loopback IPv4 address, from aioice's own listing (what the
    bot gathers on), or None.  Listing interfaces sends nothing."""
    for address in aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False):
        ip = ipaddress.ip_address(address)
        if not (ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified):
            return address
    return None


def candidates(sdp: str) -> list[tuple[str, str]]:
    """(address, type) of every ``a=candidate`` line."""
    found = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            candidate = parse_candidate(line)
            found.append((candidate.ip, candidate.type))
    return found


async def offer_to_bot(client: SignalingClient, pc: RTCPeerConnection) -> str:
    """Offer to ``bot`` (gathering, in the caller's ``gather_on``); the bot's raw answer SDP."""
    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription.sdp
    await client.send(m.Offer(to="bot", sdp=m.SessionDescription(type="offer", sdp=offer)))
    while True:
        message = await client.recv()
        if isinstance(message, m.RelayedAnswer) and message.sdp is not None:
            return message.sdp.sdp


# --- the second process: an aiortc stack on the real interface -----------------------------


async def call_bot(url: str, room: str, address: str) -> dict[str, Any]:
    """Call the bot in ``room`` from ``address`` only: chat echo, one video frame.

    No ICE servers (explicitly: aiortc's default is Google's STUN server).  Gathers on
    ``address`` only (aioice alone would add every other interface address, IPv6 too),
    keeps only the bot's candidates on ``address`` and ignores checks from any other
    source (the bot's 127.0.0.1 socket can reach ``address`` too): the only path is
    ``address`` to the bot's own candidate on ``address``.
    """
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    connected = asyncio.Event()
    pc.on(
        "connectionstatechange",
        lambda: connected.set() if pc.connectionState == "connected" else None,
    )
    chat = pc.createDataChannel("chat")
    opened = asyncio.Event()
    chat.on("open", opened.set)
    echoes: asyncio.Queue[Any] = asyncio.Queue()
    chat.on("message", lambda data: echoes.put_nowait(json.loads(data)))
    pc.addTransceiver("video", direction="recvonly")
    tracks: asyncio.Queue[MediaStreamTrack] = asyncio.Queue()
    pc.on("track", tracks.put_nowait)
    try:
        async with asyncio.timeout(CALL_S), SignalingClient(url) as client:
            assert await client.join(room, "caller") == ["bot"]
            assert pc.sctp is not None
            dtls = [t.receiver.transport for t in pc.getTransceivers()] + [pc.sctp.transport]
            for transport in dtls:
                connection = ice_connection(transport.transport)
                assert connection is not None
                guard_checks(connection, lambda host: host == address)
            with gather_on((address,)):
                answer = await offer_to_bot(client, pc)
            own = filter_candidates(answer, lambda c: c.ip == address)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=own, type="answer"))
            await connected.wait()
            await opened.wait()
            chat.send(json.dumps({"type": "chat", "text": f"hi from {address}"}))
            echo = await echoes.get()
            frame = await (await tracks.get()).recv()
            return {
                "offer": pc.localDescription.sdp,
                "answer": answer,
                "pair": nominated_pair(pc.sctp.transport),
                "echo": echo,
                "frame": [frame.width, frame.height],  # type: ignore[union-attr]
            }
    finally:
        await pc.close()


def main(argv: list[str]) -> int:
    url, room, address = argv
    print(json.dumps(asyncio.run(call_bot(url, room, address))), flush=True)  # noqa: T201
    return 0


# --- tests -------------------------------------------------------------------------------------


async def test_default_bot_is_reachable_from_a_real_interface_only_peer() -> None:
    address = own_ipv4()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to call the bot from")
    bot_args = ["--room", "r", "--user", "bot", "--size", "160x120", "--duration", "30"]
    async with SignalingServer() as server, spawn("peer", "--signal", server.url, *bot_args) as bot:
        assert await read_line(bot) == "bot joined room 'r' with nobody"
        caller = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__)),
            server.url,
            "r",
            address,
            cwd=ROOT,
            env=_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(CALL_S + 10):
                out, err = await caller.communicate()
        finally:
            if caller.returncode is None:
                caller.kill()
                await caller.communicate()
        assert caller.returncode == 0, err.decode()
        result = json.loads(out)

        # The caller gathered on the real interface only, and ICE connected there.
        assert {host for host, _ in candidates(result["offer"])} == {address}
        assert result["pair"] == ["host", result["pair"][1], "host", result["pair"][3]]
        assert result["pair"][1].rsplit(":", 1)[0] == address
        assert result["pair"][3].rsplit(":", 1)[0] == address
        # The bot gathered on loopback and on the real interface: host candidates only,
        # so no STUN (server-reflexive) and no TURN (relay) candidate.
        offered = candidates(result["answer"])
        assert {"127.0.0.1", address} <= {host for host, _ in offered}
        assert {kind for _, kind in offered} == {"host"}
        # It echoed the chat message and sent video over that path.
        assert result["echo"] == {
            "type": "chat",
            "text": f"hi from {address}",
            "echo": True,
            "from": "bot",
        }
        assert result["frame"] == [160, 120]

        code, _, bot_err = await stop(bot)
        assert code == 0, bot_err


async def test_loopback_only_bot_offers_loopback_candidates_only() -> None:
    bot_args = ["--room", "r", "--user", "bot", "--duration", "30", "--loopback-only"]
    async with SignalingServer() as server, spawn("peer", "--signal", server.url, *bot_args) as bot:
        assert await read_line(bot) == "bot joined room 'r' with nobody"
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.createDataChannel("chat")
        try:
            async with SignalingClient(server.url) as client:
                assert await client.join("r", "caller") == ["bot"]
                with gather_on(LOOPBACK):
                    answer = await offer_to_bot(client, pc)
        finally:
            await pc.close()
        assert candidates(answer) and set(candidates(answer)) == {("127.0.0.1", "host")}
        code, _, err = await stop(bot)
        assert code == 0, err


async def test_the_bot_has_no_ice_server_and_gathers_host_candidates_only() -> None:
    # aiortc with no iceServers would ask Google's STUN server: the bot must not.
    assert any("stun:" in str(s.urls) for s in RTCIceGatherer.getDefaultIceServers())
    real = aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True)
    async with SignalingServer() as server:
        args = _parser().parse_args(
            ["peer", "--signal", server.url, "--room", "r", "--user", "bot"]
        )
        bot = await _bot(args)
        assert bot.ice_servers == []
        async with bot, Peer("me", media=MediaSpec(width=160, height=120)) as me:
            await bot.join(server.url, "r")
            await me.join(server.url, "r")
            [session] = await bot.wait_connected(1, timeout=15)
            assert session.pc.sctp is not None
            ice = session.pc.sctp.transport.transport
            connection = ice_connection(ice)
            assert connection is not None
            assert connection.stun_server is None and connection.turn_server is None
            gathered = ice.iceGatherer.getLocalCandidates()
            assert {c.type for c in gathered} == {"host"}
            assert {c.ip for c in gathered} == {"127.0.0.1", *real}
            assert {kind for _, kind in candidates(session.pc.localDescription.sdp)} == {"host"}


def test_peer_help_documents_the_gathering(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping (argparse breaks lines at hyphens)
    with pytest.raises(SystemExit) as info:
        cli_main(["peer", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "host candidates on 127.0.0.1 and on every address of the machine's real" in text
    assert "--loopback-only: 127.0.0.1 only" in text
    assert "No STUN server is contacted" in text
    assert "--real-interfaces" not in text  # the default now; the option is gone


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
