"""NAT boxes on loopback: a :class:`~webrtclab.netem.nat.NatTable` given real UDP sockets.

A :class:`NatBox` stands between the peers behind it (inside, each on a private
address of the box's private network, e.g. ``127.2.1.1``) and everything else
(outside: other peers, the STUN responder, coturn).  It has a public address of its
own inside 127.0.0.0/8 (e.g. ``127.1.0.1``; Linux routes all of 127/8 to ``lo``, so
any of these addresses can be bound without configuring anything) and, for each
mapping, one UDP socket bound on that address (port 0: the kernel picks the public
port).

How packets flow (the hooks are in :func:`webrtclab.compat.aioice.ice_sockets`):

- **Out**: a peer's ICE socket (host, or TURN client) does not send itself: its
  ``sendto(data, remote)`` calls :meth:`NatBox.send`, which asks the table for the
  mapping (creating one: a new public socket) and sends ``data`` from that mapping's
  public socket.  The remote sees the public address as the source, as behind a real
  NAT.  Packets to the box's own private network go directly (same LAN).
- **In**: a public socket's packet is checked by the table (filtering, lifetime) and,
  if let in, handed to the peer's protocol in process, with its real source address,
  as if the private socket had received it.  Packets that reach a private socket
  directly from outside the private network are dropped: private addresses are
  unreachable from outside, so a remote that tries the peer's host candidate fails.
- **Hairpin**: a packet to the box's own public address leaves through the sender's
  mapping and arrives at the target mapping's public socket, where filtering applies
  (RFC 4787 section 6); with hairpinning off the table drops it.

Everything stays on 127.0.0.0/8: the box refuses any other public address or
private network, and drops (and logs) any packet to an address outside it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import socket
from collections.abc import Callable
from typing import Any

from ..compat.aioice import PacketPath
from ..events import LabClock
from ..exceptions import ConfigurationError, InvalidStateError
from ..tables import NAT_BINDINGS, Feed, NatBindingRow
from .nat import Address, NatConfig, NatTable, nat_config, require_loopback

__all__ = ["NatBox"]

logger = logging.getLogger(__name__)

LOOPBACK_NET = ipaddress.IPv4Network("127.0.0.0/8")
_RECV_SIZE = 65536
_names = itertools.count(1)


class NatBox(PacketPath):
    """One NAT, for one peer ("a home router") or several ("a carrier-grade NAT").

    :param config: a preset name (``"full-cone"``, ``"restricted-cone"``,
        ``"port-restricted-cone"``, ``"symmetric"``), a
        :class:`~webrtclab.netem.nat.NatConfig`, or a mapping (``{"preset":
        "symmetric", "lifetime_s": 30}``).
    :param name: the box's name in the bindings table.
    :param public_ip: its public address, inside 127.0.0.0/8; the lab assigns one
        (``127.1.0.N``) when omitted.
    :param private_network: where the peers behind it get their addresses (the lab
        assigns ``127.2.N.0/24`` when omitted).
    :param clock: seconds for the bindings table (the lab's clock when a lab adopts it).
    """

    def __init__(
        self,
        config: NatConfig | str | Any = "port-restricted-cone",
        *,
        name: str | None = None,
        public_ip: str | None = None,
        private_network: str | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.config = nat_config(config)
        self.name = name or f"nat{next(_names)}"
        self.public_ip = require_loopback(public_ip, "a NAT's public_ip") if public_ip else None
        self.private_network = (
            self._check_network(private_network) if private_network is not None else None
        )
        self.clock = clock
        #: the ``nat_bindings`` rows of this box (mappings, filtered packets)
        self.rows: Feed[NatBindingRow] = Feed(NAT_BINDINGS)
        self._table: NatTable | None = None
        self._sockets: dict[int, socket.socket] = {}
        self._endpoints: dict[Address, Callable[[bytes, Address], None]] = {}
        self._hosts: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.sent = 0
        self.received = 0
        self.send_errors = 0

    def __repr__(self) -> str:
        return f"NatBox({self.name!r}, {self.config.name}, public={self.public_ip})"

    @staticmethod
    def _check_network(value: str) -> ipaddress.IPv4Network:
        try:
            network = ipaddress.IPv4Network(value, strict=False)
        except ValueError:
            raise ConfigurationError(
                f"a NAT's private_network must be an IPv4 network, got {value!r}"
            ) from None
        if not network.subnet_of(LOOPBACK_NET) or network.num_addresses < 4:
            raise ConfigurationError(
                f"a NAT's private_network must be inside 127.0.0.0/8 with room for hosts, "
                f"got {value!r}"
            )
        return network

    def adopt(self, *, public_ip: str, private_network: str, clock: Callable[[], float]) -> None:
        """Fill in what the box was not given (the lab calls this when a peer uses it)."""
        if self.public_ip is None:
            self.public_ip = require_loopback(public_ip, "a NAT's public_ip")
        if self.private_network is None:
            self.private_network = self._check_network(private_network)
        if self.clock is None and self._table is None:
            self.clock = clock
        if ipaddress.IPv4Address(self.public_ip) in self.private_network:
            raise ConfigurationError(
                f"{self!r}: the public address {self.public_ip} is inside the private "
                f"network {self.private_network}"
            )

    @property
    def table(self) -> NatTable:
        """The NAT's bindings and decisions."""
        if self._table is None:
            if self.public_ip is None:
                raise InvalidStateError(f"{self!r} has no public address: give public_ip=")
            self._table = NatTable(
                self.config,
                self.public_ip,
                allocate_port=self._allocate_port,
                release_port=self._release_port,
                clock=self.clock or LabClock().now,
                name=self.name,
                on_row=lambda row: self.rows.extend([row]),
            )
        return self._table

    def new_host(self) -> str:
        """A fresh private address behind this box, for one more peer."""
        if self.private_network is None:
            raise InvalidStateError(f"{self!r} has no private network: give private_network=")
        for address in self.private_network.hosts():
            text = str(address)
            if text not in self._hosts and text != self.public_ip:
                self._hosts.append(text)
                return text
        raise ConfigurationError(f"{self!r}: no free address left in {self.private_network}")

    @property
    def hosts(self) -> list[str]:
        """The private addresses handed out so far."""
        return list(self._hosts)

    def bindings(self) -> Any:
        """This box's ``nat_bindings`` rows as a DataFrame."""
        return self.rows.dataframe()

    # --- PacketPath ---------------------------------------------------------------------------

    def _in_realm(self, address: Address) -> bool:
        if self.private_network is None:
            return False
        try:
            return ipaddress.IPv4Address(address[0]) in self.private_network
        except ValueError:
            return False

    def reaches_directly(self, address: Address) -> bool:
        return self._in_realm(address)

    def accepts_directly(self, address: Address) -> bool:
        return self._in_realm(address)

    def attach(self, private: Address, deliver: Callable[[bytes, Address], None]) -> None:
        if self._closed:
            raise InvalidStateError(f"{self!r} is closed")
        self._loop = asyncio.get_running_loop()
        self._endpoints[private] = deliver

    def detach(self, private: Address) -> None:
        self._endpoints.pop(private, None)
        if self._table is not None:
            self._table.release(private)

    def send(self, private: Address, data: bytes, address: Address) -> None:
        if self._closed:
            return
        table = self.table
        try:
            loopback = ipaddress.IPv4Address(address[0]) in LOOPBACK_NET
        except ValueError:
            loopback = False
        if not loopback:
            # Safety: nothing the lab emulates may leave 127.0.0.0/8.
            table.refuse(private, address, "not loopback")
            return
        outcome = table.outbound(private, address)
        if outcome.mapping is None:
            return
        sock = self._sockets.get(outcome.mapping.external[1])
        if sock is None:
            return
        try:
            sock.sendto(data, address)
            self.sent += 1
        except OSError as exc:  # a full buffer: UDP drops
            self.send_errors += 1
            logger.debug("%r: send to %s failed: %s", self, address, exc)

    def public_address(self, private: Address, remote: Address) -> Address | None:
        """The public address ``private``'s packets to ``remote`` leave with (None: none yet,
        or ``remote`` is in the private network)."""
        if self._table is None or self._in_realm(remote):
            return None
        return self._table.public_address(private, remote)

    # --- sockets --------------------------------------------------------------------------------

    def _allocate_port(self) -> int:
        assert self.public_ip is not None
        loop = self._loop or asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((self.public_ip, 0))
        except BaseException:
            sock.close()
            raise
        port: int = sock.getsockname()[1]
        self._sockets[port] = sock
        loop.add_reader(sock.fileno(), self._readable, port)
        return port

    def _release_port(self, port: int) -> None:
        sock = self._sockets.pop(port, None)
        if sock is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(sock.fileno())
        sock.close()

    def _readable(self, port: int) -> None:
        sock = self._sockets.get(port)
        while sock is not None:
            try:
                data, source = sock.recvfrom(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.debug("%r: receive on port %d failed: %s", self, port, exc)
                return
            source = (source[0], source[1])
            decision = self.table.inbound(port, source)
            if decision.internal is not None:
                deliver = self._endpoints.get(decision.internal)
                if deliver is not None:
                    self.received += 1
                    deliver(data, source)
            sock = self._sockets.get(port)  # the decision may have expired the mapping

    def close(self) -> None:
        """Close every public socket; later sends are dropped."""
        self._closed = True
        if self._table is not None:
            self._table.clear()
        for port in list(self._sockets):
            self._release_port(port)
        self._endpoints.clear()
