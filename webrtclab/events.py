"""The lab's event log: connection states, selected paths, joins and leaves."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

__all__ = ["EVENT_COLUMNS", "EventLog", "LabClock"]

EVENT_COLUMNS = ["time_s", "peer", "remote", "event", "detail"]


@dataclass
class LabClock:
    """One time base for stats, events and link logs: seconds since ``t0``."""

    t0: float = field(default_factory=time.monotonic)

    def now(self) -> float:
        return time.monotonic() - self.t0


class EventLog:
    """Append-only list of (time_s, peer, remote, event, detail) records."""

    def __init__(self, clock: LabClock | None = None) -> None:
        self.clock = clock or LabClock()
        self.records: list[tuple[float, str, str, str, str]] = []
        # Called with each new record (result writers journal events as they happen).
        self.listeners: list[Callable[[tuple[float, str, str, str, str]], None]] = []

    def add(self, peer: str, remote: str, event: str, detail: str = "") -> None:
        record = (self.clock.now(), peer, remote, event, detail)
        self.records.append(record)
        for listener in self.listeners:
            listener(record)

    def to_dataframe(self) -> pd.DataFrame:
        """The events as a DataFrame with :data:`EVENT_COLUMNS`."""
        frame = pd.DataFrame.from_records(self.records, columns=EVENT_COLUMNS)
        return frame.astype({"time_s": "float64"})
