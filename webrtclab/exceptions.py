"""Exceptions raised by webrtclab.

Every error derives from :class:`WebrtcLabError`; subclasses also inherit the
built-in type a caller would naturally catch (``ValueError``, ``TimeoutError``).
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "InvalidStateError",
    "LabTimeoutError",
    "ProtocolError",
    "SignalingError",
    "WebrtcLabError",
]


class WebrtcLabError(Exception):
    """Root of every webrtclab error."""


class ConfigurationError(WebrtcLabError, ValueError):
    """A setting or argument has a value that cannot be used."""


class InvalidStateError(WebrtcLabError, RuntimeError):
    """An operation met an object in a state that does not allow it (closed, already joined).

    Not a bad argument: the same call succeeds on an object in the right state.  A
    ``RuntimeError``, like Python's own errors for calls made at the wrong time
    ("Event loop is closed"), so it is not caught as a ``ValueError``.
    """


class ProtocolError(WebrtcLabError, ValueError):
    """A signaling message broke the protocol.

    ``code`` is the machine-readable code sent to the client in ``error``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SignalingError(WebrtcLabError, ConnectionError):
    """The signaling server refused a request or the connection to it failed."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class LabTimeoutError(WebrtcLabError, TimeoutError):
    """Something in the lab did not happen within its deadline."""
