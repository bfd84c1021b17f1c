"""Scoped choice of the host addresses ICE gathers on.

:func:`gather_on` limits ICE's host candidates to the given addresses within a block
(aioice alone skips 127.0.0.1, so a machine with only ``lo`` gathers nothing); the
patch that makes it possible lives in :mod:`webrtclab.compat.aioice`.
"""

from __future__ import annotations

from .compat.aioice import gather_on

__all__ = ["LOOPBACK", "gather_on"]

LOOPBACK = ("127.0.0.1",)
