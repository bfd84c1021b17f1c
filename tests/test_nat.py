"""The NAT model (RFC 4787) on its own, and the pieces that give it sockets.

The table tests use a fake clock and a counting port allocator: no sockets, no
event loop, deterministic.  Then the box on real loopback sockets, the STUN
responder, and every refusal of a bad NAT setting.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import TypedDict

import pytest
from aioice import stun

from webrtclab import ConfigurationError, Lab
from webrtclab.netem.nat import (
    ADDRESS_AND_PORT_DEPENDENT,
    ADDRESS_DEPENDENT,
    ENDPOINT_INDEPENDENT,
    NAT_PRESETS,
    NatConfig,
    NatTable,
    nat_config,
)
from webrtclab.netem.natbox import NatBox
from webrtclab.peer import Peer
from webrtclab.stun import StunServer
from webrtclab.tables import NatBindingRow

INSIDE = ("10.0.0.2", 5000)  # the table is pure: any address will do
OTHER_INSIDE = ("10.0.0.3", 5000)
PUBLIC_IP = "127.1.0.9"
X = ("198.51.100.1", 3478)
X_OTHER_PORT = ("198.51.100.1", 4000)
Y = ("203.0.113.7", 3478)

# NatConfig takes the short behaviour names (EIM/ADM/APDM, EIF/ADF/APDF, any case) and
# normalises them in __post_init__; its fields' Literal type lists only the long names, so
# calls with short names carry a type: ignore[arg-type].


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make_table(
    config: NatConfig | str, clock: FakeClock | None = None
) -> tuple[NatTable, FakeClock, list[NatBindingRow], list[int]]:
    clock = clock or FakeClock()
    rows: list[NatBindingRow] = []
    released: list[int] = []
    ports = iter(range(40000, 50000))
    table = NatTable(
        nat_config(config),
        PUBLIC_IP,
        allocate_port=lambda: next(ports),
        release_port=released.append,
        clock=clock,
        name="box",
        on_row=rows.append,
    )
    return table, clock, rows, released


def port_of(table: NatTable, internal: tuple[str, int], remote: tuple[str, int]) -> int:
    outcome = table.outbound(internal, remote)
    assert outcome.mapping is not None
    return outcome.mapping.external[1]


# --- mapping behaviour ------------------------------------------------------------------------


def test_endpoint_independent_mapping_reuses_one_port_for_every_destination() -> None:
    table, _, rows, _ = make_table(NatConfig(mapping=ENDPOINT_INDEPENDENT))
    ports = {port_of(table, INSIDE, r) for r in (X, X_OTHER_PORT, Y)}
    assert len(ports) == 1
    assert [r.event for r in rows] == ["mapping-created"]
    assert rows[0].internal == "10.0.0.2:5000" and rows[0].external.startswith(PUBLIC_IP)


def test_address_dependent_mapping_has_one_port_per_destination_address() -> None:
    table, *_ = make_table(NatConfig(mapping=ADDRESS_DEPENDENT))
    assert port_of(table, INSIDE, X) == port_of(table, INSIDE, X_OTHER_PORT)
    assert port_of(table, INSIDE, X) != port_of(table, INSIDE, Y)
    assert len(table.mappings) == 2


def test_address_and_port_dependent_mapping_has_one_port_per_destination() -> None:
    table, *_ = make_table(NatConfig(mapping=ADDRESS_AND_PORT_DEPENDENT))
    ports = [port_of(table, INSIDE, r) for r in (X, X_OTHER_PORT, Y, X)]
    assert ports[0] == ports[3]
    assert len(set(ports)) == 3


def test_each_internal_endpoint_has_its_own_mapping() -> None:
    table, *_ = make_table("full-cone")
    assert port_of(table, INSIDE, X) != port_of(table, OTHER_INSIDE, X)


# --- filtering behaviour ------------------------------------------------------------------------


def test_endpoint_independent_filtering_lets_anyone_in() -> None:
    table, *_ = make_table(NatConfig(filtering=ENDPOINT_INDEPENDENT))
    port = port_of(table, INSIDE, X)
    assert table.inbound(port, Y).internal == INSIDE
    assert table.inbound(port, X_OTHER_PORT).internal == INSIDE


def test_address_dependent_filtering_needs_an_outbound_packet_to_the_address() -> None:
    table, _, rows, _ = make_table(NatConfig(filtering=ADDRESS_DEPENDENT))
    port = port_of(table, INSIDE, X)
    assert table.inbound(port, X_OTHER_PORT).internal == INSIDE  # same address, any port
    refused = table.inbound(port, Y)
    assert refused.internal is None and refused.dropped == "address-dependent filtering"
    assert rows[-1].event == "filtered" and rows[-1].remote == "203.0.113.7:3478"
    port_of(table, INSIDE, Y)
    assert table.inbound(port, Y).internal == INSIDE


def test_address_and_port_dependent_filtering_needs_the_exact_endpoint() -> None:
    table, *_ = make_table(NatConfig(filtering=ADDRESS_AND_PORT_DEPENDENT))
    port = port_of(table, INSIDE, X)
    assert table.inbound(port, X).internal == INSIDE
    assert table.inbound(port, X_OTHER_PORT).dropped == "address-and-port-dependent filtering"
    assert table.inbound(port, Y).internal is None
    assert table.filtered == 2 and table.mappings[0].filtered == 2


def test_a_port_without_a_mapping_drops_everything() -> None:
    table, _, rows, _ = make_table("full-cone")
    assert table.inbound(40123, X).dropped == "no mapping"
    assert rows[-1].detail == "no mapping" and rows[-1].internal == ""


def test_symmetric_nat_filters_on_the_mapping_a_packet_arrives_at() -> None:
    table, *_ = make_table("symmetric")
    to_x = port_of(table, INSIDE, X)
    to_y = port_of(table, INSIDE, Y)
    assert table.inbound(to_x, X).internal == INSIDE
    assert table.inbound(to_x, Y).internal is None  # Y was sent to, but not through to_x
    assert table.inbound(to_y, Y).internal == INSIDE


# --- lifetime ---------------------------------------------------------------------------------


def test_a_mapping_expires_after_its_lifetime_without_outbound_traffic() -> None:
    table, clock, rows, released = make_table(NatConfig(filtering="eif", lifetime_s=30))  # type: ignore[arg-type]
    port = port_of(table, INSIDE, X)
    clock.t = 30.0
    assert table.inbound(port, X).internal == INSIDE  # exactly the lifetime: alive
    clock.t = 30.5
    refused = table.inbound(port, X)
    assert refused == (None, "expired")
    assert [r.event for r in rows] == ["mapping-created", "mapping-expired", "filtered"]
    assert released == [port] and table.mappings == []
    # The next outbound packet gets a new mapping (a new public port).
    new_port = port_of(table, INSIDE, X)
    assert new_port != port
    assert table.inbound(port, X).dropped == "no mapping"


def test_outbound_traffic_refreshes_a_mapping_and_inbound_does_not() -> None:
    table, clock, *_ = make_table(NatConfig(filtering="eif", lifetime_s=30))  # type: ignore[arg-type]
    port = port_of(table, INSIDE, X)
    for t in (20.0, 40.0, 60.0):
        clock.t = t
        assert table.inbound(port, X).internal == INSIDE
        assert port_of(table, INSIDE, X) == port  # refreshed by this packet
    clock.t = 85.0
    assert table.inbound(port, Y).internal == INSIDE  # inbound at 85 s...
    clock.t = 95.0
    assert table.inbound(port, X).dropped == "expired"  # ...did not refresh it


def test_inbound_refresh_is_an_option() -> None:
    table, clock, *_ = make_table(NatConfig(filtering="eif", lifetime_s=30, inbound_refresh=True))  # type: ignore[arg-type]
    port = port_of(table, INSIDE, X)
    for t in (20.0, 40.0, 60.0):
        clock.t = t
        assert table.inbound(port, X).internal == INSIDE


def test_filtering_permissions_expire_with_the_lifetime_too() -> None:
    table, clock, *_ = make_table(NatConfig(filtering="adf", lifetime_s=30))  # type: ignore[arg-type]
    port = port_of(table, INSIDE, X)
    clock.t = 25.0
    port_of(table, INSIDE, Y)  # keeps the (endpoint-independent) mapping alive
    clock.t = 40.0
    assert table.inbound(port, Y).internal == INSIDE
    assert table.inbound(port, X).dropped == "address-dependent filtering"  # 40 s since X


def test_expire_sweeps_idle_mappings_and_public_address_looks_without_creating() -> None:
    table, clock, _, released = make_table(NatConfig(lifetime_s=10))
    assert table.public_address(INSIDE, X) is None
    port = port_of(table, INSIDE, X)
    assert table.public_address(INSIDE, X) == (PUBLIC_IP, port)
    assert table.public_address(INSIDE, Y) == (PUBLIC_IP, port)  # endpoint-independent
    clock.t = 11.0
    assert table.public_address(INSIDE, X) is None
    assert [m.external[1] for m in table.expire()] == [port]
    assert released == [port]


def test_release_removes_the_mappings_of_a_closed_socket() -> None:
    table, _, rows, released = make_table("symmetric")
    ports = {port_of(table, INSIDE, X), port_of(table, INSIDE, Y)}
    other = port_of(table, OTHER_INSIDE, X)
    assert len(table.release(INSIDE)) == 2
    assert set(released) == ports
    assert [m.external[1] for m in table.mappings] == [other]
    assert rows[-1].event == "mapping-released"


# --- hairpinning ------------------------------------------------------------------------------


def test_hairpinning_translates_a_packet_to_the_nats_own_address() -> None:
    table, *_ = make_table(NatConfig(filtering="eif", hairpinning=True))  # type: ignore[arg-type]
    target = port_of(table, OTHER_INSIDE, X)
    outcome = table.outbound(INSIDE, (PUBLIC_IP, target))
    assert outcome.hairpin and outcome.mapping is not None
    # The box sends it from the sender's mapping; it arrives at the target's.
    assert table.inbound(target, outcome.mapping.external).internal == OTHER_INSIDE


def test_hairpinned_packets_meet_the_targets_filtering() -> None:
    table, *_ = make_table(NatConfig(filtering="apdf", hairpinning=True))  # type: ignore[arg-type]
    target = port_of(table, OTHER_INSIDE, X)
    outcome = table.outbound(INSIDE, (PUBLIC_IP, target))
    assert outcome.mapping is not None
    assert table.inbound(target, outcome.mapping.external).internal is None


def test_without_hairpinning_a_packet_to_the_nats_own_address_is_dropped() -> None:
    table, _, rows, _ = make_table(NatConfig(filtering="eif", hairpinning=False))  # type: ignore[arg-type]
    target = port_of(table, OTHER_INSIDE, X)
    outcome = table.outbound(INSIDE, (PUBLIC_IP, target))
    assert outcome.mapping is None and outcome.dropped == "hairpinning off"
    assert rows[-1].event == "filtered" and rows[-1].detail == "hairpinning off"
    assert len(table.mappings) == 1  # no mapping was created for it


# --- presets and configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "mapping", "filtering"),
    [
        ("full-cone", ENDPOINT_INDEPENDENT, ENDPOINT_INDEPENDENT),
        ("restricted-cone", ENDPOINT_INDEPENDENT, ADDRESS_DEPENDENT),
        ("port-restricted-cone", ENDPOINT_INDEPENDENT, ADDRESS_AND_PORT_DEPENDENT),
        ("symmetric", ADDRESS_AND_PORT_DEPENDENT, ADDRESS_AND_PORT_DEPENDENT),
    ],
)
def test_presets_are_the_classic_types(name: str, mapping: str, filtering: str) -> None:
    config = nat_config(name)
    assert (config.mapping, config.filtering) == (mapping, filtering)
    assert config.name == name and config is NAT_PRESETS[name]
    assert nat_config(name.upper().replace("-", "_")) == config


def test_a_config_takes_short_names_and_a_mapping_overrides_a_preset() -> None:
    assert NatConfig(mapping="APDM", filtering="adf").mapping == ADDRESS_AND_PORT_DEPENDENT  # type: ignore[arg-type]
    config = nat_config({"preset": "symmetric", "lifetime_s": 30, "hairpinning": False})
    assert config.mapping == ADDRESS_AND_PORT_DEPENDENT and config.lifetime_s == 30.0
    assert not config.hairpinning
    assert NatConfig(mapping="adm", filtering="eif").name == (  # type: ignore[arg-type]
        "address-dependent mapping, endpoint-independent filtering"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("cone", "unknown NAT preset 'cone'"),
        (42, "a NAT must be a preset name"),
        ({"preset": "symmetric", "lifetime": 3}, "unknown NAT setting(s) lifetime"),
        ({"mapping": "sideways"}, "NAT mapping must be one of"),
        ({"filtering": 3}, "NAT filtering must be one of"),
        ({"lifetime_s": 0}, "lifetime_s must be a positive number"),
        ({"lifetime_s": float("inf")}, "lifetime_s must be a positive number"),
        ({"lifetime_s": "30"}, "lifetime_s must be a positive number"),
        ({"hairpinning": "yes"}, "hairpinning must be true or false"),
    ],
)
def test_bad_nat_settings_are_refused_clearly(value: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        nat_config(value)


class _BoxAddresses(TypedDict, total=False):
    public_ip: str
    private_network: str


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"public_ip": "192.0.2.1"}, "inside 127.0.0.0/8"),
        ({"public_ip": "::1"}, "must be an IPv4 address"),
        ({"private_network": "10.0.0.0/24"}, "private_network must be inside 127.0.0.0/8"),
        ({"private_network": "127.2.1.1/31"}, "with room for hosts"),
        ({"private_network": "nonsense"}, "must be an IPv4 network"),
    ],
)
def test_a_box_refuses_addresses_outside_loopback(kwargs: _BoxAddresses, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        NatBox("symmetric", **kwargs)


def test_a_box_refuses_a_public_address_inside_its_private_network() -> None:
    box = NatBox("full-cone", public_ip="127.2.1.1")
    with pytest.raises(ConfigurationError, match="inside the private network"):
        box.adopt(public_ip="127.1.0.1", private_network="127.2.1.0/24", clock=FakeClock())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nat": "weird"}, "unknown NAT preset 'weird'"),
        ({"nat": "symmetric", "link": object()}, "network emulator"),
    ],
)
def test_the_lab_refuses_bad_nat_options(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Lab(**kwargs)  # type: ignore[arg-type]


async def test_add_peer_refuses_bad_nat_options() -> None:
    async with Lab() as lab:
        with pytest.raises(ConfigurationError, match="unknown NAT preset 'nope'"):
            await lab.add_peer("alice", nat="nope")
        with pytest.raises(ConfigurationError, match="give nat= or host_addresses=, not both"):
            await lab.add_peer("alice", nat="symmetric", host_addresses=("127.0.0.1",))
        with pytest.raises(ConfigurationError, match="unknown NAT preset 'nope'"):
            await lab.add_browser_peer("carol", nat="nope")
        assert lab.members == {}


def test_a_peer_behind_a_box_must_gather_on_its_private_network() -> None:
    box = NatBox("symmetric", public_ip="127.1.0.9", private_network="127.2.9.0/24")
    with pytest.raises(ConfigurationError, match="must gather on private addresses"):
        Peer("alice", nat=box, host_addresses=("127.0.0.1",))
    with pytest.raises(ConfigurationError, match="nat must be a NatBox"):
        Peer("alice", nat="symmetric", host_addresses=("127.0.0.1",))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="ice_check_retransmissions must be"):
        Peer("alice", ice_check_retransmissions=-1)


# --- the box on real loopback sockets ---------------------------------------------------------


async def recv(sock: socket.socket, timeout: float = 2.0) -> tuple[bytes, tuple[str, int]]:
    async with asyncio.timeout(timeout):
        while True:
            try:
                data, source = sock.recvfrom(2048)
                return data, (source[0], source[1])
            except BlockingIOError:
                await asyncio.sleep(0.005)


async def test_a_box_sends_from_its_public_address_and_filters_what_comes_back(
    outside: socket.socket,
) -> None:
    box = NatBox("port-restricted-cone", public_ip="127.1.0.200", private_network="127.2.200.0/24")
    inside = (box.new_host(), 5000)
    assert inside[0] == "127.2.200.1"
    received: list[tuple[bytes, tuple[str, int]]] = []
    box.attach(inside, lambda data, source: received.append((data, source)))
    try:
        target = outside.getsockname()
        box.send(inside, b"hello", target)
        data, public = await recv(outside)
        assert data == b"hello" and public[0] == "127.1.0.200"
        assert box.public_address(inside, target) == public
        outside.sendto(b"reply", public)  # from the endpoint it sent to: let in
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        other.bind(("127.0.0.1", 0))
        other.sendto(b"intruder", public)  # another port: filtered
        other.close()
        for _ in range(100):
            if received and len(box.rows.rows) >= 2:
                break
            await asyncio.sleep(0.01)
        assert received == [(b"reply", target)]
        events = [(r.event, r.detail) for r in box.rows.rows]
        assert events[0] == ("mapping-created", "")
        assert ("filtered", "address-and-port-dependent filtering") in events
        # Same private network: sent directly, not translated.
        assert box.reaches_directly(("127.2.200.7", 1)) and not box.reaches_directly(target)
        box.detach(inside)
        assert box.table.mappings == [] and box.bindings()["event"].iloc[-1] == "mapping-released"
    finally:
        box.close()


async def test_a_box_never_sends_outside_loopback() -> None:
    box = NatBox("full-cone", public_ip="127.1.0.201", private_network="127.2.201.0/24")
    inside = (box.new_host(), 5000)
    box.attach(inside, lambda data, source: None)
    try:
        box.send(inside, b"x", ("192.0.2.1", 9))
        assert box.sent == 0 and box.table.mappings == []
        assert box.rows.rows[-1].detail == "not loopback"
    finally:
        box.close()


async def test_the_stun_responder_answers_with_the_source_address(outside: socket.socket) -> None:
    async with StunServer() as server:
        assert server.uri == f"stun:127.0.0.1:{server.port}"
        request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        outside.sendto(bytes(request), server.address)
        data, _ = await recv(outside)
        response = stun.parse_message(data)
        assert response.transaction_id == request.transaction_id
        assert response.message_class == stun.Class.RESPONSE
        assert response.attributes["XOR-MAPPED-ADDRESS"] == outside.getsockname()
        outside.sendto(b"not stun", server.address)
        assert server.answered == 1
    assert not server.running


def test_the_stun_responder_binds_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback only"):
        StunServer(host="0.0.0.0")


@pytest.mark.parametrize("hairpinning", [True, False])
async def test_a_box_hairpins_a_packet_to_its_own_public_address(
    outside: socket.socket, hairpinning: bool
) -> None:
    config = NatConfig(mapping="eim", filtering="eif", hairpinning=hairpinning)  # type: ignore[arg-type]
    box = NatBox(config, public_ip="127.1.0.202", private_network="127.2.202.0/24")
    first, second = (box.new_host(), 5000), (box.new_host(), 5000)
    heard: list[tuple[bytes, tuple[str, int]]] = []
    box.attach(first, lambda data, source: None)
    box.attach(second, lambda data, source: heard.append((data, source)))
    try:
        box.send(second, b"open", outside.getsockname())  # gives second a public port
        _, second_public = await recv(outside)
        box.send(first, b"hairpin", second_public)
        if hairpinning:
            await wait_for(lambda: heard)
            first_public = box.public_address(first, second_public)
            assert heard == [(b"hairpin", first_public)]  # the sender's mapped address
            assert first_public is not None and first_public[0] == "127.1.0.202"
        else:
            # The box decides at once; its row says so.
            await wait_for(lambda: box.rows.rows and box.rows.rows[-1].detail == "hairpinning off")
            assert heard == []
    finally:
        box.close()


async def wait_for(predicate: Callable[[], object], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


# --- the aioice hook on bare connections -------------------------------------------------------


async def test_ice_sockets_puts_a_bare_aioice_connection_behind_a_box() -> None:
    """No aiortc, no lab: srflx from the box's mapping, checks through it, and the
    private host candidate unreachable from outside."""
    import aioice

    from webrtclab.compat.aioice import check_list, gather_on, ice_sockets

    box = NatBox("full-cone", public_ip="127.1.0.203", private_network="127.2.203.0/24")
    private = box.new_host()
    async with StunServer() as stun_server:
        inside = aioice.Connection(
            ice_controlling=True, use_ipv6=False, stun_server=stun_server.address
        )
        outside = aioice.Connection(ice_controlling=False, use_ipv6=False)
        try:
            with gather_on((private,)), ice_sockets(box, check_retransmissions=1):
                await inside.gather_candidates()
            with gather_on(("127.0.0.1",)):
                await outside.gather_candidates()
            types = {c.type: c for c in inside.local_candidates}
            assert types["host"].host == private
            assert types["srflx"].host == "127.1.0.203"
            assert (types["srflx"].related_address, types["srflx"].related_port) == (
                private,
                types["host"].port,
            )
            for a, b in ((inside, outside), (outside, inside)):
                for candidate in b.local_candidates:
                    await a.add_remote_candidate(candidate)
                await a.add_remote_candidate(None)
                a.remote_username, a.remote_password = b.local_username, b.local_password
            async with asyncio.timeout(10):
                await asyncio.gather(inside.connect(), outside.connect())
            # The outside side reached the inside one only through its NAT mapping.
            outcomes = {(c[2], c[3]): c[4] for c in check_list(outside)}
            host = f"{private}:{types['host'].port}"
            srflx = f"127.1.0.203:{types['srflx'].port}"
            assert outcomes[("srflx", srflx)] == "succeeded"
            assert outcomes[("host", host)] in ("failed", "in_progress", "waiting", "frozen")
            assert box.received > 0 and box.sent > 0
        finally:
            await inside.close()
            await outside.close()
            box.close()
    assert box.table.mappings == []
