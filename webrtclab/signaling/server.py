"""The embedded signaling server: aiohttp, one WebSocket per client at ``/signal``."""

from __future__ import annotations

import asyncio
import collections
import hmac
import logging
import socket
import struct
import time
from collections.abc import Callable, Sequence

from aiohttp import WSCloseCode, WSMsgType, web

from .._tasks import CloseOnce
from ..auth import AuthError, Identity, TokenAuthority, TurnConfig
from ..compat.aiohttp import SignalSocket
from ..exceptions import ConfigurationError, InvalidStateError, ProtocolError
from ..web import add_web_routes
from .rooms import Dispatcher, Member, Rewrite

__all__ = ["SignalingServer"]

logger = logging.getLogger(__name__)

# Close codes sent to misbehaving clients (RFC 6455 section 7.4.1).
CLOSE_POLICY = WSCloseCode.POLICY_VIOLATION
CLOSE_TOO_BIG = WSCloseCode.MESSAGE_TOO_BIG
CLOSE_TRY_AGAIN = WSCloseCode.TRY_AGAIN_LATER


_BINARY_REFUSED = ProtocolError("binary-frame", "binary frames are not accepted: send JSON text")
_RATE_LIMITED = ProtocolError("rate-limited", "too many messages: closing")

# --- the hot path ---------------------------------------------------------------------
#
# Relaying one message costs a socket read, JSON validation and a socket write; the
# rest is kept off the hot path:
#
# * Reading: aiohttp parses frames (masking, size limit, UTF-8, fragmentation, control
#   frames) into a queue that the handler task reads with ``receive()``, one task
#   wake-up per message.  A ``SignalSocket`` (webrtclab.compat.aiohttp) instead hands
#   each text message to the dispatcher right where the parser produces it, unless
#   older messages are still queued (so the order never changes).  Everything else
#   (control frames, binary frames, errors, rate-limited messages) takes the usual way
#   through ``receive()``.  Where aiohttp does not allow it, every message does.
# * Writing: ``deliver`` frames the message and writes it to the transport at once
#   (no task hop) while the transport keeps up.  When it buffers more than
#   _DIRECT_WRITE_LIMIT, messages go to the client's bounded outbox instead and the
#   writer task sends them with aiohttp's back-pressure; a client whose outbox
#   overflows is dropped (1013).  The order of messages never changes.

# Server-to-client text frames (RFC 6455 section 5.2: FIN, opcode 1, unmasked).
_SMALL_HEADERS = [bytes((0x81, n)) for n in range(126)]
_PACK_LEN2 = struct.Struct("!BBH").pack
_PACK_LEN3 = struct.Struct("!BBQ").pack
# Frames are written straight to the transport while it buffers at most this much.
_DIRECT_WRITE_LIMIT = 64 * 1024


def _text_frame(data: bytes) -> bytes:
    n = len(data)
    if n < 126:
        return _SMALL_HEADERS[n] + data
    if n < 65536:
        return _PACK_LEN2(0x81, 126, n) + data
    return _PACK_LEN3(0x81, 127, n) + data


class _Client:
    """One WebSocket: the dispatcher's member plus a bounded outbox and its writer task."""

    __slots__ = (
        "user_id",
        "room_id",
        "ws",
        "dispatcher",
        "_transport",
        "_outbox",
        "_wakeup",
        "_max_queue",
        "overflowed",
        "writer",
        "_sending",
        "_tokens",
        "_stamp",
        "rate",
        "burst",
        "blocked",
        "identity",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None,
        dispatcher: Dispatcher,
        max_queue: int,
        rate: float,
        burst: float,
        identity: Identity | None = None,
    ):
        # What the join token proved (None: no token, or the static token).
        self.identity = identity
        self.user_id: str | None = None
        self.room_id: str | None = None
        self.ws = ws
        self.dispatcher = dispatcher
        self._transport = transport
        self._outbox: collections.deque[bytes] = collections.deque()
        self._wakeup = asyncio.Event()
        self._max_queue = max_queue
        self.overflowed = False
        self.rate, self.burst = rate, burst
        self._tokens, self._stamp = burst, time.monotonic()
        self.writer: asyncio.Task[None] | None = None
        self._sending = False
        # Set once the client exceeded its rate: its messages then go to the handler
        # task, which refuses them and closes the socket.
        self.blocked = False

    def deliver(self, data: bytes) -> None:
        if self.overflowed:
            return
        outbox = self._outbox
        if not outbox and not self._sending:
            transport = self._transport
            if transport is None or transport.is_closing() or self.ws.closed:
                return  # the socket is going away: nothing more can be sent
            if transport.get_write_buffer_size() <= _DIRECT_WRITE_LIMIT:
                transport.write(_text_frame(data))
                return
        if len(outbox) >= self._max_queue:
            # A client that does not read must never block its room: drop it.
            self.overflowed = True
            outbox.clear()
            if self._sending and self.writer is not None:
                # The writer is blocked on a socket that is not read: unblock it.
                self.writer.cancel()
        else:
            # The socket is backed up: the writer task sends with back-pressure.
            outbox.append(data)
        self._wakeup.set()

    def on_text(self, text: str) -> bool:
        """Handle a text message inline; False leaves it to the handler task."""
        if self.blocked or self.ws.closed:
            return False
        if not self.allow():
            self.blocked = True
            return False
        try:
            self.dispatcher.handle(self, text)
        except Exception:  # a bug: aiohttp fails the connection, after this log line
            logger.exception("error handling a message from %r", self.user_id)
            raise
        return True

    def allow(self) -> bool:
        """Token bucket: True while the client stays within its message rate."""
        if self.rate <= 0:
            return True
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    async def write_loop(self) -> None:
        ws, outbox = self.ws, self._outbox
        try:
            while not self.overflowed:
                await self._wakeup.wait()
                self._wakeup.clear()
                self._sending = True
                while outbox and not self.overflowed:
                    await ws.send_frame(outbox.popleft(), WSMsgType.TEXT)
                self._sending = False
        except asyncio.CancelledError:
            if not self.overflowed:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        self._sending = False
        # drain=False: the client may not be reading, so waiting for the socket
        # to drain could take forever.
        await ws.close(code=CLOSE_TRY_AGAIN, message=b"send queue overflow", drain=False)


class SignalingServer:
    """The lab's signaling server, embeddable in a running event loop.

    Example::

        async with SignalingServer() as server:
            print(server.url)   # ws://127.0.0.1:PORT/signal

    :param host: address to bind; loopback by default.
    :param port: port to bind; 0 picks a free one.
    :param token: a shared static token; when set, clients must present it or a
        join token (``?token=`` or a bearer header).  It allows any user id.
    :param join_secret: when set, clients must present a join token signed with it
        (or the static token); the token binds the user id and room they may join.
        See :class:`webrtclab.auth.TokenAuthority`.
    :param allowed_origins: browser origins (``http://host:port``) whose pages may
        connect; the server's own origin always may.  None allows every origin.
    :param turn: TURN servers and secrets (or a function that returns them when asked,
        for a TURN server that starts later); enables ``GET /api/turn-credentials`` for
        holders of a join token.
    :param rewrite: a hook every relayed offer, answer and candidate passes through
        (see :meth:`Dispatcher.add_rewrite`; the network emulator rewrites candidates).
    :param max_message_bytes: larger messages close the socket with code 1009.
    :param disconnect_grace_s: a member whose socket closes without a leave stays in its
        room this long (others hear peer-left only then); the same user id re-joining the
        same room meanwhile takes its place unnoticed, so its calls go on.  0: at once.
    :param heartbeat_s: ping interval; a client that misses a pong is dropped.
    :param max_room_size: joins beyond this are refused with ``room-full``.
    :param max_queue: messages queued for a slow client before it is dropped.
    :param rate: messages per second allowed per client (0 disables), with ``burst``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str | None = None,
        join_secret: str | bytes | None = None,
        allowed_origins: Sequence[str] | None = None,
        turn: TurnConfig | Callable[[], TurnConfig | None] | None = None,
        rewrite: Rewrite | None = None,
        disconnect_grace_s: float = 10.0,
        max_message_bytes: int = 256 * 1024,
        heartbeat_s: float = 10.0,
        max_room_size: int = 32,
        max_queue: int = 1024,
        rate: float = 500.0,
        burst: float = 1000.0,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ConfigurationError(f"port must be in 0-65535, got {port}")
        if max_message_bytes < 1024:
            raise ConfigurationError(f"max_message_bytes must be >= 1024, got {max_message_bytes}")
        if not 0 <= disconnect_grace_s <= 3600:  # also refuses NaN
            raise ConfigurationError(
                f"disconnect_grace_s must be in [0, 3600], got {disconnect_grace_s}"
            )
        if not heartbeat_s > 0:  # also refuses NaN
            raise ConfigurationError(f"heartbeat_s must be positive, got {heartbeat_s}")
        if max_queue < 1:
            raise ConfigurationError(f"max_queue must be >= 1, got {max_queue}")
        if max_room_size < 1:
            raise ConfigurationError(f"max_room_size must be >= 1, got {max_room_size}")
        if not rate >= 0:
            raise ConfigurationError(f"rate must be >= 0 (0 disables the limit), got {rate}")
        if rate > 0 and not burst >= 1:
            raise ConfigurationError(f"burst must be >= 1 when rate is set, got {burst}")
        if token is not None and not token:
            raise ConfigurationError("token must be a non-empty string or None")
        if isinstance(allowed_origins, str):
            raise ConfigurationError(
                f"allowed_origins must be a list of origins, not the string {allowed_origins!r}"
            )
        if allowed_origins is not None:
            for origin in allowed_origins:
                if not isinstance(origin, str) or not origin.startswith(("http://", "https://")):
                    raise ConfigurationError(
                        f'an allowed origin looks like "http://host:port", got {origin!r}'
                    )
        if turn is not None and not isinstance(turn, TurnConfig) and not callable(turn):
            raise ConfigurationError(
                f"turn must be a TurnConfig or a function returning one, got {type(turn).__name__}"
            )
        self.host, self.port = host, port
        self.token = token
        self.authority = TokenAuthority(join_secret) if join_secret is not None else None
        self.allowed_origins = (
            None if allowed_origins is None else frozenset(o.rstrip("/") for o in allowed_origins)
        )
        self._turn = turn
        self.max_message_bytes = max_message_bytes
        self.heartbeat_s = heartbeat_s
        self.max_queue = max_queue
        self.rate, self.burst = rate, burst
        self.dispatcher = Dispatcher(max_room_size=max_room_size)
        if rewrite is not None:
            self.dispatcher.add_rewrite(rewrite)
        if self.authority is not None:
            self.dispatcher.admit = _admit
        self.app = web.Application()
        self.app.router.add_get("/signal", self._handle_signal)
        self.app.router.add_get("/healthz", self._handle_health)
        add_web_routes(self.app)  # the web client: GET / and /static/
        self.app.router.add_get("/api/turn-credentials", self._handle_turn_credentials)
        self._runner: web.AppRunner | None = None
        self._clients: set[_Client] = set()
        self.disconnect_grace_s = disconnect_grace_s
        self._expiries: dict[_Client, asyncio.TimerHandle] = {}
        self._closed = False
        self._closing = CloseOnce()

    # --- lifecycle ----------------------------------------------------------------

    @property
    def url(self) -> str:
        """The WebSocket URL clients connect to."""
        return f"ws://{_url_host(self.host)}:{self.port}/signal"

    @property
    def http_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}"

    @property
    def started(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        """Bind and start serving; ``port`` holds the bound port afterwards."""
        if self._closed:
            raise InvalidStateError("cannot start a signaling server that was closed")
        if self._runner is not None:
            return
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise ConfigurationError(f"cannot bind {self.host}:{self.port}: {exc}") from exc
        runner = web.AppRunner(
            self.app, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        try:
            await runner.setup()
            await web.SockSite(runner, sock).start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self.port = sock.getsockname()[1]
        self._runner = runner
        logger.info("signaling server listening on %s", self.url)

    async def close(self) -> None:
        """Close every client and stop serving; safe to call twice.

        A second caller waits for the first close to end.
        """
        await self._closing.run(self._close)

    async def _close(self) -> None:
        self._closed = True
        for handle in self._expiries.values():
            handle.cancel()  # the room goes with the server: no peer-left to send
        self._expiries.clear()
        clients = list(self._clients)
        await asyncio.gather(
            *(c.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown") for c in clients),
            return_exceptions=True,
        )
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SignalingServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- handlers -------------------------------------------------------------------

    def issue_token(
        self, user_id: str, *, room: str | None = None, ttl_s: float | None = None
    ) -> str:
        """A join token for ``user_id`` (requires ``join_secret``)."""
        if self.authority is None:
            raise ConfigurationError("cannot issue join tokens: the server has no join_secret")
        return self.authority.issue(user_id, room=room, ttl_s=ttl_s)

    def _check_origin(self, request: web.Request) -> None:
        # Browsers always send Origin on WebSocket upgrades and cross-origin fetches;
        # other clients (aiortc peers, scripts) send none and are not at risk of
        # cross-site WebSocket hijacking.
        origin = request.headers.get("Origin")
        if self.allowed_origins is None or origin is None:
            return
        own = f"{request.scheme}://{request.host}"
        if origin != own and origin not in self.allowed_origins:
            raise web.HTTPForbidden(text=f"origin {origin!r} is not allowed\n")

    def _authenticate(self, request: web.Request, *, query: bool) -> Identity | None:
        """The caller's identity; raises 401 when the server requires one it lacks.

        Returns None for open servers and for the static token (any user id).
        """
        presented = request.query.get("token", "") if query else ""
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            presented = auth[len("Bearer ") :]
        if self.token is None and self.authority is None:
            return None
        if self.token is not None and hmac.compare_digest(presented.encode(), self.token.encode()):
            return None
        if self.authority is None:
            raise _unauthorized("missing-token" if not presented else "invalid-token")
        try:
            return self.authority.verify(presented)
        except AuthError as exc:
            raise _unauthorized(exc.code) from None

    def _disconnected(self, client: _Client) -> None:
        # A socket that closed without a leave: its user stays in the room for the grace
        # period, so a reconnect within it keeps every call going (nobody hears
        # peer-left); a server shutting down keeps nobody.
        hold = self.disconnect_grace_s > 0 and not self._closed
        if self.dispatcher.disconnect(client, hold=hold):
            loop = asyncio.get_running_loop()
            self._expiries[client] = loop.call_later(self.disconnect_grace_s, self._expire, client)

    def _expire(self, client: _Client) -> None:
        self._expiries.pop(client, None)
        self.dispatcher.expire(client)

    @property
    def turn(self) -> TurnConfig | None:
        """The TURN servers and secrets handed out, if any."""
        turn = self._turn
        return turn() if callable(turn) else turn

    async def _handle_turn_credentials(self, request: web.Request) -> web.Response:
        self._check_origin(request)
        turn = self.turn
        if turn is None:
            raise web.HTTPNotFound(
                text='{"error": "turn-not-configured"}', content_type="application/json"
            )
        if self.authority is None:
            # Credentials are handed out per authenticated user only.
            raise _unauthorized("join-tokens-not-configured")
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            raise _unauthorized("missing-token")
        identity = self._authenticate(request, query=False)
        if identity is None:  # the static token names no user
            raise _unauthorized("user-token-required")
        credentials = turn.credentials(identity.user_id)
        return web.json_response(credentials.to_json(), headers={"Cache-Control": "no-store"})

    async def _handle_health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"clients": len(self._clients), "users": self.dispatcher.user_count}
        )

    async def _handle_signal(self, request: web.Request) -> web.StreamResponse:
        self._check_origin(request)
        # Browsers cannot set headers on WebSockets: the token may come as ?token=.
        identity = self._authenticate(request, query=True)
        # compress=False: no permessage-deflate, so no decompression bombs.
        ws = SignalSocket(
            max_msg_size=self.max_message_bytes, heartbeat=self.heartbeat_s, compress=False
        )
        await ws.prepare(request)
        dispatcher = self.dispatcher
        client = _Client(
            ws, request.transport, dispatcher, self.max_queue, self.rate, self.burst, identity
        )
        client.writer = asyncio.create_task(client.write_loop())
        self._clients.add(client)
        queue = ws.inline_queue
        if queue is not None:
            queue.inline = client.on_text
        try:
            async for msg in ws:
                if client.blocked or not client.allow():
                    dispatcher.reject(client, _RATE_LIMITED)
                    await asyncio.sleep(0)  # let the writer flush the error first
                    await ws.close(code=CLOSE_POLICY, message=b"rate limit exceeded")
                    break
                if msg.type is WSMsgType.TEXT:
                    dispatcher.handle(client, msg.data)
                elif msg.type is WSMsgType.BINARY:
                    dispatcher.reject(client, _BINARY_REFUSED)
                elif msg.type is WSMsgType.ERROR:
                    logger.debug("websocket error from %r: %s", client.user_id, ws.exception())
                    break
        finally:
            if queue is not None:
                queue.inline = None
            self._clients.discard(client)
            self._disconnected(client)
            writer = client.writer
            writer.cancel()
            try:
                await writer
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise
            except Exception:  # the socket died under the writer: nothing left to do
                pass
        return ws


def _unauthorized(code: str) -> web.HTTPUnauthorized:
    return web.HTTPUnauthorized(
        text=f'{{"error": "{code}"}}',
        content_type="application/json",
        headers={"WWW-Authenticate": f'Bearer error="{code}"'},
    )


def _admit(member: Member, room_id: str, user_id: str) -> None:
    """Join tokens bind the user id and room a socket may join."""
    identity: Identity | None = getattr(member, "identity", None)
    if identity is None:  # the static token: any user id
        return
    if identity.user_id != user_id:
        raise ProtocolError(
            "forbidden",
            f'cannot join room "{room_id}" as "{user_id}": '
            f'the join token was issued to "{identity.user_id}"',
        )
    if identity.room is not None and identity.room != room_id:
        raise ProtocolError(
            "forbidden",
            f'cannot join room "{room_id}" as "{user_id}": '
            f'the join token is for room "{identity.room}"',
        )


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
