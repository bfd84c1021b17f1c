"""Task ownership helpers."""

from __future__ import annotations

import asyncio

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(*tasks: asyncio.Task[object] | None) -> None:
    """Cancel ``tasks`` and wait for them to end, without swallowing our own cancellation."""
    live = [t for t in tasks if t is not None and not t.done()]
    for task in live:
        task.cancel()
    if not live:
        return
    await asyncio.wait(live)
    current = asyncio.current_task()
    if current is not None and current.cancelling():
        raise asyncio.CancelledError
