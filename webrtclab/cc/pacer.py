"""A leaky-bucket pacer for one connection's RTP packets.

Media, retransmissions and padding leave through one queue at a pacing rate that is a
multiple of the congestion controller's target, so a keyframe does not leave as one
burst (libwebrtc ``modules/pacing/pacing_controller.cc``: pacing factor 2.5;
pion/interceptor ``pkg/gcc/leaky_bucket_pacer.go``).  Audio goes first, then
retransmissions, then video.  When the queue holds more than ``max_queue_s`` of data at
the pacing rate, the rate rises so the queue drains in that time, as libwebrtc does
(``kMaxExpectedQueueLength``): the pacer never holds media back for seconds.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .._tasks import cancel_and_wait

__all__ = ["PRIORITY_AUDIO", "PRIORITY_RTX", "PRIORITY_VIDEO", "PacedPacket", "Pacer"]

logger = logging.getLogger(__name__)

PRIORITY_AUDIO = 0
PRIORITY_RTX = 1
PRIORITY_VIDEO = 2
_PRIORITIES = (PRIORITY_AUDIO, PRIORITY_RTX, PRIORITY_VIDEO)


@dataclass(slots=True)
class PacedPacket:
    """One packet waiting in the pacer; ``send`` puts it on the wire."""

    size: int
    priority: int
    send: Callable[[], Awaitable[Any]]
    enqueued_s: float = field(default_factory=time.monotonic)


class Pacer:
    """Sends queued packets no faster than ``rate_bps`` (plus a small burst).

    :param pacing_factor: the pacing rate is this multiple of the target.
    :param burst_s: how much budget may build up while idle.
    """

    def __init__(
        self,
        *,
        target_bps: int = 300_000,
        pacing_factor: float = 2.5,
        burst_s: float = 0.005,
        max_queue_s: float = 0.5,
        min_rate_bps: int = 50_000,
    ) -> None:
        self.pacing_factor = pacing_factor
        self.burst_s = burst_s
        self.max_queue_s = max_queue_s
        self.min_rate_bps = min_rate_bps
        self._rate_bps = float(max(min_rate_bps, target_bps * pacing_factor))
        self._queues: tuple[collections.deque[PacedPacket], ...] = tuple(
            collections.deque() for _ in _PRIORITIES
        )
        self.queued_bytes = 0
        #: packets sent, and how long the last one waited in the queue (s)
        self.sent_packets = 0
        self.last_wait_s = 0.0
        self._budget = 0.0
        self._last = time.monotonic()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"Pacer(rate={self._rate_bps / 1000:.0f} kbit/s, queued={self.queued_bytes} B)"

    @property
    def rate_bps(self) -> float:
        """The pacing rate now, the drain rate of a long queue included."""
        # The queue over the time its oldest packet has left (libwebrtc: queue size over
        # the time left), so it drains within max_queue_s; queue / max_queue_s alone
        # shrinks with the queue and drains it exponentially, taking several times longer.
        left = max(self.max_queue_s - self.queue_time_s(), 0.001)
        drain = self.queued_bytes * 8 / left
        return max(self._rate_bps, drain)

    def set_target(self, target_bps: float) -> None:
        """Pace at ``pacing_factor`` times the controller's target."""
        self._rate_bps = max(float(self.min_rate_bps), target_bps * self.pacing_factor)

    def enqueue(self, packet: PacedPacket) -> None:
        """Queue ``packet``; it leaves when the budget allows, highest priority first."""
        self._queues[packet.priority].append(packet)
        self.queued_bytes += packet.size
        self._wake.set()

    def queue_time_s(self) -> float:
        """How long the oldest queued packet has waited."""
        oldest = [q[0].enqueued_s for q in self._queues if q]
        return time.monotonic() - min(oldest) if oldest else 0.0

    def start(self) -> None:
        """Start sending in the background (idempotent)."""
        if self._task is None:
            self._last = time.monotonic()
            self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        """Stop sending and drop what is queued; safe to call twice."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        for queue in self._queues:
            queue.clear()
        self.queued_bytes = 0

    def _pop(self) -> PacedPacket | None:
        for queue in self._queues:
            if queue:
                packet = queue.popleft()
                self.queued_bytes -= packet.size
                return packet
        return None

    def _refill(self, now: float) -> None:
        rate = self.rate_bps
        self._budget = min(self._budget + (now - self._last) * rate / 8, rate * self.burst_s / 8)
        self._last = now

    async def _run(self) -> None:
        while True:
            if not self.queued_bytes:
                self._wake.clear()
                await self._wake.wait()
                # Budget does not accumulate while there is nothing to send.
                self._refill(time.monotonic())
            now = time.monotonic()
            self._refill(now)
            if self._budget < 0:
                await asyncio.sleep(-self._budget * 8 / self.rate_bps)
                continue
            packet = self._pop()
            if packet is None:
                continue
            self._budget -= packet.size
            self.last_wait_s = now - packet.enqueued_s
            self.sent_packets += 1
            try:
                await packet.send()
            except ConnectionError:
                pass  # the transport closed under us; the owner closes the pacer next
            except Exception:
                logger.exception("%r: sending a paced packet failed", self)
