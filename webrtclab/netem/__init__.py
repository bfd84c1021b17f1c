"""User-space network emulation: the pure link model a UDP relay drives.

No sockets here.  :class:`LinkModel` decides, for each packet sent into one direction
of a link, whether it is dropped and when it comes out, under :class:`LinkConditions`
(delay, jitter, random and bursty loss, a rate or Mahimahi-trace capacity with a
drop-tail queue, duplication, reordering, outages) that may change on a schedule.
"""

from typing import TYPE_CHECKING

from .conditions import (
    LinkConditions,
    Schedule,
    apply_changes,
    conditions_at,
    link_from_mapping,
    parse_schedule,
)
from .link import DROP_REASONS, Delivery, DropReason, LinkModel, LinkStats, link_pair
from .presets import PRESETS, preset

if TYPE_CHECKING:
    from .traces import Trace, load_trace

__all__ = [
    "DROP_REASONS",
    "PRESETS",
    "Delivery",
    "DropReason",
    "LinkConditions",
    "LinkModel",
    "LinkStats",
    "Schedule",
    "Trace",
    "apply_changes",
    "conditions_at",
    "link_from_mapping",
    "link_pair",
    "load_trace",
    "parse_schedule",
    "preset",
]


def __getattr__(name: str) -> object:
    # The traces module loads on first use (see LinkConditions._resolve_trace).
    if name in ("Trace", "load_trace"):
        from . import traces

        return getattr(traces, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
