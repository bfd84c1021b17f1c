"""aiohttp's internals that the signaling server relies on, checked against aiohttp 3.12-3.14.

What is patched, and why:

- **Inline text messages** (``web_ws.WebSocketDataQueue``, swapped during
  ``WebSocketResponse._post_start``): aiohttp's parser puts each message in a queue
  that the handler task reads with ``receive()``, one task wake-up per message.  The
  signaling server relays small messages at high rates, so :class:`SignalSocket`
  builds its reader queue as an :class:`InlineQueue`, which hands each text message
  to a handler right where the parser produces it, unless older messages are still
  queued (the order never changes).  Everything else (control and binary frames,
  errors, text the handler declines) takes the usual way through ``receive()``.

Where aiohttp lacks what this relies on, :data:`INLINE` is False and every message
takes the usual way.  Messages are read by field name (``.type``, ``.data``), not by
position: aiohttp's development branch reorders the fields and makes ``WSMessage`` a
union of message classes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web
from aiohttp import web_ws as _web_ws

from . import check_version

__all__ = ["CHECKED_VERSIONS", "INLINE", "InlineQueue", "SignalSocket"]

CHECKED_VERSIONS = ("3.12", "3.13", "3.14")
check_version("aiohttp", aiohttp.__version__, CHECKED_VERSIONS)

_TEXT = WSMsgType.TEXT
_BaseQueue: Any = getattr(_web_ws, "WebSocketDataQueue", None)

#: whether this aiohttp lets :class:`SignalSocket` take text messages inline
INLINE = isinstance(_BaseQueue, type) and callable(
    getattr(web.WebSocketResponse, "_post_start", None)
)

InlineHandler = Callable[[str], bool]


class InlineQueue(_BaseQueue if INLINE else object):  # type: ignore[misc]
    """aiohttp's message queue, except that text messages can be taken inline."""

    #: set by the owner once it can take messages: returns False to queue one instead
    inline: InlineHandler | None = None

    def feed_data(self, data: Any, *args: Any) -> None:
        # aiohttp 3.x calls feed_data(message, size); its development branch drops size.
        inline = self.inline
        if inline is not None and not self._buffer and getattr(data, "type", None) is _TEXT:
            text = data.data
            if type(text) is str and inline(text):
                return
        super().feed_data(data, *args)


class SignalSocket(web.WebSocketResponse):
    """A WebSocketResponse whose reader queue is an :class:`InlineQueue` where possible.

    After ``prepare()``, :attr:`inline_queue` is that queue, or None where text
    messages can only be read with ``receive()``.
    """

    inline_queue: InlineQueue | None = None

    def _post_start(self, *args: Any, **kwargs: Any) -> None:
        if not INLINE:
            super()._post_start(*args, **kwargs)
            return
        # aiohttp builds its queue from this module global; swap it for the duration of
        # the (synchronous) call.  Anyone else who gets an InlineQueue meanwhile gets
        # one with ``inline`` unset, which behaves exactly like the original.
        original = _web_ws.WebSocketDataQueue
        _web_ws.WebSocketDataQueue = InlineQueue
        try:
            super()._post_start(*args, **kwargs)
        finally:
            _web_ws.WebSocketDataQueue = original
        queue = getattr(self, "_reader", None)
        if isinstance(queue, InlineQueue) and hasattr(queue, "_buffer"):
            self.inline_queue = queue
