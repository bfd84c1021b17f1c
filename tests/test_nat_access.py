"""NAT boxes' access links: each peer's "last mile", whichever path ICE picks.

First the box on real loopback sockets (a STUN round trip through it, total loss, a
rate limit, a live change), then calls: two peers behind symmetric NATs relayed
through coturn, and two full-cone peers connected directly, both see an RTT of
twice the sum of their access links' delays (each access link crossed once each
way, nothing else in the path), and the links table has the access links' rows.
Losses are seeded; every wait is on an event or a condition.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from aioice import stun
from helpers import wait_until

from webrtclab import ConfigurationError, Lab, MediaSpec
from webrtclab.browser import CHROMIUM_PATH
from webrtclab.experiment.scenario import Scenario
from webrtclab.netem import LinkConditions
from webrtclab.netem.natbox import NatBox
from webrtclab.stun import StunServer

SMALL = MediaSpec(width=160, height=120, fps=15)

needs_coturn = pytest.mark.skipif(
    shutil.which("turnserver") is None, reason="coturn (turnserver) is not installed"
)


def box_number(number: int, preset: str, **options: Any) -> NatBox:
    """A box of its own addresses, public 127.1.0.N and inside 127.2.N.0/24."""
    return NatBox(
        preset,
        public_ip=f"127.1.0.{number}",
        private_network=f"127.2.{number}.0/24",
        **options,
    )


class Inside:
    """A peer's socket behind ``box``: what the box delivers, with arrival times."""

    def __init__(self, box: NatBox) -> None:
        self.box = box
        self.address = (box.new_host(), 5000)
        self.heard: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        box.attach(self.address, self._deliver)

    def _deliver(self, data: bytes, source: tuple[str, int]) -> None:
        self.heard.put_nowait((time.monotonic(), data))

    def send(self, data: bytes, target: tuple[str, int]) -> None:
        self.box.send(self.address, data, target)

    async def receive(self, timeout: float = 2.0) -> tuple[float, bytes]:
        return await asyncio.wait_for(self.heard.get(), timeout)


async def stun_round_trip(inside: Inside, server: StunServer) -> float:
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    start = time.monotonic()
    inside.send(bytes(request), server.address)
    arrived, data = await inside.receive()
    assert stun.parse_message(data).transaction_id == request.transaction_id
    return arrived - start


async def test_an_access_link_delays_every_packet_crossing_the_box_each_way() -> None:
    box = box_number(210, "symmetric", access_link=LinkConditions(delay_ms=50), inside_name="alice")
    inside = Inside(box)
    try:
        async with StunServer() as server:
            rtts = [await stun_round_trip(inside, server) for _ in range(3)]
        assert all(0.095 <= rtt < 0.15 for rtt in rtts), rtts
        up, down = box.link_rows()
        assert (up.src, up.dst, down.src, down.dst) == ("alice", box.name, box.name, "alice")
        assert up.delivered == down.delivered == 3 and up.delay_ms == 50.0
    finally:
        box.close()


async def test_total_loss_blocks_and_is_counted(outside: socket.socket) -> None:
    box = box_number(211, "full-cone", access_link=(LinkConditions(loss=1.0), LinkConditions()))
    inside = Inside(box)
    try:
        async with StunServer() as server:
            for _ in range(5):
                inside.send(b"x" * 100, server.address)
            with pytest.raises(TimeoutError):
                await inside.receive(timeout=0.3)
            assert server.requests == 0
        up, down = box.link_rows()
        assert (up.packets_in, up.delivered, up.dropped_loss) == (5, 0, 5)
        assert down.packets_in == 0
    finally:
        box.close()


async def test_a_rate_limit_spaces_packets_and_its_queue_drops_the_excess(
    outside: socket.socket,
) -> None:
    # 1000 bytes at 160 kbit/s: 50 ms each; the queue holds four of them.
    box = box_number(212, "full-cone", access_link=LinkConditions(rate_kbps=160, queue_bytes=4000))
    inside = Inside(box)
    try:
        start = time.monotonic()
        for _ in range(6):
            inside.send(b"x" * 1000, outside.getsockname())
        arrivals: list[float] = []
        loop = asyncio.get_running_loop()
        while len(arrivals) < 4:
            await asyncio.wait_for(loop.sock_recv(outside, 2048), 2.0)
            arrivals.append(time.monotonic() - start)
        assert arrivals[0] == pytest.approx(0.05, abs=0.03)
        assert arrivals[-1] == pytest.approx(0.2, abs=0.04)
        up, _ = box.link_rows()
        assert (up.packets_in, up.delivered, up.dropped_queue) == (6, 4, 2)
        assert up.rate_kbps == 160.0 and up.queue_delay_max_ms == pytest.approx(200.0, abs=2)
    finally:
        box.close()


async def test_a_live_change_applies_to_later_packets() -> None:
    box = box_number(213, "port-restricted-cone", access_link=LinkConditions(delay_ms=50))
    inside = Inside(box)
    try:
        async with StunServer() as server:
            assert await stun_round_trip(inside, server) >= 0.095
            box.set_access_link((LinkConditions(delay_ms=5), LinkConditions(delay_ms=15)))
            rtt = await stun_round_trip(inside, server)
            assert 0.019 <= rtt < 0.06, rtt
        assert box.access_link == (LinkConditions(delay_ms=5), LinkConditions(delay_ms=15))
        assert [row.delay_ms for row in box.link_rows()] == [5.0, 15.0]
    finally:
        box.close()


async def test_losses_are_seeded() -> None:
    async def drops(seed: int) -> list[int]:
        box = box_number(
            214, "full-cone", name="box", access_link=LinkConditions(loss=0.5), seed=seed
        )
        inside = Inside(box)
        try:
            for i in range(40):
                inside.send(bytes([i]), ("127.0.0.1", 9))
            return [box.link_rows()[0].dropped_loss]
        finally:
            box.close()

    first = await drops(1)
    assert first == await drops(1) and 5 < first[0] < 35


# --- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"access_link": LinkConditions(delay_ms=10)}, "give nat= too"),
        ({"nat": "symmetric", "access_link": "lte"}, "must be a LinkConditions"),
        ({"nat": "symmetric", "access_link": (LinkConditions(),)}, "must be a LinkConditions"),
        ({"nat": NatBox("symmetric"), "access_link": LinkConditions()}, "give access_link= to"),
    ],
)
def test_the_lab_refuses_bad_access_links(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Lab(**kwargs)  # type: ignore[arg-type]


def test_a_box_refuses_bad_access_links() -> None:
    with pytest.raises(ConfigurationError, match="must be a LinkConditions"):
        NatBox("symmetric", access_link={"delay_ms": 10})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        LinkConditions(delay_ms=-5)
    with pytest.raises(ConfigurationError):
        LinkConditions(loss=1.5)


async def test_add_peer_refuses_an_access_link_without_a_nat() -> None:
    async with Lab() as lab:
        with pytest.raises(ConfigurationError, match="give nat= too"):
            await lab.add_peer("alice", access_link=LinkConditions(delay_ms=10))
        with pytest.raises(ConfigurationError, match="not a peer of this lab behind a NAT"):
            lab.set_access_link("alice", LinkConditions())
        shared = NatBox("full-cone")
        with pytest.raises(ConfigurationError, match="give access_link= to the NatBox"):
            await lab.add_peer("bob", nat=shared, access_link=LinkConditions())
        assert not lab.members


def test_scenarios_take_access_links_and_refuse_bad_ones() -> None:
    scenario = Scenario.from_mapping(
        {
            "nat": {
                "default": "symmetric",
                "access_link": {"delay_ms": 40, "uplink": {"rate_kbps": 500}},
            },
            "peers": [
                {"name": "alice"},
                {"name": "bob", "access_link": {"preset": "lte"}},
                {"name": "carol", "nat": "none"},
            ],
        }
    )
    alice, bob, carol = scenario.peers
    assert alice.access_link == (
        LinkConditions(delay_ms=40, rate_kbps=500),
        LinkConditions(delay_ms=40),
    )
    assert bob.access_link is not None and bob.access_link[0].delay_ms == 35
    assert carol.access_link is None
    refused: list[tuple[dict[str, Any], str]] = [
        ({"nat": {"access_link": {"delay_ms": 10}}}, "no peer is behind a NAT"),
        ({"nat": {"default": "symmetric", "access_link": {"dealy_ms": 1}}}, "dealy_ms"),
        ({"nat": {"default": "symmetric", "access_link": {"a_to_b": {}}}}, "uplink and downlink"),
        ({"nat": {"default": "symmetric", "access_link": 5}}, "must be a table"),
        ({"peers": [{"name": "a", "access_link": {"delay_ms": 1}}, {"name": "b"}]}, "not behind"),
    ]
    for data, message in refused:
        with pytest.raises(ConfigurationError, match=message):
            Scenario.from_mapping(data)


# --- calls ---------------------------------------------------------------------------------


async def measured_rtt_ms(lab: Lab, peers: set[str] | None = None) -> float:
    """The median RTCP round trip the aiortc peers measured, after a few reports."""
    peers = peers or {"alice", "bob"}

    def enough() -> bool:
        rtt = lab.rtt()
        return len(rtt) >= 6 and set(rtt["peer"]) == peers

    await wait_until(enough, timeout=15)
    return float(lab.rtt()["rtt_ms"].median())


def access_rows(lab: Lab) -> set[tuple[str, str]]:
    links = lab.links()
    used = links[links["delivered"] > 0]
    return {(str(src), str(dst)) for src, dst in zip(used["src"], used["dst"], strict=True)}


@needs_coturn
async def test_a_relayed_call_crosses_each_access_link_once_each_way() -> None:
    async with Lab(turn=True, ice_check_retransmissions=2, stats_interval=0.25, seed=3) as lab:
        await lab.add_peer(
            "alice", nat="symmetric", access_link=LinkConditions(delay_ms=40), media=SMALL
        )
        await lab.add_peer(
            "bob", nat="symmetric", access_link=LinkConditions(delay_ms=10), media=SMALL
        )
        await lab.wait_connected(timeout=15)
        types = set(lab.stats()["candidate_type"].dropna()) if len(lab.stats()) else set()
        rtt = await measured_rtt_ms(lab)
        types |= set(lab.stats()["candidate_type"].dropna())
        assert "relay" in types
        assert 95 <= rtt <= 135, rtt
        assert {
            ("alice", "alice-nat"),
            ("alice-nat", "alice"),
            ("bob", "bob-nat"),
            ("bob-nat", "bob"),
        } <= access_rows(lab)
        events = lab.events()
        assert "access link" in " ".join(events[events["event"] == "nat"]["detail"])


async def test_a_direct_call_crosses_both_access_links_and_follows_a_live_change() -> None:
    async with Lab(
        nat="full-cone", access_link=LinkConditions(delay_ms=10), stats_interval=0.25
    ) as lab:
        await lab.add_peer("alice", access_link=LinkConditions(delay_ms=40), media=SMALL)
        await lab.add_peer("bob", media=SMALL)  # the lab's default: 10 ms
        await lab.wait_connected(timeout=15)
        rtt = await measured_rtt_ms(lab)
        assert set(lab.stats()["candidate_type"].dropna()) == {"srflx"}
        assert 95 <= rtt <= 135, rtt
        lab.set_access_link("alice", LinkConditions(delay_ms=0))
        changed = lab.clock.now()

        def after_change() -> list[float]:
            rtt = lab.rtt()
            return list(rtt[rtt["time_s"] > changed + 1.0]["rtt_ms"])

        await wait_until(lambda: len(after_change()) >= 4, timeout=15)
        assert 15 <= sorted(after_change())[len(after_change()) // 2] <= 45
        assert "access-link-change" in set(lab.events()["event"])


@pytest.mark.skipif(not Path(CHROMIUM_PATH).exists(), reason="chromium is not installed")
async def test_a_browser_behind_a_box_crosses_its_access_link() -> None:
    async with Lab(nat="full-cone", stats_interval=0.25) as lab:
        await lab.add_peer("bob", access_link=LinkConditions(delay_ms=10), media=SMALL)
        await lab.add_browser_peer(
            "chrome", access_link=LinkConditions(delay_ms=40), width=160, height=120, fps=15
        )
        await lab.wait_connected(timeout=15)
        rtt = await measured_rtt_ms(lab, {"bob"})
        assert 95 <= rtt <= 135, rtt
        assert {("chrome", "chrome-nat"), ("chrome-nat", "chrome")} <= access_rows(lab)
