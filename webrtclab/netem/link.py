"""The link model: what happens to each packet sent into one direction of a link.

Pure and deterministic: no clock, no sockets.  The caller gives each packet's size and
send time and gets back when (or whether) each copy comes out.  A packet goes through,
in order:

1. outage windows (``"outage"`` drop);
2. Gilbert-Elliott bursty loss (``"burst"``), then independent random loss (``"loss"``);
3. duplication (the copy goes through the remaining steps on its own);
4. the bottleneck: a FIFO served by a constant rate or a Mahimahi trace, bounded by a
   drop-tail byte limit (``"queue"``);
5. the delay line: propagation delay plus jitter, or, for a reordered packet, none.

Random draws come from one :class:`random.Random` per link, in that order, so the same
seed and the same (size, time) sequence give the same drops and release times.
"""

from __future__ import annotations

import logging
import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from ..exceptions import ConfigurationError
from ..tables import LinkRow
from .conditions import LinkConditions, Schedule, apply_changes

if TYPE_CHECKING:
    from .traces import Trace

__all__ = [
    "DROP_REASONS",
    "Delivery",
    "DropReason",
    "LinkModel",
    "LinkStats",
    "link_pair",
    "link_row",
]

logger = logging.getLogger(__name__)

DropReason = Literal["loss", "burst", "queue", "outage"]

DROP_REASONS: tuple[DropReason, ...] = ("loss", "burst", "queue", "outage")
"""Every drop reason: random loss, Gilbert-Elliott loss, queue overflow, outage window."""

_SQRT3 = math.sqrt(3.0)
# Pareto with shape 3 and scale 1 has mean 3/2 and variance 3/4.
_PARETO_SHAPE = 3.0
_PARETO_MEAN = 1.5
_PARETO_STD = math.sqrt(0.75)


@dataclass(frozen=True, slots=True)
class Delivery:
    """The fate of one copy of a submitted packet."""

    size_bytes: int
    release_time: float | None
    """When the copy leaves the link (same clock as ``now``); ``None`` if dropped."""
    drop_reason: DropReason | None = None
    duplicate: bool = False
    """True for the extra copy made by duplication."""

    @property
    def dropped(self) -> bool:
        return self.release_time is None


@dataclass
class LinkStats:
    """Counters of one link direction.

    ``delivered + dropped == packets_in + duplicated``: duplicates are counted as
    deliveries (or drops) of their own.  Queueing delay is the time from send to the end
    of serialization (waiting plus transmission), sampled for every accepted copy.
    """

    packets_in: int = 0
    bytes_in: int = 0
    delivered: int = 0
    bytes_delivered: int = 0
    duplicated: int = 0
    reordered: int = 0
    dropped_by_reason: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(DROP_REASONS, 0)
    )
    queue_delay_sum_s: float = 0.0
    queue_delay_count: int = 0
    queue_delay_max_s: float = 0.0

    @property
    def dropped(self) -> int:
        return sum(self.dropped_by_reason.values())

    @property
    def queue_delay_mean_s(self) -> float:
        """Mean queueing delay, 0 before any packet was accepted."""
        return self.queue_delay_sum_s / self.queue_delay_count if self.queue_delay_count else 0.0

    def as_dict(self) -> dict[str, float]:
        """Flat counters, e.g. for a log line or a DataFrame row."""
        row: dict[str, float] = {
            "packets_in": self.packets_in,
            "bytes_in": self.bytes_in,
            "delivered": self.delivered,
            "bytes_delivered": self.bytes_delivered,
            "duplicated": self.duplicated,
            "reordered": self.reordered,
        }
        row.update({f"dropped_{reason}": count for reason, count in self.dropped_by_reason.items()})
        row["queue_delay_mean_s"] = self.queue_delay_mean_s
        row["queue_delay_max_s"] = self.queue_delay_max_s
        return row


class LinkModel:
    """One direction of an emulated link.

    :param conditions: the impairments at the start.
    :param seed: seeds this link's own random generator.
    :param start_time: the time (on the caller's clock, in seconds) that outage
        windows, schedule steps and the trace are relative to.
    :param schedule: condition changes at set times after ``start_time``, applied
        when a packet or a query reaches them.
    """

    def __init__(
        self,
        conditions: LinkConditions | None = None,
        seed: int = 0,
        start_time: float = 0.0,
        *,
        schedule: Schedule | None = None,
        name: str = "link",
    ) -> None:
        self.seed = seed
        self.start_time = start_time
        self.name = name
        self.stats = LinkStats()
        self._base = conditions if conditions is not None else LinkConditions()
        self._conditions = self._base
        self._queue_limit = self._base.queue_limit_bytes
        self._rng = random.Random(seed)
        self._schedule = sorted(schedule or [], key=lambda step: step[0])
        self._next_step = 0
        self._last_now = start_time
        self._ge_bad = False
        self._since_reorder = 0
        self._last_release = -math.inf
        # The bottleneck: when the last accepted copy finishes serialization, the
        # copies not yet finished (end time, size), and with a trace, the opportunity
        # being filled (global index, bytes left in it).
        self._busy_until = -math.inf
        self._in_service: deque[tuple[float, int]] = deque()
        self._backlog = 0
        self._cursor: tuple[int, int] | None = None
        self._advance(start_time)  # steps at 0 s are in force from the start

    def __repr__(self) -> str:
        return f"LinkModel({self.name!r}, seed={self.seed}, {self._conditions!r})"

    @property
    def conditions(self) -> LinkConditions:
        """The conditions in force now."""
        return self._conditions

    def submit(self, size_bytes: int, now: float) -> list[Delivery]:
        """Send a packet of ``size_bytes`` at ``now``; one delivery per copy.

        ``now`` must not decrease from call to call.  A delivered copy's release time is
        ``>= now`` and never before its serialization end plus its own delay.
        """
        if not isinstance(size_bytes, int) or isinstance(size_bytes, bool) or size_bytes < 1:
            raise ConfigurationError(f"{self.name}: packet size {size_bytes!r} is not an int >= 1")
        self._advance(now)
        conditions = self._conditions
        stats = self.stats
        stats.packets_in += 1
        stats.bytes_in += size_bytes

        elapsed = now - self.start_time
        for start_s, end_s in conditions.outages:
            if start_s <= elapsed < end_s:
                return [self._drop(size_bytes, "outage")]
        rng = self._rng
        if conditions.ge_p > 0:
            # netem's gemodel order: move the chain, then draw loss in the new state.
            if self._ge_bad:
                self._ge_bad = rng.random() >= conditions.ge_r
            else:
                self._ge_bad = rng.random() < conditions.ge_p
            lose = conditions.ge_loss_bad if self._ge_bad else conditions.ge_loss_good
            if rng.random() < lose:
                return [self._drop(size_bytes, "burst")]
        if conditions.loss > 0 and rng.random() < conditions.loss:
            return [self._drop(size_bytes, "loss")]
        twice = conditions.duplicate > 0 and rng.random() < conditions.duplicate
        deliveries = [self._send(size_bytes, now, conditions, duplicate=False)]
        if twice:
            stats.duplicated += 1
            deliveries.append(self._send(size_bytes, now, conditions, duplicate=True))
        return deliveries

    def set_conditions(self, conditions: LinkConditions, now: float) -> None:
        """Change the conditions from ``now`` on.

        Copies already accepted keep their release times and their place in the queue;
        new packets queue behind them and see the new capacity, limits and delays.  A
        smaller queue limit drops new packets until the backlog drains below it.
        """
        self._advance(now)
        self._switch(conditions, now)

    def backlog_bytes(self, now: float) -> int:
        """Bytes accepted into the bottleneck and not fully serialized at ``now``."""
        self._advance(now)
        self._drain(now)
        return self._backlog

    # --- internals ------------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        if now < self._last_now:
            raise ConfigurationError(
                f"{self.name}: time {now} is before the last packet or change at {self._last_now}"
                if now >= self.start_time
                else f"{self.name}: time {now} is before the link start at {self.start_time}"
            )
        self._last_now = now
        while (
            self._next_step < len(self._schedule)
            and self.start_time + self._schedule[self._next_step][0] <= now
        ):
            at_s, changes = self._schedule[self._next_step]
            self._next_step += 1
            self._switch(
                apply_changes(self._base, self._conditions, changes), self.start_time + at_s
            )

    def _switch(self, conditions: LinkConditions, at: float) -> None:
        if conditions.capacity_trace is not self._conditions.capacity_trace:
            # The opportunity being filled belongs to the old trace.
            self._cursor = None
        self._conditions = conditions
        self._queue_limit = conditions.queue_limit_bytes
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s: conditions at %.3f s: %r", self.name, at - self.start_time, conditions
            )

    def _drop(self, size_bytes: int, reason: DropReason, duplicate: bool = False) -> Delivery:
        self.stats.dropped_by_reason[reason] += 1
        return Delivery(size_bytes, None, reason, duplicate)

    def _drain(self, now: float) -> None:
        in_service = self._in_service
        while in_service and in_service[0][0] <= now:
            self._backlog -= in_service.popleft()[1]

    def _send(
        self, size_bytes: int, now: float, conditions: LinkConditions, duplicate: bool
    ) -> Delivery:
        stats = self.stats
        trace = conditions.capacity_trace
        rate = conditions.rate_kbps
        if trace is not None:
            if not self._admit(size_bytes, now):
                return self._drop(size_bytes, "queue", duplicate)
            done = self._occupy(self._serialize_on_trace(trace, size_bytes, now), size_bytes)
        elif rate is not None:
            if not self._admit(size_bytes, now):
                return self._drop(size_bytes, "queue", duplicate)
            start = max(now, self._busy_until)
            done = self._occupy(start + size_bytes * 8 / (rate * 1000.0), size_bytes)
        else:
            done = now
        queue_delay = done - now
        stats.queue_delay_sum_s += queue_delay
        stats.queue_delay_count += 1
        if queue_delay > stats.queue_delay_max_s:
            stats.queue_delay_max_s = queue_delay

        if (
            conditions.reorder > 0
            and self._since_reorder >= conditions.reorder_gap - 1
            and self._rng.random() < conditions.reorder
        ):
            # netem: "sent immediately", i.e. ahead of the packets in the delay line.
            self._since_reorder = 0
            stats.reordered += 1
            release = done
        else:
            self._since_reorder += 1
            delay_ms = conditions.delay_ms
            if conditions.jitter_ms > 0:
                delay_ms += self._jitter_ms(conditions)
            release = done + max(0.0, delay_ms) / 1000.0
            if conditions.keep_order and release < self._last_release:
                release = self._last_release
            self._last_release = max(self._last_release, release)
        stats.delivered += 1
        stats.bytes_delivered += size_bytes
        return Delivery(size_bytes, release, None, duplicate)

    def _admit(self, size_bytes: int, now: float) -> bool:
        """Whether the drop-tail queue has room for ``size_bytes`` at ``now``."""
        self._drain(now)
        return self._queue_limit is None or self._backlog + size_bytes <= self._queue_limit

    def _occupy(self, done: float, size_bytes: int) -> float:
        """Account for a copy that finishes serialization at ``done``."""
        self._busy_until = done
        self._in_service.append((done, size_bytes))
        self._backlog += size_bytes
        return done

    def _serialize_on_trace(self, trace: Trace, size_bytes: int, now: float) -> float:
        """End of serialization when MTU-sized opportunities of ``trace`` carry the bytes.

        As in Mahimahi, a packet may span opportunities, several small packets share
        one, and an opportunity that finds the queue empty is lost.
        """
        mtu = trace.opportunity_bytes
        if self._cursor is not None and self._busy_until >= now:
            index, left = self._cursor
            if left == 0:
                index, left = index + 1, mtu
        else:
            start_ms = (max(now, self._busy_until) - self.start_time) * 1000.0
            index, left = trace.index_at_or_after(start_ms), mtu
        if size_bytes <= left:
            left -= size_bytes
        else:
            more = -(-(size_bytes - left) // mtu)
            index += more
            left = more * mtu - (size_bytes - left)
        self._cursor = (index, left)
        return self.start_time + trace.time_ms(index) / 1000.0

    def _jitter_ms(self, conditions: LinkConditions) -> float:
        sigma = conditions.jitter_ms
        distribution = conditions.jitter_distribution
        if distribution == "normal":
            return self._rng.gauss(0.0, sigma)
        if distribution == "uniform":
            return self._rng.uniform(-_SQRT3 * sigma, _SQRT3 * sigma)
        # 1 - random() lies in (0, 1], so the power is finite.
        pareto = (1.0 - self._rng.random()) ** (-1.0 / _PARETO_SHAPE)
        return (pareto - _PARETO_MEAN) / _PARETO_STD * sigma


def link_pair(
    a_to_b: LinkConditions,
    b_to_a: LinkConditions,
    seed: int = 0,
    start_time: float = 0.0,
    *,
    schedule: Schedule | None = None,
) -> tuple[LinkModel, LinkModel]:
    """Both directions of a link, each with its own generator (seeds ``2*seed``, ``2*seed+1``)."""
    return (
        LinkModel(a_to_b, 2 * seed, start_time, schedule=schedule, name="a_to_b"),
        LinkModel(b_to_a, 2 * seed + 1, start_time, schedule=schedule, name="b_to_a"),
    )


def link_row(model: LinkModel, src: str, dst: str, now: float) -> LinkRow:
    """The ``links`` table row of one link direction: counters so far, conditions in force.

    With a trace and no fixed rate, ``rate_kbps`` is the trace's capacity over the last
    second before ``now`` (same clock as the model's ``start_time``).
    """
    stats, cond = model.stats, model.conditions
    drops = stats.dropped_by_reason
    rate = cond.rate_kbps
    trace = cond.capacity_trace
    if rate is None and trace is not None:
        elapsed_ms = max((now - model.start_time) * 1000, 1.0)
        rate = trace.rate_kbps_between(max(0.0, elapsed_ms - 1000), elapsed_ms)
    return LinkRow(
        now,
        src,
        dst,
        stats.packets_in,
        stats.delivered,
        drops["loss"],
        drops["burst"],
        drops["queue"],
        drops["outage"],
        stats.duplicated,
        stats.bytes_in,
        stats.bytes_delivered,
        stats.queue_delay_mean_s * 1000,
        stats.queue_delay_max_s * 1000,
        cond.delay_ms,
        cond.jitter_ms,
        cond.loss,
        float("nan") if rate is None else float(rate),
    )
