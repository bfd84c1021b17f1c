"""A Python client for the signaling protocol (used by lab peers and bots)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from dataclasses import dataclass
from typing import Self

import aiohttp
import msgspec

from .._tasks import CloseOnce
from ..exceptions import ConfigurationError, LabTimeoutError, ProtocolError, SignalingError
from . import messages as m

__all__ = ["Backoff", "SignalingClient"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter, for reconnecting to the signaling server.

    Attempt ``n`` (from 0) waits ``min(max_s, initial_s * factor**n)``, of which a
    random ``jitter`` fraction is taken off, so that peers cut off by the same
    server restart do not all come back in the same instant.

    :param initial_s: the wait before the first attempt.
    :param max_s: the cap on any wait.
    :param factor: growth per failed attempt (>= 1).
    :param jitter: 0 (none) to 1 (anything from 0 to the full wait).
    """

    initial_s: float = 0.5
    max_s: float = 10.0
    factor: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        # "not x >= 0" also refuses NaN.
        if not (0 <= self.initial_s and math.isfinite(self.initial_s)):
            raise ConfigurationError(f"initial_s must be finite and >= 0, got {self.initial_s}")
        if not (self.initial_s <= self.max_s and math.isfinite(self.max_s)):
            raise ConfigurationError(
                f"max_s must be finite and >= initial_s ({self.initial_s}), got {self.max_s}"
            )
        if not (1 <= self.factor and math.isfinite(self.factor)):
            raise ConfigurationError(f"factor must be finite and >= 1, got {self.factor}")
        if not 0 <= self.jitter <= 1:
            raise ConfigurationError(f"jitter must be in 0-1, got {self.jitter}")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt ``attempt`` (0 for the first)."""
        if attempt < 0:
            raise ConfigurationError(f"attempt must be >= 0, got {attempt}")
        # Capped before the power can overflow a float.
        steps = min(attempt, 64)
        base = min(self.max_s, self.initial_s * self.factor**steps)
        return base * (1 - self.jitter * (rng or random).random())


class SignalingClient:
    """One WebSocket to the signaling server.

    ``join()`` waits for ``room-joined``; afterwards :meth:`recv` yields the
    messages the server sends (peer-joined, relayed offers, errors, ...).
    """

    def __init__(self, url: str, *, token: str | None = None) -> None:
        self.url = url
        self.token = token
        self.user_id: str | None = None
        self.room_id: str | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._closed = False
        self._closing = CloseOnce()

    async def connect(self, timeout: float = 10.0) -> None:
        if self._ws is not None:
            return
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        self._session = aiohttp.ClientSession()
        try:
            self._ws = await self._session.ws_connect(
                self.url,
                headers=headers,
                timeout=aiohttp.ClientWSTimeout(ws_close=timeout),
                max_msg_size=0,
                autoping=True,
            )
        except (aiohttp.ClientError, OSError) as exc:
            await self._session.close()
            self._session = None
            raise SignalingError(f"cannot connect to signaling server {self.url}: {exc}") from exc

    async def join(self, room_id: str, user_id: str, timeout: float = 10.0) -> list[str]:
        """Join ``room_id`` as ``user_id``; return the ids already in the room."""
        await self.connect()
        await self.send(m.Join(roomId=room_id, userId=user_id))
        try:
            async with asyncio.timeout(timeout):
                reply = await self.recv()
        except TimeoutError:
            raise LabTimeoutError(f'no answer to join room "{room_id}" as "{user_id}"') from None
        if isinstance(reply, m.Error):
            raise SignalingError(reply.message, code=reply.code)
        if not isinstance(reply, m.RoomJoined):
            raise SignalingError(f"expected room-joined, got {reply!r}")
        self.user_id, self.room_id = user_id, room_id
        return list(reply.peers)

    async def send(self, message: msgspec.Struct) -> None:
        if self._ws is None or self._ws.closed:
            raise SignalingError("the signaling connection is not open")
        await self._ws.send_frame(m.encode(message), aiohttp.WSMsgType.TEXT)
        if isinstance(message, m.Leave):
            self.room_id = None  # close() need not say goodbye again

    async def recv(self) -> m.ServerMessage:
        """The next server message; raises SignalingError when the socket closes."""
        if self._ws is None:
            raise SignalingError("the signaling connection is not open")
        while True:
            msg = await self._ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                try:
                    return m.decode_server_message(msg.data)
                except ProtocolError as exc:
                    logger.warning("ignoring server message: %s", exc)
                    continue
            if msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                raise SignalingError(
                    f"signaling connection closed (code {self._ws.close_code})",
                    code=str(self._ws.close_code),
                )

    @property
    def closed(self) -> bool:
        return self._ws is None or self._ws.closed

    async def close(self) -> None:
        """Leave the room (if joined) and close the socket; safe to call twice.

        The leave is what tells the server this is a goodbye: a socket that just
        closes is held in its room for the server's grace period, in case it comes back.
        """
        await self._closing.run(self._close)

    async def _close(self) -> None:
        self._closed = True
        if self._ws is not None:
            if self.room_id is not None and not self._ws.closed:
                with contextlib.suppress(Exception):  # a socket already going: no goodbye
                    await self.send(m.Leave(roomId=self.room_id))
                self.room_id = None
            await self._ws.close()
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
