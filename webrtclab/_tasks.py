"""Task ownership helpers."""

from __future__ import annotations

import asyncio

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(*tasks: asyncio.Task[object] | None) -> None:
    """Cancel ``tasks`` and wait for them to end.

    Their own CancelledError stays with them; a cancellation of the caller while it
    waits propagates as usual (``asyncio.wait`` does not swallow it).  Safe to use in
    cleanup that runs because the caller was cancelled.
    """
    live = [t for t in tasks if t is not None and not t.done()]
    for task in live:
        task.cancel()
    if live:
        await asyncio.wait(live)
