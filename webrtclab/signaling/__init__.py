"""Signaling: the seed protocol's messages, the room dispatcher, server and client.

"The seed" is the small WebRTC video-room app whose protocol (join, offer, answer,
ice-candidate, leave over one WebSocket) this package speaks; see the README's
"Signaling protocol".  The names load on first use (PEP 562), so importing
``webrtclab.signaling.messages`` does not start aiohttp.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
