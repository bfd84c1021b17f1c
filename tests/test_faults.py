"""Faults a lab call survives: signaling restarts, link outages short and long, killed peers.

Real components on 127.0.0.1 only: the lab's SignalingServer, aiortc peers, the UDP relay of
the network emulator and ``webrtclab peer`` subprocesses.  Protocol timers are shortened
(reconnect backoff, heartbeats, aioice's consent freshness and check retransmissions) so
that each fault plays out in seconds; waits are on events and counters.

An experiment killed with SIGKILL is covered in ``test_experiment.py``
(``test_sigkill_mid_run_leaves_every_sample_readable``): its folder loads with every
sample journaled up to the kill.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import aioice.ice
import aioice.stun
import pandas as pd
import pytest
from conftest import ClientFactory
from helpers import wait_until
from test_cli import read_line, spawn

from webrtclab import Backoff, ConfigurationError, InvalidStateError, Lab, MediaSpec, PeerSession
from webrtclab.netem import LinkConditions
from webrtclab.quality import QualityMonitor

SMALL = MediaSpec(width=96, height=64, fps=15, seed=3)
# Reconnect quickly in tests: 50 ms, doubling up to 400 ms, minus up to half as jitter.
FAST = Backoff(initial_s=0.05, max_s=0.4, factor=2.0, jitter=0.5)
DOWN = LinkConditions(loss=1.0)


def frames(session: PeerSession) -> int:
    return session.counters[("recv", "video")].frames


def events_of(lab: Lab, event: str, peer: str | None = None) -> pd.DataFrame:
    frame = lab.events()
    rows = frame[frame["event"] == event]
    return rows if peer is None else rows[rows["peer"] == peer]


def other_tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


async def assert_no_task_left(baseline: set[asyncio.Task[object]]) -> None:
    """Every task the lab started has ended (aiortc's own finish a moment after close)."""
    try:
        await wait_until(lambda: not (other_tasks() - baseline), timeout=5)
    except TimeoutError:
        pytest.fail(f"tasks left behind: {other_tasks() - baseline}")


# --- the backoff policy -----------------------------------------------------------------


def test_backoff_grows_caps_and_jitters() -> None:
    backoff = Backoff(initial_s=0.1, max_s=1.0, factor=2.0, jitter=0.5)

    class Fixed:
        def __init__(self, value: float) -> None:
            self.value = value

        def random(self) -> float:
            return self.value

    top = [backoff.delay(n, Fixed(0.0)) for n in range(8)]  # type: ignore[arg-type]
    assert top == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0])
    bottom = [backoff.delay(n, Fixed(1.0)) for n in range(8)]  # type: ignore[arg-type]
    assert bottom == pytest.approx([t / 2 for t in top])
    assert Backoff(jitter=0).delay(10_000) == Backoff().max_s  # no overflow
    assert all(0.05 <= backoff.delay(3) <= 0.8 for _ in range(100))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_s": -1},
        {"initial_s": float("nan")},
        {"initial_s": 2.0, "max_s": 1.0},
        {"max_s": float("inf")},
        {"factor": 0.5},
        {"jitter": 1.5},
        {"jitter": -0.1},
    ],
)
def test_backoff_refuses_bad_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        Backoff(**kwargs)


def test_backoff_refuses_a_negative_attempt() -> None:
    with pytest.raises(ConfigurationError, match="attempt"):
        Backoff().delay(-1)


async def test_restart_server_needs_the_labs_own_started_server() -> None:
    lab = Lab()
    with pytest.raises(InvalidStateError, match="started"):
        await lab.restart_server()
    await lab.close()


# --- (a) the signaling server restarts mid-call ------------------------------------------


async def test_signaling_restart_keeps_the_call_and_peers_rejoin() -> None:
    baseline = other_tasks()
    async with Lab(reconnect=FAST) as lab:
        alice = await lab.add_peer("alice", media=SMALL)
        bob = await lab.add_peer("bob", media=SMALL)
        await lab.wait_connected()
        a_session, b_session = alice.sessions["bob"], bob.sessions["alice"]
        await wait_until(lambda: frames(a_session) > 3 and frames(b_session) > 3, 10)

        await lab.server.close()
        # Both notice the closed socket and keep retrying (the port refuses meanwhile).
        await wait_until(lambda: len(events_of(lab, "signaling-closed")) == 2, 5)
        await wait_until(
            lambda: {"alice", "bob"} <= set(events_of(lab, "signaling-reconnect-failed").peer), 5
        )
        # Media does not go through signaling: frames keep coming while it is down.
        before = frames(a_session), frames(b_session)
        await wait_until(
            lambda: frames(a_session) > before[0] + 5 and frames(b_session) > before[1] + 5, 10
        )

        server = await lab.restart_server()
        await wait_until(lambda: sorted(server.dispatcher.roster("lab")) == ["alice", "bob"], 5)
        await wait_until(lambda: alice.roster == {"bob"} and bob.roster == {"alice"}, 5)
        assert alice.reconnects == bob.reconnects == 1
        # The same sessions, still connected, still carrying media: none was re-offered.
        assert alice.sessions == {"bob": a_session} and bob.sessions == {"alice": b_session}
        assert a_session.state == b_session.state == "connected"
        before = frames(a_session), frames(b_session)
        await wait_until(
            lambda: frames(a_session) > before[0] + 5 and frames(b_session) > before[1] + 5, 10
        )
        assert events_of(lab, "peer-left").empty
        assert events_of(lab, "reestablish").empty
        # Whoever came back second found the other in the room and kept its session;
        # the first heard peer-joined and kept its own.
        kept = events_of(lab, "session-kept")
        assert sorted(zip(kept.peer, kept.remote)) == [("alice", "bob"), ("bob", "alice")]
        reconnected = events_of(lab, "signaling-reconnected")
        assert sorted(reconnected.peer) == ["alice", "bob"]

        # Signaling works again: a newcomer offers to both and connects.
        carol = await lab.add_peer("carol", media=SMALL)
        await lab.wait_connected()
        assert set(carol.sessions) == {"alice", "bob"}
        assert alice.sessions["bob"] is a_session
    await assert_no_task_left(baseline)


async def test_a_five_second_signaling_drop_never_stops_the_video() -> None:
    """The server stays up but drops alice's socket, and she comes back 5 s later (her
    backoff): within the server's 10 s grace period nobody hears peer-left, so the
    media sessions are never touched and frames keep arriving both ways."""
    late = Backoff(initial_s=5.0, max_s=5.0, factor=1.0, jitter=0.0)
    async with Lab(reconnect=late) as lab:
        monitor = QualityMonitor(lab, psnr_every=0)
        alice = await lab.add_peer("alice", media=SMALL)
        bob = await lab.add_peer("bob", media=SMALL)
        await lab.wait_connected()
        sessions = alice.sessions["bob"], bob.sessions["alice"]
        await wait_until(lambda: min(frames(s) for s in sessions) > 5, 10)
        dropped_at = lab.clock.now()
        [held] = [c for c in lab.server._clients if c.user_id == "alice"]
        await held.ws.close()  # the server's side of alice's socket is gone
        await wait_until(lambda: alice.reconnects == 1, 10)  # 5 s later
        assert lab.clock.now() - dropped_at >= 4.5
        await asyncio.sleep(1.0)
        monitor.close()
        assert (alice.sessions["bob"], bob.sessions["alice"]) == sessions
        assert all(s.state == "connected" for s in sessions)
        assert events_of(lab, "peer-left").empty and lab.server.dispatcher.away() == []
        shown = monitor.frames.dataframe()
        shown = shown[shown["time_s"] >= dropped_at]
        for receiver in ("alice", "bob"):
            gaps = shown[shown["peer"] == receiver]["interval_ms"]
            assert len(gaps) > 5 * 15 * 0.8 and gaps.max() < 500, gaps.describe()


@pytest.mark.parametrize("dropped", ["alice", "bob"])
async def test_rejoin_refused_while_the_user_id_is_held_is_retried(
    connect: ClientFactory, dropped: str
) -> None:
    """The server dropped one peer's socket (the other heard peer-left and closed its
    session, which closes the dropped one's too), and its user id is taken when it
    comes back: it keeps trying until the id is free.  Then alice, the lower id, offers,
    whether she is the one who re-joined or the one who stayed."""
    steady = Backoff(initial_s=0.2, max_s=0.2, factor=1.0, jitter=0.0)
    # No grace period: the server forgets the dropped peer at once (peer-left).
    async with Lab(reconnect=steady, server_options={"disconnect_grace_s": 0}) as lab:
        alice = await lab.add_peer("alice", media=SMALL)
        bob = await lab.add_peer("bob", media=SMALL)
        await lab.wait_connected()
        old = alice.sessions["bob"]
        stayed = "bob" if dropped == "alice" else "alice"
        squatter = await connect(lab.server)
        [held] = [c for c in lab.server._clients if c.user_id == dropped]
        await held.ws.close()  # the server's side: the socket is gone for it
        await wait_until(lambda: lab.server.dispatcher.roster("lab") == [stayed], 5)
        await squatter.join("lab", dropped)  # well before the first attempt (0.2 s)
        await wait_until(lambda: not events_of(lab, "signaling-reconnect-failed").empty, 5)
        refused = events_of(lab, "signaling-reconnect-failed", dropped)
        assert all("that user id is connected" in d for d in refused.detail)
        await squatter.close()
        await wait_until(lambda: lab.peers[dropped].reconnects == 1, 5)
        await lab.wait_connected()
        new = alice.sessions["bob"]
        assert new is not old and new.initiator and not bob.sessions["alice"].initiator
        assert old.state == "closed"
        assert lab.peers[stayed].reconnects == 0
        assert events_of(lab, "offer-collision").empty


# --- (b) a 5 s link outage -----------------------------------------------------------------


async def test_five_second_outage_is_survived_by_the_same_session() -> None:
    async with Lab(link=LinkConditions(), reconnect=FAST, seed=1) as lab:
        alice = await lab.add_peer("alice", media=SMALL)
        bob = await lab.add_peer("bob", media=SMALL)
        await lab.wait_connected()
        session, other = alice.sessions["bob"], bob.sessions["alice"]
        await wait_until(lambda: frames(session) > 5, 10)

        lab.set_link("alice", "bob", DOWN, both=True)
        await asyncio.sleep(0.5)  # what was in flight arrives
        frozen = frames(session)
        await asyncio.sleep(4.5)  # the outage itself: 5 s in all
        assert frames(session) <= frozen + 1  # nothing crossed the link meanwhile
        lab.set_link("alice", "bob", LinkConditions(), both=True)

        # Consent freshness needs ~30 s of silence: the session never failed.
        await wait_until(lambda: frames(session) > frozen + 15 and frames(other) > 15, 15)
        assert alice.sessions["bob"] is session and bob.sessions["alice"] is other
        assert session.state == other.state == "connected"
        assert events_of(lab, "reestablish").empty
        states = events_of(lab, "connection-state")
        assert "failed" not in set(states.detail)
        links = lab.network.link_rows() if lab.network is not None else []
        assert sum(row[4] for row in links) > 0  # the relay carried it (delivered)


# --- (c) a long outage: failed, then a new RTCPeerConnection and a new offer ---------------


@pytest.fixture
def short_ice_timers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Consent lost after ~2 s instead of ~30 s; a check list fails after ~3.5 s."""
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.2)
    monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", 3)
    monkeypatch.setattr(aioice.stun, "RETRY_MAX", 2)


@pytest.mark.usefixtures("short_ice_timers")
async def test_long_outage_fails_and_the_lower_user_id_reestablishes() -> None:
    baseline = other_tasks()
    async with Lab(link=LinkConditions(), reconnect=FAST, seed=2) as lab:
        alice = await lab.add_peer("alice", media=SMALL)
        bob = await lab.add_peer("bob", media=SMALL)  # the newcomer: bob offered
        await lab.wait_connected()
        old_a, old_b = alice.sessions["bob"], bob.sessions["alice"]
        assert old_b.initiator and not old_a.initiator
        await wait_until(lambda: frames(old_a) > 5, 10)

        # The outage outlasts consent freshness and a first re-establishment attempt.
        lab.set_link("alice", "bob", DOWN, both=True)
        # Consent expires: reported as lost (and as the state aiortc gives it).
        await wait_until(lambda: len(events_of(lab, "connection-lost")) == 2, 10)
        lost = events_of(lab, "connection-lost")
        assert sorted(zip(lost.peer, lost.remote)) == [("alice", "bob"), ("bob", "alice")]
        assert set(lost.detail) <= {"failed", "closed"}
        # alice offers again (the lower user id), though bob made the first offer;
        # bob waits.  Her first new session fails too, inside the outage.
        await wait_until(lambda: len(events_of(lab, "reestablish", "alice")) >= 3, 15)
        lab.set_link("alice", "bob", LinkConditions(), both=True)

        await lab.wait_connected(timeout=20)
        new_a, new_b = alice.sessions["bob"], bob.sessions["alice"]
        assert new_a is not old_a and new_b is not old_b
        assert new_a.initiator and not new_b.initiator
        assert old_a.state == old_b.state == "closed"  # the failed ones were closed
        await wait_until(lambda: frames(new_a) > 5 and frames(new_b) > 5, 10)
        plans = events_of(lab, "reestablish")
        assert "will offer" in set(plans[plans.peer == "alice"].detail)
        assert set(plans[plans.peer == "bob"].detail) == {"waiting for an offer"}
        # Only alice offered again, with backoff between attempts; nobody collided.
        offers = plans[plans.detail.str.startswith("offer")]
        assert set(offers.peer) == {"alice"}
        assert list(offers.detail[:2]) == ["offer (attempt 1)", "offer (attempt 2)"]
        assert events_of(lab, "offer-collision").empty
        assert not alice._offer_timers and not bob._offer_timers
    await assert_no_task_left(baseline)


# --- (d) a peer process killed or frozen -------------------------------------------------


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
async def test_killed_or_frozen_peer_process_leaves_the_room(how: str) -> None:
    """SIGKILL: the kernel closes the socket, peer-left comes when the grace period for
    a reconnect ends (well within one heartbeat after it).  SIGSTOP: the socket stays
    open but nothing answers pings, so the heartbeat drops it: peer-left within two
    intervals after the grace period."""
    heartbeat, grace = 1.0, 0.5
    options = {"heartbeat_s": heartbeat, "disconnect_grace_s": grace}
    async with Lab(server_options=options, reconnect=FAST) as lab:
        async with spawn(
            "peer",
            "--signal",
            lab.url,
            "--room",
            lab.room,
            "--user",
            "bot",
            "--loopback-only",
            "--size",
            "96x64",
            "--duration",
            "60",
        ) as bot:
            assert (await read_line(bot, timeout=60)).startswith("bot joined room")
            me = await lab.add_peer("me", media=SMALL)
            await me.wait_connected(1, timeout=20)
            session = me.sessions["bot"]
            await wait_until(lambda: frames(session) > 3, 10)

            left: asyncio.Future[float] = asyncio.get_running_loop().create_future()

            def on_left(remote: str) -> None:
                if not left.done():
                    left.set_result(time.monotonic())

            me.on("peer-left", on_left)
            t0 = time.monotonic()
            os.kill(bot.pid, signal.SIGKILL if how == "SIGKILL" else signal.SIGSTOP)
            try:
                elapsed = await asyncio.wait_for(left, 4 * heartbeat + grace) - t0
            finally:
                if how == "SIGSTOP":
                    os.kill(bot.pid, signal.SIGKILL)
            limit = grace + (heartbeat if how == "SIGKILL" else 2 * heartbeat)
            assert grace <= elapsed <= limit, elapsed
            assert "bot" not in me.sessions and me.roster == set()
            assert lab.server.dispatcher.rooms() == {"lab": ["me"]}
            assert session.state == "closed"
            assert events_of(lab, "reestablish").empty
