"""Task ownership helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["CloseOnce", "cancel_and_wait"]


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


class CloseOnce:
    """Runs an object's close once; a concurrent or later caller waits for it to end.

    As aiortc's ``RTCPeerConnection.close()``: the first caller runs the close, a
    second caller awaits the first one's end instead of returning while it is still
    under way.  Errors go to the first caller only.
    """

    def __init__(self) -> None:
        self._done: asyncio.Future[None] | None = None

    @property
    def started(self) -> bool:
        return self._done is not None

    async def run(self, close: Callable[[], Awaitable[None]]) -> None:
        done = self._done
        if done is not None:
            if not done.done():
                # Shielded: a cancelled waiter must not cancel the close it waits for.
                await asyncio.shield(done)
            return
        done = self._done = asyncio.get_running_loop().create_future()
        try:
            await close()
        finally:
            done.set_result(None)
