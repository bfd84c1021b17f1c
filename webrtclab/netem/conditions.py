"""What one direction of an emulated link does to packets, and how that changes over time.

:class:`LinkConditions` is an immutable, validated description (delay, jitter, loss,
capacity, queue, duplication, reordering, outages); :func:`link_from_mapping` reads it
from a scenario's ``[link]`` table and a :data:`Schedule` changes it at set times.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

from ..exceptions import ConfigurationError

if TYPE_CHECKING:
    from .traces import Trace

__all__ = [
    "DIRECTIONS",
    "LinkConditions",
    "Schedule",
    "apply_changes",
    "conditions_at",
    "link_from_mapping",
    "parse_schedule",
]

JitterDistribution = Literal["normal", "uniform", "pareto"]

DIRECTIONS = ("a_to_b", "b_to_a")
"""Sub-tables of a ``[link]`` table that override its keys for one direction."""

Schedule = list[tuple[float, dict[str, Any]]]
"""``(at_s, changes)`` steps: at ``at_s`` seconds after the link start, apply ``changes``
(field name -> value) to the conditions.  The key ``"reset": True`` first restores the
base conditions, so ``{"reset": True}`` alone undoes every earlier step."""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class LinkConditions:
    """Impairments of one link direction; every field defaults to "no impairment".

    Times are in ms, probabilities in [0, 1], rates in kbit/s (1000 bit/s).

    :param delay_ms: propagation delay added after serialization.
    :param jitter_ms: standard deviation of the delay variation, whatever the
        distribution (netem's ``uniform`` jitter J is ``jitter_ms = J / sqrt(3)`` here).
        A packet's total delay ``delay_ms + jitter`` is clamped at 0.
    :param jitter_distribution: ``"normal"``, ``"uniform"`` or ``"pareto"`` (Pareto with
        shape 3, shifted and scaled to mean 0: a heavy tail of late packets, like netem's
        ``pareto`` table).
    :param keep_order: jitter never reorders: a packet is never released before the
        previous one (as a real FIFO path behaves).  ``False`` lets jitter reorder, as
        netem does.
    :param loss: independent random loss probability.
    :param ge_p: Gilbert-Elliott good->bad transition probability per packet; 0 disables
        the model.  netem ``loss gemodel p r 1-h 1-k`` is ``ge_p=p, ge_r=r,
        ge_loss_bad=1-h, ge_loss_good=1-k``.
    :param ge_r: Gilbert-Elliott bad->good transition probability per packet.
    :param ge_loss_good: loss probability in the good state (``1-k``).
    :param ge_loss_bad: loss probability in the bad state (``1-h``).
    :param rate_kbps: constant capacity; ``None`` for unlimited.
    :param trace: a Mahimahi trace (a :class:`Trace`, a path, or a shipped trace name)
        as the capacity instead of ``rate_kbps``.
    :param queue_bytes: drop-tail limit on the bytes waiting for or in serialization.
    :param queue_ms: the same limit as time at the capacity (the trace's mean rate with
        a trace); with both set the smaller limit holds.  No limit without a capacity.
    :param duplicate: probability that a packet is sent twice.
    :param reorder: probability that a reorder candidate skips the delay line (released
        as soon as it is serialized, ahead of packets still in flight).
    :param reorder_gap: netem's ``gap``: after a reordered packet, the next
        ``reorder_gap - 1`` packets are delayed normally and only then is each packet a
        candidate again; 1 makes every packet a candidate.
    :param outages: ``(start_s, end_s)`` windows, in seconds after the link start, in
        which every packet sent is dropped.
    """

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    jitter_distribution: JitterDistribution = "normal"
    keep_order: bool = True
    loss: float = 0.0
    ge_p: float = 0.0
    ge_r: float = 1.0
    ge_loss_good: float = 0.0
    ge_loss_bad: float = 1.0
    rate_kbps: float | None = None
    trace: Trace | str | os.PathLike[str] | None = None
    queue_bytes: int | None = None
    queue_ms: float | None = None
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_gap: int = 1
    outages: Iterable[tuple[float, float]] = field(default=())

    def __post_init__(self) -> None:
        for name in ("delay_ms", "jitter_ms"):
            self._check_range(name, 0.0, math.inf)
        if self.jitter_distribution not in get_args(JitterDistribution):
            raise ConfigurationError(
                f"link condition jitter_distribution={self.jitter_distribution!r} is not "
                f"one of {', '.join(get_args(JitterDistribution))}"
            )
        if not isinstance(self.keep_order, bool):
            raise ConfigurationError(f"link condition keep_order={self.keep_order!r} is not a bool")
        for name in ("loss", "ge_p", "ge_r", "ge_loss_good", "ge_loss_bad", "duplicate", "reorder"):
            self._check_range(name, 0.0, 1.0)
        if self.ge_p > 0 and self.ge_r == 0:
            raise ConfigurationError(
                f"link condition ge_r=0 with ge_p={self.ge_p}: the bad state would never end"
            )
        if self.rate_kbps is not None:
            self._check_range("rate_kbps", 0.0, math.inf, low_open=True)
        if self.queue_bytes is not None and (
            not isinstance(self.queue_bytes, int)
            or isinstance(self.queue_bytes, bool)
            or self.queue_bytes < 1
        ):
            raise ConfigurationError(
                f"link condition queue_bytes={self.queue_bytes!r} is not an integer >= 1"
            )
        if self.queue_ms is not None:
            self._check_range("queue_ms", 0.0, math.inf, low_open=True)
        if (
            not isinstance(self.reorder_gap, int)
            or isinstance(self.reorder_gap, bool)
            or self.reorder_gap < 1
        ):
            raise ConfigurationError(
                f"link condition reorder_gap={self.reorder_gap!r} is not an integer >= 1"
            )
        if self.trace is not None:
            self._resolve_trace()
        if self.trace is not None and self.rate_kbps is not None:
            raise ConfigurationError(
                f"link conditions set both rate_kbps={self.rate_kbps} and a trace; "
                "the capacity comes from one of them"
            )
        object.__setattr__(self, "outages", self._normalized_outages())

    def _resolve_trace(self) -> None:
        # Imported only when a trace is used, so that importing the package does not
        # import the traces module: `python -m webrtclab.netem.traces` runs it as
        # __main__, and runpy warns when the package had already imported it.
        from .traces import Trace, load_trace

        if isinstance(self.trace, Trace):
            return
        if not isinstance(self.trace, str | os.PathLike):
            raise ConfigurationError(
                f"link condition trace={self.trace!r} is not a Trace, a path or a trace name"
            )
        object.__setattr__(self, "trace", load_trace(self.trace))

    def _check_range(self, name: str, low: float, high: float, low_open: bool = False) -> None:
        value = getattr(self, name)
        if (
            _is_number(value)
            and math.isfinite(value)
            and (value > low if low_open else value >= low)
            and value <= high
        ):
            return
        if math.isinf(high):
            bound = f"> {low:g}" if low_open else f">= {low:g}"
            raise ConfigurationError(
                f"link condition {name}={value!r} is not a finite number {bound}"
            )
        raise ConfigurationError(f"link condition {name}={value!r} is outside [{low:g}, {high:g}]")

    def _normalized_outages(self) -> tuple[tuple[float, float], ...]:
        try:
            windows = list(self.outages)
        except TypeError:
            raise ConfigurationError(
                f"link condition outages={self.outages!r} is not a list of (start_s, end_s)"
            ) from None
        normalized: list[tuple[float, float]] = []
        for window in windows:
            if (
                not isinstance(window, list | tuple)
                or len(window) != 2
                or not all(_is_number(v) and math.isfinite(v) for v in window)
                or not 0 <= window[0] < window[1]
            ):
                raise ConfigurationError(
                    f"link condition outage {window!r} is not a (start_s, end_s) pair "
                    "with 0 <= start_s < end_s"
                )
            normalized.append((float(window[0]), float(window[1])))
        return tuple(sorted(normalized))

    def replace(self, **changes: Any) -> LinkConditions:
        """A copy with ``changes`` applied (and validated)."""
        unknown = sorted(set(changes) - _FIELDS)
        if unknown:
            raise ConfigurationError(
                f"unknown link condition {unknown[0]!r} (known: {', '.join(sorted(_FIELDS))})"
            )
        return dataclasses.replace(self, **changes)

    @property
    def capacity_trace(self) -> Trace | None:
        """The trace giving the capacity, parsed (``trace`` after validation)."""
        # __post_init__ replaced a path or name with the parsed trace.
        return cast("Trace | None", self.trace)

    @property
    def queue_limit_bytes(self) -> int | None:
        """The drop-tail limit in bytes, ``None`` when the queue is unbounded."""
        rate = self.rate_kbps
        trace = self.capacity_trace
        if rate is None and trace is not None:
            rate = trace.mean_rate_kbps
        if rate is None:
            return None
        limits = []
        if self.queue_bytes is not None:
            limits.append(self.queue_bytes)
        if self.queue_ms is not None:
            # kbit/s x ms = bits
            limits.append(int(rate * self.queue_ms / 8))
        return min(limits) if limits else None

    @property
    def ge_stationary_loss(self) -> float:
        """Long-run loss probability of the Gilbert-Elliott model alone."""
        if self.ge_p == 0:
            return 0.0
        bad = self.ge_p / (self.ge_p + self.ge_r)
        return (1.0 - bad) * self.ge_loss_good + bad * self.ge_loss_bad

    @property
    def expected_loss(self) -> float:
        """Long-run loss probability of random and Gilbert-Elliott loss combined."""
        return 1.0 - (1.0 - self.loss) * (1.0 - self.ge_stationary_loss)


_FIELDS = frozenset(f.name for f in dataclasses.fields(LinkConditions))


# --- schedules ----------------------------------------------------------------------------


def _check_changes(changes: Mapping[str, Any], where: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in changes.items():
        if key == "reset":
            if not isinstance(value, bool):
                raise ConfigurationError(f"{where}: reset={value!r} is not a bool")
        elif key not in _FIELDS:
            raise ConfigurationError(
                f"{where}: unknown link condition {key!r} (known: {', '.join(sorted(_FIELDS))})"
            )
        result[key] = value
    return result


def apply_changes(
    base: LinkConditions, current: LinkConditions, changes: Mapping[str, Any]
) -> LinkConditions:
    """``current`` with one schedule step's ``changes`` (``"reset"`` restores ``base``)."""
    fields = dict(changes)
    if fields.pop("reset", False):
        current = base
    return current.replace(**fields) if fields else current


def parse_schedule(entries: Iterable[Mapping[str, Any]]) -> Schedule:
    """A :data:`Schedule` from dicts like ``{"at_s": 10, "rate_kbps": 300}``, in time order.

    Unknown keys and bad values raise :class:`ConfigurationError`; steps at the same time
    keep their order.
    """
    steps: Schedule = []
    for index, entry in enumerate(entries):
        where = f"schedule step {index}"
        if not isinstance(entry, Mapping):
            raise ConfigurationError(f"{where}: {entry!r} is not a table")
        changes = dict(entry)
        at_s = changes.pop("at_s", None)
        if at_s is None:
            raise ConfigurationError(f"{where}: {entry!r} has no at_s")
        if not _is_number(at_s) or not math.isfinite(at_s) or at_s < 0:
            raise ConfigurationError(f"{where}: at_s={at_s!r} is not a finite number >= 0")
        changes = _check_changes(changes, where)
        # Validate (and parse: a trace name becomes a Trace) each value now rather than
        # when the step fires mid-experiment.
        for key, value in changes.items():
            if key != "reset":
                changes[key] = getattr(LinkConditions().replace(**{key: value}), key)
        steps.append((float(at_s), changes))
    steps.sort(key=lambda step: step[0])
    return steps


def conditions_at(base: LinkConditions, schedule: Schedule, t: float) -> LinkConditions:
    """The conditions in force ``t`` seconds after the link start (steps at ``t`` included)."""
    current = base
    for at_s, changes in sorted(schedule, key=lambda step: step[0]):
        if at_s > t:
            break
        current = apply_changes(base, current, changes)
    return current


# --- scenario files -----------------------------------------------------------------------


_LINK_KEYS = _FIELDS | {"preset"}


def _check_keys(table: Mapping[str, Any], where: str) -> None:
    for key in table:
        if key not in _LINK_KEYS:
            known = ", ".join(sorted(_LINK_KEYS | set(DIRECTIONS)))
            raise ConfigurationError(f"{where}: unknown key {key!r} (known: {known})")


def _build(fields: Mapping[str, Any]) -> LinkConditions:
    changes = dict(fields)
    name = changes.pop("preset", None)
    if name is None:
        return LinkConditions().replace(**changes)
    # Imported here: presets are LinkConditions, so presets.py imports this module.
    from .presets import preset

    return preset(name).replace(**changes)


def link_from_mapping(mapping: Mapping[str, Any]) -> tuple[LinkConditions, LinkConditions]:
    """Both directions of a link from a scenario's ``[link]`` table.

    Keys are :class:`LinkConditions` fields plus ``preset`` (a name from
    :mod:`webrtclab.netem.presets` that the other keys modify).  Sub-tables ``a_to_b``
    and ``b_to_a`` take the same keys and override the shared ones for one direction::

        [link]
        delay_ms = 40
        loss = 0.01
        [link.b_to_a]
        rate_kbps = 500

    Returns ``(a_to_b, b_to_a)``.
    """
    if not isinstance(mapping, Mapping):
        raise ConfigurationError(f"link table {mapping!r} is not a table")
    shared = {key: value for key, value in mapping.items() if key not in DIRECTIONS}
    _check_keys(shared, "link")
    result: list[LinkConditions] = []
    for direction in DIRECTIONS:
        override = mapping.get(direction, {})
        if not isinstance(override, Mapping):
            raise ConfigurationError(f"link.{direction} = {override!r} is not a table")
        _check_keys(override, f"link.{direction}")
        result.append(_build({**shared, **override}))
    return result[0], result[1]
