"""The lab: a signaling server, peers in a room, a stats sampler and an event log."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pandas as pd

from .events import EventLog, LabClock
from .exceptions import ConfigurationError, LabTimeoutError
from .loopback import LOOPBACK
from .media import MediaSpec
from .netem.conditions import LinkConditions
from .netem.relay import Network
from .peer import Peer
from .signaling.server import SignalingServer
from .stats import StatsSampler

__all__ = ["Lab"]

logger = logging.getLogger(__name__)


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
    ) -> None:
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
        if self._own_server:
            await self.server.start()
        if self.network is not None:
            self.network.start()
        self.sampler.start()
        self._started = True

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
        options.setdefault("host_addresses", self.host_addresses)
        peer = Peer(user_id, media=media, echo_chat=echo_chat, events=self.events, **options)
        self.peers[user_id] = peer
        try:
            await peer.join(self.server.url, self.room, token=self.server.token)
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
        for error in errors:
            logger.warning("error while closing the lab: %r", error)
        if errors:
            raise errors[0]

    async def __aenter__(self) -> Lab:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
