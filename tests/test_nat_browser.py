"""The NAT matrix with a Chrome browser peer on one side and an aiortc peer on the other.

Chrome's sockets cannot be hooked, so the lab puts its NAT box in Chrome's path by
rewriting candidates (:class:`webrtclab.netem.gateway.NatGateway`): every address
Chrome is told about is an inside proxy of its box, and Chrome's host candidates
are rewritten to a private address where nothing listens.  The outcomes are those
of two aiortc peers (tests/test_nat_calls.py): two full-cone NATs connect directly
on server-reflexive candidates; a symmetric NAT facing a full-cone one connects
directly through a peer-reflexive candidate; two symmetric NATs fail without TURN
and connect through the lab's coturn.  Chrome's selected pair is read from its
getStats.  Every candidate of every relayed offer, answer and trickled candidate
stays inside 127.0.0.0/8.

The module is skipped when /usr/bin/chromium is missing, except in CI (``CI``
set), where a missing browser is a failure.
"""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
from typing import Any, TypedDict

import pytest
from helpers import require_system, wait_until

from webrtclab import Lab, MediaSpec
from webrtclab.browser import CHROMIUM_PATH, BrowserPeer
from webrtclab.exceptions import ConfigurationError
from webrtclab.netem import LinkConditions
from webrtclab.netem.natbox import NatBox
from webrtclab.sdp import parse_candidate, sdp_candidates
from webrtclab.signaling import messages as m
from webrtclab.signaling.rooms import Relayed

require_system(CHROMIUM_PATH, "chromium", "the browser NAT tests")

SMALL = MediaSpec(width=160, height=120, fps=15)
FAST_CHECKS = 2  # an aiortc check fails after 0.5 + 1 + 2 s
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")

needs_coturn = pytest.mark.skipif(
    shutil.which("turnserver") is None, reason="coturn (turnserver) is not installed"
)


class Tap:
    """Every relayed offer, answer and trickled candidate, as it was delivered."""

    def __init__(self, lab: Lab) -> None:
        self.candidates: list[tuple[str, str, str]] = []
        lab.server.dispatcher.rewrite = self  # the user's hook: runs after the lab's

    def __call__(self, sender: str, receiver: str, message: Relayed) -> Relayed:
        if isinstance(message, m.RelayedOffer | m.RelayedAnswer) and message.sdp is not None:
            for line in message.sdp.sdp.splitlines():
                if line.startswith("a=candidate:"):
                    self.candidates.append((sender, receiver, line[2:]))
        elif isinstance(message, m.RelayedIceCandidate) and message.candidate is not None:
            if message.candidate.candidate:
                self.candidates.append((sender, receiver, message.candidate.candidate))
        return message

    def assert_only_loopback(self) -> None:
        """The safety rule, on everything exchanged (both directions)."""
        assert {s for s, _, _ in self.candidates} == {"chrome", "bob"}, self.candidates
        for _, _, text in self.candidates:
            candidate = parse_candidate(text)
            assert ipaddress.IPv4Address(candidate.ip) in LOOPBACK, text
            if candidate.relatedAddress:
                assert ipaddress.IPv4Address(candidate.relatedAddress) in LOOPBACK, text

    def told_chrome(self) -> set[str]:
        """The hosts of the candidates Chrome was told about."""
        return {parse_candidate(t).ip for _, r, t in self.candidates if r == "chrome"}

    def from_chrome(self) -> list[tuple[str, str]]:
        """(type, host) of each candidate of Chrome's that the other side was told."""
        out = []
        for sender, _, text in self.candidates:
            if sender == "chrome":
                candidate = parse_candidate(text)
                out.append((candidate.type, candidate.ip))
        return out


async def chrome_pair(chrome: BrowserPeer, timeout: float = 5.0) -> dict[str, Any]:
    """Chrome's selected candidate pair for bob, from its getStats.

    The lab is connected when the aiortc side is; Chrome's transport may name its
    selected pair a moment later, so its reports are polled until it does.
    """
    async with asyncio.timeout(timeout):
        while True:
            report = (await chrome.collect_stats()).get("bob", [])
            pair_id = next(
                (
                    s["selectedCandidatePairId"]
                    for s in report
                    if s["type"] == "transport" and s.get("selectedCandidatePairId")
                ),
                None,
            )
            if pair_id is not None:
                break
            await asyncio.sleep(0.05)
    by_id = {stat["id"]: stat for stat in report}
    pair = by_id[pair_id]
    local, remote = by_id[pair["localCandidateId"]], by_id[pair["remoteCandidateId"]]
    # (Chrome leaves the address of a peer-reflexive remote candidate out of getStats.)
    known = [s for s in report if s["type"] == "remote-candidate" and s.get("address")]
    return {
        "state": pair["state"],
        "local": (local["candidateType"], local["address"]),
        "remote": (remote["candidateType"], remote.get("address") or ""),
        "remote_addresses": {s["address"] for s in known},
    }


def aiortc_loopback_only(lab: Lab) -> None:
    for session in lab.peers["bob"].sessions.values():
        for description in (session.pc.localDescription, session.pc.remoteDescription):
            if description is None:
                continue  # a session re-established after the failure, not yet negotiated
            for candidate in sdp_candidates(description.sdp):
                assert ipaddress.IPv4Address(candidate.ip) in LOOPBACK, candidate


class _NatOption(TypedDict, total=False):
    nat: str


async def call(
    lab: Lab, chrome_nat: str | None = None, bob_nat: str | None = None
) -> tuple[Tap, BrowserPeer, dict[str, Any], tuple[str, str, str, str]]:
    """Bob (aiortc) joins first, Chrome offers; both connect; Chrome's and Bob's pairs.

    A NAT left None is the lab's ``nat``."""
    tap = Tap(lab)
    bob_options: _NatOption = {} if bob_nat is None else {"nat": bob_nat}
    chrome_options: _NatOption = {} if chrome_nat is None else {"nat": chrome_nat}
    await lab.add_peer("bob", media=SMALL, **bob_options)
    chrome = await lab.add_browser_peer("chrome", width=160, height=120, fps=15, **chrome_options)
    await lab.wait_connected(timeout=10)
    (session,) = lab.peers["bob"].sessions.values()
    assert session.ice_time_s is not None and 0 < session.ice_time_s < 5
    bob_path = session.selected_path()
    assert bob_path is not None
    pair = await chrome_pair(chrome)
    assert pair["state"] == "succeeded"
    assert pair["remote"][1] in pair["remote_addresses"] or pair["remote"] == ("prflx", ""), pair
    # Chrome only ever talks to its box's inside proxies (the private network).
    (box,) = [b for b in lab.nat_boxes if b.name == "chrome-nat"]
    assert box.private_network is not None
    for host in (*pair["remote_addresses"], *tap.told_chrome()):
        assert ipaddress.IPv4Address(host) in box.private_network, (host, pair)
    assert pair["local"][1] in ("127.0.0.1", box.public_ip), pair
    # Its STUN and TURN servers too.
    assert chrome.ice_servers
    for server in chrome.ice_servers:
        for url in server["urls"]:
            host = url.split(":")[1]
            assert ipaddress.IPv4Address(host) in box.private_network, url
    # What Chrome tells: host candidates on an unreachable private address, srflx = the box.
    told = tap.from_chrome()
    hosts = {host for kind, host in told if kind == "host"}
    assert len(hosts) == 1 and ipaddress.IPv4Address(hosts.pop()) in box.private_network, told
    assert ("srflx", box.public_ip) in told, told
    assert {kind for kind, _ in told} <= {"host", "srflx", "relay"}
    tap.assert_only_loopback()
    aiortc_loopback_only(lab)
    return tap, chrome, pair, bob_path


async def chrome_candidate_type(lab: Lab) -> str:
    def rows() -> set[str]:
        stats = lab.stats()
        return set(stats[stats["peer"] == "chrome"]["candidate_type"].dropna())

    await wait_until(lambda: len(rows()) > 0, timeout=5)
    (kind,) = rows()
    return kind


async def test_chrome_and_aiortc_behind_full_cone_nats_connect_on_srflx() -> None:
    lab_nat = Lab(nat="full-cone", stats_interval=0.2, ice_check_retransmissions=FAST_CHECKS)
    async with lab_nat as lab:
        _, _, pair, bob = await call(lab)  # the lab's nat= applies to browser peers too
        # Chrome's checks leave through the mapping its STUN request made (127.1.0.2).
        assert pair["local"][0] == "srflx" and pair["remote"][0] == "srflx", pair
        assert bob[0] == "srflx" and bob[2] == "srflx" and bob[3].startswith("127.1.0.2:")
        assert await chrome_candidate_type(lab) == "srflx"
        events = lab.events()
        nat = events[events["event"] == "nat"].set_index("peer")["detail"]
        assert nat["chrome"].startswith("chrome-nat: full-cone, public 127.1.0.2")
        bindings = lab.nat_bindings()
        created = bindings[bindings["event"] == "mapping-created"]
        assert set(created["nat"]) == {"bob-nat", "chrome-nat"}
        inside = created[created["nat"] == "chrome-nat"]["internal"]
        assert inside.str.startswith("127.0.0.1:").all()  # Chrome's own sockets


@pytest.mark.parametrize(
    ("chrome_nat", "bob_nat", "chrome_local", "bob_local"),
    [("symmetric", "full-cone", "prflx", "srflx"), ("full-cone", "symmetric", "srflx", "prflx")],
)
async def test_symmetric_facing_full_cone_connects_directly(
    chrome_nat: str, bob_nat: str, chrome_local: str, bob_local: str
) -> None:
    async with Lab(stats_interval=0.2, ice_check_retransmissions=FAST_CHECKS) as lab:
        _, _, pair, bob = await call(lab, chrome_nat, bob_nat)
        assert pair["local"][0] == chrome_local, pair
        assert bob[0] == bob_local, bob
        assert "relay" not in (pair["local"][0], pair["remote"][0], bob[0], bob[2])
        if chrome_nat == "symmetric":
            # Bob learned Chrome's new mapping from its checks.
            assert bob[2] == "prflx" and bob[3].startswith("127.1.0.2:")
        assert await chrome_candidate_type(lab) == chrome_local


async def test_chrome_and_aiortc_behind_symmetric_nats_fail_without_turn() -> None:
    """Chrome gives up after ~15 s of failed checks (the aiortc side never hears Chrome's
    end-of-candidates, so it keeps waiting for more: Chrome's state is the verdict)."""
    async with Lab(ice_check_retransmissions=FAST_CHECKS) as lab:
        tap = Tap(lab)
        bob = await lab.add_peer("bob", nat="symmetric", media=SMALL, reestablish=False)
        await lab.add_browser_peer("chrome", nat="symmetric", width=160, height=120, fps=15)

        def states(peer: str) -> list[str]:
            events = lab.events()
            rows = events[(events["peer"] == peer) & (events["event"] == "connection-state")]
            return list(rows["detail"])

        await wait_until(lambda: "failed" in states("chrome"), timeout=25)
        assert "connected" not in states("chrome") and "connected" not in states("bob")
        assert all(s.selected_path() is None for s in bob.sessions.values())
        bindings = lab.nat_bindings()
        filtered = bindings[bindings["event"] == "filtered"]
        assert set(filtered["nat"]) == {"bob-nat", "chrome-nat"}
        assert set(filtered["detail"]) == {"address-and-port-dependent filtering"}
        tap.assert_only_loopback()
        aiortc_loopback_only(lab)


@needs_coturn
async def test_chrome_and_aiortc_behind_symmetric_nats_connect_through_turn() -> None:
    async with Lab(turn=True, stats_interval=0.2, ice_check_retransmissions=FAST_CHECKS) as lab:
        tap, _, pair, bob = await call(lab, "symmetric", "symmetric")
        # A relay on one end of each side's pair, whichever pair won.
        assert "relay" in (pair["local"][0], pair["remote"][0]), pair
        assert "relay" in (bob[0], bob[2]), bob
        assert pair["local"][0] in ("relay", "prflx") and bob[0] in ("relay", "prflx")
        # Chrome reached coturn through its box: its relay candidate's base is the box.
        relays = [(kind, host) for kind, host in tap.from_chrome() if kind == "relay"]
        assert relays and all(host == "127.0.0.1" for _, host in relays)
        assert await chrome_candidate_type(lab) in ("relay", "prflx")


async def test_browser_nat_refusals() -> None:
    async with Lab(nat=NatBox("symmetric", name="cgn")) as lab:
        with pytest.raises(ConfigurationError, match="a browser gets a NAT box of its own"):
            await lab.add_browser_peer("carol")
        with pytest.raises(ConfigurationError, match="give nat= or ice_servers=, not both"):
            await lab.add_browser_peer("carol", nat="symmetric", ice_servers=[])
        assert lab.members == {} and lab.nat_boxes == []
    async with Lab(link=LinkConditions()) as lab:
        with pytest.raises(ConfigurationError, match="network emulator"):
            await lab.add_browser_peer("carol", nat="symmetric")
        assert lab.members == {}
