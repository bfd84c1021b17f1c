"""webrtclab.compat.aiohttp on its own: the version gate, and the inline queue on a bare app.

A plain aiohttp application on 127.0.0.1 (no signaling server) prepares a
:class:`SignalSocket` and a real client talks to it: the patch must still do what
it claims on the pinned aiohttp.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp import web_ws as aiohttp_web_ws

from webrtclab.compat import CompatibilityError, check_version
from webrtclab.compat.aiohttp import CHECKED_VERSIONS, INLINE, InlineQueue, SignalSocket

WAIT_S = 5.0


def test_the_pinned_aiohttp_is_one_the_patch_was_checked_on() -> None:
    check_version("aiohttp", aiohttp.__version__, CHECKED_VERSIONS)
    assert INLINE, "the pinned aiohttp must allow inline messages"


@pytest.mark.parametrize("found", ["3.11.18", "3.15.0", "4.0.0a1"])
def test_another_version_is_refused_with_a_clear_error(found: str) -> None:
    with pytest.raises(CompatibilityError) as info:
        check_version("aiohttp", found, CHECKED_VERSIONS)
    message = str(info.value)
    assert f"aiohttp {found} is installed" in message and "3.14" in message


class Served(NamedTuple):
    inline: list[str]  # taken inline
    received: list[tuple[WSMsgType, Any]]  # read with receive()
    sockets: list[SignalSocket]
    ws: aiohttp.ClientWebSocketResponse


Serve = Callable[[Callable[[str], bool]], Awaitable[Served]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """A bare aiohttp app whose /ws handler prepares a SignalSocket with ``handler``."""
    cleanups: list[Callable[[], Awaitable[Any]]] = []

    async def start(handler: Callable[[str], bool]) -> Served:
        inline: list[str] = []
        received: list[tuple[WSMsgType, Any]] = []
        sockets: list[SignalSocket] = []

        def take(text: str) -> bool:
            if handler(text):
                inline.append(text)
                return True
            return False

        async def handle(request: web.Request) -> web.StreamResponse:
            ws = SignalSocket()
            await ws.prepare(request)
            sockets.append(ws)
            if ws.inline_queue is not None:
                ws.inline_queue.inline = take
            async for msg in ws:
                received.append((msg.type, msg.data))
                await ws.send_str(f"ack {len(inline)} {len(received)}")
            return ws

        app = web.Application()
        app.router.add_get("/ws", handle)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        cleanups.append(runner.cleanup)
        port = runner.addresses[0][1]
        session = aiohttp.ClientSession()
        cleanups.append(session.close)
        ws = await session.ws_connect(f"http://127.0.0.1:{port}/ws")
        cleanups.append(ws.close)
        return Served(inline, received, sockets, ws)

    yield start
    for cleanup in reversed(cleanups):
        await cleanup()


async def test_text_is_taken_inline_and_everything_else_is_received(serve: Serve) -> None:
    served = await serve(lambda text: not text.startswith("queue"))
    async with asyncio.timeout(WAIT_S):
        for text in ("one", "two", "three"):
            await served.ws.send_str(text)
        await served.ws.send_bytes(b"\x01")
        assert (await served.ws.receive()).data == "ack 3 1"
        # A message the handler declines takes the usual way, in order.
        await served.ws.send_str("queue me")
        assert (await served.ws.receive()).data == "ack 3 2"
    assert served.inline == ["one", "two", "three"]
    assert served.received == [(WSMsgType.BINARY, b"\x01"), (WSMsgType.TEXT, "queue me")]
    assert isinstance(served.sockets[0].inline_queue, InlineQueue)


async def test_aiohttps_own_queue_is_back_after_the_swap(serve: Serve) -> None:
    original = aiohttp_web_ws.WebSocketDataQueue
    assert original is not InlineQueue
    await serve(lambda text: True)
    assert aiohttp_web_ws.WebSocketDataQueue is original
    # A response that is not a SignalSocket keeps aiohttp's queue.
    assert not issubclass(original, InlineQueue)


class _DevBranchText(NamedTuple):
    """The shape of a text message on aiohttp's development branch: data first, type last."""

    data: str
    size: int
    extra: str | None = None
    type: WSMsgType = WSMsgType.TEXT


async def test_messages_are_read_by_field_name_not_position() -> None:
    class _Protocol:
        _reading_paused = False

    queue = InlineQueue(_Protocol(), 2**16, loop=asyncio.get_running_loop())
    taken: list[str] = []

    def take(text: str) -> bool:
        taken.append(text)
        return True

    queue.inline = take
    queue.feed_data(_DevBranchText("hello", 5))
    assert taken == ["hello"]
    # Not text: queued as aiohttp would, however the tuple is laid out.
    queue.feed_data(aiohttp.WSMessage(WSMsgType.BINARY, b"x", None), 1)
    assert taken == ["hello"] and len(queue._buffer) == 1
