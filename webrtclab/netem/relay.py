"""The emulated network: a UDP relay on 127.0.0.1 with a link model between every pair.

How a pair of peers A and B is put behind the relay (the way a TURN relay or a NAT sits
in the path, RFC 8656 and RFC 4787, but rewriting the signaled candidates instead):

* every UDP candidate of A that B is told about (in an offer, an answer or a trickled
  ``ice-candidate``) is rewritten to a relay socket ``P(A, a)`` standing for it, and
  likewise for B, so each peer only ever talks to relay sockets;
* a datagram arriving on ``P(A, a)`` from B's real address ``b`` is a packet B -> A: it
  goes through the B -> A link model and leaves from ``P(B, b)`` towards ``a``, so A sees
  it coming from the address it was told is B's.

A datagram from an address the relay has not seen yet can only come from the pair's other
peer (each relay socket belongs to one pair): a socket is made for it on the spot, as a
peer-reflexive candidate would be.

The relay runs in a thread with its own event loop (uvloop when installed) so that the
lab's loop, busy encoding video or serving a notebook, does not delay packets.  Packets
held back by a link wait in one heap ordered by release time.  The loop's timers are only
millisecond-precise, so the relay wakes a little early and waits the rest in
``select`` on its own sockets (which releases the GIL): it is back as soon as the head
packet is due, or earlier when a datagram arrives, so that arrivals are timestamped and
queued on time even while departures are imminent.  A packet never leaves before its
release time.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
import select
import socket
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc.sdp import candidate_to_sdp

from .._tasks import CloseOnce
from ..events import LabClock
from ..exceptions import ConfigurationError, InvalidStateError
from ..sdp import is_loopback, parse_candidate, rewrite_candidates, rewrite_relayed
from ..signaling.rooms import Relayed
from ..tables import LINKS, LinkRow
from .conditions import LinkConditions, Schedule
from .link import LinkModel, link_row

__all__ = ["LINK_COLUMNS", "Network"]

logger = logging.getLogger(__name__)

Address = tuple[str, int]
# Wake this long before a release and wait the rest in select(): the loop's timers are
# only millisecond-precise (epoll and libuv round), select's timeout is ~0.05 ms precise.
EARLY_WAKE_S = 0.0015
# Longest stretch the release loop keeps the event loop from its other callbacks
# (condition changes, new sockets, stop) while departures follow each other closely.
RELEASE_SLICE_S = 0.002
SOCKET_BUFFER = 1 << 20

LINK_COLUMNS = LINKS.columns


class _Proxy(asyncio.DatagramProtocol):
    """A relay socket standing for one candidate (``real``) of ``owner`` in one pair."""

    def __init__(self, network: Network, pair: _Pair, owner: str, real: Address) -> None:
        self.network, self.pair, self.owner, self.real = network, pair, owner, real
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            self.sock.bind((network.host, 0))
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise
        self.address: Address = self.sock.getsockname()[:2]
        self.transport: asyncio.DatagramTransport | None = None
        # Last datagram in or out (relay clock); idle sockets are reaped.
        self.last_used = network.clock.now()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.network._forward(self, data, addr)

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable and friends
        logger.debug("relay socket %s: %s", self.address, exc)


@dataclass
class _Direction:
    """Packets from ``src`` to ``dst``: the link model and its send failures."""

    src: str
    dst: str
    model: LinkModel
    send_errors: int = 0


# A packet waiting to leave: (release time, tie-breaker, data, from socket, to, direction).
_Held = tuple[float, int, bytes, socket.socket, Address, _Direction]


@dataclass
class _Pair:
    a: str
    b: str
    directions: dict[tuple[str, str], _Direction]
    proxies: dict[tuple[str, Address], _Proxy] = field(default_factory=dict)
    by_real: dict[Address, _Proxy] = field(default_factory=dict)

    def other(self, user: str) -> str:
        return self.b if user == self.a else self.a


class Network:
    """Emulated links between lab peers, in a UDP relay on loopback.

    :param conditions: what every direction of every pair gets unless set otherwise.
    :param seed: seeds every link (each direction derives its own seed from it and the
        two user ids, so runs are reproducible whatever the join order).
    :param clock: the lab clock: link logs and schedules use its time base.
    :param idle_timeout_s: relay sockets that carried nothing for this long are
        closed (the candidates of connections that were replaced, e.g. after an
        outage, would otherwise pile up).
    """

    def __init__(
        self,
        conditions: LinkConditions | None = None,
        *,
        seed: int = 0,
        clock: LabClock | None = None,
        host: str = "127.0.0.1",
        idle_timeout_s: float = 120.0,
    ) -> None:
        if not idle_timeout_s > 0:
            raise ConfigurationError(f"idle_timeout_s must be positive, got {idle_timeout_s}")
        if not is_loopback(host):
            raise ConfigurationError(f"the relay must bind a loopback address, got {host!r}")
        self.default = conditions or LinkConditions()
        self.seed = seed
        self.clock = clock or LabClock()
        self.host = host
        self._overrides: dict[tuple[str, str], LinkConditions] = {}
        self._schedules: dict[tuple[str, str], Schedule] = {}
        self._direct: set[frozenset[str]] = set()
        self._pairs: dict[frozenset[str], _Pair] = {}
        self._lock = threading.Lock()
        self._seq = itertools.count()
        # The data path (relay thread only): packets held back, the pending wake-up and
        # the release time it is for (-inf: "as soon as the loop comes round", +inf: none).
        self._heap: list[_Held] = []
        self._wakeup: asyncio.Handle | None = None
        self._wakeup_at = math.inf
        self._fds: list[int] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._closed = False
        self._closing = CloseOnce()
        self.unknown_pair_packets = 0
        self.idle_timeout_s = idle_timeout_s
        self.reaped = 0

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Start the relay thread (idempotent)."""
        if self._closed:
            raise InvalidStateError("cannot start a network that was closed")
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="webrtclab-relay", daemon=True)
        self._thread.start()
        self._ready.wait()

    def _run(self) -> None:
        try:
            import uvloop

            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
            loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        loop.call_soon(self._ready.set)
        loop.call_later(self.idle_timeout_s / 4, self._reap)
        try:
            loop.run_forever()
        finally:
            # Sockets still being attached get their transports first (a transport made
            # after its socket was closed would leak, and uvloop's close trips over it).
            pending = asyncio.all_tasks(loop)
            if pending:
                loop.run_until_complete(asyncio.wait(pending, timeout=1.0))
            for pair in self._pairs.values():
                for proxy in pair.proxies.values():
                    if proxy.transport is not None:
                        proxy.transport.close()
                    else:
                        proxy.sock.close()
            loop.run_until_complete(asyncio.sleep(0))  # let transports finish closing
            loop.close()

    async def close(self) -> None:
        """Stop the relay and close its sockets; safe to call twice."""
        await self._closing.run(self._close)

    async def _close(self) -> None:
        self._closed = True
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            await asyncio.to_thread(self._thread.join, 5.0)

    async def __aenter__(self) -> Network:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- conditions ---------------------------------------------------------------------

    def direct(self, a: str, b: str) -> None:
        """Leave the pair (a, b) unimpaired and off the relay (before they negotiate)."""
        self._direct.add(frozenset((a, b)))

    def conditions(self, src: str, dst: str) -> LinkConditions:
        """The conditions in force from ``src`` to ``dst``."""
        pair = self._pairs.get(frozenset((src, dst)))
        if pair is not None:
            return pair.directions[(src, dst)].model.conditions
        return self._overrides.get((src, dst), self.default)

    def set_conditions(
        self,
        src: str,
        dst: str,
        conditions: LinkConditions,
        *,
        both: bool = False,
    ) -> None:
        """Change the link from ``src`` to ``dst`` (and back, with ``both``), live."""
        if not isinstance(conditions, LinkConditions):
            raise ConfigurationError(
                f"conditions must be LinkConditions, got {type(conditions).__name__}"
            )
        directions = [(src, dst), (dst, src)] if both else [(src, dst)]
        for key in directions:
            self._overrides[key] = conditions
            pair = self._pairs.get(frozenset(key))
            if pair is not None:
                self._call(self._apply, pair.directions[key], conditions)

    def set_schedule(self, src: str, dst: str, schedule: Schedule) -> None:
        """Condition changes at set times after the pair's first negotiation."""
        if frozenset((src, dst)) in self._pairs:
            raise ConfigurationError(
                f"cannot set a schedule for {src}->{dst}: the link exists already"
            )
        self._schedules[(src, dst)] = list(schedule)

    def _apply(self, direction: _Direction, conditions: LinkConditions) -> None:
        direction.model.set_conditions(conditions, self.clock.now())

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn`` on the relay thread (the link models live there)."""
        if self._loop is None or threading.current_thread() is self._thread:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def front(
        self, user: str, node: str, real: Address, conditions: LinkConditions | None = None
    ) -> Address:
        """The address ``user`` should use to reach a server (e.g. TURN) at ``real``.

        Packets between them go through the ``user`` <-> ``node`` link (unimpaired
        unless ``conditions`` or :meth:`set_conditions` say otherwise: the default
        conditions are for links between peers).
        """
        if not is_loopback(real[0]):
            raise ConfigurationError(f"{node} must be on loopback, got {real[0]!r}")
        for key in ((user, node), (node, user)):
            if conditions is not None or key not in self._overrides:
                self._overrides[key] = conditions or LinkConditions()
        pair = self._pair(user, node)
        if pair is None:
            return real
        return self._proxy(pair, node, real).address

    # --- pairs and candidates ------------------------------------------------------------

    def _pair(self, a: str, b: str) -> _Pair | None:
        key = frozenset((a, b))
        if key in self._direct:
            return None
        pair = self._pairs.get(key)
        if pair is None:
            self.start()
            now = self.clock.now()
            directions = {}
            for src, dst in ((a, b), (b, a)):
                seed = zlib.crc32(f"{self.seed}:{src}->{dst}".encode())
                model = LinkModel(
                    self._overrides.get((src, dst), self.default),
                    seed=seed,
                    start_time=now,
                    schedule=self._schedules.get((src, dst)),
                    name=f"{src}->{dst}",
                )
                directions[(src, dst)] = _Direction(src, dst, model)
            pair = _Pair(a, b, directions)
            self._pairs[key] = pair
        return pair

    def _proxy(self, pair: _Pair, owner: str, real: Address) -> _Proxy:
        with self._lock:
            proxy = pair.proxies.get((owner, real))
            if proxy is not None:
                return proxy
            proxy = _Proxy(self, pair, owner, real)
            pair.proxies[(owner, real)] = proxy
            pair.by_real[real] = proxy
        self._call(self._attach, proxy)
        return proxy

    def _attach(self, proxy: _Proxy) -> None:
        loop = self._loop
        assert loop is not None
        task = loop.create_task(loop.create_datagram_endpoint(lambda: proxy, sock=proxy.sock))
        task.add_done_callback(_log_failure)
        self._fds.append(proxy.sock.fileno())

    def rewrite_candidate(self, sender: str, receiver: str, text: str) -> str | None:
        """``text`` (``candidate:...``) as ``receiver`` must see it; None to drop it."""
        if not text:
            return text  # end-of-candidates
        pair = self._pair(sender, receiver)
        if pair is None:
            return text
        candidate = parse_candidate(text)
        if candidate.protocol.lower() != "udp" or not is_loopback(candidate.ip):
            # Traffic to it would bypass the emulator (or leave the host): hide it.
            return None
        proxy = self._proxy(pair, sender, (candidate.ip, candidate.port))
        candidate.ip, candidate.port = proxy.address
        candidate.relatedAddress = candidate.relatedPort = None
        return "candidate:" + candidate_to_sdp(candidate)

    def rewrite_sdp(self, sender: str, receiver: str, sdp: str) -> str:
        """``sdp`` with every candidate of ``sender`` replaced by its relay socket."""
        if self._pair(sender, receiver) is None:
            return sdp
        return rewrite_candidates(sdp, lambda text: self.rewrite_candidate(sender, receiver, text))

    def rewrite(self, sender: str, receiver: str, message: Relayed) -> Relayed | None:
        """The signaling hook: every candidate of ``sender`` in relayed offers, answers and
        trickled candidates is replaced by its relay socket (see :meth:`rewrite_candidate`)."""
        if self._pair(sender, receiver) is None:
            return message
        return rewrite_relayed(message, lambda text: self.rewrite_candidate(sender, receiver, text))

    # --- the data path (relay thread) ------------------------------------------------------

    def _forward(self, proxy: _Proxy, data: bytes, addr: Address) -> None:
        pair = proxy.pair
        sender = pair.by_real.get(addr)
        if sender is None:
            # Only the pair's other peer knows this socket: a peer-reflexive address.
            sender = self._proxy(pair, pair.other(proxy.owner), addr)
        if sender.owner == proxy.owner:
            self.unknown_pair_packets += 1
            return
        direction = pair.directions[(sender.owner, proxy.owner)]
        now = self.clock.now()
        proxy.last_used = sender.last_used = now
        for delivery in direction.model.submit(len(data), now):
            release = delivery.release_time
            if release is None:
                continue
            if release <= now:
                self._send(direction, sender.sock, data, proxy.real)
            else:
                heapq.heappush(
                    self._heap,
                    (release, next(self._seq), data, sender.sock, proxy.real, direction),
                )
                if release < self._wakeup_at:
                    self._arm(now)

    def _reap(self) -> None:
        """Close relay sockets idle for ``idle_timeout_s`` (relay thread, periodic)."""
        loop = self._loop
        assert loop is not None
        cutoff = self.clock.now() - self.idle_timeout_s
        with self._lock:
            for pair in self._pairs.values():
                for key, proxy in list(pair.proxies.items()):
                    if proxy.last_used >= cutoff or proxy.transport is None:
                        continue
                    del pair.proxies[key]
                    if pair.by_real.get(proxy.real) is proxy:
                        del pair.by_real[proxy.real]
                    with contextlib.suppress(ValueError):
                        self._fds.remove(proxy.sock.fileno())
                    proxy.transport.close()
                    self.reaped += 1
        loop.call_later(self.idle_timeout_s / 4, self._reap)

    def _send(self, direction: _Direction, sock: socket.socket, data: bytes, addr: Address) -> None:
        try:
            sock.sendto(data, addr)
        except OSError:  # buffer full or socket closed: the packet is lost, as on a wire
            direction.send_errors += 1

    def _arm(self, now: float) -> None:
        """(Re)schedule the wake-up for the head of the heap."""
        loop = self._loop
        assert loop is not None
        if self._wakeup is not None:
            self._wakeup.cancel()
        head = self._heap[0][0]
        wait = head - now
        if wait > EARLY_WAKE_S:
            self._wakeup = loop.call_later(wait - EARLY_WAKE_S, self._release)
            self._wakeup_at = head
        else:
            self._wakeup = loop.call_soon(self._release)
            self._wakeup_at = -math.inf

    def _release(self) -> None:
        """Send every packet that is due; wait precisely for one due very soon."""
        self._wakeup = None
        self._wakeup_at = math.inf
        heap = self._heap
        clock = self.clock
        deadline = clock.now() + RELEASE_SLICE_S
        while heap:
            now = clock.now()
            while heap and heap[0][0] <= now:
                _, _, data, sock, addr, direction = heapq.heappop(heap)
                self._send(direction, sock, data, addr)
            if not heap:
                return
            wait = heap[0][0] - now  # > 0
            if wait > EARLY_WAKE_S or now >= deadline or self._input_within(wait):
                # Far off, or time to let the loop run its other callbacks, or a datagram
                # came in: the loop reads it (on time) and comes back here.
                self._arm(now)
                return

    def _input_within(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s (GIL released); True if a relay socket got a datagram."""
        try:
            readable, _, _ = select.select(self._fds, (), (), timeout)
        except (ValueError, OSError):
            # A descriptor past select()'s limit, or closed under us: wait briefly without
            # watching input, then let the loop read what came in meanwhile.
            time.sleep(min(timeout, 0.0002))
            return True
        return bool(readable)

    # --- observability ----------------------------------------------------------------------

    def link_rows(self, now: float | None = None) -> list[LinkRow]:
        """One row per link direction: counters so far and the conditions in force."""
        now = self.clock.now() if now is None else now
        rows = []
        for pair in list(self._pairs.values()):
            for (src, dst), direction in pair.directions.items():
                rows.append(link_row(direction.model, src, dst, now))
        return rows

    def proxies(self) -> list[tuple[str, str, Address, Address]]:
        """(owner, other peer, real address, relay address) of every relay socket."""
        out = []
        for pair in self._pairs.values():
            for proxy in pair.proxies.values():
                out.append((proxy.owner, pair.other(proxy.owner), proxy.real, proxy.address))
        return out


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("relay socket failed to start: %r", task.exception())
