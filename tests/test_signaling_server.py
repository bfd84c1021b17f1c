"""The signaling protocol and its refusals over real WebSockets on 127.0.0.1.

Every test runs a real SignalingServer on port 0.  Waits are bounded with
``asyncio.timeout``; "nothing was relayed" is proven with a round trip
(``WsClient.assert_silent``), never with a sleep.
"""

from __future__ import annotations

import asyncio
import json
import math
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from conftest import (
    WAIT_S,
    ClientFactory,
    RawSocketFactory,
    RawWebSocket,
    ServerFactory,
    WsClient,
)
from helpers import wait_until

from webrtclab.exceptions import (
    ConfigurationError,
    InvalidStateError,
    LabTimeoutError,
    SignalingError,
    WebrtcLabError,
)
from webrtclab.signaling import SignalingClient, SignalingServer
from webrtclab.signaling import messages as m

# Starts a stand-in server answering every message with the given replies; returns its URL.
FakeServer = Callable[[list[str]], Awaitable[str]]

SDP = {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"}


def offer(to: str, **extra: Any) -> dict[str, Any]:
    return {"type": "offer", "to": to, "sdp": SDP, **extra}


@dataclass
class Members:
    """alice and bob in room "r", carol in room "s", x connected but not joined."""

    server: SignalingServer
    alice: WsClient
    bob: WsClient
    carol: WsClient
    x: WsClient

    @property
    def everyone(self) -> list[WsClient]:
        return [self.alice, self.bob, self.carol, self.x]


async def populate(server: SignalingServer, connect: ClientFactory) -> Members:
    alice, bob, carol, x = [await connect(server) for _ in range(4)]
    await alice.join("r", "alice")
    assert (await bob.join("r", "bob"))["peers"] == ["alice"]
    assert await alice.recv() == {"type": "peer-joined", "peerId": "bob"}
    await carol.join("s", "carol")
    assert server.dispatcher.rooms() == {"r": ["alice", "bob"], "s": ["carol"]}
    return Members(server, alice, bob, carol, x)


@pytest_asyncio.fixture
async def members(server: SignalingServer, connect: ClientFactory) -> Members:
    return await populate(server, connect)


async def assert_refused(
    ms: Members, offender: WsClient, payload: Any, code: str, *, binary: bool = False
) -> None:
    """``payload`` from ``offender`` is refused with ``code``: nothing relayed, no change."""
    before = ms.server.dispatcher.rooms()
    if binary:
        await offender.ws.send_bytes(payload)
    else:
        await offender.send(payload)
    await offender.expect_error(code)
    assert ms.server.dispatcher.rooms() == before
    for client in ms.everyone:  # the offender included: it got nothing else
        await client.assert_silent()
    assert ms.server.dispatcher.rooms() == before


async def assert_relay_works(sender: WsClient, receiver: WsClient, sender_id: str, to: str) -> None:
    await sender.send(offer(to))
    assert await receiver.recv() == {"type": "offer", "from": sender_id, "to": to, "sdp": SDP}


# --- lifecycle and configuration -------------------------------------------------------------


async def test_start_on_port_zero_binds_a_real_port(http: aiohttp.ClientSession) -> None:
    server = SignalingServer()
    assert server.port == 0 and not server.started
    try:
        await server.start()
        assert server.started
        assert 0 < server.port <= 65535
        assert server.url == f"ws://127.0.0.1:{server.port}/signal"
        assert server.http_url == f"http://127.0.0.1:{server.port}"
        async with http.get(server.http_url + "/healthz") as response:
            assert response.status == 200
        port = server.port
        await server.start()  # idempotent
        assert server.port == port
    finally:
        await server.close()
    assert not server.started


async def test_close_is_idempotent_and_closes_clients(
    make_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await make_server()
    alice, x = await connect(server), await connect(server)
    await alice.join("r", "alice")
    await x.assert_silent()
    await server.close()
    assert await alice.expect_close() == aiohttp.WSCloseCode.GOING_AWAY
    assert await x.expect_close() == aiohttp.WSCloseCode.GOING_AWAY
    assert not server.started
    await server.close()
    await server.close()
    with pytest.raises(InvalidStateError, match="closed"):
        await server.start()
    with pytest.raises(aiohttp.ClientConnectionError):
        await connect(server)


async def test_close_without_start_is_fine() -> None:
    server = SignalingServer()
    await server.close()
    await server.close()
    assert not server.started


async def test_embedded_in_a_running_loop() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        async with SignalingServer() as server:
            assert server.started
            async with SignalingClient(server.url) as alice, SignalingClient(server.url) as bob:
                assert await alice.join("room", "alice") == []
                assert await bob.join("room", "bob") == ["alice"]
                assert await alice.recv() == m.PeerJoined(peerId="bob")
            url = server.url
        assert not server.started
        assert ticks > 0  # the loop kept running other tasks meanwhile
        client = SignalingClient(url)
        with pytest.raises(SignalingError, match="cannot connect"):
            await client.connect()
        await client.close()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_two_servers_in_one_loop(make_server: ServerFactory, connect: ClientFactory) -> None:
    one, two = await make_server(), await make_server()
    assert one.port != two.port
    a, b = await connect(one), await connect(two)
    await a.join("r", "same-id")
    await b.join("r", "same-id")  # separate servers, separate rosters
    assert one.dispatcher.rooms() == two.dispatcher.rooms() == {"r": ["same-id"]}


async def test_port_in_use_raises_configuration_error(make_server: ServerFactory) -> None:
    first = await make_server()
    second = SignalingServer("127.0.0.1", first.port)
    with pytest.raises(ConfigurationError, match=str(first.port)):
        await second.start()
    assert not second.started
    await second.close()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"port": -1},
        {"port": 65536},
        {"max_message_bytes": 1023},
        {"max_message_bytes": 0},
        {"heartbeat_s": 0},
        {"heartbeat_s": -1.0},
        {"heartbeat_s": math.nan},
        {"max_queue": 0},
        {"token": ""},
        {"max_room_size": 0},
        {"rate": -1.0},
        {"rate": 10.0, "burst": 0.5},
        {"disconnect_grace_s": -1.0},
        {"disconnect_grace_s": math.nan},
        {"turn": "turn:127.0.0.1:3478"},
    ],
    ids=lambda kwargs: ",".join(f"{k}={v!r}" for k, v in kwargs.items()),
)
def test_bad_constructor_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError) as info:
        SignalingServer(**kwargs)
    assert isinstance(info.value, ValueError) and isinstance(info.value, WebrtcLabError)


def test_url_maps_wildcard_hosts_to_loopback() -> None:
    # Only the URL is computed here; nothing is bound.
    assert SignalingServer("0.0.0.0", 1234).url == "ws://127.0.0.1:1234/signal"
    assert SignalingServer("", 1234).http_url == "http://127.0.0.1:1234"
    assert SignalingServer("::1", 1234).url == "ws://[::1]:1234/signal"


async def test_healthz_counts_clients_and_users(
    server: SignalingServer, connect: ClientFactory, http: aiohttp.ClientSession
) -> None:
    async def health() -> Any:
        async with http.get(server.http_url + "/healthz") as response:
            assert response.status == 200
            assert response.content_type == "application/json"
            return await response.json()

    assert await health() == {"clients": 0, "users": 0}
    ms = await populate(server, connect)
    await ms.x.assert_silent()
    assert await health() == {"clients": 4, "users": 3}
    await ms.alice.close()
    assert await ms.bob.recv() == {"type": "peer-left", "peerId": "alice"}
    assert await health() == {"clients": 3, "users": 2}


# --- the protocol ---------------------------------------------------------------------------


async def test_join_room_joined_and_peer_joined(
    server: SignalingServer, connect: ClientFactory
) -> None:
    alice, bob, carol, dave = [await connect(server) for _ in range(4)]
    assert await alice.join("r", "alice") == {
        "type": "room-joined",
        "peers": [],
        "roomId": "r",
        "userId": "alice",
    }
    assert await bob.join("r", "bob") == {
        "type": "room-joined",
        "peers": ["alice"],
        "roomId": "r",
        "userId": "bob",
    }
    assert await alice.recv() == {"type": "peer-joined", "peerId": "bob"}
    assert (await carol.join("r", "carol"))["peers"] == ["alice", "bob"]
    assert await alice.recv() == {"type": "peer-joined", "peerId": "carol"}
    assert await bob.recv() == {"type": "peer-joined", "peerId": "carol"}
    # Another room sees nothing of this one, and this one nothing of it.
    assert (await dave.join("elsewhere", "dave"))["peers"] == []
    for client in (alice, bob, carol, dave):
        await client.assert_silent()
    assert server.dispatcher.rooms() == {"r": ["alice", "bob", "carol"], "elsewhere": ["dave"]}


async def test_offer_answer_and_candidates_are_relayed_with_server_set_from(
    members: Members,
) -> None:
    alice, bob = members.alice, members.bob
    await alice.send(offer("bob", **{"from": "carol", "extra": [1, 2]}))
    assert await bob.recv() == {"type": "offer", "from": "alice", "to": "bob", "sdp": SDP}

    answer = {"type": "answer", "sdp": "v=0\r\n"}
    await bob.send({"type": "answer", "to": "alice", "sdp": answer, "from": "alice"})
    assert await alice.recv() == {"type": "answer", "from": "bob", "to": "alice", "sdp": answer}

    candidate = {
        "candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
        "usernameFragment": "frag",
    }
    await alice.send({"type": "ice-candidate", "to": "bob", "candidate": candidate, "from": "x"})
    assert await bob.recv() == {
        "type": "ice-candidate",
        "from": "alice",
        "to": "bob",
        "candidate": candidate,
    }
    # End of candidates.
    await bob.send({"type": "ice-candidate", "to": "alice", "candidate": None})
    assert await alice.recv() == {
        "type": "ice-candidate",
        "from": "bob",
        "to": "alice",
        "candidate": None,
    }
    for client in members.everyone:
        await client.assert_silent()


async def test_large_sdp_under_the_limits_is_relayed(members: Members) -> None:
    sdp = {"type": "offer", "sdp": "a=x\r\n" * (m.MAX_SDP_LENGTH // 5)}
    await members.alice.send({"type": "offer", "to": "bob", "sdp": sdp})
    assert (await members.bob.recv())["sdp"] == sdp


async def test_relay_is_not_seen_by_third_parties(members: Members, connect: ClientFactory) -> None:
    dave = await connect(members.server)
    await dave.join("r", "dave")
    await members.alice.recv_until("peer-joined")
    await members.bob.recv_until("peer-joined")
    await assert_relay_works(members.alice, members.bob, "alice", "bob")
    for client in [*members.everyone, dave]:
        await client.assert_silent()


async def test_leave_sends_peer_left_and_allows_rejoining(members: Members) -> None:
    alice, bob, carol = members.alice, members.bob, members.carol
    await alice.send({"type": "leave", "roomId": "r"})
    assert await bob.recv() == {"type": "peer-left", "peerId": "alice"}
    assert members.server.dispatcher.rooms() == {"r": ["bob"], "s": ["carol"]}
    await alice.assert_silent()  # no acknowledgement of a leave
    await carol.assert_silent()
    # After leaving, the socket is back to "not joined"...
    await alice.send(offer("bob"))
    await alice.expect_error("not-joined")
    # ...and can join again, elsewhere.
    assert (await alice.join("s", "alice"))["peers"] == ["carol"]
    assert await carol.recv() == {"type": "peer-joined", "peerId": "alice"}
    await assert_relay_works(carol, alice, "carol", "alice")
    # The last one out deletes the room.
    await bob.send({"type": "leave", "roomId": "r"})
    await bob.assert_silent()
    assert members.server.dispatcher.rooms() == {"s": ["carol", "alice"]}


async def test_socket_close_sends_peer_left(members: Members) -> None:
    await members.alice.close()
    assert await members.bob.recv() == {"type": "peer-left", "peerId": "alice"}
    assert members.server.dispatcher.rooms() == {"r": ["bob"], "s": ["carol"]}
    await members.carol.assert_silent()
    # The user id is free again.
    assert (await members.x.join("r", "alice"))["peers"] == ["bob"]
    assert await members.bob.recv() == {"type": "peer-joined", "peerId": "alice"}


async def test_a_dropped_socket_is_held_for_the_grace_period_and_resumed(
    make_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await make_server(disconnect_grace_s=0.4)
    ms = await populate(server, connect)
    await ms.alice.close()  # no leave: the socket just went
    await ms.bob.assert_silent()  # within the grace period nobody hears of it
    assert server.dispatcher.away() == ["alice"]
    # alice is back on a new socket: it takes her place, unnoticed by bob.
    assert (await ms.x.join("r", "alice"))["peers"] == ["bob"]
    await asyncio.sleep(0.5)  # past the grace period: the hold's timer changes nothing
    await ms.bob.assert_silent()
    assert server.dispatcher.rooms() == {"r": ["alice", "bob"], "s": ["carol"]}
    await assert_relay_works(ms.bob, ms.x, "bob", "alice")
    # Not coming back: peer-left when the grace period ends.
    await ms.carol.close()
    assert server.dispatcher.away() == ["carol"]
    await wait_until(lambda: server.dispatcher.away() == [], 2.0)  # the hold's timer
    assert server.dispatcher.rooms() == {"r": ["alice", "bob"]}


async def test_abrupt_disconnect_sends_peer_left(
    members: Members, raw_sockets: RawSocketFactory
) -> None:
    raw: RawWebSocket = await raw_sockets(members.server)
    await raw.send_text(json.dumps({"type": "join", "roomId": "r", "userId": "raw"}))
    assert (await raw.recv_json())["peers"] == ["alice", "bob"]
    assert await members.alice.recv() == {"type": "peer-joined", "peerId": "raw"}
    assert await members.bob.recv() == {"type": "peer-joined", "peerId": "raw"}
    raw.close()  # no close frame: the TCP connection just goes away
    assert await members.alice.recv() == {"type": "peer-left", "peerId": "raw"}
    assert await members.bob.recv() == {"type": "peer-left", "peerId": "raw"}
    assert members.server.dispatcher.rooms() == {"r": ["alice", "bob"], "s": ["carol"]}


async def test_closing_an_unjoined_socket_changes_nothing(members: Members) -> None:
    await members.x.close()
    for client in (members.alice, members.bob, members.carol):
        await client.assert_silent()
    assert members.server.dispatcher.rooms() == {"r": ["alice", "bob"], "s": ["carol"]}


# --- refusals ---------------------------------------------------------------------------------

OVERSIZED_ID = "i" * (m.MAX_ID_LENGTH + 1)

# (offender, payload, code): the offender is "alice" (joined in r) or "x" (not joined).
REFUSALS: list[tuple[str, Any, str]] = [
    ("x", "not json", "invalid-json"),
    ("alice", "{", "invalid-json"),
    ("alice", "[", "invalid-json"),
    ("alice", '{"type": "offer", "to": "bob", ', "invalid-json"),
    ("x", {"type": "hello"}, "unknown-type"),
    ("alice", {"type": "peer-joined", "peerId": "bob"}, "unknown-type"),
    ("x", [], "invalid-message"),
    ("x", {}, "invalid-message"),
    ("x", {"type": "join", "roomId": "r"}, "invalid-message"),
    ("x", {"type": "join", "roomId": 1, "userId": "x"}, "invalid-message"),
    ("x", {"type": "join", "roomId": "r", "userId": ""}, "invalid-message"),
    ("x", {"type": "join", "roomId": "r", "userId": OVERSIZED_ID}, "invalid-message"),
    ("x", {"type": "join", "roomId": OVERSIZED_ID, "userId": "x"}, "invalid-message"),
    ("x", {"type": "join", "roomId": "r", "userId": "x\n"}, "invalid-message"),
    ("x", {"type": "join", "roomId": "r", "userId": "x\x1b[31m"}, "invalid-message"),
    ("x", {"type": "join", "roomId": "r\x00", "userId": "x"}, "invalid-message"),
    ("alice", {"type": "offer", "to": "bob"}, "invalid-message"),
    ("alice", {"type": "offer", "to": "bob", "sdp": "v=0"}, "invalid-message"),
    ("alice", {"type": "offer", "to": "bob", "sdp": {"type": "nope"}}, "invalid-message"),
    ("alice", {"type": "answer", "to": 7, "sdp": SDP}, "invalid-message"),
    ("alice", {"type": "ice-candidate", "to": "bob"}, "invalid-message"),
    ("alice", {"type": "ice-candidate", "to": "bob", "candidate": 3}, "invalid-message"),
    ("alice", {"type": "leave"}, "invalid-message"),
    (
        "alice",
        {"type": "offer", "to": "bob", "sdp": {"type": "offer", "sdp": "x" * 200_000}},
        "invalid-message",
    ),
    ("x", offer("alice"), "not-joined"),
    ("x", {"type": "answer", "to": "alice", "sdp": SDP}, "not-joined"),
    ("x", {"type": "ice-candidate", "to": "alice", "candidate": None}, "not-joined"),
    ("x", {"type": "leave", "roomId": "r"}, "not-joined"),
    ("alice", {"type": "join", "roomId": "r", "userId": "alice"}, "already-joined"),
    ("alice", {"type": "join", "roomId": "s", "userId": "alice2"}, "already-joined"),
    ("x", {"type": "join", "roomId": "r", "userId": "alice"}, "user-id-taken"),
    ("x", {"type": "join", "roomId": "elsewhere", "userId": "carol"}, "user-id-taken"),
    ("alice", {"type": "leave", "roomId": "s"}, "not-in-room"),
    ("alice", {"type": "leave", "roomId": "nowhere"}, "not-in-room"),
    ("alice", offer("carol"), "unknown-peer"),
    ("alice", offer("nobody"), "unknown-peer"),
    ("alice", {"type": "ice-candidate", "to": "carol", "candidate": None}, "unknown-peer"),
    ("alice", offer("alice"), "invalid-target"),
    ("alice", {"type": "answer", "to": "alice", "sdp": SDP}, "invalid-target"),
]


@pytest.mark.parametrize(
    ("who", "payload", "code"),
    REFUSALS,
    ids=[f"{code}-{i}" for i, (_, _, code) in enumerate(REFUSALS)],
)
async def test_refusal(members: Members, who: str, payload: Any, code: str) -> None:
    offender = getattr(members, who)
    await assert_refused(members, offender, payload, code)
    # The offender's socket stays usable, and so does the room.
    await assert_relay_works(members.alice, members.bob, "alice", "bob")
    await assert_relay_works(members.bob, members.alice, "bob", "alice")
    if who == "x":
        await members.x.join("s", "x")
        assert await members.carol.recv() == {"type": "peer-joined", "peerId": "x"}


async def test_user_id_taken_keeps_the_original(members: Members) -> None:
    await assert_refused(
        members, members.x, {"type": "join", "roomId": "r", "userId": "bob"}, "user-id-taken"
    )
    await assert_relay_works(members.alice, members.bob, "alice", "bob")
    await assert_relay_works(members.bob, members.alice, "bob", "alice")
    # Once the original is gone, the id can be used again.
    await members.bob.close()
    assert await members.alice.recv() == {"type": "peer-left", "peerId": "bob"}
    await members.x.join("r", "bob")
    assert await members.alice.recv() == {"type": "peer-joined", "peerId": "bob"}
    await assert_relay_works(members.x, members.alice, "bob", "alice")


@pytest.mark.parametrize("payload", [b"", b"\x00\x01binary", b'{"type": "leave", "roomId": "r"}'])
async def test_binary_frame_is_refused(members: Members, payload: bytes) -> None:
    await assert_refused(members, members.alice, payload, "binary-frame", binary=True)
    await assert_refused(members, members.x, payload, "binary-frame", binary=True)
    await assert_relay_works(members.alice, members.bob, "alice", "bob")


async def test_room_full(make_server: ServerFactory, connect: ClientFactory) -> None:
    server = await make_server(max_room_size=2)
    ms = await populate(server, connect)
    await assert_refused(ms, ms.x, {"type": "join", "roomId": "r", "userId": "xavier"}, "room-full")
    # A full room does not affect others, and a freed seat can be taken.
    await ms.x.join("s", "xavier")
    assert await ms.carol.recv() == {"type": "peer-joined", "peerId": "xavier"}
    await ms.x.send({"type": "leave", "roomId": "s"})
    assert await ms.carol.recv() == {"type": "peer-left", "peerId": "xavier"}
    await ms.bob.close()
    assert await ms.alice.recv() == {"type": "peer-left", "peerId": "bob"}
    assert (await ms.x.join("r", "xavier"))["peers"] == ["alice"]


async def test_oversized_message_closes_only_that_socket(
    members: Members, connect: ClientFactory
) -> None:
    alice, bob = members.alice, members.bob
    big = json.dumps(offer("bob", sdp={"type": "offer", "sdp": "x" * 3_000_000}))
    assert len(big) > 3_000_000 > members.server.max_message_bytes
    await alice.send(big)
    assert await alice.expect_close() == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    # Nothing was relayed; the sender is gone from its room.
    assert await bob.recv() == {"type": "peer-left", "peerId": "alice"}
    assert members.server.dispatcher.rooms() == {"r": ["bob"], "s": ["carol"]}
    # Everyone else is still served, and the room still relays.
    dave = await connect(members.server)
    assert (await dave.join("r", "dave"))["peers"] == ["bob"]
    assert await bob.recv() == {"type": "peer-joined", "peerId": "dave"}
    await assert_relay_works(bob, dave, "bob", "dave")
    await assert_relay_works(dave, bob, "dave", "bob")
    for client in (bob, members.carol, members.x, dave):
        await client.assert_silent()


async def test_message_just_over_the_limit_closes_with_1009(
    make_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await make_server(max_message_bytes=1024)
    ms = await populate(server, connect)
    await ms.alice.send(offer("bob", sdp={"type": "offer", "sdp": "y" * 1100}))
    assert await ms.alice.expect_close() == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    assert await ms.bob.recv() == {"type": "peer-left", "peerId": "alice"}
    await ms.x.join("r", "x")
    assert await ms.bob.recv() == {"type": "peer-joined", "peerId": "x"}
    await assert_relay_works(ms.bob, ms.x, "bob", "x")


async def test_rate_limit_sends_an_error_then_closes_with_1008(
    make_server: ServerFactory, connect: ClientFactory
) -> None:
    # 3 messages of burst and practically no refill: the 4th message is over the limit.
    server = await make_server(rate=0.001, burst=3)
    alice, bob = await connect(server), await connect(server)
    await alice.join("r", "alice")  # 1
    await bob.join("r", "bob")
    assert await alice.recv() == {"type": "peer-joined", "peerId": "bob"}
    await assert_relay_works(alice, bob, "alice", "bob")  # 2
    await assert_relay_works(alice, bob, "alice", "bob")  # 3
    await alice.send(offer("bob"))  # 4: refused, not relayed
    await alice.expect_error("rate-limited")
    assert await alice.expect_close() == aiohttp.WSCloseCode.POLICY_VIOLATION
    # The first thing bob hears of is alice leaving, not a fourth offer.
    assert await bob.recv() == {"type": "peer-left", "peerId": "alice"}
    assert server.dispatcher.rooms() == {"r": ["bob"]}


async def test_rate_zero_disables_the_limit(
    make_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await make_server(rate=0, burst=1)
    alice, bob = await connect(server), await connect(server)
    await alice.join("r", "alice")
    await bob.join("r", "bob")
    assert await alice.recv() == {"type": "peer-joined", "peerId": "bob"}
    for _ in range(50):
        await alice.send(offer("bob"))
    for _ in range(50):
        assert (await bob.recv())["type"] == "offer"
    await alice.assert_silent()


# --- authentication --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("", {}),
        ("?token=wrong", {}),
        ("?token=", {}),
        ("?token=s3cret-but-longer", {}),
        ("", {"Authorization": "Bearer wrong"}),
        ("", {"Authorization": "s3cret"}),
        ("", {"Authorization": "Basic s3cret"}),
        ("?token=s3cret", {"Authorization": "Bearer wrong"}),  # the header wins
    ],
)
async def test_missing_or_wrong_token_is_401(
    make_server: ServerFactory,
    connect: ClientFactory,
    http: aiohttp.ClientSession,
    query: str,
    headers: dict[str, str],
) -> None:
    server = await make_server(token="s3cret")
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await connect(server, url=server.url + query, headers=headers)
    assert info.value.status == 401
    async with http.get(server.http_url + "/signal" + query, headers=headers) as response:
        assert response.status == 401
    assert server.dispatcher.rooms() == {}
    assert server.dispatcher.user_count == 0


async def test_right_token_is_accepted(make_server: ServerFactory, connect: ClientFactory) -> None:
    server = await make_server(token="s3cret")
    alice = await connect(server, url=server.url + "?token=s3cret")
    bob = await connect(server, headers={"Authorization": "Bearer s3cret"})
    await alice.join("r", "alice")
    await bob.join("r", "bob")
    assert await alice.recv() == {"type": "peer-joined", "peerId": "bob"}
    await assert_relay_works(bob, alice, "bob", "alice")
    async with SignalingClient(server.url, token="s3cret") as carol:
        assert await carol.join("r", "carol") == ["alice", "bob"]
    bad = SignalingClient(server.url, token="nope")
    with pytest.raises(SignalingError, match="401"):
        await bad.connect()
    await bad.close()


# --- slow and dead clients ---------------------------------------------------------------------


async def test_client_that_never_reads_is_dropped(
    make_server: ServerFactory, connect: ClientFactory, raw_sockets: RawSocketFactory
) -> None:
    # A long heartbeat, so only the queue limit can drop the slow client.
    server = await make_server(max_queue=4, heartbeat_s=60)
    alice, bob = await connect(server), await connect(server)
    await alice.join("r", "alice")
    slow: RawWebSocket = await raw_sockets(server, rcvbuf=4096)
    await slow.send_text(json.dumps({"type": "join", "roomId": "r", "userId": "slow"}))
    assert (await slow.recv_json())["peers"] == ["alice"]  # then it stops reading
    assert await alice.recv() == {"type": "peer-joined", "peerId": "slow"}
    await bob.join("r", "bob")
    assert await alice.recv() == {"type": "peer-joined", "peerId": "bob"}

    big = json.dumps(offer("slow", sdp={"type": "offer", "sdp": "z" * 100_000}))
    sent = 0
    async with asyncio.timeout(WAIT_S * 2):
        while True:
            # Each round trip (offer, then a probe answered on bob's own socket)
            # proves the server keeps serving bob while slow's queue fills up.
            await bob.send(big)
            await bob.send("probe")
            sent += 1
            seen: list[dict[str, Any]] = []
            while not seen or seen[-1]["type"] != "error" or seen[-1]["code"] != "invalid-json":
                seen.append(await bob.recv())
            if {"type": "peer-left", "peerId": "slow"} in seen:
                break
            assert sent < 1000, "the slow client was never dropped"
            # While slow is not yet dropped, the rest of the room is unaffected.
            if sent % 10 == 0:
                await assert_relay_works(alice, bob, "alice", "bob")
    assert await alice.recv() == {"type": "peer-left", "peerId": "slow"}
    assert server.dispatcher.rooms() == {"r": ["alice", "bob"]}
    await assert_relay_works(alice, bob, "alice", "bob")
    await assert_relay_works(bob, alice, "bob", "alice")
    # What the server had already handed to the kernel is still there; the
    # last frame is a close with code 1013 (try again later).
    async with asyncio.timeout(WAIT_S * 2):
        while True:
            opcode, payload = await slow.recv_frame()
            if opcode == 0x8:
                break
            assert opcode == 0x1
    assert struct.unpack("!H", payload[:2])[0] == aiohttp.WSCloseCode.TRY_AGAIN_LATER


async def test_burst_to_a_reading_client_is_not_dropped(
    make_server: ServerFactory, connect: ClientFactory, raw_sockets: RawSocketFactory
) -> None:
    """Replies go straight to a socket that keeps up: a burst larger than max_queue
    arrives whole and in order; only a client that stops reading overflows its queue."""
    server = await make_server(max_queue=4, heartbeat_s=60)
    alice = await connect(server)
    await alice.join("r", "alice")
    raw: RawWebSocket = await raw_sockets(server)
    await raw.send_texts(
        [json.dumps({"type": "join", "roomId": "r", "userId": "raw"})] + ["junk"] * 5
    )
    replies = []
    for _ in range(6):
        opcode, payload = await raw.recv_frame()
        assert opcode == 0x1, f"expected text, got {opcode:#x} {payload!r}"
        replies.append(json.loads(payload))
    assert replies[0]["type"] == "room-joined"
    assert [r["code"] for r in replies[1:]] == ["invalid-json"] * 5
    assert await alice.recv() == {"type": "peer-joined", "peerId": "raw"}
    assert server.dispatcher.rooms() == {"r": ["alice", "raw"]}


async def test_heartbeat_drops_half_open_sockets(
    make_server: ServerFactory, connect: ClientFactory
) -> None:
    server = await make_server(heartbeat_s=0.4)
    alice = await connect(server)  # autoping: answers pings while it waits in receive()
    await alice.join("r", "alice")
    mute = await connect(server, autoping=False)  # never answers a ping
    await mute.send({"type": "join", "roomId": "r", "userId": "mute"})
    assert await alice.recv() == {"type": "peer-joined", "peerId": "mute"}
    # A ping after 0.4 s of silence, 0.2 s for the pong: dropped well within the timeout.
    assert await alice.recv(timeout=WAIT_S) == {"type": "peer-left", "peerId": "mute"}
    assert server.dispatcher.rooms() == {"r": ["alice"]}
    await alice.assert_silent()  # the responsive client is still connected


# --- the Python client ----------------------------------------------------------------------


async def test_signaling_client_flow(server: SignalingServer) -> None:
    async with SignalingClient(server.url) as alice, SignalingClient(server.url) as bob:
        assert await alice.join("r", "alice") == []
        assert (alice.user_id, alice.room_id) == ("alice", "r")
        assert await bob.join("r", "bob") == ["alice"]
        assert await alice.recv() == m.PeerJoined(peerId="bob")
        description = m.SessionDescription(type="offer", sdp="v=0")
        await bob.send(m.Offer(to="alice", sdp=description))
        assert await alice.recv() == m.RelayedOffer(from_="bob", to="alice", sdp=description)
        await alice.send(m.IceCandidate(to="bob", candidate=None))
        assert await bob.recv() == m.RelayedIceCandidate(from_="alice", to="bob", candidate=None)
        await bob.send(m.Offer(to="nobody", sdp=description))
        reply = await bob.recv()
        assert isinstance(reply, m.Error) and reply.code == "unknown-peer"
        await alice.send(m.Leave(roomId="r"))
        assert await bob.recv() == m.PeerLeft(peerId="alice")
        assert not alice.closed
    assert alice.closed and bob.closed
    await alice.close()  # idempotent


async def test_signaling_client_join_refused(server: SignalingServer) -> None:
    async with SignalingClient(server.url) as alice, SignalingClient(server.url) as other:
        await alice.join("r", "alice")
        with pytest.raises(SignalingError) as info:
            await other.join("r", "alice")
        assert info.value.code == "user-id-taken"
        assert other.user_id is None and other.room_id is None
        with pytest.raises(SignalingError) as info:
            await other.join("r", OVERSIZED_ID)
        assert info.value.code == "invalid-message"
    assert server.dispatcher.rooms() == {}


async def test_signaling_client_not_connected() -> None:
    client = SignalingClient("ws://127.0.0.1:9/signal")
    assert client.closed
    with pytest.raises(SignalingError):
        await client.send(m.Leave(roomId="r"))
    with pytest.raises(SignalingError):
        await client.recv()
    await client.close()


async def test_signaling_client_sees_server_shutdown(make_server: ServerFactory) -> None:
    server = await make_server()
    async with SignalingClient(server.url) as alice:
        await alice.connect()  # idempotent
        await alice.join("r", "alice")
        await server.close()
        with pytest.raises(SignalingError, match="closed"):
            async with asyncio.timeout(WAIT_S):
                await alice.recv()
        assert alice.closed
        with pytest.raises(SignalingError):
            await alice.send(m.Leave(roomId="r"))


@pytest_asyncio.fixture
async def fake_server() -> AsyncIterator[FakeServer]:
    """A stand-in signaling server that answers every message with canned replies."""
    runners: list[web.AppRunner] = []

    async def start(replies: list[str]) -> str:
        async def handler(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for _ in ws:
                for reply in replies:
                    await ws.send_str(reply)
            return ws

        app = web.Application()
        app.router.add_get("/signal", handler)
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return f"ws://{host}:{port}/signal"

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_signaling_client_join_timeout(fake_server: FakeServer) -> None:
    url = await fake_server([])
    async with SignalingClient(url) as client:
        with pytest.raises(LabTimeoutError, match="no answer"):
            await client.join("r", "alice", timeout=0.2)
        assert client.user_id is None


async def test_signaling_client_unexpected_join_reply(fake_server: FakeServer) -> None:
    url = await fake_server(['{"type": "peer-joined", "peerId": "x"}'])
    async with SignalingClient(url) as client:
        with pytest.raises(SignalingError, match="expected room-joined"):
            await client.join("r", "alice")


async def test_signaling_client_skips_undecodable_messages(
    fake_server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = await fake_server(
        ["not json", '{"type": "mystery"}', '{"type": "room-joined", "peers": ["bob"]}']
    )
    async with SignalingClient(url) as client:
        assert await client.join("r", "alice") == ["bob"]
    assert sum("ignoring server message" in r.getMessage() for r in caplog.records) == 2
