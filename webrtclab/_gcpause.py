"""Short garbage collections while labs run.

A lab runs its peers, their media and the emulated links on one event loop, so a
pause of the interpreter is a pause of the network: every packet in flight arrives
that much later.  CPython's full (generation 2) collection walks every tracked
object, and a process that imported aiortc, pandas and matplotlib holds about
100,000 of them: measured here, a full collection during a 640x480 call took 75 ms
and stalled the loop for 91 ms.  That stall reaches the receivers as one delay spike
on every stream; Chrome's audio jitter buffer answers a spike by holding 300 ms of
audio for seconds, and its audio/video synchronisation then delays video to match
(https://docs.python.org/3/library/gc.html#gc.freeze).

While at least one lab runs, the objects that existed when the first one started
(the imported libraries, mostly) are moved to the collector's permanent generation
with :func:`gc.freeze`, so full collections only walk what was made since (12 ms in
the same call).  When the last lab closes they are unfrozen, so nothing the labs
dropped is kept.  A process that froze objects itself is left alone.
"""

from __future__ import annotations

import gc

__all__ = ["hold", "release"]

_holders = 0
_frozen = False  # whether the freeze is ours to undo


def hold() -> None:
    """A lab starts: freeze what exists if no lab runs yet."""
    global _holders, _frozen
    if _holders == 0 and gc.isenabled() and gc.get_freeze_count() == 0:
        gc.collect()  # no lab runs yet, so this pause delays no packet
        gc.freeze()
        _frozen = True
    _holders += 1


def release() -> None:
    """A lab that called :func:`hold` closed: unfreeze after the last one."""
    global _holders, _frozen
    if _holders == 0:
        return
    _holders -= 1
    if _holders == 0 and _frozen:
        gc.unfreeze()
        _frozen = False
