"""The lab's event log: connection states, selected paths, joins and leaves."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .tables import EVENTS, EventRow, Feed

__all__ = ["EVENT_COLUMNS", "EventLog", "LabClock"]

EVENT_COLUMNS = EVENTS.columns


@dataclass
class LabClock:
    """One time base for stats, events and link logs: seconds since ``t0``."""

    t0: float = field(default_factory=time.monotonic)

    def now(self) -> float:
        return time.monotonic() - self.t0


class EventLog(Feed[EventRow]):
    """The ``events`` table: (time_s, peer, remote, event, detail) rows, as they happen."""

    def __init__(self, clock: LabClock | None = None) -> None:
        super().__init__(EVENTS)
        self.clock = clock or LabClock()

    def add(self, peer: str, remote: str, event: str, detail: str = "") -> None:
        self.extend([EventRow(self.clock.now(), peer, remote, event, detail)])
