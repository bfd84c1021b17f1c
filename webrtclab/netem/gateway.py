"""A NAT box in front of a peer whose sockets the lab cannot hook (Chrome), by rewriting.

A :class:`~webrtclab.netem.natbox.NatBox` translates the packets of aiortc peers
because the lab replaces their ICE sockets' protocols.  Chrome's sockets live in
another process, so :class:`NatGateway` puts the box in Chrome's path the way the
network emulator (:mod:`webrtclab.netem.relay`) puts its relay there: by rewriting
the candidates of the signaling messages (a :meth:`~webrtclab.signaling.rooms.
Dispatcher.add_rewrite` hook) so that Chrome only ever knows addresses of the box.

- **Inside proxies.** Every address Chrome is told about (a remote candidate in an
  offer, an answer or a trickled ``ice-candidate``; its STUN and TURN servers) is
  replaced by a UDP socket of the box's private network, ``P(d)``, that stands for
  the real destination ``d``.  A datagram Chrome sends to ``P(d)`` from its socket
  ``s`` is translated by the NAT table (the mapping is keyed on ``s`` and ``d``) and
  leaves from the box's public socket towards ``d``.
- **Back in.** A datagram arriving at a public socket from ``r`` passes the NAT's
  filtering and is forwarded to Chrome from ``P(r)``, made on the spot when ``r`` is
  new (a peer-reflexive address, e.g. of a peer behind a symmetric NAT: Chrome
  learns it as ``prflx``).
- **Chrome's own candidates.** Its host candidates become an address of the private
  network where nothing listens (type ``host`` kept), so checks to them fail as
  checks to a private address do; its srflx and relay candidates (the box's
  mapping, coturn's relayed address) are kept.  Candidates that are not loopback UDP
  (Chrome also gathers on the machine's other interfaces) are dropped, and datagrams
  from non-loopback sources reaching a proxy are dropped: nothing is ever sent
  outside 127.0.0.0/8.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from functools import partial

from aiortc import RTCIceCandidate
from aiortc.sdp import candidate_to_sdp

from ..exceptions import ConfigurationError, ProtocolError
from ..sdp import parse_candidate, rewrite_relayed
from ..signaling.rooms import Relayed
from .nat import Address
from .natbox import NatBox

__all__ = ["NatGateway"]

logger = logging.getLogger(__name__)

LOOPBACK_NET = ipaddress.IPv4Network("127.0.0.0/8")
_RECV_SIZE = 65536


def _loopback_udp(text: str) -> RTCIceCandidate | None:
    """``text`` parsed, if it is a UDP candidate on an IPv4 loopback address (else None)."""
    try:
        candidate = parse_candidate(text)
    except ProtocolError:
        return None
    if candidate.protocol.lower() != "udp" or not _ipv4_loopback(candidate.ip):
        return None
    return candidate


def _ipv4_loopback(host: str) -> bool:
    try:
        return ipaddress.IPv4Address(host) in LOOPBACK_NET
    except ValueError:
        return False


class _InsideProxy:
    """A socket of the box's private network standing for one outside address."""

    def __init__(self, host: str, real: Address) -> None:
        self.real = real
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.setblocking(False)
            self.sock.bind((host, 0))
        except BaseException:
            self.sock.close()
            raise
        self.address: Address = self.sock.getsockname()[:2]


class NatGateway:
    """Put the peer ``user`` (a browser) behind ``box`` by rewriting what it is told.

    :param user: the user id of the peer behind the box.
    :param box: its NAT box (adopted by the lab: a public address and a private
        network); the gateway takes two private addresses of it, one where its
        proxies listen and one for the peer's host candidates (nothing listens there).
    """

    def __init__(self, user: str, box: NatBox) -> None:
        if box.public_ip is None or box.private_network is None:
            raise ConfigurationError(f"{box!r} needs a public address and a private network")
        self.user = user
        self.box = box
        #: where the inside proxies listen (the box's "LAN side")
        self.inside_ip = box.new_host()
        #: the peer's host candidates are rewritten to this address: nothing listens there
        self.host_ip = box.new_host()
        self._proxies: dict[Address, _InsideProxy] = {}
        self._attached: set[Address] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        #: datagrams dropped at a proxy because their source was not loopback
        self.dropped = 0
        self.send_errors = 0

    def __repr__(self) -> str:
        return f"NatGateway({self.user!r}, {self.box!r}, inside={self.inside_ip})"

    # --- proxies ---------------------------------------------------------------------------

    def front(self, real: Address) -> Address:
        """The inside address standing for ``real`` (made on first use)."""
        if not _ipv4_loopback(real[0]):
            raise ConfigurationError(f"a NAT gateway forwards to 127.0.0.0/8 only, got {real[0]!r}")
        proxy = self._proxies.get(real)
        if proxy is None:
            if self._closed:
                raise ConfigurationError(f"{self!r} is closed")
            loop = self._loop = self._loop or asyncio.get_running_loop()
            proxy = _InsideProxy(self.inside_ip, real)
            self._proxies[real] = proxy
            loop.add_reader(proxy.sock.fileno(), self._readable, proxy)
        return proxy.address

    @property
    def proxies(self) -> dict[Address, Address]:
        """Real address -> the inside proxy standing for it."""
        return {real: proxy.address for real, proxy in self._proxies.items()}

    def _readable(self, proxy: _InsideProxy) -> None:
        while not self._closed:
            try:
                data, source = proxy.sock.recvfrom(_RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.debug("%r: receive on %s failed: %s", self, proxy.address, exc)
                return
            inside = (source[0], source[1])
            if not _ipv4_loopback(inside[0]):
                # Chrome also checks from its other interfaces: never answer (send) there.
                self.dropped += 1
                continue
            if inside not in self._attached:
                self._attached.add(inside)
                self.box.attach(inside, partial(self._deliver, inside))
            self.box.send(inside, data, proxy.real)

    def _deliver(self, inside: Address, data: bytes, source: Address) -> None:
        """The box let ``data`` from ``source`` in for ``inside``: hand it over from P(source)."""
        if self._closed or not _ipv4_loopback(source[0]):
            return
        proxy = self._proxies.get(source)
        if proxy is None:
            self.front(source)
            proxy = self._proxies[source]
        try:
            proxy.sock.sendto(data, inside)
        except OSError as exc:  # a full buffer: UDP drops
            self.send_errors += 1
            logger.debug("%r: send to %s failed: %s", self, inside, exc)

    # --- signaling ---------------------------------------------------------------------------

    def _inbound_candidate(self, text: str) -> str | None:
        """A candidate the peer is told about, as a proxy of the box; None: drop it."""
        candidate = _loopback_udp(text)
        if candidate is None:
            return None
        candidate.ip, candidate.port = self.front((candidate.ip, candidate.port))
        candidate.relatedAddress = candidate.relatedPort = None
        return "candidate:" + candidate_to_sdp(candidate)

    def _outbound_candidate(self, text: str) -> str | None:
        """A candidate of the peer, as others see it; None: drop it."""
        candidate = _loopback_udp(text)
        if candidate is None:
            return None
        if candidate.type == "host":
            candidate.ip = self.host_ip  # a private address: unreachable from outside
        if candidate.relatedAddress is not None:
            if candidate.type == "srflx":
                candidate.relatedAddress = self.host_ip
            elif not _ipv4_loopback(candidate.relatedAddress):
                candidate.relatedAddress = candidate.relatedPort = None
        return "candidate:" + candidate_to_sdp(candidate)

    def rewrite(self, sender: str, receiver: str, message: Relayed) -> Relayed | None:
        """The signaling hook: what the peer is told, and what it tells, as its NAT makes it."""
        if self.user not in (sender, receiver):
            return message
        if receiver == self.user:
            return rewrite_relayed(message, self._inbound_candidate)
        return rewrite_relayed(message, self._outbound_candidate)

    # --- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the proxies and release the peer's mappings (the box stays the lab's)."""
        self._closed = True
        for proxy in self._proxies.values():
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(proxy.sock.fileno())
            proxy.sock.close()
        self._proxies.clear()
        for inside in self._attached:
            self.box.detach(inside)
        self._attached.clear()
