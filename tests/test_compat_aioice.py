"""webrtclab.compat.aioice on its own: the version gate, and each patch on bare aioice.

Two aioice ``Connection`` objects in this process, on 127.0.0.1, with no aiortc and no
lab: each patch must still do what it claims on the pinned aioice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aioice
import aioice.ice
import aioice.stun
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from webrtclab.compat import CompatibilityError, check_version
from webrtclab.compat.aioice import (
    CHECKED_VERSIONS,
    gather_on,
    guard_checks,
    ice_connection,
)

WAIT_S = 10.0


def test_the_pinned_aioice_is_one_the_patches_were_checked_on() -> None:
    check_version("aioice", aioice.__version__, CHECKED_VERSIONS)


@pytest.mark.parametrize("found", ["0.14.0", "0.12.1", "1.0"])
def test_another_version_is_refused_with_a_clear_error(found: str) -> None:
    with pytest.raises(CompatibilityError) as info:
        check_version("aioice", found, CHECKED_VERSIONS)
    message = str(info.value)
    assert f"aioice {found} is installed" in message and "0.13" in message


async def test_gather_on_chooses_the_host_addresses_within_its_block_only() -> None:
    with gather_on(None):  # installs the patch; None keeps aioice's choice
        real = aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True)
    assert "127.0.0.1" not in real  # aioice skips loopback: why the patch exists
    with gather_on(("127.0.0.1", "::1")):
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["127.0.0.1"]
        # Tasks created inside the block copy its choice.
        task = asyncio.ensure_future(asyncio.sleep(0, aioice.ice.get_host_addresses(True, True)))
    assert await task == ["127.0.0.1", "::1"]
    assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == real


async def test_a_connection_gathers_on_loopback_inside_gather_on() -> None:
    connection = aioice.Connection(ice_controlling=True, use_ipv6=False)
    try:
        with gather_on(("127.0.0.1",)):
            await connection.gather_candidates()
        hosts = [c.host for c in connection.local_candidates if c.type == "host"]
        assert hosts == ["127.0.0.1"]
    finally:
        await connection.close()


@pytest.fixture
async def pair() -> AsyncIterator[tuple[aioice.Connection, aioice.Connection]]:
    """Two gathered connections on 127.0.0.1 that know each other's candidates."""
    a = aioice.Connection(ice_controlling=False, use_ipv6=False)
    b = aioice.Connection(ice_controlling=True, use_ipv6=False)
    yield a, b
    await a.close()
    await b.close()


async def _introduce(a: aioice.Connection, b: aioice.Connection) -> None:
    with gather_on(("127.0.0.1",)):
        await asyncio.gather(a.gather_candidates(), b.gather_candidates())
    for local, remote in ((a, b), (b, a)):
        local.remote_username = remote.local_username
        local.remote_password = remote.local_password
        for candidate in remote.local_candidates:
            await local.add_remote_candidate(candidate)
        await local.add_remote_candidate(None)


async def test_guarded_checks_from_accepted_addresses_are_answered(
    pair: tuple[aioice.Connection, aioice.Connection],
) -> None:
    a, b = pair
    seen: list[str] = []

    def accept(address: str) -> bool:
        seen.append(address)
        return True

    assert guard_checks(a, accept)
    assert not guard_checks(a, lambda address: False)  # idempotent: the first guard stays
    await _introduce(a, b)
    async with asyncio.timeout(WAIT_S):
        await asyncio.gather(a.connect(), b.connect())
    assert "127.0.0.1" in seen  # aioice routes every request through the guard


async def test_guarded_checks_from_refused_addresses_are_dropped(
    pair: tuple[aioice.Connection, aioice.Connection],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Fewer STUN retransmissions: the refused checks time out in ~1.5 s, not ~30 s.
    monkeypatch.setattr(aioice.stun, "RETRY_MAX", 2)
    a, b = pair
    refused: list[str] = []

    def refuse(address: str) -> bool:
        refused.append(address)
        return False

    guard_checks(a, refuse)
    await _introduce(a, b)
    waiting = asyncio.ensure_future(a.connect())
    try:
        async with asyncio.timeout(WAIT_S):
            with pytest.raises(ConnectionError):
                await b.connect()  # no check of b's is ever answered
    finally:
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await waiting
    assert "127.0.0.1" in refused


async def test_ice_connection_finds_aioices_connection_behind_aiortcs_transport() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio")
        await pc.setLocalDescription(await pc.createOffer())
        dtls = pc.getTransceivers()[0].receiver.transport
        assert isinstance(ice_connection(dtls.transport), aioice.Connection)
        assert ice_connection(object()) is None
    finally:
        await pc.close()
