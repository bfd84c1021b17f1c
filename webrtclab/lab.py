"""The lab: a signaling server, peers in a room, a stats sampler and an event log."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlencode

import pandas as pd
from aiortc import RTCIceServer

from .auth import TurnConfig
from .events import EventLog, LabClock
from .exceptions import ConfigurationError, LabTimeoutError
from .loopback import LOOPBACK
from .media import MediaSpec
from .netem.conditions import LinkConditions
from .netem.relay import Network
from .peer import Peer
from .signaling.server import SignalingServer
from .stats import StatsSampler
from .turn import TurnServer

__all__ = ["TURN_NODE", "Lab"]

logger = logging.getLogger(__name__)

# The emulator's name for the TURN server: the link "alice" -> TURN_NODE is
# alice's path to coturn (``lab.set_link("alice", TURN_NODE, ...)``).
TURN_NODE = "turn"


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
    ) -> None:
        if relay_only and not turn:
            raise ConfigurationError("relay_only needs a TURN server: pass turn=True")
        if turn_link is not None and (not turn or (network is None and link is None)):
            raise ConfigurationError("turn_link needs turn= and the network emulator (link=)")
        self.room = room
        self.clock = LabClock()
        self.events = EventLog(self.clock)
        self.host_addresses = host_addresses
        self._own_server = server is None
        self.server = server or SignalingServer(**(server_options or {}))
        self.peers: dict[str, Peer] = {}
        if network is not None and link is not None:
            raise ConfigurationError("give either link= (conditions) or network=, not both")
        if network is None and link is not None:
            network = Network(link, seed=seed)
        self.network = network
        if network is not None:
            # One time base for stats, events and link logs.
            network.clock = self.clock
            self.server.dispatcher.rewrite = network.rewrite
        self._own_turn = turn is True
        self.turn: TurnServer | TurnConfig | None = (
            TurnServer() if turn is True else (turn or None)
        )
        self.relay_only = relay_only
        self.turn_link = turn_link
        self.sampler = StatsSampler(
            lambda: self.peers.values(),
            interval=stats_interval,
            clock=self.clock,
            network=network,
        )
        self._started = False
        self._closed = False

    @property
    def url(self) -> str:
        """The signaling server's WebSocket URL."""
        return self.server.url

    async def start(self) -> None:
        """Start the signaling server (if the lab owns it) and the stats sampler."""
        if self._closed:
            raise ConfigurationError("cannot start a lab that was closed")
        if self._started:
            return
        if isinstance(self.turn, TurnServer):
            await self.turn.start()
        if self._own_server:
            await self.server.start()
        if self.turn is not None and self.server.turn is None:
            self.server.turn = self.turn_config
        if self.network is not None:
            self.network.start()
        self.sampler.start()
        self._started = True

    @property
    def turn_config(self) -> TurnConfig | None:
        """URIs and secrets of the lab's TURN server (None without one)."""
        if isinstance(self.turn, TurnServer):
            return self.turn.config
        return self.turn

    def _ice_servers(self, user_id: str) -> list[RTCIceServer]:
        config = self.turn_config
        if config is None:
            return []
        credentials = config.credentials(user_id)
        uris = list(credentials.uris)
        if self.network is not None and isinstance(self.turn, TurnServer):
            # The peer reaches coturn through the emulator (the turn_link).
            host, port = self.network.front(
                user_id, TURN_NODE, self.turn.address, self.turn_link
            )
            uris = [f"turn:{host}:{port}?transport=udp"]
        return [RTCIceServer(uris, credentials.username, credentials.credential)]

    def invite(self, user_id: str, *, ttl_s: float | None = None) -> str:
        """The web client's URL for ``user_id`` in the lab's room, with a join token if needed."""
        query = {"room": self.room, "user": user_id}
        if self.server.authority is not None:
            query["token"] = self.server.issue_token(user_id, room=self.room, ttl_s=ttl_s)
        elif self.server.token is not None:
            query["token"] = self.server.token
        return f"{self.server.http_url}/?{urlencode(query)}"

    def _join_token(self, user_id: str) -> str | None:
        if self.server.authority is not None:
            return self.server.issue_token(user_id, room=self.room)
        return self.server.token

    async def add_peer(
        self,
        user_id: str,
        *,
        media: MediaSpec | None = None,
        echo_chat: bool = False,
        **options: Any,
    ) -> Peer:
        """Create a peer and join it to the lab's room (it offers to those already there)."""
        await self.start()
        if user_id in self.peers:
            raise ConfigurationError(f'the lab already has a peer "{user_id}"')
        if self.turn is not None and user_id == TURN_NODE:
            raise ConfigurationError(f'"{TURN_NODE}" names the TURN server in this lab\'s links')
        options.setdefault("host_addresses", self.host_addresses)
        if self.turn is not None:
            options.setdefault("ice_servers", self._ice_servers(user_id))
            options.setdefault("relay_only", self.relay_only)
        peer = Peer(user_id, media=media, echo_chat=echo_chat, events=self.events, **options)
        self.peers[user_id] = peer
        try:
            await peer.join(self.server.url, self.room, token=self._join_token(user_id))
        except BaseException:
            del self.peers[user_id]
            await peer.close()
            raise
        return peer

    async def remove_peer(self, user_id: str) -> None:
        """Close one peer (the others see peer-left)."""
        peer = self.peers.pop(user_id, None)
        if peer is None:
            raise ConfigurationError(f'the lab has no peer "{user_id}"')
        await peer.close()

    async def wait_connected(self, timeout: float = 15.0) -> None:
        """Wait until every pair of lab peers is connected."""
        peers = list(self.peers.values())
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(
                    *(p.wait_connected(len(peers) - 1, timeout=timeout) for p in peers)
                )
        except TimeoutError:
            raise LabTimeoutError(f"lab peers not all connected within {timeout} s") from None

    def stats(self) -> pd.DataFrame:
        """Every stats row sampled so far (see :mod:`webrtclab.stats` for columns)."""
        return self.sampler.to_dataframe()

    def events_frame(self) -> pd.DataFrame:
        return self.events.to_dataframe()

    def links(self) -> pd.DataFrame:
        """The link log: per-direction counters and conditions, sampled with the stats."""
        return self.sampler.links_dataframe()

    def set_link(
        self, src: str, dst: str, conditions: LinkConditions, *, both: bool = False
    ) -> None:
        """Change the emulated link from ``src`` to ``dst`` (``both``: and back) during a call."""
        if self.network is None:
            raise ConfigurationError("this lab has no network emulator: create it with link=")
        self.network.set_conditions(src, dst, conditions, both=both)
        self.events.add(src, dst, "link-change", repr(conditions))

    async def close(self) -> None:
        """Stop sampling, close every peer, then the server; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        errors: list[BaseException] = []
        results = await asyncio.gather(
            self.sampler.close(),
            *(peer.close() for peer in self.peers.values()),
            return_exceptions=True,
        )
        errors.extend(r for r in results if isinstance(r, BaseException))
        if self.network is not None:
            try:
                await self.network.close()
            except Exception as exc:  # gathered: close the rest before reporting
                errors.append(exc)
        if self._own_server:
            try:
                await self.server.close()
            except Exception as exc:  # gathered: close the rest before reporting
                errors.append(exc)
        if self._own_turn and isinstance(self.turn, TurnServer):
            try:
                await self.turn.close()
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
