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

**Access link** (``access_link=``, :meth:`NatBox.set_access_link`): the box's "last
mile", one :class:`~webrtclab.netem.link.LinkModel` per direction (seeded from
``seed`` and the box's name), outside the NAT.  Uplink: a packet is translated when
it is sent, then leaves the public socket when the model releases it.  Downlink: a
packet that reached a public socket is filtered and handed to the peer when the
model releases it.  Releases are timers of the event loop (one per direction, a
heap ordered by release time then arrival: FIFO unless the model reorders), never
a blocking wait.  Hairpinned packets (to the box's own public address) and packets
within the private network do not cross it.  Every path of a peer behind the box
(direct to another peer, to the STUN responder, to coturn) crosses it once each way;
peers sharing the box share it.
"""

from __future__ import annotations

import asyncio
import heapq
import ipaddress
import itertools
import logging
import socket
import zlib
from collections.abc import Callable
from functools import partial
from typing import Any, TypeAlias

from ..compat.aioice import PacketPath
from ..events import LabClock
from ..exceptions import ConfigurationError, InvalidStateError
from ..tables import NAT_BINDINGS, Feed, LinkRow, NatBindingRow
from .conditions import LinkConditions
from .link import LinkModel, link_row
from .nat import Address, NatConfig, NatTable, nat_config, require_loopback

__all__ = ["AccessLinkSetting", "NatBox", "access_link_pair"]

#: an access link: the same conditions both ways, or ``(uplink, downlink)``
AccessLinkSetting: TypeAlias = LinkConditions | tuple[LinkConditions, LinkConditions]

# A queued packet is released when its timer fires this close to its release time
# (uvloop's timers have millisecond resolution).
_RELEASE_SLACK_S = 0.0005


def access_link_pair(
    value: object, where: str = "access_link"
) -> tuple[LinkConditions, LinkConditions]:
    """``(uplink, downlink)`` from a :data:`AccessLinkSetting`; ConfigurationError otherwise."""
    if isinstance(value, LinkConditions):
        return value, value
    if (
        isinstance(value, tuple | list)
        and len(value) == 2
        and all(isinstance(v, LinkConditions) for v in value)
    ):
        return value[0], value[1]
    raise ConfigurationError(
        f"{where} must be a LinkConditions or a (uplink, downlink) pair of them, got {value!r}"
    )


class _Direction:
    """One direction of an access link: its model and the packets it holds back."""

    def __init__(self, model: LinkModel) -> None:
        self.model = model
        self.heap: list[tuple[float, int, Callable[[], None]]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = float("inf")


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
    :param clock: seconds for the bindings table and the access link (the lab's clock
        when a lab adopts it).
    :param access_link: the box's access link ("last mile"): a
        :class:`~webrtclab.netem.conditions.LinkConditions` for both directions or an
        ``(uplink, downlink)`` pair; every packet crossing the box crosses it.  None:
        none (until :meth:`set_access_link`).
    :param seed: seeds the access link (each direction derives its own seed from it and
        the box's name).
    :param inside_name: the inside end of the access link in the links table.
    """

    def __init__(
        self,
        config: NatConfig | str | Any = "port-restricted-cone",
        *,
        name: str | None = None,
        public_ip: str | None = None,
        private_network: str | None = None,
        clock: Callable[[], float] | None = None,
        access_link: AccessLinkSetting | None = None,
        seed: int = 0,
        inside_name: str | None = None,
    ) -> None:
        self.config = nat_config(config)
        self.name = name or f"nat{next(_names)}"
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigurationError(f"a NAT's seed must be an integer, got {seed!r}")
        self._access: tuple[LinkConditions, LinkConditions] | None = (
            None if access_link is None else access_link_pair(access_link)
        )
        self.seed = seed
        #: the inside end of the access link in the links table (the lab: the peer's id)
        self.inside_name = inside_name or f"{self.name}-lan"
        self._uplink: _Direction | None = None
        self._downlink: _Direction | None = None
        self._sequence = itertools.count()
        self._fallback_clock: Callable[[], float] | None = None
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
            if self._access is not None and self._uplink is None:
                self._build_access(*self._access)
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
        port = outcome.mapping.external[1]
        if self._uplink is not None and address[0] != self.public_ip:
            # Hairpinned packets turn inside the box: they do not cross the access link.
            self._through(self._uplink, len(data), partial(self._emit, port, data, address))
        else:
            self._emit(port, data, address)

    def _emit(self, port: int, data: bytes, address: Address) -> None:
        """Send ``data`` from the public socket of port ``port`` (gone: the packet is lost)."""
        sock = self._sockets.get(port)
        if sock is None or self._closed:
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
            if self._downlink is not None and source[0] != self.public_ip:
                self._through(
                    self._downlink,
                    len(data),
                    partial(self._arrive, port, data, source),
                )
            else:
                self._arrive(port, data, source)
            sock = self._sockets.get(port)  # the decision may have expired the mapping

    def _arrive(self, port: int, data: bytes, source: Address) -> None:
        """A packet reaches the box's public port ``port``: filter it, hand it inside."""
        if self._closed:
            return
        decision = self.table.inbound(port, source)
        if decision.internal is not None:
            deliver = self._endpoints.get(decision.internal)
            if deliver is not None:
                self.received += 1
                deliver(data, source)

    # --- the access link --------------------------------------------------------------------

    def _now(self) -> float:
        if self.clock is not None:
            return self.clock()
        if self._fallback_clock is None:
            self._fallback_clock = LabClock().now
        return self._fallback_clock()

    def _direction_seed(self, which: str) -> int:
        return zlib.crc32(f"{self.seed}:{self.name}:{which}".encode())

    def _build_access(self, uplink: LinkConditions, downlink: LinkConditions) -> None:
        start = self._now()
        self._uplink = _Direction(
            LinkModel(uplink, self._direction_seed("up"), start, name=f"{self.name} uplink")
        )
        self._downlink = _Direction(
            LinkModel(downlink, self._direction_seed("down"), start, name=f"{self.name} downlink")
        )

    @property
    def access_link(self) -> tuple[LinkConditions, LinkConditions] | None:
        """``(uplink, downlink)`` conditions in force now (None: no access link)."""
        if self._uplink is not None and self._downlink is not None:
            return self._uplink.model.conditions, self._downlink.model.conditions
        return self._access

    def set_access_link(self, conditions: AccessLinkSetting) -> None:
        """Change the access link (or give the box one) from now on: packets sent
        afterwards see the new conditions, packets held back keep their release times."""
        uplink, downlink = access_link_pair(conditions)
        self._access = (uplink, downlink)
        if self._uplink is None or self._downlink is None:
            if self._table is not None:  # in use: start the link now
                self._build_access(uplink, downlink)
            return
        now = self._now()
        self._uplink.model.set_conditions(uplink, now)
        self._downlink.model.set_conditions(downlink, now)

    def _through(self, direction: _Direction, size: int, action: Callable[[], None]) -> None:
        """Pass one packet through a direction of the access link; ``action`` delivers it."""
        now = self._now()
        for delivery in direction.model.submit(max(1, size), now):
            release = delivery.release_time
            if release is None:
                continue  # dropped: counted by the model
            if release <= now and not direction.heap:
                action()
                continue
            heapq.heappush(direction.heap, (release, next(self._sequence), action))
        self._arm(direction)

    def _arm(self, direction: _Direction) -> None:
        if not direction.heap or self._closed:
            return
        head = direction.heap[0][0]
        if direction.timer is not None:
            if direction.timer_at <= head:
                return
            direction.timer.cancel()
        loop = self._loop or asyncio.get_running_loop()
        direction.timer_at = head
        direction.timer = loop.call_later(max(0.0, head - self._now()), self._release, direction)

    def _release(self, direction: _Direction) -> None:
        direction.timer = None
        direction.timer_at = float("inf")
        heap = direction.heap
        limit = self._now() + _RELEASE_SLACK_S
        while heap and heap[0][0] <= limit and not self._closed:
            action = heapq.heappop(heap)[2]
            try:
                action()
            except Exception:  # one bad delivery must not stall the link
                logger.exception("%r: access link delivery failed", self)
        self._arm(direction)

    def link_rows(self, now: float | None = None) -> list[LinkRow]:
        """The access link's two rows of the links table (none without an access link):
        uplink ``inside_name -> name``, downlink ``name -> inside_name``."""
        if self._uplink is None or self._downlink is None:
            return []
        now = self._now() if now is None else now
        return [
            link_row(self._uplink.model, self.inside_name, self.name, now),
            link_row(self._downlink.model, self.name, self.inside_name, now),
        ]

    def close(self) -> None:
        """Close every public socket; later sends are dropped."""
        self._closed = True
        for direction in (self._uplink, self._downlink):
            if direction is not None:
                if direction.timer is not None:
                    direction.timer.cancel()
                    direction.timer = None
                direction.heap.clear()
        if self._table is not None:
            self._table.clear()
        for port in list(self._sockets):
            self._release_port(port)
        self._endpoints.clear()
