"""Signaling: the seed protocol's messages, the room dispatcher, server and client."""

from .client import SignalingClient
from .rooms import Dispatcher
from .server import SignalingServer

__all__ = ["Dispatcher", "SignalingClient", "SignalingServer"]
