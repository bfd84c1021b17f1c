"""A STUN binding responder on loopback, so peers behind emulated NATs learn srflx candidates.

:class:`StunServer` answers each Binding request (RFC 8489 section 7, formerly RFC
5389) with a success response carrying the request's source as XOR-MAPPED-ADDRESS
(section 14.2) and MAPPED-ADDRESS (section 14.1, for RFC 3489 clients); a peer
behind a :class:`~webrtclab.netem.natbox.NatBox` sees its NAT's public address and
port there, which ICE offers as a server-reflexive candidate (RFC 8445 section
5.1.1.2).  No authentication, no other method: a Binding request that is not one
is ignored.  It binds 127.0.0.1 (port 0 by default) and never sends elsewhere than to
loopback sources.

Why not the lab's coturn: coturn answers Binding requests too, but only when the
lab starts it (``turn=True``); the responder needs nothing installed, starts in
microseconds, and counts what it answered.  Peers behind NATs get it as their
``stun:`` ICE server (aiortc takes the first STUN server and the first TURN server of
its configuration).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from typing import Any, cast

from aioice import stun

from .exceptions import InvalidStateError

__all__ = ["StunServer"]

logger = logging.getLogger(__name__)


class _Responder(asyncio.DatagramProtocol):
    def __init__(self, server: StunServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (Python 3.11's selector datagram transport does not derive from DatagramTransport.)
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        response = self.server.respond(data, (addr[0], addr[1]))
        if response is not None and self.transport is not None:
            self.transport.sendto(response, addr)


class StunServer:
    """A STUN Binding responder on 127.0.0.1.

    Example::

        async with StunServer() as stun_server:
            ice_servers = [RTCIceServer(stun_server.uri)]
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the STUN responder binds loopback only, got {host!r}")
        self.host = host
        self.port = port
        self.requests = 0
        self.answered = 0
        self._transport: asyncio.DatagramTransport | None = None

    def __repr__(self) -> str:
        return f"StunServer({self.host}:{self.port}, answered={self.answered})"

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def uri(self) -> str:
        """The ``stun:`` URI of an ICE server entry."""
        if self._transport is None:
            raise InvalidStateError("the STUN responder is not started: its port is not known")
        return f"stun:{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    async def start(self) -> None:
        if self._transport is not None:
            return
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Responder(self), local_addr=(self.host, self.port)
        )
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]

    def respond(self, data: bytes, source: tuple[str, int]) -> bytes | None:
        """The response to one datagram from ``source`` (None: not a Binding request)."""
        try:
            request = stun.parse_message(data)
        except ValueError:
            return None
        if (
            request.message_method != stun.Method.BINDING
            or request.message_class != stun.Class.REQUEST
        ):
            return None
        self.requests += 1
        if not ipaddress.ip_address(source[0]).is_loopback:
            return None  # never answer (send) outside loopback
        response = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.RESPONSE,
            transaction_id=request.transaction_id,
        )
        response.attributes["XOR-MAPPED-ADDRESS"] = source
        response.attributes["MAPPED-ADDRESS"] = source
        response.add_fingerprint()
        self.answered += 1
        return bytes(response)

    async def close(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()

    async def __aenter__(self) -> StunServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
