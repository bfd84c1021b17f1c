"""aioice's internals that the lab replaces or reads, checked against aioice 0.13.

What is patched, and why:

- **Host addresses** (the module function ``aioice.ice.get_host_addresses``): aioice
  skips 127.0.0.1, so peers on a machine with no network (or only ``lo``) gather
  nothing.  It is replaced once, process-wide, by a wrapper that consults a context
  variable: code inside :func:`gather_on` (and the tasks it creates, which copy the
  context) gathers on the given addresses; everything else keeps aioice's choice.
  ``Connection.gather_candidates`` looks the function up at call time.  The entry
  :data:`REAL_INTERFACES` in the chosen addresses stands for aioice's own choice (the
  machine's real interfaces), listed afresh at each gathering.
- **Incoming checks** (``Connection.request_received``, per connection): a remote that
  also gathers on other interfaces (Chromium: 192.0.2.2 and 127.0.0.1) sends checks
  from them; aioice would answer, learn the source as a peer-reflexive candidate and,
  if the remote nominates that pair, send all media to it.  :func:`guard_checks`
  drops checks from addresses the lab does not accept, so those pairs fail.
- **Sockets behind an emulated NAT, and the check retransmissions** (the classes
  ``aioice.ice.StunProtocol`` and ``aioice.turn.TurnClientUdpProtocol``, which
  ``Connection.get_component_candidates`` and ``create_turn_endpoint`` look up at call
  time): replaced once, process-wide, by subclasses that read a context variable when
  they are created.  Inside :func:`ice_sockets` (and the tasks it creates), a host
  socket's or a TURN client socket's transport is wrapped so that what it sends goes
  out through a :class:`PacketPath` (a NAT box), what the path lets in is delivered to
  the protocol as if the socket had received it, and what reaches the socket directly
  from outside the path's private realm is dropped ("private addresses are
  unreachable").  ``check_retransmissions`` bounds the retransmissions of every STUN
  transaction of those sockets (connectivity checks included; aioice's default, 6,
  fails a check after 63.5 s: RTO 0.5 s doubling, RFC 5389 section 7.2.1), so ICE
  failure is detected in seconds.  Everything else keeps aioice's own classes'
  behaviour.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, cast

import aioice
import aioice.ice
import aioice.stun
import aioice.turn

from . import check_version

__all__ = [
    "CHECKED_VERSIONS",
    "REAL_INTERFACES",
    "PacketPath",
    "check_list",
    "gather_on",
    "guard_checks",
    "ice_connection",
    "ice_sockets",
]

logger = logging.getLogger(__name__)

CHECKED_VERSIONS = ("0.13",)
check_version("aioice", aioice.__version__, CHECKED_VERSIONS)

REAL_INTERFACES = "*"
"""In the addresses given to :func:`gather_on`: every address aioice itself would gather on.

That is every IPv4 address but 127.0.0.1 and every IPv6 address but ``::1`` and the
link-local ones, of every interface, listed when a connection gathers.
"""

_addresses: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "webrtclab_host_addresses", default=None
)
_original_host_addresses: Callable[..., list[str]] | None = None


def _install_host_addresses() -> None:
    global _original_host_addresses
    if _original_host_addresses is not None:
        return
    original = aioice.ice.get_host_addresses

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        chosen = _addresses.get()
        if chosen is None:
            return original(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
        addresses: list[str] = []
        for entry in chosen:
            if entry == REAL_INTERFACES:
                found = original(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
            else:
                found = [entry] if (use_ipv6 if ":" in entry else use_ipv4) else []
            for address in found:
                if address not in addresses:
                    addresses.append(address)
        return addresses

    _original_host_addresses = original
    aioice.ice.get_host_addresses = get_host_addresses


@contextmanager
def gather_on(addresses: tuple[str, ...] | None) -> Iterator[None]:
    """Within this block, ICE gathers host candidates on ``addresses`` only.

    ``None`` means the real interfaces (aioice's own choice); so does an entry
    :data:`REAL_INTERFACES`, next to others (``("127.0.0.1", REAL_INTERFACES)``:
    loopback and the real interfaces).
    """
    _install_host_addresses()
    token = _addresses.set(addresses)
    try:
        yield
    finally:
        _addresses.reset(token)


def ice_connection(ice_transport: Any) -> aioice.Connection | None:
    """The aioice ``Connection`` behind an aiortc ``RTCIceTransport`` (None if absent).

    aiortc keeps it in the transport's ``_connection`` attribute (aiortc 1.16, whose
    version :mod:`webrtclab.compat.aiortc` checks).
    """
    connection = getattr(ice_transport, "_connection", None)
    return connection if isinstance(connection, aioice.Connection) else None


class _CheckGuard:
    """Stands in for one connection's ``request_received``: passes accepted sources on."""

    def __init__(
        self, original: Callable[..., None], accepts: Callable[[str], bool], owner: object
    ) -> None:
        self.original = original
        self.accepts = accepts
        self.owner = owner

    def __call__(self, message: Any, addr: tuple[str, int], protocol: Any) -> None:
        if self.accepts(addr[0]):
            self.original(message, addr, protocol)
        else:
            logger.debug("%r: ignored an ICE check from %s", self.owner, addr[0])


def guard_checks(
    connection: aioice.Connection, accepts: Callable[[str], bool], owner: object = None
) -> bool:
    """Ignore STUN binding requests from source addresses ``accepts`` refuses.

    Idempotent; returns whether this call installed the guard.  Install it before
    gathering, so before any socket can receive a check.  ``owner`` names the caller
    in debug logs.
    """
    if isinstance(connection.request_received, _CheckGuard):
        return False
    # aioice's StunProtocol calls ``self.receiver.request_received`` for each request,
    # so an instance attribute replaces the method for this connection only.
    connection.request_received = _CheckGuard(  # type: ignore[method-assign]
        connection.request_received, accepts, owner
    )
    return True


def check_list(connection: aioice.Connection) -> list[tuple[str, str, str, str, str]]:
    """The connectivity checks of ``connection``: (local type, local address, remote
    type, remote address, state) per candidate pair, in check-list order.

    aioice keeps them in ``Connection._check_list``; a pair's state is
    ``CandidatePair.State`` (FROZEN, WAITING, IN_PROGRESS, SUCCEEDED, FAILED).
    """
    pairs = getattr(connection, "_check_list", None) or []
    found = []
    for pair in pairs:
        local, remote = pair.local_candidate, pair.remote_candidate
        found.append(
            (
                local.type,
                f"{local.host}:{local.port}",
                remote.type,
                f"{remote.host}:{remote.port}",
                pair.state.name.lower(),
            )
        )
    return found


# --- sockets behind an emulated NAT --------------------------------------------------------

Address = tuple[str, int]


class PacketPath(Protocol):
    """Where the packets of sockets created inside :func:`ice_sockets` go: a NAT box."""

    def attach(self, private: Address, deliver: Callable[[bytes, Address], None]) -> None:
        """A socket bound on ``private`` opened; ``deliver(data, source)`` hands it a packet."""

    def detach(self, private: Address) -> None:
        """The socket bound on ``private`` closed."""

    def reaches_directly(self, address: Address) -> bool:
        """Whether ``address`` is in the private realm (sent to without translation)."""

    def accepts_directly(self, address: Address) -> bool:
        """Whether a packet that reached a private socket directly from ``address`` is kept."""

    def send(self, private: Address, data: bytes, address: Address) -> None:
        """Send ``data`` from the socket bound on ``private`` to ``address``, translated."""


_path: contextvars.ContextVar[PacketPath | None] = contextvars.ContextVar(
    "webrtclab_packet_path", default=None
)
_retransmissions: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "webrtclab_check_retransmissions", default=None
)
_installed_socket_hooks = False


class _PathTransport(asyncio.DatagramTransport):
    """A datagram transport whose ``sendto`` goes through a :class:`PacketPath`."""

    def __init__(
        self,
        real: asyncio.DatagramTransport,
        path: PacketPath,
        deliver: Callable[[bytes, Address], None],
    ) -> None:
        super().__init__()
        self.real = real
        self.path = path
        sockname = real.get_extra_info("sockname")
        self.private: Address = (sockname[0], sockname[1])
        peername = real.get_extra_info("peername")
        self.peer: Address | None = (peername[0], peername[1]) if peername else None
        path.attach(self.private, deliver)
        self.attached = True

    def __repr__(self) -> str:
        return f"_PathTransport({self.private[0]}:{self.private[1]} via {self.path!r})"

    def sendto(self, data: Any, addr: Any = None) -> None:
        target = addr if addr is not None else self.peer
        if target is None or self.real.is_closing():
            return
        target = (target[0], target[1])
        if self.path.reaches_directly(target):
            self.real.sendto(data, addr)
        else:
            self.path.send(self.private, bytes(data), target)

    def detach(self) -> None:
        if self.attached:
            self.attached = False
            self.path.detach(self.private)

    def close(self) -> None:
        self.detach()
        self.real.close()

    def abort(self) -> None:
        self.detach()
        self.real.abort()

    def is_closing(self) -> bool:
        return self.real.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.real.get_extra_info(name, default)


def _wrap(
    transport: asyncio.BaseTransport,
    path: PacketPath | None,
    deliver: Callable[[bytes, Address], None],
) -> asyncio.BaseTransport:
    # Python 3.11's selector datagram transport does not derive from DatagramTransport.
    if path is None or not hasattr(transport, "sendto"):
        return transport
    if isinstance(transport, aioice.turn.TurnTransport | _PathTransport):
        return transport  # relayed data: the TURN client socket below is wrapped itself
    return _PathTransport(cast(asyncio.DatagramTransport, transport), path, deliver)


def _drops(transport: object, path: PacketPath | None, addr: tuple[Any, ...]) -> bool:
    """Whether a packet that reached a wrapped socket directly is dropped."""
    return (
        path is not None
        and isinstance(transport, _PathTransport)
        and not path.accepts_directly((addr[0], addr[1]))
    )


def _install_socket_hooks() -> None:
    global _installed_socket_hooks
    if _installed_socket_hooks:
        return
    stun_protocol = aioice.ice.StunProtocol
    turn_protocol = aioice.turn.TurnClientUdpProtocol

    class BehindPath:
        """What both socket protocols do behind the context's packet path (if any)."""

        lab_path: PacketPath | None
        transport: Any

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(_wrap(transport, self.lab_path, self.lab_deliver))  # type: ignore[misc]

        def datagram_received(self, data: bytes | str, addr: tuple[Any, ...]) -> None:
            if _drops(self.transport, self.lab_path, addr):
                logger.debug("%r: dropped a packet from %s (private address)", self, addr)
                return
            self.lab_deliver(data, (addr[0], addr[1]))

        def lab_deliver(self, data: bytes | str, addr: Address) -> None:
            super().datagram_received(data, addr)  # type: ignore[misc]

        def connection_lost(self, exc: Exception | None) -> None:
            if isinstance(getattr(self, "transport", None), _PathTransport):
                self.transport.detach()
            super().connection_lost(exc)  # type: ignore[misc]

    class LabStunProtocol(BehindPath, stun_protocol):  # type: ignore[misc, valid-type]
        """aioice's StunProtocol, behind the context's packet path (if any)."""

        def __init__(self, receiver: Any) -> None:
            super().__init__(receiver)
            self.lab_path = _path.get()
            self.lab_retransmissions = _retransmissions.get()

        async def request(
            self,
            request: aioice.stun.Message,
            addr: Address,
            integrity_key: bytes | None = None,
            retransmissions: int | None = None,
        ) -> tuple[aioice.stun.Message, Address]:
            if retransmissions is None:
                retransmissions = self.lab_retransmissions
            return await super().request(
                request, addr, integrity_key=integrity_key, retransmissions=retransmissions
            )

    class LabTurnClientUdpProtocol(BehindPath, turn_protocol):  # type: ignore[misc, valid-type]
        """aioice's TURN client over UDP, behind the context's packet path (if any)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.lab_path = _path.get()

    LabStunProtocol.__name__ = LabStunProtocol.__qualname__ = "StunProtocol"
    aioice.ice.StunProtocol = LabStunProtocol  # type: ignore[misc]
    aioice.turn.TurnClientUdpProtocol = LabTurnClientUdpProtocol  # type: ignore[misc]
    _installed_socket_hooks = True


@contextmanager
def ice_sockets(
    path: PacketPath | None = None, *, check_retransmissions: int | None = None
) -> Iterator[None]:
    """ICE sockets created within this block (and its tasks) use ``path`` and
    ``check_retransmissions``.

    ``path``: every host and TURN client socket sends through it and hears only what
    it delivers (plus what its private realm sends directly); ``None``: the sockets
    are aioice's own.  ``check_retransmissions``: how many times a STUN request of
    those sockets is retransmitted before the transaction fails (``None``: aioice's
    default, 6).  Wrap the gathering (``setLocalDescription``) in it.
    """
    if check_retransmissions is not None and check_retransmissions < 0:
        raise ValueError(f"check_retransmissions must be >= 0, got {check_retransmissions}")
    _install_socket_hooks()
    path_token = _path.set(path)
    retransmissions_token = _retransmissions.set(check_retransmissions)
    try:
        yield
    finally:
        _retransmissions.reset(retransmissions_token)
        _path.reset(path_token)
