"""Signaling: the seed protocol's messages, the room dispatcher, server and client.

"The seed" is the small WebRTC video-room app whose protocol (join, offer, answer,
ice-candidate, leave over one WebSocket) this package speaks; see the README's
"Signaling protocol".  The names load on first use (PEP 562), so importing
``webrtclab.signaling.messages`` does not start aiohttp.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names

if TYPE_CHECKING:
    from .client import Backoff, SignalingClient
    from .rooms import Dispatcher
    from .server import SignalingServer

__all__ = ["Backoff", "Dispatcher", "SignalingClient", "SignalingServer"]

_LAZY = {
    "Backoff": "client",
    "SignalingClient": "client",
    "Dispatcher": "rooms",
    "SignalingServer": "server",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY, __all__)
