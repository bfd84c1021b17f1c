"""Scoped choice of the host addresses ICE gathers on.

aioice's ``get_host_addresses`` skips 127.0.0.1, so peers on a machine with no
network (or only ``lo``) gather nothing.  We replace that module-level function
once with a wrapper that consults a context variable: code running inside
:func:`gather_on` (and the tasks it creates, which copy the context) gathers on
the given addresses; everything else in the process keeps aioice's behaviour.
Checked against aioice 0.13, which looks the function up at call time.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Callable

import aioice.ice

__all__ = ["LOOPBACK", "gather_on"]

LOOPBACK = ("127.0.0.1",)

_addresses: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "webrtclab_host_addresses", default=None
)
_original: Callable[..., list[str]] | None = None


def _install() -> None:
    global _original
    if _original is not None:
        return
    original = aioice.ice.get_host_addresses

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        chosen = _addresses.get()
        if chosen is None:
            return original(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
        return [a for a in chosen if (use_ipv6 if ":" in a else use_ipv4)]

    _original = original
    aioice.ice.get_host_addresses = get_host_addresses


@contextmanager
def gather_on(addresses: tuple[str, ...] | None) -> Iterator[None]:
    """Within this block, ICE gathers host candidates on ``addresses`` only.

    ``None`` means the real interfaces (aioice's own choice).
    """
    _install()
    token = _addresses.set(addresses)
    try:
        yield
    finally:
        _addresses.reset(token)
