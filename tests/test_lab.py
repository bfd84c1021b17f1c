"""The Lab: lifecycle, peer management, and stats/events of a real loopback call."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from helpers import wait_until

from webrtclab import (
    STATS_COLUMNS,
    ConfigurationError,
    InvalidStateError,
    Lab,
    MediaSpec,
    Member,
    SignalingError,
    SignalingServer,
)
from webrtclab.events import EVENT_COLUMNS
from webrtclab.netem import LinkConditions
from webrtclab.sdp import sdp_candidates

SMALL = MediaSpec(width=160, height=120, fps=15)
NO_MEDIA = MediaSpec(video="none", audio="none")


# --- lifecycle -------------------------------------------------------------------------------


async def test_start_and_close_are_idempotent() -> None:
    lab = Lab()
    assert not lab.server.started
    await lab.start()
    await lab.start()
    assert lab.server.started
    assert lab.server.port > 0
    assert lab.url == f"ws://127.0.0.1:{lab.server.port}/signal"
    await lab.close()
    await lab.close()
    assert not lab.server.started


async def test_lab_cannot_start_after_close() -> None:
    lab = Lab()
    await lab.start()
    await lab.close()
    with pytest.raises(InvalidStateError, match="closed"):
        await lab.start()
    with pytest.raises(InvalidStateError):
        await lab.add_peer("late", media=NO_MEDIA)
    assert lab.peers == {}


async def test_never_started_lab_closes() -> None:
    lab = Lab()
    await lab.close()
    with pytest.raises(InvalidStateError):
        await lab.start()


async def test_context_manager_starts_and_closes() -> None:
    async with Lab() as lab:
        assert lab.server.started
        peer = await lab.add_peer("solo", media=NO_MEDIA)
        assert lab.server.dispatcher.rooms() == {"lab": ["solo"]}
    assert not lab.server.started
    assert ("solo", "", "closed") in {(p, r, e) for _, p, r, e, _ in lab.event_log.rows}, (
        "peers are closed with the lab"
    )
    assert peer.sessions == {}


async def test_lab_leaves_a_borrowed_server_running() -> None:
    async with SignalingServer() as server:
        async with Lab(server=server, room="borrowed") as lab:
            assert lab.url == server.url
            await lab.add_peer("a", media=NO_MEDIA)
            assert server.dispatcher.rooms() == {"borrowed": ["a"]}
        assert server.started
        await wait_until(lambda: server.dispatcher.rooms() == {})


async def test_a_borrowed_server_rewrites_for_the_labs_emulator_until_the_lab_closes() -> None:
    async with SignalingServer() as server:
        async with Lab(server=server, link=LinkConditions(delay_ms=5)) as lab:
            assert lab.network is not None  # a link was given: the lab emulates one
            assert lab.clock is lab.network.clock  # one time base, given at construction
            await lab.add_peer("a", media=NO_MEDIA)
            await lab.add_peer("b", media=NO_MEDIA)
            await lab.wait_connected()
            # Candidates were rewritten to relay ports: ICE checks crossed the emulator.
            await wait_until(lambda: lab.links()["packets_in"].sum() > 0)
            assert lab.server.dispatcher.rewrites == (lab.network.rewrite,)
        assert server.dispatcher.rewrites == ()  # the lab's hook left with it


# --- peers -----------------------------------------------------------------------------------


async def test_add_peer_with_a_duplicate_user_id() -> None:
    async with Lab() as lab:
        first = await lab.add_peer("a", media=NO_MEDIA)
        with pytest.raises(ConfigurationError, match='already has a peer "a"'):
            await lab.add_peer("a", media=NO_MEDIA)
        assert lab.peers == {"a": first}
        assert lab.server.dispatcher.rooms() == {"lab": ["a"]}


async def test_add_peer_with_a_bad_user_id() -> None:
    async with Lab() as lab:
        with pytest.raises(ConfigurationError, match="user id"):
            await lab.add_peer("", media=NO_MEDIA)
        assert lab.peers == {}


async def test_add_peer_refused_by_the_server_is_rolled_back() -> None:
    async with Lab(server_options={"max_room_size": 1}) as lab:
        first = await lab.add_peer("a", media=NO_MEDIA)
        with pytest.raises(SignalingError) as info:
            await lab.add_peer("b", media=NO_MEDIA)
        assert info.value.code == "room-full"
        assert lab.peers == {"a": first}
        assert lab.server.dispatcher.rooms() == {"lab": ["a"]}


async def test_one_collection_of_members_behind_one_interface() -> None:
    async with Lab() as lab:
        a = await lab.add_peer("a", media=NO_MEDIA)
        b = await lab.add_peer("b", media=NO_MEDIA)
        assert list(lab.members) == ["a", "b"] and isinstance(a, Member)
        with pytest.raises(TypeError):
            lab.members["c"] = a  # type: ignore[index]  # read-only: add_peer adds
        await lab.wait_connected()
        assert lab.peers == {"a": a, "b": b} and lab.browsers == {}
        raw = await a.collect_stats()
        rows = a.stats_rows(raw, 1.0)
        assert {(r[1], r[2]) for r in rows} <= {("a", "b")}
        await lab.remove_peer("b")
        assert list(lab.members) == ["a"]


async def test_member_added_callbacks_see_each_member_before_it_joins() -> None:
    async with Lab() as lab:
        seen: list[tuple[str, str | None]] = []
        unsubscribe = lab.on_member_added(
            lambda m: seen.append((m.user_id, getattr(m, "room_id", "?")))
        )
        await lab.add_peer("a", media=NO_MEDIA)
        unsubscribe()
        unsubscribe()  # idempotent
        await lab.add_peer("b", media=NO_MEDIA)
        assert seen == [("a", None)]  # not in the room yet


async def test_remove_unknown_peer() -> None:
    async with Lab() as lab:
        await lab.add_peer("a", media=NO_MEDIA)
        with pytest.raises(ConfigurationError, match='no peer "ghost"'):
            await lab.remove_peer("ghost")
        assert list(lab.peers) == ["a"]


async def test_remove_peer_tells_the_others() -> None:
    async with Lab() as lab:
        alice = await lab.add_peer("alice", media=NO_MEDIA)
        await lab.add_peer("bob", media=NO_MEDIA)
        await lab.wait_connected()
        await lab.remove_peer("bob")
        assert list(lab.peers) == ["alice"]
        await wait_until(lambda: "bob" not in alice.sessions)
        events = lab.events()
        assert ((events["peer"] == "alice") & (events["event"] == "peer-left")).any()
        assert ((events["peer"] == "bob") & (events["event"] == "closed")).any()
        # The user id is free again.
        await lab.add_peer("bob", media=NO_MEDIA)
        await lab.wait_connected()


# --- a real call ----------------------------------------------------------------------------


def _call_ready(lab: Lab) -> bool:
    stats = lab.stats()
    if stats.empty:
        return False
    recv_video = stats[(stats["direction"] == "recv") & (stats["kind"] == "video")]
    send = stats[stats["direction"] == "send"]
    return all(
        (recv_video[recv_video["peer"] == peer]["frames_per_s"] > 0).any()
        and all(
            send[(send["peer"] == peer) & (send["kind"] == kind)]["rtt_ms"].notna().any()
            for kind in ("audio", "video")
        )
        for peer in ("alice", "bob")
    )


async def test_two_peer_call_stats_events_and_loopback_candidates() -> None:
    async with Lab(stats_interval=0.2) as lab:
        alice = await lab.add_peer("alice", media=SMALL)
        bob = await lab.add_peer("bob", media=SMALL)
        await lab.wait_connected(timeout=10)

        # Loopback by default: every candidate either side offers is 127.0.0.1.
        for peer, remote in ((alice, "bob"), (bob, "alice")):
            session = peer.sessions[remote]
            for description in (session.pc.localDescription, session.pc.remoteDescription):
                candidates = sdp_candidates(description.sdp)
                assert candidates, "aiortc puts its candidates in the SDP"
                assert {c.ip for c in candidates} == {"127.0.0.1"}
                assert {c.type for c in candidates} == {"host"}
            path = session.selected_path()
            assert path is not None and path[0] == path[2] == "host"
            assert path[1].startswith("127.0.0.1:") and path[3].startswith("127.0.0.1:")

        await wait_until(lambda: _call_ready(lab), timeout=10)
        stats = lab.stats()

        assert list(stats.columns) == STATS_COLUMNS
        assert str(stats["peer"].dtype) == "string"
        assert str(stats["packets"].dtype) == "int64"
        keys = set(stats[["peer", "remote", "direction", "kind"]].itertuples(index=False))
        assert keys == {
            (peer, remote, direction, kind)
            for peer, remote in (("alice", "bob"), ("bob", "alice"))
            for direction in ("send", "recv")
            for kind in ("audio", "video")
        }
        assert set(stats["candidate_type"].dropna()) == {"host"}
        assert (stats.groupby("peer")["candidate_type"].last() == "host").all()
        assert stats["time_s"].is_monotonic_increasing

        send = stats[stats["direction"] == "send"]
        rtt = send["rtt_ms"].dropna()
        assert len(rtt) > 0
        assert ((rtt >= 0) & (rtt < 50)).all(), rtt.tolist()
        recv = stats[stats["direction"] == "recv"]
        assert recv["rtt_ms"].isna().all()
        recv_video = recv[recv["kind"] == "video"]
        assert (recv_video["frames_per_s"] > 0).any()
        assert (recv_video["bitrate_kbps"] > 0).any()
        assert recv["frames"].max() > 0 and recv["bytes"].max() > 0
        # No loss on loopback, and the fractions stay in range.
        loss = stats["loss_fraction"].dropna()
        assert ((loss >= 0) & (loss <= 1)).all()
        for column in ("bitrate_kbps", "frames_per_s", "jitter_ms"):
            values = stats[column].dropna()
            assert (values >= 0).all() and values.map(math.isfinite).all(), column
        # Cumulative counters never go down.
        for _, rows in stats.groupby(["peer", "direction", "kind"]):
            for column in ("packets", "bytes", "frames"):
                assert rows[column].is_monotonic_increasing, column

        events = lab.events()
        assert list(events.columns) == EVENT_COLUMNS
        connected = events[
            (events["event"] == "connection-state") & (events["detail"] == "connected")
        ]
        assert set(zip(connected["peer"], connected["remote"], strict=True)) == {
            ("alice", "bob"),
            ("bob", "alice"),
        }
        paths = events[events["event"] == "selected-path"]
        assert set(paths["peer"]) == {"alice", "bob"}
        assert paths["detail"].str.match(r"^host 127\.0\.0\.1:\d+ -> host 127\.0\.0\.1:\d+$").all()
        joined = events[events["event"] == "joined"]
        assert joined["peer"].tolist() == ["alice", "bob"]
        assert (joined["detail"] == "lab").all()
        assert pd.api.types.is_float_dtype(events["time_s"])
        assert events["time_s"].is_monotonic_increasing
