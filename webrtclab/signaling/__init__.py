"""Signaling: the seed protocol's messages, the room dispatcher, server and client."""

from .client import Backoff, SignalingClient
from .rooms import Dispatcher
from .server import SignalingServer

__all__ = ["Backoff", "Dispatcher", "SignalingClient", "SignalingServer"]
