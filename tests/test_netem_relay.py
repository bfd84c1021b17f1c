"""The UDP relay without aiortc: probes from plain sockets through a real Network.

Two UDP sockets on 127.0.0.1 play the peers "a" and "b".  Their candidates are rewritten
by ``Network.rewrite_candidate`` as the signaling hook would; "a" then sends to the relay
socket standing for b's candidate and "b" receives, seeing the packets come from the
relay socket standing for a's.  Every probe carries a sequence number and its send time
(``time.monotonic``), so the receiver measures the one-way delay of each.

Statistical checks use fixed seeds and 99.9 % binomial intervals; timing checks assert
medians and lower bounds only (the upper tail belongs to the machine's scheduler: two
cores shared with other jobs), with the relay's own precision measured by
``benchmarks/bench_netem.py``.
"""

from __future__ import annotations

import asyncio
import math
import socket
import statistics
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from webrtclab.events import LabClock
from webrtclab.exceptions import ConfigurationError, InvalidStateError
from webrtclab.netem import LinkConditions
from webrtclab.netem.relay import LINK_COLUMNS, Network
from webrtclab.sdp import parse_candidate

Address = tuple[str, int]
PROBE = struct.Struct("!Id")  # sequence number, send time (time.monotonic)
WAIT_S = 5.0
Z_999 = 3.2905  # two-sided 99.9 % normal quantile
CLOCK_SLACK_MS = 0.05  # "never early", give or take the clock's resolution


def host_candidate(address: Address, foundation: str = "1") -> str:
    return f"candidate:{foundation} 1 udp 2130706431 {address[0]} {address[1]} typ host"


def candidate_address(text: str | None) -> Address:
    assert text is not None
    candidate = parse_candidate(text)
    return (candidate.ip, candidate.port)


@dataclass(frozen=True)
class Arrival:
    seq: int
    sent: float  # time.monotonic() at the sender
    arrived: float  # time.monotonic() at the receiver
    source: Address

    @property
    def delay_ms(self) -> float:
        return (self.arrived - self.sent) * 1000


class Endpoint(asyncio.DatagramProtocol):
    """A plain UDP socket on 127.0.0.1 playing a peer; queues what it receives."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.arrivals: asyncio.Queue[Arrival] = asyncio.Queue()

    @classmethod
    async def open(cls) -> Endpoint:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind(("127.0.0.1", 0))
        loop = asyncio.get_running_loop()
        _, endpoint = await loop.create_datagram_endpoint(cls, sock=sock)
        return endpoint

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def datagram_received(self, data: bytes, addr: Any) -> None:
        arrived = time.monotonic()
        seq, sent = PROBE.unpack_from(data)
        self.arrivals.put_nowait(Arrival(seq, sent, arrived, (addr[0], addr[1])))

    @property
    def address(self) -> Address:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return (host, port)

    def send_probe(self, seq: int, to: Address, size: int = PROBE.size) -> None:
        assert self.transport is not None
        self.transport.sendto(PROBE.pack(seq, time.monotonic()).ljust(size, b"\0"), to)

    async def collect(self, count: int, timeout: float = WAIT_S) -> list[Arrival]:
        """The next ``count`` arrivals (fails the test if they do not come in time)."""
        got: list[Arrival] = []
        async with asyncio.timeout(timeout):
            while len(got) < count:
                got.append(await self.arrivals.get())
        return got

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def send_probes(
    src: Endpoint,
    to: Address,
    count: int,
    *,
    interval: float,
    size: int = PROBE.size,
    first: int = 0,
    on_sent: Callable[[int], None] | None = None,
) -> None:
    """Send probes ``first .. first+count-1`` paced at ``interval`` s (sent in catch-up bursts
    when the loop wakes late); ``on_sent(seq)`` runs after each."""
    start = time.monotonic()
    sent = 0
    while sent < count:
        due = min(count, int((time.monotonic() - start) / interval) + 1)
        while sent < due:
            src.send_probe(first + sent, to, size)
            if on_sent is not None:
                on_sent(first + sent)
            sent += 1
        if sent < count:
            await asyncio.sleep(max(0.0, start + sent * interval - time.monotonic()))


async def wait_for(predicate: Callable[[], bool], timeout: float = WAIT_S) -> None:
    """Poll a counter that has no event of its own (the relay's link counters)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


@dataclass
class Link:
    """Peers "a" and "b" behind a running Network."""

    network: Network
    a: Endpoint
    b: Endpoint
    a_proxy: Address  # the relay socket standing for a's candidate (b sends here)
    b_proxy: Address  # the relay socket standing for b's candidate (a sends here)
    start_window: tuple[float, float]  # the links' start time lies in this (network clock)

    def row(self, src: str = "a", dst: str = "b") -> dict[str, Any]:
        for row in self.network.link_rows():
            if (row[1], row[2]) == (src, dst):
                return dict(zip(LINK_COLUMNS, row, strict=True))
        raise AssertionError(f"no link row {src}->{dst}")

    async def relayed(self, count: int, src: str = "a", dst: str = "b") -> int:
        """Wait until the relay has taken in ``count`` packets; how many it will deliver."""
        await wait_for(lambda: self.row(src, dst)["packets_in"] >= count)
        row = self.row(src, dst)
        assert row["packets_in"] == count, row
        return int(row["delivered"])


async def make_link(network: Network) -> Link:
    network.start()
    a, b = await Endpoint.open(), await Endpoint.open()
    before = network.clock.now()
    a_proxy = candidate_address(network.rewrite_candidate("a", "b", host_candidate(a.address)))
    b_proxy = candidate_address(network.rewrite_candidate("b", "a", host_candidate(b.address)))
    after = network.clock.now()
    return Link(network, a, b, a_proxy, b_proxy, (before, after))


@asynccontextmanager
async def relay_link(
    conditions: LinkConditions | None = None, *, seed: int = 0, clock: LabClock | None = None
) -> AsyncIterator[Link]:
    network = Network(conditions, seed=seed, clock=clock)
    link = None
    try:
        link = await make_link(network)
        yield link
    finally:
        if link is not None:
            link.a.close()
            link.b.close()
        await network.close()


def dropped(sent: Iterable[int], arrivals: Iterable[Arrival]) -> set[int]:
    return set(sent) - {arrival.seq for arrival in arrivals}


def binomial_bounds(n: int, p: float) -> tuple[float, float]:
    half = Z_999 * math.sqrt(p * (1 - p) / n)
    return p - half, p + half


# --- the data path ------------------------------------------------------------------------------


async def test_unimpaired_link_delivers_everything_both_ways_from_the_proxies() -> None:
    async with relay_link() as link:
        count = 400
        await send_probes(link.a, link.b_proxy, count, interval=0.001)
        assert await link.relayed(count) == count
        arrivals = await link.b.collect(count)
        # b sees a's packets coming from the relay socket it was told is a's.
        assert {x.source for x in arrivals} == {link.a_proxy}
        assert sorted(x.seq for x in arrivals) == list(range(count))
        delays = [x.delay_ms for x in arrivals]
        assert min(delays) >= 0
        assert statistics.median(delays) < 1.0, statistics.median(delays)

        await send_probes(link.b, link.a_proxy, 100, interval=0.001)
        back = await link.a.collect(100)
        assert {x.source for x in back} == {link.b_proxy}
        assert sorted(x.seq for x in back) == list(range(100))
        assert link.row("b", "a")["delivered"] == 100


async def test_constant_delay_is_never_early_and_accurate_at_the_median() -> None:
    async with relay_link(LinkConditions(delay_ms=30)) as link:
        count = 400  # one every millisecond: departures and arrivals interleave closely
        await send_probes(link.a, link.b_proxy, count, interval=0.001)
        arrivals = await link.b.collect(count)
        delays = sorted(x.delay_ms for x in arrivals)
        assert delays[0] >= 30 - CLOCK_SLACK_MS, delays[0]
        assert abs(statistics.median(delays) - 30) <= 2, statistics.median(delays)
        # Waiting for one departure must not hold up the arrivals meanwhile (they would
        # be queued late and leave late): nine in ten are within 5 ms even on a busy
        # machine (about 0.5 ms on a quiet one).
        assert delays[int(0.9 * count)] <= 35, delays[int(0.9 * count)]
        assert sorted(x.seq for x in arrivals) == list(range(count))


async def test_random_loss_rate_and_link_counters() -> None:
    async with relay_link(LinkConditions(loss=0.1), seed=3) as link:
        count = 2000
        await send_probes(link.a, link.b_proxy, count, interval=0.0002)
        delivered = await link.relayed(count)
        arrivals = await link.b.collect(delivered)
        lost = count - len(arrivals)
        low, high = binomial_bounds(count, 0.1)
        assert low <= lost / count <= high, lost / count
        row = link.row()
        # Every packet the model let through arrived: the relay itself lost nothing.
        assert row["dropped_loss"] == lost
        assert row["packets_in"] == row["delivered"] + row["dropped_loss"] == count
        assert row["loss"] == 0.1 and row["delay_ms"] == 0.0 and math.isnan(row["rate_kbps"])


async def test_rate_limit_delivers_the_configured_rate_and_drops_the_excess() -> None:
    rate_kbps, size = 1000, 1200
    async with relay_link(LinkConditions(rate_kbps=rate_kbps, queue_ms=100)) as link:
        interval = size * 8 / (2 * rate_kbps * 1000)  # offered at twice the rate
        count = int(2.0 / interval)
        await send_probes(link.a, link.b_proxy, count, interval=interval, size=size)
        delivered = await link.relayed(count)
        arrivals = await link.b.collect(delivered)
        first, last = arrivals[0].arrived, arrivals[-1].arrived
        # Bits that came out after the first packet, over the time they took.
        measured_kbps = (len(arrivals) - 1) * size * 8 / (last - first) / 1000
        assert abs(measured_kbps - rate_kbps) <= 0.1 * rate_kbps, measured_kbps
        row = link.row()
        assert row["dropped_queue"] == count - len(arrivals) > 0.3 * count
        assert row["rate_kbps"] == rate_kbps
        # Never early: each packet waits at least its own serialization time.
        assert min(x.delay_ms for x in arrivals) >= size * 8 / rate_kbps - CLOCK_SLACK_MS


async def test_live_condition_change_takes_effect_mid_stream() -> None:
    async with relay_link() as link:
        count, switch_at = 120, 60
        slow = LinkConditions(delay_ms=40)
        applied: list[int] = []  # probes sent once the relay thread reported the change

        def on_sent(seq: int) -> None:
            if seq == switch_at - 1:
                link.network.set_conditions("a", "b", slow)
            elif seq >= switch_at and link.network.conditions("a", "b") == slow:
                applied.append(seq + 1)  # the next probe is sent after the change

        await send_probes(link.a, link.b_proxy, count, interval=0.002, on_sent=on_sent)
        arrivals = sorted(await link.b.collect(count), key=lambda x: x.seq)
        delays = [x.delay_ms for x in arrivals]
        # Before the change: no added delay.
        assert max(delays[:switch_at]) < 20, delays[:switch_at]
        # The relay thread applies the change between two datagrams; from then on every
        # probe is delayed, never early, and the change had landed well before the end.
        first_slow = next(i for i, d in enumerate(delays) if d >= 40 - CLOCK_SLACK_MS)
        assert applied and switch_at <= first_slow <= applied[0], (first_slow, applied[:1])
        assert min(delays[first_slow:]) >= 40 - CLOCK_SLACK_MS
        assert statistics.median(delays[first_slow:]) < 45
        assert link.network.conditions("b", "a") == LinkConditions()
        assert link.row()["delay_ms"] == 40


async def test_same_seed_same_packets_same_drops() -> None:
    async def drops(seed: int) -> set[int]:
        async with relay_link(LinkConditions(loss=0.3), seed=seed) as link:
            count = 300
            await send_probes(link.a, link.b_proxy, count, interval=0.0005)
            delivered = await link.relayed(count)
            return dropped(range(count), await link.b.collect(delivered))

    first, second, other = await drops(11), await drops(11), await drops(12)
    assert first == second
    assert 0.2 * 300 < len(first) < 0.4 * 300
    assert first != other


async def test_outage_window_drops_everything_inside_it() -> None:
    clock = LabClock()
    async with relay_link(LinkConditions(outages=[(0.2, 0.6)]), clock=clock) as link:
        sent_at: dict[int, float] = {}

        def stamp(seq: int) -> None:
            sent_at[seq] = clock.now()

        count = 160  # 0.8 s
        await send_probes(link.a, link.b_proxy, count, interval=0.005, on_sent=stamp)
        delivered = await link.relayed(count)
        lost = dropped(range(count), await link.b.collect(delivered))
        start_lo, start_hi = link.start_window
        margin = 0.05  # a probe reaches the relay at most this long after it is sent
        inside = {s for s, t in sent_at.items() if start_hi + 0.2 <= t < start_lo + 0.6 - margin}
        outside = {
            s for s, t in sent_at.items() if t < start_lo + 0.2 - margin or t >= start_hi + 0.6
        }
        assert len(inside) > 40 and len(outside) > 40
        assert inside <= lost
        assert not (outside & lost)
        assert link.row()["dropped_outage"] == len(lost)


async def test_unknown_source_gets_a_peer_reflexive_proxy() -> None:
    async with relay_link() as link:
        stranger = await Endpoint.open()  # a's address the relay was never told about
        try:
            stranger.send_probe(1, link.b_proxy)
            (arrival,) = await link.b.collect(1)
            assert arrival.seq == 1
            prflx = arrival.source
            assert prflx not in (link.a_proxy, link.b_proxy) and prflx[0] == "127.0.0.1"
            assert ("a", "b", stranger.address, prflx) in link.network.proxies()
            # And the way back: b answers the new address, the stranger hears b's proxy.
            link.b.send_probe(2, prflx)
            (back,) = await stranger.collect(1)
            assert (back.seq, back.source) == (2, link.b_proxy)
        finally:
            stranger.close()


async def test_schedule_set_before_the_link_exists_applies() -> None:
    network = Network()
    network.set_schedule("a", "b", [(0.0, {"delay_ms": 20})])
    link = await make_link(network)
    try:
        await send_probes(link.a, link.b_proxy, 20, interval=0.002)
        arrivals = await link.b.collect(20)
        assert min(x.delay_ms for x in arrivals) >= 20 - CLOCK_SLACK_MS
        with pytest.raises(ConfigurationError, match="exists already"):
            network.set_schedule("a", "b", [(1.0, {"delay_ms": 5})])
    finally:
        link.a.close()
        link.b.close()
        await network.close()


# --- candidates and SDP -------------------------------------------------------------------------


async def test_rewrite_candidate_proxies_loopback_udp_and_hides_the_rest() -> None:
    async with Network() as network:
        text = "candidate:7 1 udp 1694498815 127.0.0.1 40000 typ srflx raddr 127.0.0.1 rport 4000"
        rewritten = network.rewrite_candidate("a", "b", text)
        assert rewritten is not None
        original, proxied = parse_candidate(text), parse_candidate(rewritten)
        assert proxied.ip == "127.0.0.1" and proxied.port != original.port
        assert (proxied.foundation, proxied.component, proxied.priority, proxied.type) == (
            "7",
            1,
            1694498815,
            "srflx",
        )
        assert proxied.relatedAddress is None and proxied.relatedPort is None
        # The same candidate again maps to the same relay socket.
        assert network.rewrite_candidate("a", "b", text) == rewritten
        assert [p for p in network.proxies() if p[0] == "a"] == [
            ("a", "b", ("127.0.0.1", 40000), (proxied.ip, proxied.port))
        ]
        # Non-loopback and TCP candidates would bypass the emulator: dropped.
        assert network.rewrite_candidate("a", "b", host_candidate(("192.0.2.2", 5000))) is None
        assert network.rewrite_candidate("a", "b", host_candidate(("fd00::2", 5000))) is None
        tcp = "candidate:3 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active"
        assert network.rewrite_candidate("a", "b", tcp) is None
        # End-of-candidates passes untouched.
        assert network.rewrite_candidate("a", "b", "") == ""


async def test_rewrite_sdp_replaces_loopback_candidates_and_keeps_other_lines() -> None:
    sdp_lines = [
        "v=0",
        "o=- 1 1 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "m=audio 9 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 127.0.0.1",
        "a=mid:0",
        "a=candidate:1 1 udp 2130706431 127.0.0.1 41000 typ host",
        "a=candidate:2 1 udp 2130706431 192.0.2.2 41001 typ host",
        "a=candidate:3 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active",
        "a=end-of-candidates",
        "a=ice-ufrag:abcd",
        "a=ice-pwd:0123456789abcdef012345",
    ]
    async with Network() as network:
        out = network.rewrite_sdp("a", "b", "\r\n".join(sdp_lines) + "\r\n")
        assert out.endswith("\r\n")
        lines = out.splitlines()
        assert [line for line in lines if not line.startswith("a=candidate:")] == [
            line for line in sdp_lines if not line.startswith("a=candidate:")
        ]
        candidates = [line for line in lines if line.startswith("a=candidate:")]
        assert len(candidates) == 1
        ((owner, other, real, relay),) = network.proxies()
        assert (owner, other, real) == ("a", "b", ("127.0.0.1", 41000))
        assert candidate_address(candidates[0]) == relay
        # The candidate keeps its place: right after a=mid, before a=end-of-candidates.
        assert lines.index(candidates[0]) == 7


async def test_direct_pair_keeps_its_candidates_and_gets_no_link() -> None:
    async with Network(LinkConditions(delay_ms=50)) as network:
        network.direct("x", "y")
        text = host_candidate(("192.0.2.2", 5000))
        assert network.rewrite_candidate("x", "y", text) == text
        assert network.rewrite_candidate("y", "x", host_candidate(("127.0.0.1", 5001))) == (
            host_candidate(("127.0.0.1", 5001))
        )
        sdp = "v=0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 41000 typ host\r\n"
        assert network.rewrite_sdp("x", "y", sdp) == sdp
        assert network.proxies() == []
        assert network.link_rows() == []


# --- configuration, lifecycle, observability -----------------------------------------------------


async def test_configuration_errors() -> None:
    for host in ("192.0.2.2", "0.0.0.0", "localhost"):
        with pytest.raises(ConfigurationError, match="loopback"):
            Network(host=host)
    async with Network() as network:
        with pytest.raises(ConfigurationError, match="LinkConditions"):
            network.set_conditions("a", "b", {"delay_ms": 10})  # type: ignore[arg-type]
        network.set_schedule("a", "b", [(1.0, {"loss": 0.5})])  # fine before the link
        network.rewrite_candidate("a", "b", host_candidate(("127.0.0.1", 40000)))
        with pytest.raises(ConfigurationError, match="exists already"):
            network.set_schedule("a", "b", [(1.0, {"loss": 0.5})])
        with pytest.raises(ConfigurationError, match="exists already"):
            network.set_schedule("b", "a", [(1.0, {"loss": 0.5})])


async def test_close_is_idempotent_ends_the_thread_and_frees_the_sockets() -> None:
    before = set(threading.enumerate())
    network = Network()
    network.start()
    network.start()  # idempotent
    (thread,) = [t for t in set(threading.enumerate()) - before if t.name == "webrtclab-relay"]
    relay = candidate_address(
        network.rewrite_candidate("a", "b", host_candidate(("127.0.0.1", 40000)))
    )
    await network.close()
    assert not thread.is_alive()
    await network.close()
    with pytest.raises(InvalidStateError, match="closed"):
        network.start()
    # The relay socket is gone: its port can be bound again.
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(relay)
    finally:
        sock.close()


async def test_link_rows_match_link_columns() -> None:
    conditions = LinkConditions(delay_ms=5, jitter_ms=1, loss=0.02, rate_kbps=5000)
    async with relay_link(conditions) as link:
        await send_probes(link.a, link.b_proxy, 50, interval=0.001)
        delivered = await link.relayed(50)
        await link.b.collect(delivered)
        rows = link.network.link_rows()
        assert LINK_COLUMNS[:3] == ["time_s", "src", "dst"]
        assert sorted((r[1], r[2]) for r in rows) == [("a", "b"), ("b", "a")]
        for row in rows:
            assert len(row) == len(LINK_COLUMNS)
        ab = link.row()
        assert ab["packets_in"] == 50 and ab["bytes_in"] == 50 * PROBE.size
        assert ab["delivered"] + ab["dropped_loss"] + ab["dropped_burst"] == 50
        assert ab["dropped_queue"] == ab["dropped_outage"] == ab["duplicated"] == 0
        assert ab["bytes_delivered"] == ab["delivered"] * PROBE.size
        assert (ab["delay_ms"], ab["jitter_ms"], ab["loss"], ab["rate_kbps"]) == (
            5.0,
            1.0,
            0.02,
            5000.0,
        )
        # 5000 kbit/s serializes a probe in 0.02 ms.
        assert 0 < ab["queue_delay_mean_ms"] <= ab["queue_delay_max_ms"]
        ba = link.row("b", "a")
        assert ba["packets_in"] == 0
        assert link.network.link_rows(now=12.5)[0][0] == 12.5


async def test_idle_relay_sockets_are_reaped_and_busy_ones_kept() -> None:
    """Candidates of replaced connections stop carrying traffic: their sockets go."""
    network = Network(idle_timeout_s=0.4)
    link = await make_link(network)
    stale = await Endpoint.open()
    try:
        # A third candidate of "a" that nobody uses (a connection that was replaced).
        network.rewrite_candidate("a", "b", host_candidate(stale.address))
        assert len(network.proxies()) == 3
        deadline = asyncio.get_running_loop().time() + 3.0
        seq = 0
        while network.reaped == 0:  # keep a <-> b busy meanwhile
            link.a.send_probe(seq, link.b_proxy)
            link.b.send_probe(seq, link.a_proxy)
            seq += 1
            assert asyncio.get_running_loop().time() < deadline, "nothing reaped"
            await asyncio.sleep(0.02)
        reals = {real for _, _, real, _ in network.proxies()}
        assert reals == {link.a.address, link.b.address}
        link.a.send_probe(seq, link.b_proxy)  # the busy pair still works
        while (await link.b.collect(1))[0].seq != seq:  # skip the earlier probes
            pass
    finally:
        link.a.close()
        link.b.close()
        stale.close()
        await network.close()


def test_network_refuses_a_bad_idle_timeout() -> None:
    with pytest.raises(ConfigurationError, match="idle_timeout_s"):
        Network(idle_timeout_s=0)
