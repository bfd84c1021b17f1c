"""The lab's tables, each declared once: typed row records, their dtypes, and a feed of rows.

Every table the lab produces (``stats``, ``rtt``, ``links``, ``events``, ``frames``,
``messages``, ``browser_stats``, ``nat_bindings``) has a :class:`~typing.NamedTuple`
record here: its fields are the columns, in order, and their annotations give the pandas dtypes
(``float`` -> ``float64``, ``int`` -> ``int64``, ``int | None`` -> ``Int64``, ``str``
-> ``string``, ``bool`` -> ``bool``, ``bool | None`` -> ``boolean``).  Records are
tuples, so they journal as JSON arrays and build DataFrames directly.  What each
column measures is documented where it is measured (:mod:`webrtclab.stats`,
:mod:`webrtclab.quality`, :mod:`webrtclab.netem.relay`, :mod:`webrtclab.browser`).

A :class:`Feed` holds one table's rows as they come and is the one way to
follow them: :meth:`Feed.subscribe` (the result writer, the widgets and the lab's
own consumers all use it), and :meth:`Feed.dataframe` for the table so far.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "BROWSER_STATS",
    "EVENTS",
    "FRAMES",
    "LINKS",
    "MESSAGES",
    "NAT_BINDINGS",
    "RTT",
    "SCHEMAS",
    "STATS",
    "BrowserStatsRow",
    "EventRow",
    "Feed",
    "FrameRow",
    "LinkRow",
    "MessageRow",
    "NatBindingRow",
    "RttRow",
    "Schema",
    "StatsRow",
]

logger = logging.getLogger(__name__)

R = TypeVar("R", bound=tuple[Any, ...])

_DTYPES = {
    "float": "float64",
    "int": "int64",
    "int | None": "Int64",
    "str": "string",
    "str | None": "string",
    "bool": "bool",
    "bool | None": "boolean",
}


class Schema(Generic[R]):
    """A table: its name, its record type, and the columns and dtypes the record declares."""

    def __init__(self, name: str, record: type[R], *, sort_by: str | None = None) -> None:
        self.name = name
        self.record = record
        # NamedTuple keeps postponed annotations as ForwardRefs: their text is the type.
        annotations: dict[str, str] = {
            c: str(getattr(a, "__forward_arg__", a)) for c, a in record.__annotations__.items()
        }
        unknown = {c: a for c, a in annotations.items() if a not in _DTYPES}
        if unknown:
            raise TypeError(f"table {name!r}: no dtype for the annotations {unknown}")
        # A NamedTuple's annotations list its fields, in order.
        self.columns: list[str] = list(annotations)
        self.dtypes: dict[str, str] = {c: _DTYPES[a] for c, a in annotations.items()}
        self.sort_by = sort_by

    def __repr__(self) -> str:
        return f"Schema({self.name!r}, {len(self.columns)} columns)"

    def frame(self, rows: Iterable[Sequence[Any]] = ()) -> pd.DataFrame:
        """Rows (records, tuples or lists) as a DataFrame with this table's columns and dtypes."""
        import pandas as pd

        frame = pd.DataFrame.from_records([tuple(r) for r in rows], columns=self.columns)
        frame = frame.astype(self.dtypes)
        if self.sort_by is not None:
            frame = frame.sort_values(self.sort_by, kind="stable", ignore_index=True)
        return frame


class Feed(Generic[R]):
    """One table's rows as they come, with subscribers.

    :param batch_rows: subscribers get rows in batches of up to this many...
    :param batch_s: ...or as old as this (in the time given to :meth:`extend`);
        with the defaults, every :meth:`extend` is delivered at once.
    """

    def __init__(self, schema: Schema[R], *, batch_rows: int = 0, batch_s: float = 0.0) -> None:
        self.schema = schema
        self.rows: list[R] = []
        self.batch_rows = batch_rows
        self.batch_s = batch_s
        self._subscribers: list[Callable[[list[R]], None]] = []
        self._pending: list[R] = []
        self._since = 0.0

    def __repr__(self) -> str:
        return f"Feed({self.schema.name!r}, {len(self.rows)} rows)"

    def subscribe(self, callback: Callable[[list[R]], None]) -> Callable[[], None]:
        """Call ``callback`` with each batch of new rows; returns the unsubscribe function.

        A callback that raises is logged and keeps its subscription: one failing
        consumer must not starve the others, nor stop the measurement.
        """
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def extend(self, rows: Sequence[R], now: float | None = None) -> None:
        """Add rows; ``now`` (seconds, any time base) ages the batch."""
        if not rows:
            return
        self.rows.extend(rows)
        if not self._subscribers:
            return
        now = time.monotonic() if now is None else now
        if not self._pending:
            self._since = now
        self._pending.extend(rows)
        if len(self._pending) >= self.batch_rows or now - self._since >= self.batch_s:
            self.flush()

    def flush(self) -> None:
        """Deliver the batched rows now."""
        rows, self._pending = self._pending, []
        if not rows:
            return
        for callback in list(self._subscribers):
            try:
                callback(rows)
            except Exception:
                logger.exception("%r: a subscriber failed; %d rows not delivered", self, len(rows))

    def dataframe(self) -> pd.DataFrame:
        """Every row so far, as a DataFrame."""
        return self.schema.frame(self.rows)


# --- the tables ------------------------------------------------------------------------------


class StatsRow(NamedTuple):
    """One (time, peer, remote, direction, kind) sample (see :mod:`webrtclab.stats`)."""

    time_s: float
    peer: str
    remote: str
    direction: str
    kind: str
    bitrate_kbps: float
    rtt_ms: float
    loss_fraction: float
    jitter_ms: float
    frames_per_s: float
    candidate_type: str | None
    packets: int
    packets_lost: int
    bytes: int
    frames: int
    target_kbps: float
    rtx_kbps: float
    wire_kbps: float
    estimate_kbps: float


class RttRow(NamedTuple):
    """The round-trip time of one RTCP report, unsmoothed."""

    time_s: float
    peer: str
    remote: str
    kind: str
    rtt_ms: float


class LinkRow(NamedTuple):
    """One link direction's counters so far and its conditions (see :mod:`webrtclab.netem`)."""

    time_s: float
    src: str
    dst: str
    packets_in: int
    delivered: int
    dropped_loss: int
    dropped_burst: int
    dropped_queue: int
    dropped_outage: int
    duplicated: int
    bytes_in: int
    bytes_delivered: int
    queue_delay_mean_ms: float
    queue_delay_max_ms: float
    delay_ms: float
    jitter_ms: float
    loss: float
    rate_kbps: float


class EventRow(NamedTuple):
    """Something that happened: a connection state, a selected path, a join..."""

    time_s: float
    peer: str
    remote: str
    event: str
    detail: str


class FrameRow(NamedTuple):
    """One received video frame (see :mod:`webrtclab.quality`)."""

    time_s: float
    peer: str
    remote: str
    frame: int | None
    latency_ms: float
    psnr_db: float
    interval_ms: float
    freeze: bool
    displayed_psnr_db: float
    displayed_ssim: float
    displayed_frames: int | None


class MessageRow(NamedTuple):
    """One received chat or cursor message (see :mod:`webrtclab.quality`)."""

    time_s: float
    peer: str
    remote: str
    channel: str
    seq: int | None
    latency_ms: float
    in_order: bool | None


class BrowserStatsRow(NamedTuple):
    """One numeric metric of a browser's getStats report, in long format."""

    time_s: float
    peer: str
    remote: str
    type: str
    id: str
    kind: str
    metric: str
    value: float


class NatBindingRow(NamedTuple):
    """Something a NAT did: a mapping created, expired or released, a packet filtered
    (see :mod:`webrtclab.netem.nat`)."""

    time_s: float
    nat: str
    event: str
    internal: str
    external: str
    remote: str
    detail: str


STATS: Schema[StatsRow] = Schema("stats", StatsRow)
RTT: Schema[RttRow] = Schema("rtt", RttRow, sort_by="time_s")
LINKS: Schema[LinkRow] = Schema("links", LinkRow)
EVENTS: Schema[EventRow] = Schema("events", EventRow)
FRAMES: Schema[FrameRow] = Schema("frames", FrameRow)
MESSAGES: Schema[MessageRow] = Schema("messages", MessageRow)
BROWSER_STATS: Schema[BrowserStatsRow] = Schema("browser_stats", BrowserStatsRow)
NAT_BINDINGS: Schema[NatBindingRow] = Schema("nat_bindings", NatBindingRow)
#: every table a result folder holds, by name
SCHEMAS: dict[str, Schema[Any]] = {
    s.name: s for s in (STATS, LINKS, EVENTS, FRAMES, MESSAGES, RTT, NAT_BINDINGS, BROWSER_STATS)
}
