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
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import aioice
import aioice.ice

from . import check_version

__all__ = ["CHECKED_VERSIONS", "REAL_INTERFACES", "gather_on", "guard_checks", "ice_connection"]

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
