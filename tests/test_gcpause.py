"""The lab keeps full garbage collections short while it runs (see webrtclab._gcpause)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from webrtclab import Lab, _gcpause


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    assert gc.get_freeze_count() == 0
    yield
    gc.unfreeze()


def test_the_first_hold_freezes_and_the_last_release_unfreezes() -> None:
    _gcpause.hold()
    frozen = gc.get_freeze_count()
    assert frozen > 10_000  # the imported libraries
    _gcpause.hold()  # a second lab: nothing new is frozen
    assert gc.get_freeze_count() == frozen
    _gcpause.release()
    assert gc.get_freeze_count() == frozen
    _gcpause.release()
    assert gc.get_freeze_count() == 0
    _gcpause.release()  # one too many: ignored
    assert gc.get_freeze_count() == 0


def test_a_freeze_made_by_the_process_itself_is_left_alone() -> None:
    gc.freeze()
    frozen = gc.get_freeze_count()
    _gcpause.hold()
    _gcpause.release()
    assert gc.get_freeze_count() == frozen


def test_nothing_is_frozen_with_the_collector_disabled() -> None:
    gc.disable()
    try:
        _gcpause.hold()
        assert gc.get_freeze_count() == 0
        _gcpause.release()
    finally:
        gc.enable()


async def test_a_running_lab_holds_the_freeze_until_it_closes() -> None:
    lab = Lab()
    assert gc.get_freeze_count() == 0  # constructing starts nothing
    await lab.start()
    await lab.start()  # idempotent: one hold
    assert gc.get_freeze_count() > 0
    await lab.close()
    assert gc.get_freeze_count() == 0
    await lab.close()  # idempotent: one release
    assert gc.get_freeze_count() == 0


async def test_a_lab_whose_start_fails_does_not_keep_the_freeze(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lab = Lab()

    def broken() -> None:
        raise OSError("no sampler today")

    monkeypatch.setattr(lab.sampler, "start", broken)
    with pytest.raises(OSError, match="no sampler today"):
        async with lab:
            pass  # pragma: no cover - not reached
    assert gc.get_freeze_count() == 0
    await lab.close()  # what the server started is closed; nothing is released twice
    assert gc.get_freeze_count() == 0
