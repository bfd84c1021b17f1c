"""Calls between aiortc peers behind emulated NATs: which pair ICE selects, and when TURN is needed.

The classic matrix, on loopback: two full-cone NATs connect directly on their
server-reflexive candidates; a symmetric NAT facing a full-cone one connects
directly through a peer-reflexive candidate learned in the checks; two symmetric NATs
cannot connect without TURN, and do through the lab's coturn.  Every candidate of
every description stays inside 127.0.0.0/8.  ICE checks give up after two
retransmissions (3.5 s), so the failing call fails in seconds.
"""

from __future__ import annotations

import gc
import ipaddress
import os
import shutil
from collections.abc import Iterator

import pandas as pd
import pytest
from helpers import wait_until

from webrtclab import Lab, MediaSpec
from webrtclab.netem.natbox import NatBox
from webrtclab.peer import PeerSession
from webrtclab.sdp import sdp_candidates

SMALL = MediaSpec(width=160, height=120, fps=15)
FAST_CHECKS = 2  # a check fails after 0.5 + 1 + 2 s
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")

needs_coturn = pytest.mark.skipif(
    shutil.which("turnserver") is None, reason="coturn (turnserver) is not installed"
)


def sessions(lab: Lab) -> Iterator[PeerSession]:
    for peer in lab.peers.values():
        yield from peer.sessions.values()


def assert_only_loopback_candidates(lab: Lab) -> None:
    """The safety rule: every candidate (and related address) of every description."""
    seen = 0
    for session in sessions(lab):
        for description in (session.pc.localDescription, session.pc.remoteDescription):
            assert description is not None
            for candidate in sdp_candidates(description.sdp):
                seen += 1
                assert ipaddress.IPv4Address(candidate.ip) in LOOPBACK, candidate
                if candidate.relatedAddress:
                    assert ipaddress.IPv4Address(candidate.relatedAddress) in LOOPBACK
    events = lab.events()
    for detail in events[events["event"] == "ice-candidates"]["detail"]:
        for entry in str(detail).split(", "):
            host = entry.split()[1].rsplit(":", 1)[0]
            assert ipaddress.IPv4Address(host) in LOOPBACK, entry
    assert seen > 0


def paths(lab: Lab) -> dict[str, tuple[str, str, str, str]]:
    found = {}
    for user, peer in lab.peers.items():
        for session in peer.sessions.values():
            path = session.selected_path()
            assert path is not None
            found[user] = path
    return found


def candidate_types(lab: Lab) -> set[str]:
    return set(lab.stats()["candidate_type"].dropna())


async def call(lab: Lab, a: str | None, b: str | None) -> dict[str, tuple[str, str, str, str]]:
    await lab.add_peer("alice", nat=a, media=SMALL)
    await lab.add_peer("bob", nat=b, media=SMALL)
    await lab.wait_connected(timeout=10)
    for session in sessions(lab):
        assert session.ice_time_s is not None and 0 < session.ice_time_s < 5
    assert_only_loopback_candidates(lab)
    return paths(lab)


def connect_times(lab: Lab) -> pd.Series:
    events = lab.events()
    rows = events[events["event"] == "ice-connected"]
    return rows.set_index("peer")["detail"].str.removesuffix(" s").astype(float)


async def test_two_full_cone_nats_connect_directly_on_srflx_candidates() -> None:
    async with Lab(stats_interval=0.2, ice_check_retransmissions=FAST_CHECKS) as lab:
        found = await call(lab, "full-cone", "full-cone")
        alice, bob = found["alice"], found["bob"]
        # Each side's packets leave through the mapping its STUN request made...
        assert alice[0] == "srflx" and alice[1].startswith("127.1.0.1:")
        assert bob[0] == "srflx" and bob[1].startswith("127.1.0.2:")
        # ...and reach the other's srflx candidate (host candidates are unreachable).
        assert (alice[2], alice[3]) == ("srflx", bob[1])
        assert (bob[2], bob[3]) == ("srflx", alice[1])
        await wait_until(lambda: "srflx" in candidate_types(lab), timeout=5)
        assert candidate_types(lab) == {"srflx"}
        events = lab.events()
        gathered = events[events["event"] == "ice-candidates"]["detail"]
        assert gathered.str.contains("srflx 127.1.0.").all()
        assert set(connect_times(lab).index) == {"alice", "bob"}
        bindings = lab.nat_bindings()
        assert set(bindings["nat"]) == {"alice-nat", "bob-nat"}
        assert (bindings["event"] == "mapping-created").any()


async def test_symmetric_facing_full_cone_connects_through_a_peer_reflexive_candidate() -> None:
    async with Lab(stats_interval=0.2, ice_check_retransmissions=FAST_CHECKS) as lab:
        found = await call(lab, "symmetric", "full-cone")
        alice, bob = found["alice"], found["bob"]
        # Alice's NAT gave her checks to Bob a new mapping: not her srflx candidate.
        assert alice[0] == "prflx" and alice[1].startswith("127.1.0.1:")
        assert alice[2] == "srflx"
        # Bob learned that mapping from her checks (RFC 8445 section 7.3.1.3).
        assert (bob[2], bob[3]) == ("prflx", alice[1])
        assert bob[0] == "srflx"
        await wait_until(lambda: {"srflx", "prflx"} <= candidate_types(lab), timeout=5)
        assert candidate_types(lab) == {"srflx", "prflx"}
        assert all(t < 5 for t in connect_times(lab))


async def test_two_symmetric_nats_fail_without_turn_quickly() -> None:
    async with Lab(ice_check_retransmissions=FAST_CHECKS) as lab:
        alice = await lab.add_peer("alice", nat="symmetric", media=SMALL, reestablish=False)
        bob = await lab.add_peer("bob", nat="symmetric", media=SMALL, reestablish=False)
        await wait_until(lambda: "alice" in bob.sessions and "bob" in alice.sessions, timeout=5)
        for session in (alice.sessions["bob"], bob.sessions["alice"]):
            await wait_until(session.failed.is_set, timeout=8)
            assert session.selected_path() is None
        assert_only_loopback_candidates(lab)
        events = lab.events()
        failed = events[events["event"] == "ice-failed"]
        assert set(failed["peer"]) == {"alice", "bob"}
        checks = events[events["event"] == "ice-checks"]["detail"]
        assert checks.str.contains("failed").all() and not checks.str.contains("succeeded").any()
        # The NATs filtered each side's checks to the other's srflx candidate.
        bindings = lab.nat_bindings()
        filtered = bindings[bindings["event"] == "filtered"]
        assert set(filtered["nat"]) == {"alice-nat", "bob-nat"}
        assert set(filtered["detail"]) == {"address-and-port-dependent filtering"}


@needs_coturn
async def test_two_symmetric_nats_connect_through_turn() -> None:
    async with Lab(turn=True, stats_interval=0.2, ice_check_retransmissions=FAST_CHECKS) as lab:
        found = await call(lab, "symmetric", "symmetric")
        for local_type, _, remote_type, _ in found.values():
            # A relay on one end of the pair, whichever pair won.
            assert "relay" in (local_type, remote_type)
            assert local_type in ("relay", "prflx")
        await wait_until(lambda: len(candidate_types(lab)) > 0, timeout=5)
        assert candidate_types(lab) <= {"relay", "prflx"}
        # Media flows both ways.
        for session in sessions(lab):

            def video_arrives(s: PeerSession = session) -> bool:
                return s.counters[("recv", "video")].frames >= 5

            await wait_until(video_arrives)


async def test_peers_behind_one_shared_nat_reach_each_other_directly() -> None:
    """A carrier-grade NAT: both peers in one private network, host to host."""
    cgn = NatBox("symmetric", name="cgn")
    async with Lab(nat=cgn, ice_check_retransmissions=FAST_CHECKS) as lab:
        found = await _shared(lab)
        for local_type, local, remote_type, remote in found.values():
            assert (local_type, remote_type) == ("host", "host")
            assert local.startswith("127.2.1.") and remote.startswith("127.2.1.")
        assert lab.nat_boxes == [cgn] and cgn.hosts == ["127.2.1.1", "127.2.1.2"]


async def _shared(lab: Lab) -> dict[str, tuple[str, str, str, str]]:
    await lab.add_peer("alice", media=SMALL)
    await lab.add_peer("bob", media=SMALL)
    await lab.wait_connected(timeout=10)
    assert_only_loopback_candidates(lab)
    return paths(lab)


async def test_a_peer_behind_a_nat_calls_a_peer_without_one() -> None:
    async with Lab(nat="symmetric", ice_check_retransmissions=FAST_CHECKS) as lab:
        await lab.add_peer("alice", media=SMALL)
        await lab.add_peer("bob", nat=None, media=SMALL)  # overrides the lab's default
        await lab.wait_connected(timeout=10)
        assert_only_loopback_candidates(lab)
        found = paths(lab)
        assert found["alice"][0] == "prflx" and found["alice"][3].startswith("127.0.0.1:")
        assert found["bob"][:1] == ("host",) and found["bob"][2] == "prflx"
        events = lab.events()
        nat_events = events[events["event"] == "nat"]
        assert list(nat_events["peer"]) == ["alice"]


async def test_nat_calls_leave_no_socket_open() -> None:
    """Public sockets close with the mappings of their peer's sockets, boxes with the lab."""

    def fds() -> int:
        gc.collect()
        return len(os.listdir("/proc/self/fd"))

    async def one_call() -> None:
        async with Lab(ice_check_retransmissions=FAST_CHECKS) as lab:
            await call(lab, "symmetric", "full-cone")
            assert all(box.table.mappings for box in lab.nat_boxes)

    await one_call()  # warm-up: codecs, executor threads
    baseline = fds()
    for _ in range(3):
        await one_call()
    await wait_until(lambda: fds() <= baseline, timeout=10)
