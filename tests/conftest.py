"""Shared fixtures for the signaling tests: a started server and WebSocket clients.

Everything binds to 127.0.0.1 on port 0; nothing here uses a fixed port or a
non-loopback address.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from webrtclab.signaling import SignalingServer

WAIT_S = 5.0  # generous upper bound for anything that should happen "soon"


# --- servers -------------------------------------------------------------------------

ServerFactory = Callable[..., Awaitable[SignalingServer]]


@pytest_asyncio.fixture
async def make_server() -> AsyncIterator[ServerFactory]:
    """A factory for started servers (keyword arguments go to SignalingServer).

    Without a grace period unless asked: the protocol tests expect peer-left as soon
    as a socket closes (the grace period has tests of its own).
    """
    servers: list[SignalingServer] = []

    async def factory(**kwargs: Any) -> SignalingServer:
        kwargs.setdefault("disconnect_grace_s", 0.0)
        server = SignalingServer("127.0.0.1", 0, **kwargs)
        servers.append(server)
        await server.start()
        return server

    yield factory
    for server in servers:
        await server.close()


@pytest_asyncio.fixture
async def server(make_server: ServerFactory) -> SignalingServer:
    """A started SignalingServer with default settings."""
    return await make_server()


# --- aiohttp WebSocket clients ---------------------------------------------------------


class WsClient:
    """A thin raw-JSON wrapper around an aiohttp client WebSocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, message: Any) -> None:
        """Send ``message`` as JSON text (a ``str`` is sent verbatim)."""
        text = message if isinstance(message, str) else json.dumps(message)
        await self.ws.send_str(text)

    async def recv(self, timeout: float = WAIT_S) -> dict[str, Any]:
        """The next JSON text message; fails the test on anything else."""
        async with asyncio.timeout(timeout):
            msg = await self.ws.receive()
        assert msg.type is aiohttp.WSMsgType.TEXT, f"expected a text frame, got {msg!r}"
        data = json.loads(msg.data)
        assert isinstance(data, dict)
        return data

    async def recv_until(self, mtype: str, timeout: float = WAIT_S) -> dict[str, Any]:
        """Skip messages until one of type ``mtype`` arrives (within ``timeout``)."""
        async with asyncio.timeout(timeout):
            while True:
                data = await self.recv(timeout=timeout)
                if data["type"] == mtype:
                    return data

    async def join(self, room_id: str, user_id: str) -> dict[str, Any]:
        await self.send({"type": "join", "roomId": room_id, "userId": user_id})
        reply = await self.recv()
        assert reply["type"] == "room-joined", reply
        return reply

    async def expect_error(self, code: str) -> dict[str, Any]:
        reply = await self.recv()
        assert reply["type"] == "error", reply
        assert reply["code"] == code, reply
        assert isinstance(reply["message"], str) and reply["message"]
        return reply

    async def expect_close(self, timeout: float = WAIT_S) -> int | None:
        """Read until the socket closes; return the close code.

        That is the code in the server's close frame when one arrived (the
        client's own close handshake may still fail afterwards, which aiohttp
        would record as 1006).
        """
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.ws.receive()
                if msg.type is aiohttp.WSMsgType.CLOSE:
                    return int(msg.data)
                if msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.ERROR,
                ):
                    return self.ws.close_code

    async def assert_silent(self) -> None:
        """Nothing is pending for this client.

        A round trip through the server (an ``invalid-json`` probe answered on
        this very socket) orders after everything the server sent before, so
        the first message back being the probe's error proves nothing else was
        queued for us.  (The probe itself is refused and changes no state.)
        """
        await self.send("probe: not json")
        reply = await self.recv()
        assert reply["type"] == "error" and reply["code"] == "invalid-json", reply

    async def close(self) -> None:
        await self.ws.close()


ClientFactory = Callable[..., Awaitable[WsClient]]


@pytest_asyncio.fixture
async def connect() -> AsyncIterator[ClientFactory]:
    """A factory for raw aiohttp WebSocket clients; all closed at teardown.

    ``await connect(server)`` opens ``server.url``; keyword arguments go to
    ``ClientSession.ws_connect`` (for example ``autoping=False``).
    """
    session = aiohttp.ClientSession()
    clients: list[WsClient] = []

    async def factory(server: SignalingServer, **kwargs: Any) -> WsClient:
        url = kwargs.pop("url", server.url)
        ws = await session.ws_connect(url, **kwargs)
        client = WsClient(ws)
        clients.append(client)
        return client

    try:
        yield factory
    finally:
        for client in clients:
            await client.ws.close()
        await session.close()


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp session for HTTP requests."""
    async with aiohttp.ClientSession() as session:
        yield session


# --- a raw TCP WebSocket that does not read ----------------------------------------------


class RawWebSocket:
    """A minimal hand-rolled WebSocket client on a plain socket.

    It only reads when asked to, so it can play a client that stops reading;
    ``rcvbuf`` shrinks the kernel receive buffer so that happens quickly.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._loop = asyncio.get_running_loop()
        self._buffer = b""

    @classmethod
    async def open(cls, server: SignalingServer, *, rcvbuf: int | None = None) -> RawWebSocket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        self = cls(sock)
        try:
            await self._loop.sock_connect(sock, ("127.0.0.1", server.port))
            key = base64.b64encode(os.urandom(16)).decode()
            request = (
                "GET /signal HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{server.port}\r\n"
                "Upgrade: websocket\r\n"
                "Connection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            )
            await self._loop.sock_sendall(sock, request.encode())
            head = await self._read_until(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101"), head
        except BaseException:
            sock.close()
            raise
        return self

    async def _fill(self) -> None:
        chunk = await self._loop.sock_recv(self.sock, 65536)
        if not chunk:
            raise ConnectionError("raw websocket: connection closed")
        self._buffer += chunk

    async def _read_until(self, marker: bytes) -> bytes:
        async with asyncio.timeout(WAIT_S):
            while marker not in self._buffer:
                await self._fill()
        head, _, self._buffer = self._buffer.partition(marker)
        return head

    async def _read_exactly(self, n: int) -> bytes:
        async with asyncio.timeout(WAIT_S):
            while len(self._buffer) < n:
                await self._fill()
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    @staticmethod
    def _frame(text: str) -> bytes:
        payload = text.encode()
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x81, 0x80 | length)
        elif length < 1 << 16:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, length)
        return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    async def send_text(self, text: str) -> None:
        await self.send_texts([text])

    async def send_texts(self, texts: list[str]) -> None:
        """Send several text frames in a single write (one TCP segment when small)."""
        await self._loop.sock_sendall(self.sock, b"".join(map(self._frame, texts)))

    async def recv_frame(self) -> tuple[int, bytes]:
        """Read one unfragmented, unmasked frame: (opcode, payload)."""
        first, second = await self._read_exactly(2)
        assert first & 0x80, "fragmented frames are not expected from the server"
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self._read_exactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self._read_exactly(8))
        return first & 0x0F, await self._read_exactly(length)

    async def recv_json(self) -> dict[str, Any]:
        """Read one text frame and decode it."""
        opcode, payload = await self.recv_frame()
        assert opcode == 0x1, f"expected a text frame, got opcode {opcode:#x}: {payload!r}"
        data = json.loads(payload)
        assert isinstance(data, dict)
        return data

    def close(self) -> None:
        self.sock.close()


RawSocketFactory = Callable[..., Awaitable[RawWebSocket]]


@pytest.fixture
def raw_sockets() -> Iterator[RawSocketFactory]:
    """Raw WebSockets opened through this fixture are closed at teardown.

    ``await raw_sockets(server, rcvbuf=4096)`` connects to ``server``.
    """
    opened: list[RawWebSocket] = []

    async def factory(server: SignalingServer, *, rcvbuf: int | None = None) -> RawWebSocket:
        raw = await RawWebSocket.open(server, rcvbuf=rcvbuf)
        opened.append(raw)
        return raw

    yield factory
    for raw in opened:
        raw.close()


@pytest.fixture
def outside() -> Iterator[socket.socket]:
    """An endpoint outside every NAT, on 127.0.0.1."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()
