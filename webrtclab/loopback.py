"""Scoped choice of the host addresses ICE gathers on.

:func:`gather_on` limits ICE's host candidates to the given addresses within a block
(aioice alone skips 127.0.0.1, so a machine with only ``lo`` gathers nothing); the
patch that makes it possible lives in :mod:`webrtclab.compat.aioice`.
:data:`REAL_INTERFACES` in those addresses stands for the machine's real interfaces,
so :data:`LOOPBACK_AND_REAL` gathers on both (what ``webrtclab peer`` does by default).
"""

from __future__ import annotations

from .compat.aioice import REAL_INTERFACES, gather_on

__all__ = ["LOOPBACK", "LOOPBACK_AND_REAL", "REAL_INTERFACES", "gather_on"]

LOOPBACK = ("127.0.0.1",)
LOOPBACK_AND_REAL = (*LOOPBACK, REAL_INTERFACES)
