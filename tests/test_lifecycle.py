"""State errors and concurrent close: a second ``close()`` waits for the first one's end.

Each object is closed by two callers at once; the second caller's return must find
the object fully closed (aiortc ``RTCPeerConnection.close``), not merely closing.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable

import pytest

from webrtclab import (
    ConfigurationError,
    InvalidStateError,
    Lab,
    MediaSpec,
    Peer,
    SignalingClient,
    SignalingServer,
    WebrtcLabError,
)
from webrtclab._tasks import CloseOnce
from webrtclab.netem.relay import Network
from webrtclab.turn import TurnServer

NO_MEDIA = MediaSpec(video="none", audio="none")


def test_invalid_state_is_its_own_error_not_a_bad_argument() -> None:
    assert issubclass(InvalidStateError, WebrtcLabError)
    assert issubclass(InvalidStateError, RuntimeError)
    assert not issubclass(InvalidStateError, ValueError)
    assert not issubclass(InvalidStateError, ConfigurationError)


async def _close_twice(close: Callable[[], Awaitable[None]], closed: Callable[[], bool]) -> None:
    """Start a close, call close again while it runs; the second must return after it ends."""
    first = asyncio.ensure_future(close())
    await asyncio.sleep(0)  # the first close is under way
    assert not first.done(), "the first close finished at once: nothing to wait for"
    await close()
    assert closed(), "the second close() returned before the first had finished"
    await first
    await close()  # and later calls return at once


async def test_close_once_makes_a_second_caller_wait() -> None:
    closing = CloseOnce()
    steps: list[str] = []

    async def close() -> None:
        steps.append("start")
        await asyncio.sleep(0.05)
        steps.append("end")

    await _close_twice(lambda: closing.run(close), lambda: steps == ["start", "end"])
    assert steps == ["start", "end"]


async def test_close_once_gives_errors_to_the_first_caller_and_survives_a_cancelled_waiter() -> (
    None
):
    closing = CloseOnce()
    release = asyncio.Event()

    async def close() -> None:
        await release.wait()
        raise OSError("socket gone")

    first = asyncio.ensure_future(closing.run(close))
    await asyncio.sleep(0)
    waiter = asyncio.ensure_future(closing.run(close))
    await asyncio.sleep(0)
    waiter.cancel()  # a cancelled waiter must not cancel the close it waits for
    with pytest.raises(asyncio.CancelledError):
        await waiter
    second = asyncio.ensure_future(closing.run(close))
    release.set()
    with pytest.raises(OSError, match="socket gone"):
        await first
    await second  # waited to the end; the error is the first caller's


async def test_signaling_server_second_close_waits() -> None:
    server = SignalingServer()
    await server.start()
    client = SignalingClient(server.url)
    await client.connect()
    await _close_twice(server.close, lambda: not server.started)
    await client.close()


async def test_signaling_client_second_close_waits() -> None:
    async with SignalingServer() as server:
        client = SignalingClient(server.url)
        await client.connect()
        await _close_twice(client.close, lambda: client.closed)


async def test_peer_second_close_waits_and_a_closed_peer_refuses_to_join() -> None:
    async with SignalingServer() as server:
        peer = Peer("alice", media=NO_MEDIA, host_addresses=("127.0.0.1",))
        await peer.join(server.url, "r")
        with pytest.raises(InvalidStateError, match='already joined room "r"'):
            await peer.join(server.url, "r")
        await _close_twice(peer.close, lambda: any(e[3] == "closed" for e in peer.events.rows))
        with pytest.raises(InvalidStateError, match="is closed"):
            await peer.join(server.url, "r")


async def test_lab_second_close_waits_to_the_end() -> None:
    lab = Lab(host_addresses=("127.0.0.1",))
    await lab.add_peer("alice", media=NO_MEDIA)
    await _close_twice(lab.close, lambda: not lab.server.started)
    with pytest.raises(InvalidStateError, match="closed"):
        await lab.add_peer("bob", media=NO_MEDIA)


async def test_network_second_close_waits_for_its_thread() -> None:
    before = set(threading.enumerate())
    network = Network()
    network.start()
    (thread,) = [t for t in set(threading.enumerate()) - before if t.name == "webrtclab-relay"]
    await _close_twice(network.close, lambda: not thread.is_alive())
    with pytest.raises(InvalidStateError, match="closed"):
        network.start()


async def test_turn_server_refuses_use_after_close() -> None:
    server = TurnServer(executable="no-such-turnserver")
    await asyncio.gather(server.close(), server.close())
    with pytest.raises(InvalidStateError, match="closed"):
        await server.start()


async def test_chromium_second_close_waits_for_the_browser() -> None:
    from webrtclab.browser import CHROMIUM_PATH, Chromium

    if not CHROMIUM_PATH.is_file() and not os.environ.get("CI"):
        pytest.skip("no Chromium (a failure in CI)")
    chromium = Chromium()
    await chromium.start()
    await _close_twice(chromium.close, lambda: chromium.browser is None)
    with pytest.raises(InvalidStateError, match="was closed"):
        await chromium.start()
