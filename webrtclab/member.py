"""What every lab member offers, an aiortc :class:`~webrtclab.peer.Peer` or a Chromium
:class:`~webrtclab.browser.BrowserPeer`: the lab and its tools hold members, not kinds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["Member", "StatsRow"]

StatsRow = tuple[Any, ...]  # a webrtclab.tables.StatsRow, or a plain tuple of its fields


@runtime_checkable
class Member(Protocol):
    """A user in the lab's room.

    Stats come in two steps so a sampler can gather every member's reports at once and
    stamp all rows with one time: :meth:`collect_stats` (I/O), then :meth:`stats_rows`
    (rows with :data:`webrtclab.stats.STATS_COLUMNS`).
    """

    user_id: str

    async def wait_connected(self, count: int = 1, timeout: float = 15.0) -> object:
        """Wait until at least ``count`` remotes are connected."""
        ...

    async def send_chat(self, text: str, to: str | None = None) -> int:
        """Send chat text to ``to`` or to everyone; returns how many remotes took it."""
        ...

    async def send_cursor(self, x: float, y: float, to: str | None = None) -> int:
        """Send a cursor position to ``to`` or to everyone; returns how many took it."""
        ...

    async def collect_stats(self) -> Any:
        """The raw statistics reports of every connection, now."""
        ...

    def stats_rows(self, raw: Any, now: float) -> Sequence[StatsRow]:
        """Rows of the stats table from what :meth:`collect_stats` returned."""
        ...

    async def close(self) -> None:
        """Leave and release everything; a second caller waits for the first."""
        ...
