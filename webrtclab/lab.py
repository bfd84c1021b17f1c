"""The lab: a signaling server, peers in a room, a stats sampler and an event log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import urlencode

import pandas as pd
from aiortc import RTCIceServer

from . import _gcpause
from ._tasks import CloseOnce
from .auth import TurnConfig
from .browser import BrowserPeer, Chromium
from .events import EventLog, LabClock
from .exceptions import ConfigurationError, InvalidStateError, LabTimeoutError
from .loopback import LOOPBACK
from .media import MediaSpec
from .netem.conditions import LinkConditions
from .netem.gateway import NatGateway
from .netem.nat import NatConfig, nat_config
from .netem.natbox import AccessLinkSetting, NatBox, access_link_pair
from .netem.relay import Network
from .peer import Peer
from .signaling.client import Backoff
from .signaling.server import SignalingServer
from .stats import StatsSampler
from .stun import StunServer
from .tables import BROWSER_STATS, NAT_BINDINGS, LinkRow
from .turn import TurnServer

__all__ = ["TURN_NODE", "Lab"]

logger = logging.getLogger(__name__)

# The emulator's name for the TURN server: the link "alice" -> TURN_NODE is
# alice's path to coturn (``lab.set_link("alice", TURN_NODE, ...)``).
TURN_NODE = "turn"

_NO_NAT_GIVEN = object()
_NOT_GIVEN = object()
_NAT_WITH_EMULATOR = "nat= cannot be combined with the network emulator (link=/network=) yet"
#: NAT boxes the lab creates get 127.1.0.N as public address and 127.2.N.0/24 inside.
_NAT_PUBLIC = "127.1.0.{}"
_NAT_PRIVATE = "127.2.{}.0/24"
_MAX_NATS = 254


def _nat_setting(value: object) -> NatConfig | NatBox | None:
    """A peer's ``nat=``: None, a box (shared as given), or a config (one box per peer)."""
    if value is None or isinstance(value, NatBox):
        return value
    return nat_config(value)


def _access_detail(box: NatBox) -> str:
    """The ``nat`` event's mention of the box's access link."""
    link = box.access_link
    if link is None:
        return ""
    up, down = link
    if up == down:
        return f", access link {up!r}"
    return f", access link up {up!r}, down {down!r}"


class Lab:
    """A whole WebRTC lab in the running event loop.

    Example (in a notebook cell, or inside ``asyncio.run``)::

        async with Lab() as lab:
            await lab.add_peer("alice")
            await lab.add_peer("bob")
            await lab.wait_connected()
            await asyncio.sleep(5)
            df = lab.stats()

    :param room: the room every lab peer joins.
    :param stats_interval: seconds between getStats samples.
    :param host_addresses: where peers gather candidates (loopback by default;
        ``None`` for the real interfaces).
    :param server: an existing signaling server to use instead of starting one.
    :param link: emulated conditions between every pair of peers (starts a
        :class:`~webrtclab.netem.relay.Network`); or pass a ``network``.
    :param turn: a TURN server for the peers: ``True`` starts coturn on loopback
        for the lab, or pass a :class:`~webrtclab.turn.TurnServer` or a
        :class:`~webrtclab.auth.TurnConfig`.  The signaling server hands its
        credentials to web clients too.
    :param relay_only: peers gather relay candidates only (needs ``turn``).
    :param turn_link: emulated conditions between each peer and the TURN server
        (needs the network emulator).
    :param reconnect: how peers reconnect when signaling goes away (``None``: they do
        not); see :class:`~webrtclab.signaling.Backoff` and :meth:`restart_server`.
    :param nat: put every peer behind a NAT (``add_peer(nat=...)`` and
        ``add_browser_peer(nat=...)`` override it per peer, ``nat=None`` there for
        none): a preset name (``"full-cone"``, ``"restricted-cone"``,
        ``"port-restricted-cone"``, ``"symmetric"``) or a
        :class:`~webrtclab.netem.nat.NatConfig` gives each peer a NAT box of its own;
        a :class:`~webrtclab.netem.natbox.NatBox` puts every aiortc peer that gets it
        behind that one box (a carrier-grade NAT; not for browser peers).  The lab
        then starts a STUN responder (:class:`~webrtclab.stun.StunServer`) that
        peers behind NATs use; :meth:`nat_bindings` is the table of what the boxes
        did.  Not with the network emulator (``link=``/``network=``) in this version.
    :param access_link: every NAT box the lab makes gets this access link ("last mile",
        needs ``nat=``; ``add_peer(access_link=...)`` overrides it per peer): a
        :class:`~webrtclab.netem.conditions.LinkConditions` for both directions or an
        ``(uplink, downlink)`` pair.  Every packet crossing a peer's box crosses it,
        whichever path ICE picks (direct, or relayed through coturn); live changes with
        :meth:`set_access_link`, counters in :meth:`links`.  Seeded from ``seed``.
    :param ice_check_retransmissions: for every aiortc peer: STUN retransmissions
        before a connectivity check fails (see :class:`~webrtclab.peer.Peer`); 2
        detects an ICE failure in about 4 s instead of over a minute.
    """

    def __init__(
        self,
        *,
        room: str = "lab",
        stats_interval: float = 0.5,
        host_addresses: tuple[str, ...] | None = LOOPBACK,
        server: SignalingServer | None = None,
        server_options: dict[str, Any] | None = None,
        link: LinkConditions | None = None,
        network: Network | None = None,
        seed: int = 0,
        turn: TurnServer | TurnConfig | bool | None = None,
        relay_only: bool = False,
        turn_link: LinkConditions | None = None,
        reconnect: Backoff | None = Backoff(),
        nat: NatConfig | NatBox | str | None = None,
        ice_check_retransmissions: int | None = None,
        access_link: AccessLinkSetting | None = None,
    ) -> None:
        if relay_only and not turn:
            raise ConfigurationError("relay_only needs a TURN server: pass turn=True")
        if turn_link is not None and (not turn or (network is None and link is None)):
            raise ConfigurationError("turn_link needs turn= and the network emulator (link=)")
        self.room = room
        self.reconnect = reconnect
        self._server_options = dict(server_options or {})
        if network is not None and link is not None:
            raise ConfigurationError("give either link= (conditions) or network=, not both")
        self.nat = _nat_setting(nat)
        if self.nat is not None and (network is not None or link is not None):
            raise ConfigurationError(_NAT_WITH_EMULATOR)
        self.access_link = None if access_link is None else access_link_pair(access_link)
        if self.access_link is not None and self.nat is None:
            raise ConfigurationError(
                "access_link= is the access link of the peers' NAT boxes: give nat= too "
                "(or add_peer(..., nat=..., access_link=...))"
            )
        if self.access_link is not None and isinstance(self.nat, NatBox):
            raise ConfigurationError(
                "a shared NatBox has its own access link: give access_link= to the NatBox"
            )
        self.seed = seed
        self.ice_check_retransmissions = ice_check_retransmissions
        #: the NAT box of every peer behind one, by user id
        self.peer_boxes: dict[str, NatBox] = {}
        #: every NAT box a peer of this lab sits behind (see :meth:`nat_bindings`)
        self.nat_boxes: list[NatBox] = []
        self._own_boxes: list[NatBox] = []
        # Browser peers behind NATs: their gateways and the signaling hooks that apply them.
        self._gateways: dict[NatGateway, Callable[[], None]] = {}  # -> its unhook
        #: the STUN responder, started with the first peer behind a NAT
        self.stun: StunServer | None = None
        # One time base for stats, events and link logs: a given network's, else the lab's.
        self.clock = network.clock if network is not None else LabClock()
        if network is None and link is not None:
            network = Network(link, seed=seed, clock=self.clock)
        self.network = network
        #: the ``events`` table (:meth:`events` for its DataFrame)
        self.event_log = EventLog(self.clock)
        self.host_addresses = host_addresses
        self._own_turn = turn is True
        self.turn: TurnServer | TurnConfig | None = TurnServer() if turn is True else (turn or None)
        self._own_server = server is None
        self._unhook: list[Callable[[], None]] = []
        if server is None:
            server = SignalingServer(**self._server_settings(self._server_options))
        elif network is not None:
            # A borrowed server: the emulator joins its rewrite chain until the lab closes.
            self._unhook.append(server.dispatcher.add_rewrite(network.rewrite))
        self.server = server
        # Every member, aiortc and browser peers alike (Chromium pages share one browser).
        self._members: dict[str, Peer | BrowserPeer] = {}
        self._member_callbacks: list[Callable[[Peer | BrowserPeer], None]] = []
        self._chromium: Chromium | None = None
        self._chromium_lock = asyncio.Lock()
        self.relay_only = relay_only
        self.turn_link = turn_link
        self.sampler = StatsSampler(
            lambda: self._members.values(),
            interval=stats_interval,
            clock=self.clock,
            network=network,
            link_sources=[self._access_link_rows],
        )
        self._started = False
        self._holds_gc = False
        self._closed = False
        self._closing = CloseOnce()

    @property
    def members(self) -> Mapping[str, Peer | BrowserPeer]:
        """Every member by user id, in the order they were added (a live, read-only view)."""
        return MappingProxyType(self._members)

    @property
    def peers(self) -> dict[str, Peer]:
        """The aiortc members (a snapshot)."""
        return {k: m for k, m in self._members.items() if isinstance(m, Peer)}

    @property
    def browsers(self) -> dict[str, BrowserPeer]:
        """The Chromium members (a snapshot)."""
        return {k: m for k, m in self._members.items() if isinstance(m, BrowserPeer)}

    @property
    def url(self) -> str:
        """The signaling server's WebSocket URL."""
        return self.server.url

    async def start(self) -> None:
        """Start the signaling server (if the lab owns it) and the stats sampler."""
        if self._closed:
            raise InvalidStateError("cannot start a lab that was closed")
        if self._started:
            return
        if not self._holds_gc:
            _gcpause.hold()  # full collections would stall the emulated links
            self._holds_gc = True
        try:
            if isinstance(self.turn, TurnServer):
                await self.turn.start()
            if self._own_server:
                await self.server.start()
            if self.network is not None:
                self.network.start()
            self.sampler.start()
        except BaseException:
            # `async with` does not close a lab whose start failed: do not keep the hold.
            self._holds_gc = False
            _gcpause.release()
            raise
        self._started = True

    def _server_settings(self, options: dict[str, Any]) -> dict[str, Any]:
        """The lab's own server's settings: the user's, the emulator's rewrite, TURN."""
        settings = dict(options)
        if self.network is not None:
            settings.setdefault("rewrite", self.network.rewrite)
        if self.turn is not None:
            # A function: the lab's coturn has its port only once the lab starts it.
            settings.setdefault("turn", lambda: self.turn_config)
        return settings

    @property
    def turn_config(self) -> TurnConfig | None:
        """URIs and secrets of the lab's TURN server (None without one)."""
        if isinstance(self.turn, TurnServer):
            return self.turn.config
        return self.turn

    def _ice_servers(self, user_id: str, *, stun: bool = False) -> list[RTCIceServer]:
        servers = [RTCIceServer(self.stun.uri)] if stun and self.stun is not None else []
        config = self.turn_config
        if config is None:
            return servers
        credentials = config.credentials(user_id)
        uris = list(credentials.uris)
        if self.network is not None and isinstance(self.turn, TurnServer):
            # The peer reaches coturn through the emulator (the turn_link).
            host, port = self.network.front(user_id, TURN_NODE, self.turn.address, self.turn_link)
            uris = [f"turn:{host}:{port}?transport=udp"]
        return [*servers, RTCIceServer(uris, credentials.username, credentials.credential)]

    def invite(self, user_id: str, *, ttl_s: float | None = None) -> str:
        """The web client's URL for ``user_id`` in the lab's room, with a join token if needed."""
        query = {"room": self.room, "user": user_id}
        token = self._join_token(user_id, ttl_s=ttl_s)
        if token is not None:
            query["token"] = token
        return f"{self.server.http_url}/?{urlencode(query)}"

    def _check_new_member(self, user_id: str) -> None:
        """Refuse a user id an aiortc or browser peer of the lab has, or the TURN node's."""
        if user_id in self._members:
            raise ConfigurationError(f'the lab already has a peer "{user_id}"')
        if self.turn is not None and user_id == TURN_NODE:
            raise ConfigurationError(f'"{TURN_NODE}" names the TURN server in this lab\'s links')

    def _join_token(self, user_id: str, *, ttl_s: float | None = None) -> str | None:
        """A signed token for ``user_id`` in the lab's room, else the static token, if any."""
        if self.server.authority is not None:
            return self.server.issue_token(user_id, room=self.room, ttl_s=ttl_s)
        return self.server.token

    async def add_peer(
        self,
        user_id: str,
        *,
        media: MediaSpec | None = None,
        echo_chat: bool = False,
        **options: Any,
    ) -> Peer:
        """Create a peer and join it to the lab's room (it offers to those already there).

        ``nat=``: put this peer behind a NAT (see the lab's ``nat``; ``None``: no NAT,
        whatever the lab's default); ``access_link=``: its box's access link (default:
        the lab's ``access_link``; not with a shared ``NatBox``, whose own applies);
        ``options`` go to :class:`~webrtclab.peer.Peer`.
        """
        nat, access_link = self._peer_nat(user_id, options)
        if nat is not None and "host_addresses" in options:
            raise ConfigurationError(
                f'peer "{user_id}": give nat= or host_addresses=, not both (a peer behind '
                "a NAT gathers on the private address the lab gives it)"
            )
        await self.start()
        self._check_new_member(user_id)
        box = None
        if nat is not None:
            box = self._nat_box(nat, user_id, access_link)
            host = box.new_host()
            options["host_addresses"] = (host,)
            options["nat"] = box
            await self._start_stun()
            self.event_log.add(
                user_id,
                "",
                "nat",
                f"{box.name}: {box.config.name}, public {box.public_ip}, private {host}"
                + _access_detail(box),
            )
        options.setdefault("host_addresses", self.host_addresses)
        options.setdefault("reconnect", self.reconnect)
        if self.ice_check_retransmissions is not None:
            options.setdefault("ice_check_retransmissions", self.ice_check_retransmissions)
        if self.turn is not None or box is not None:
            options.setdefault("ice_servers", self._ice_servers(user_id, stun=box is not None))
        if self.turn is not None:
            options.setdefault("relay_only", self.relay_only)
        peer = Peer(user_id, media=media, echo_chat=echo_chat, events=self.event_log, **options)
        self._members[user_id] = peer
        self._member_added(peer)
        try:
            await peer.join(
                self.server.url,
                self.room,
                token=self._join_token(user_id),
                # A fresh join token for each reconnection (they expire).
                refresh_token=lambda: self._join_token(user_id),
            )
        except BaseException:
            del self._members[user_id]
            await peer.close()
            raise
        return peer

    def _peer_nat(
        self, user_id: str, options: dict[str, Any]
    ) -> tuple[NatConfig | NatBox | None, tuple[LinkConditions, LinkConditions] | None]:
        """A new peer's NAT and access link, taken out of its ``options`` and checked."""
        nat = _nat_setting(options.pop("nat", self.nat))
        access_link = self._peer_access_link(user_id, nat, options.pop("access_link", _NOT_GIVEN))
        if nat is not None and self.network is not None:
            raise ConfigurationError(_NAT_WITH_EMULATOR)
        return nat, access_link

    def _peer_access_link(
        self, user_id: str, nat: NatConfig | NatBox | None, value: object
    ) -> tuple[LinkConditions, LinkConditions] | None:
        """A new peer's access link: the one given (checked), else the lab's default."""
        if value is _NOT_GIVEN:
            return self.access_link if isinstance(nat, NatConfig) else None
        if value is None:
            return None
        pair = access_link_pair(value, f'peer "{user_id}": access_link')
        if nat is None:
            raise ConfigurationError(
                f'peer "{user_id}": access_link= is the access link of its NAT box: give nat= too'
            )
        if isinstance(nat, NatBox):
            raise ConfigurationError(
                f'peer "{user_id}": a shared NatBox has its own access link: give '
                "access_link= to the NatBox"
            )
        return pair

    def _nat_box(
        self,
        nat: NatConfig | NatBox,
        user_id: str,
        access_link: tuple[LinkConditions, LinkConditions] | None = None,
    ) -> NatBox:
        """The box for a new peer: a new one for a config (named ``<user>-nat``), else the
        given (shared) one."""
        if isinstance(nat, NatBox):
            box = nat
        else:
            box = NatBox(
                nat,
                name=f"{user_id}-nat",
                access_link=access_link,
                seed=self.seed,
                inside_name=user_id,
            )
            self._own_boxes.append(box)
        self.peer_boxes[user_id] = box
        if box not in self.nat_boxes:
            if len(self.nat_boxes) >= _MAX_NATS:
                raise ConfigurationError(f"a lab has at most {_MAX_NATS} NAT boxes")
            index = len(self.nat_boxes) + 1
            box.adopt(
                public_ip=_NAT_PUBLIC.format(index),
                private_network=_NAT_PRIVATE.format(index),
                clock=self.clock.now,
            )
            self.nat_boxes.append(box)
        return box

    async def _start_stun(self) -> None:
        if self.stun is None:
            stun = StunServer()
            await stun.start()
            self.stun = stun

    async def add_browser_peer(self, user_id: str, **options: Any) -> BrowserPeer:
        """Open the lab's web client in headless Chromium and join the room as ``user_id``.

        The page offers to everyone already in the room, like any newcomer.  Its
        stats rows join :meth:`stats`, every libwebrtc metric :meth:`browser_stats`.
        ``options`` go to :class:`~webrtclab.browser.BrowserPeer` (``width``,
        ``height``, ``fps``, ``relay``, ``token``, ``chromium``...).  The lab's own
        Chromium is launched on first use (each page gets its own context) and
        closed with the lab.

        ``nat=`` (default: the lab's ``nat``; a preset or a ``NatConfig``, ``None``
        for none) puts the page behind a NAT box of its own: a
        :class:`~webrtclab.netem.gateway.NatGateway` rewrites the candidates it is told
        and tells, so its packets cross the box (its STUN and TURN servers too).
        """
        nat, access_link = self._peer_nat(user_id, options)
        if nat is not None:
            self._check_browser_nat(user_id, nat, options)
        await self.start()
        self._check_new_member(user_id)
        gateway = None
        if nat is not None:
            assert isinstance(nat, NatConfig)
            gateway = await self._nat_gateway(user_id, nat, access_link)
            options["ice_servers"] = self._browser_nat_ice_servers(user_id, gateway)
        elif self.turn is not None:
            # The same TURN path as the lab's aiortc peers (through the emulator if any).
            options.setdefault(
                "ice_servers",
                [
                    {"urls": s.urls, "username": s.username, "credential": s.credential}
                    for s in self._ice_servers(user_id)
                ],
            )
        if self.turn is not None:
            options.setdefault("relay", self.relay_only)
        options.setdefault("token", self._join_token(user_id))
        if options.get("chromium") is None:
            options["chromium"] = await self._shared_chromium()
        browser = BrowserPeer(
            user_id,
            self.server.http_url,
            room=self.room,
            clock=self.clock,
            events=self.event_log,
            **options,
        )
        self._members[user_id] = browser
        self._member_added(browser)
        try:
            await browser.join()
        except BaseException:
            del self._members[user_id]
            await browser.close()
            if gateway is not None:
                self._drop_gateway(gateway)
            raise
        return browser

    def _check_browser_nat(
        self, user_id: str, nat: NatConfig | NatBox, options: Mapping[str, Any]
    ) -> None:
        """Refuse the NAT combinations browser peers do not support (before anything starts)."""
        if isinstance(nat, NatBox):
            raise ConfigurationError(
                f'browser peer "{user_id}": a browser gets a NAT box of its own; give a '
                "preset or a NatConfig (a shared NatBox is for aiortc peers only), or nat=None"
            )
        if options.get("ice_servers") is not None:
            raise ConfigurationError(
                f'browser peer "{user_id}": give nat= or ice_servers=, not both (behind a '
                "NAT the page reaches the lab's STUN and TURN servers through its box)"
            )
        if self.turn is not None and not isinstance(self.turn, TurnServer):
            raise ConfigurationError(
                f'browser peer "{user_id}": behind a NAT a browser needs the lab\'s own '
                "coturn (turn=True or a TurnServer), not a TurnConfig"
            )

    async def _nat_gateway(
        self,
        user_id: str,
        nat: NatConfig,
        access_link: tuple[LinkConditions, LinkConditions] | None = None,
    ) -> NatGateway:
        """A NAT box for a browser peer and the signaling hook that puts it in Chrome's path."""
        box = self._nat_box(nat, user_id, access_link)
        gateway = NatGateway(user_id, box)
        self._gateways[gateway] = self.server.dispatcher.add_rewrite(gateway.rewrite)
        await self._start_stun()
        self.event_log.add(
            user_id,
            "",
            "nat",
            f"{box.name}: {box.config.name}, public {box.public_ip}, "
            f"inside {gateway.inside_ip}, host {gateway.host_ip}" + _access_detail(box),
        )
        return gateway

    def _drop_gateway(self, gateway: NatGateway) -> None:
        unhook = self._gateways.pop(gateway, None)
        if unhook is not None:
            unhook()
        gateway.close()

    def _browser_nat_ice_servers(self, user_id: str, gateway: NatGateway) -> list[dict[str, Any]]:
        """The lab's STUN responder and coturn, as the browser reaches them: through its box."""
        assert self.stun is not None
        host, port = gateway.front(self.stun.address)
        servers: list[dict[str, Any]] = [{"urls": [f"stun:{host}:{port}"]}]
        if isinstance(self.turn, TurnServer):
            credentials = self.turn.credentials(user_id)
            host, port = gateway.front(self.turn.address)
            servers.append(
                {
                    "urls": [f"turn:{host}:{port}?transport=udp"],
                    "username": credentials.username,
                    "credential": credentials.credential,
                }
            )
        return servers

    def on_member_added(self, callback: Callable[[Peer | BrowserPeer], None]) -> Callable[[], None]:
        """Call ``callback(member)`` for every peer or browser peer added from now on.

        Called before the member joins, so listeners see its first frame.  Returns
        the function that unsubscribes.
        """
        self._member_callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self._member_callbacks:
                self._member_callbacks.remove(callback)

        return unsubscribe

    def _member_added(self, member: Peer | BrowserPeer) -> None:
        for callback in list(self._member_callbacks):
            callback(member)

    async def _shared_chromium(self) -> Chromium:
        async with self._chromium_lock:
            if self._closed:
                raise InvalidStateError("cannot add a browser peer to a lab that was closed")
            if self._chromium is None:
                chromium = Chromium()
                await chromium.start()
                self._chromium = chromium
            return self._chromium

    async def remove_peer(self, user_id: str) -> None:
        """Close one peer (the others see peer-left)."""
        member = self._members.pop(user_id, None)
        if member is None:
            raise ConfigurationError(f'the lab has no peer "{user_id}"')
        await member.close()

    async def restart_server(self, down_s: float = 0.0) -> SignalingServer:
        """Close the signaling server and start a new one on the same port and settings.

        Calls go on (media does not pass through signaling); peers notice the closed
        socket, reconnect with backoff and re-join, keeping their connected sessions.
        ``down_s``: seconds between the close and the start.  Returns the new server.
        """
        if not self._own_server:
            raise ConfigurationError("restart_server needs a lab that started its own server")
        if not self._started or self._closed:
            raise InvalidStateError("restart_server needs a started lab that is not closed")
        old = self.server
        await old.close()
        self.event_log.add("", "", "server-stopped", old.url)
        if down_s > 0:
            await asyncio.sleep(down_s)
        new = SignalingServer(old.host, old.port, **self._server_settings(self._server_options))
        for gateway in self._gateways:  # browser peers behind NATs stay behind them
            self._gateways[gateway] = new.dispatcher.add_rewrite(gateway.rewrite)
        await new.start()
        self.server = new
        self.event_log.add("", "", "server-started", new.url)
        return new

    async def wait_connected(self, timeout: float = 15.0) -> None:
        """Wait until every pair of lab peers (browser peers included) is connected."""
        members = list(self._members.values())
        others = len(members) - 1
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(m.wait_connected(others, timeout=timeout) for m in members))
        except TimeoutError:
            raise LabTimeoutError(f"lab peers not all connected within {timeout} s") from None

    # The tables as DataFrames, one method per table, named after it (their feeds, for
    # following new rows: lab.sampler.stats/.rtt/.links, lab.event_log).

    def stats(self) -> pd.DataFrame:
        """Every stats row sampled so far (see :mod:`webrtclab.stats` for columns)."""
        return self.sampler.stats.dataframe()

    def browser_stats(self) -> pd.DataFrame:
        """Every numeric libwebrtc metric of the browser peers, long format
        (``time_s, peer, remote, type, id, kind, metric, value``; see
        :mod:`webrtclab.browser`): ``availableOutgoingBitrate``, ``framesDropped``..."""
        return BROWSER_STATS.frame(row for b in self.browsers.values() for row in b.raw_rows)

    def rtt(self) -> pd.DataFrame:
        """The RTT of every RTCP report each aiortc peer got, unsmoothed.

        ``stats()["rtt_ms"]`` is aiortc's ``roundTripTime``, an average that keeps 85 %
        of its last value at each report (about one a second), so it takes ~10 s to
        follow a change; these samples follow it at the next report.  Columns:
        ``time_s, peer, remote, kind, rtt_ms``.
        """
        self.sampler.take_rtt()
        return self.sampler.rtt.dataframe()

    def events(self) -> pd.DataFrame:
        """The events table: connection states, selected paths, joins, link changes..."""
        return self.event_log.dataframe()

    def nat_bindings(self) -> pd.DataFrame:
        """The ``nat_bindings`` table: what every NAT box did (columns ``time_s, nat,
        event, internal, external, remote, detail``; events ``mapping-created``,
        ``mapping-expired``, ``mapping-released``, ``filtered`` with the reason)."""
        rows = [row for box in self.nat_boxes for row in box.rows.rows]
        return NAT_BINDINGS.frame(sorted(rows, key=lambda row: row[0]))

    def links(self) -> pd.DataFrame:
        """The link log: per-direction counters and conditions, sampled with the stats."""
        return self.sampler.links.dataframe()

    def set_link(
        self, src: str, dst: str, conditions: LinkConditions, *, both: bool = False
    ) -> None:
        """Change the emulated link from ``src`` to ``dst`` (``both``: and back) during a call."""
        if self.network is None:
            raise ConfigurationError("this lab has no network emulator: create it with link=")
        self.network.set_conditions(src, dst, conditions, both=both)
        self.event_log.add(src, dst, "link-change", repr(conditions))

    def set_access_link(self, user_id: str, conditions: AccessLinkSetting) -> None:
        """Change the access link of ``user_id``'s NAT box during a call (or give it one):
        a :class:`~webrtclab.netem.conditions.LinkConditions` for both directions or an
        ``(uplink, downlink)`` pair.  Packets sent afterwards see it; a shared box's
        change applies to every peer behind it."""
        box = self.peer_boxes.get(user_id)
        if box is None:
            raise ConfigurationError(f'"{user_id}" is not a peer of this lab behind a NAT')
        box.set_access_link(access_link_pair(conditions, "access_link"))
        self.event_log.add(user_id, box.name, "access-link-change", repr(box.access_link))

    def _access_link_rows(self, now: float) -> list[LinkRow]:
        return [row for box in list(self.nat_boxes) for row in box.link_rows(now)]

    async def close(self) -> None:
        """Stop sampling, close every peer, then the server; safe to call twice.

        A second caller waits for the first close to end.
        """
        try:
            await self._closing.run(self._close)
        finally:
            if self._holds_gc and self._closed:
                self._holds_gc = False
                _gcpause.release()

    async def _close(self) -> None:
        self._closed = True
        errors: list[BaseException] = []
        results = await asyncio.gather(
            self.sampler.close(),
            *(member.close() for member in self._members.values()),
            return_exceptions=True,
        )
        errors.extend(r for r in results if isinstance(r, BaseException))
        for unhook in self._unhook:
            unhook()  # a borrowed server no longer passes messages to our emulator
        for gateway in list(self._gateways):
            self._drop_gateway(gateway)
        async with self._chromium_lock:  # not while add_browser_peer is launching it
            chromium, self._chromium = self._chromium, None
        # Then what the peers used, top layer down, one at a time.
        closers: list[Callable[[], Awaitable[None]]] = []
        if chromium is not None:
            closers.append(chromium.close)
        if self.network is not None:
            closers.append(self.network.close)
        if self._own_server:
            closers.append(self.server.close)
        if self._own_turn and isinstance(self.turn, TurnServer):
            closers.append(self.turn.close)
        if self.stun is not None:
            closers.append(self.stun.close)
        for box in self._own_boxes:
            box.close()
        for close in closers:
            try:
                await close()
            except Exception as exc:  # gathered: close the rest before reporting
                errors.append(exc)
        for error in errors:
            logger.warning("error while closing the lab: %r", error)
        if errors:
            raise errors[0]

    async def __aenter__(self) -> Lab:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
