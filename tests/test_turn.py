"""A real coturn on 127.0.0.1: relayed calls, refused credentials, rotation, faults.

Every test starts its own ``turnserver`` (Debian package ``coturn``) through
:class:`webrtclab.turn.TurnServer` on free loopback ports.  The module is skipped
when coturn is missing, except in CI (``CI`` set), where that is a failure.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aioice import ice, stun
from aioice.turn import create_turn_endpoint
from helpers import require_system, wait_until

from webrtclab import ConfigurationError, InvalidStateError, Lab, MediaSpec, SignalingError
from webrtclab.auth import turn_credentials
from webrtclab.experiment import load_scenario, run_scenario
from webrtclab.experiment.results import load
from webrtclab.lab import TURN_NODE
from webrtclab.netem import LinkConditions
from webrtclab.turn import TurnServer, TurnServerError

require_system("turnserver", "coturn", "the TURN tests")

ROOT = Path(__file__).resolve().parent.parent
SMALL = MediaSpec(width=160, height=120, fps=15)
SECRET = "a-first-secret-that-is-long-enough!"
ROTATED = "the-second-secret-also-long-enough!"


@pytest_asyncio.fixture
async def turn() -> AsyncIterator[TurnServer]:
    async with TurnServer(secrets=[SECRET, ROTATED]) as server:
        yield server


class _Sink(asyncio.DatagramProtocol):
    pass


async def allocate(server: TurnServer, username: str, password: str) -> tuple[str, int]:
    """Ask coturn for a relay allocation; returns the relayed address."""
    transport, _ = await create_turn_endpoint(
        _Sink, server_addr=server.address, username=username, password=password
    )
    try:
        return transport.get_extra_info("sockname")
    finally:
        transport.close()


# --- coturn and credentials --------------------------------------------------------------------


async def test_coturn_allocates_with_endpoint_style_credentials(turn: TurnServer) -> None:
    credentials = turn.credentials("alice")
    host, port = await allocate(turn, credentials.username, credentials.credential)
    assert host == "127.0.0.1"
    assert turn.relay_range is not None
    assert turn.relay_range[0] <= port <= turn.relay_range[1]


async def test_coturn_accepts_every_configured_secret(turn: TurnServer) -> None:
    # Rotation: credentials signed with the second secret still work.
    rotated = turn_credentials(ROTATED, "bob", ttl_s=60, uris=[turn.uri])
    host, _ = await allocate(turn, rotated.username, rotated.credential)
    assert host == "127.0.0.1"


@pytest.mark.parametrize(
    "make",
    [
        # Expired: the username's timestamp is in the past.
        lambda uri: turn_credentials(SECRET, "alice", ttl_s=60, uris=[uri], now=1_000_000),
        # Signed with a secret coturn does not know.
        lambda uri: turn_credentials("w" * 40, "alice", ttl_s=60, uris=[uri]),
    ],
    ids=["expired", "wrong-secret"],
)
async def test_coturn_refuses_bad_credentials(turn: TurnServer, make: Callable[..., Any]) -> None:
    credentials = make(turn.uri)
    with pytest.raises(stun.TransactionFailed) as info:
        await allocate(turn, credentials.username, credentials.credential)
    assert info.value.response.attributes["ERROR-CODE"][0] == 401


async def test_endpoint_credentials_work_against_coturn(turn: TurnServer) -> None:
    """What a browser does: fetch credentials with its join token, then allocate."""
    async with Lab(turn=turn, server_options={"join_secret": SECRET}) as lab:
        token = lab.server.issue_token("carol", room=lab.room)
        async with aiohttp.ClientSession() as http:
            async with http.get(
                lab.server.http_url + "/api/turn-credentials",
                headers={"Authorization": f"Bearer {token}"},
            ) as response:
                assert response.status == 200
                body = await response.json()
    assert body["username"].endswith(":carol")
    assert body["uris"] == [turn.uri]
    await allocate(turn, body["username"], body["credential"])


# --- relayed calls -------------------------------------------------------------------------------


async def test_relay_only_call_goes_through_coturn() -> None:
    async with Lab(turn=True, relay_only=True, stats_interval=0.25) as lab:
        assert isinstance(lab.turn, TurnServer)
        relay_range = lab.turn.relay_range
        assert relay_range is not None
        alice = await lab.add_peer("alice", media=SMALL)
        await lab.add_peer("bob", media=SMALL)
        await lab.wait_connected()
        session = alice.sessions["bob"]
        await wait_until(lambda: session.counters[("recv", "video")].frames >= 15)
        path = session.selected_path()
        assert path is not None
        local_type, local, remote_type, _ = path
        assert (local_type, remote_type) == ("relay", "relay")
        assert relay_range[0] <= int(local.rsplit(":", 1)[1]) <= relay_range[1]
        # Relay only: no host candidate was offered at all.
        offer = lab.peers["bob"].sessions["alice"].pc.localDescription.sdp
        assert " typ host" not in offer and " typ relay" in offer
        await wait_until(lambda: (lab.stats()["candidate_type"] == "relay").sum() >= 8)
        assert set(lab.stats()["candidate_type"].dropna()) <= {"relay"}


async def test_peer_to_turn_link_is_emulated() -> None:
    """RTT = 2 x (peer->TURN + peer<->peer + TURN->peer) delays."""
    async with Lab(
        turn=True,
        relay_only=True,
        link=LinkConditions(delay_ms=10),
        turn_link=LinkConditions(delay_ms=20),
        stats_interval=0.25,
    ) as lab:
        await lab.add_peer("alice", media=SMALL)
        await lab.add_peer("bob", media=SMALL)
        await lab.wait_connected()
        # Each RTCP report's own RTT (the stats' rtt_ms is smoothed and still carries
        # the first reports, taken while the encoders start).
        await wait_until(lambda: len(lab.rtt()) >= 8)
        rtt = lab.rtt()["rtt_ms"]
        assert 100 <= rtt.median() <= 115, rtt.describe()
        links = lab.links()
        turn_rows = links[links["dst"] == TURN_NODE]
        assert set(turn_rows["src"]) == {"alice", "bob"}
        assert (turn_rows["delay_ms"] == 20).all() and turn_rows["delivered"].max() > 0


def test_lab_refuses_inconsistent_turn_options() -> None:
    with pytest.raises(ConfigurationError, match="relay_only"):
        Lab(relay_only=True)
    with pytest.raises(ConfigurationError, match="turn_link"):
        Lab(turn=True, turn_link=LinkConditions(delay_ms=5))


async def test_lab_refuses_a_peer_named_like_the_turn_node() -> None:
    async with Lab(turn=True) as lab:
        with pytest.raises(ConfigurationError, match="TURN server"):
            await lab.add_peer(TURN_NODE)
        assert lab.peers == {}


async def test_scenario_with_turn_runs_relayed(tmp_path: Path) -> None:
    scenario = load_scenario(ROOT / "data" / "scenarios" / "turn-relay.toml").with_overrides(
        {"duration_s": 2.0}
    )
    result = await run_scenario(scenario, tmp_path / "run", progress=False)
    assert result.metadata["status"] == "completed"
    # "" is a sample taken before a pair was selected.
    assert set(result.stats["candidate_type"].dropna()) == {"relay"}
    # No credential reaches the result folder (the secret itself is generated and
    # only ever written to coturn's private config file).
    text = "".join(p.read_text(errors="replace") for p in (tmp_path / "run").glob("*.json*"))
    assert "credential" not in text and "auth-secret" not in text
    assert load(tmp_path / "run").metadata["status"] == "completed"


def test_cli_runs_a_relayed_scenario(tmp_path: Path) -> None:
    from test_cli import run_cli

    out = tmp_path / "cli"
    done = run_cli(
        "run",
        str(ROOT / "data" / "scenarios" / "turn-relay.toml"),
        "--out",
        str(out),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout[done.stdout.index("{") : done.stdout.rindex("}") + 1])
    # 2 x (20 + 10 + 20) ms: the scenario's TURN and peer links.
    assert 100 <= summary["rtt_ms_median"] <= 115, summary
    assert set(load(out).stats["candidate_type"].dropna()) == {"relay"}


# --- faults and refusals ---------------------------------------------------------------


async def test_coturn_killed_mid_call_is_reported_and_the_call_comes_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Consent freshness (RFC 7675) notices the dead relay: shortened from 6 x 5 s.
    monkeypatch.setattr(ice, "CONSENT_INTERVAL", 0.2)
    monkeypatch.setattr(ice, "CONSENT_FAILURES", 3)
    # Closing the ICE connection deallocates on the (dead) TURN server and waits for
    # that transaction to time out: about 40 s with RFC 5389's 7 transmissions.
    monkeypatch.setattr(stun, "RETRY_MAX", 2)
    async with Lab(turn=True, relay_only=True) as lab:
        turn = lab.turn
        assert isinstance(turn, TurnServer)
        alice = await lab.add_peer("alice", media=SMALL)
        await lab.add_peer("bob", media=SMALL)
        await lab.wait_connected()
        first = alice.sessions["bob"]
        counter = first.counters[("recv", "video")]
        await wait_until(lambda: counter.frames >= 10)
        turn.kill()
        await wait_until(lambda: not turn.running)
        await wait_until(
            # aiortc reports a consent expiry on a relayed path as "closed".
            lambda: any(
                r[3] == "connection-state" and r[4] in ("failed", "closed")
                for r in lab.event_log.rows
            ),
            timeout=20,
        )
        frames = counter.frames
        await asyncio.sleep(0.5)
        assert counter.frames - frames <= 2  # nothing flows without the relay
        # The relay comes back on the same port: alice (the lower user id) offers a
        # new peer connection, which allocates on the new coturn.
        await turn.restart()
        await wait_until(
            lambda: (
                alice.sessions.get("bob") not in (None, first)
                and alice.sessions["bob"].counters[("recv", "video")].frames >= 5
            ),
            timeout=30,
        )
        path = alice.sessions["bob"].selected_path()
        assert path is not None and path[0] == "relay"


def test_turn_server_refuses_bad_configuration() -> None:
    with pytest.raises(ConfigurationError, match="at least 32"):
        TurnServer(secrets=["short"])
    with pytest.raises(ConfigurationError, match="relay_ports"):
        TurnServer(relay_ports=1)
    with pytest.raises(ConfigurationError, match="port"):
        TurnServer(port=70000)
    with pytest.raises(ConfigurationError, match="realm"):
        TurnServer(realm="a realm; with spaces")
    with pytest.raises(InvalidStateError, match="not started"):
        TurnServer().config  # noqa: B018


async def test_turn_server_reports_a_missing_executable() -> None:
    server = TurnServer(executable="no-such-turnserver")
    with pytest.raises(TurnServerError, match="coturn"):
        await server.start()
    await server.close()
    await server.close()  # idempotent
    with pytest.raises(InvalidStateError, match="closed"):
        await server.start()
    with pytest.raises(InvalidStateError, match="closed"):
        await server.restart()


async def test_turn_server_secret_stays_out_of_logs_and_argv(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with TurnServer(secrets=[SECRET]) as server:
        assert server._process is not None
        cmdline = Path(f"/proc/{server._process.pid}/cmdline").read_bytes()
        assert SECRET.encode() not in cmdline
        credentials = server.credentials("alice")
        await allocate(server, credentials.username, credentials.credential)
        assert all(SECRET not in line for line in server.log_tail(200))
    assert SECRET not in caplog.text
    assert SECRET not in repr(server)


# --- the command line: a class server with TURN, and relay-only bots ------------------------------


async def test_cli_serves_turn_to_invited_bots(monkeypatch: pytest.MonkeyPatch) -> None:
    from test_cli import read_line, spawn, stop

    from webrtclab.auth import TokenAuthority
    from webrtclab.cli import _ice_servers
    from webrtclab.peer import Peer

    monkeypatch.setenv("WEBRTCLAB_JOIN_SECRET", SECRET)
    authority = TokenAuthority(SECRET)
    async with spawn("serve", "--port", "0", "--turn", "--invite", "alice") as server:
        signal_url = (await read_line(server)).rsplit(" ", 1)[1]
        assert (await read_line(server)).startswith("web client on http://127.0.0.1:")
        assert (await read_line(server)).startswith("TURN on turn:127.0.0.1:")
        invite = await read_line(server)
        assert invite.startswith("invite alice: http://127.0.0.1:") and "token=" in invite
        bot_token = authority.issue("bot", room="lab")
        async with spawn(
            "peer",
            "--signal",
            signal_url,
            "--room",
            "lab",
            "--user",
            "bot",
            "--token",
            bot_token,
            "--relay-only",
            "--loopback-only",
            "--size",
            "160x120",
        ) as bot:
            assert "joined room" in await read_line(bot)
            token = authority.issue("me", room="lab")
            ice_servers = await _ice_servers(signal_url, token)
            assert [s.urls for s in ice_servers] == [[ice_servers[0].urls[0]]]
            async with Peer("me", media=SMALL, ice_servers=ice_servers, relay_only=True) as me:
                await me.join(signal_url, "lab", token=token)
                (session,) = await me.wait_connected(1)
                path = session.selected_path()
                assert path is not None and (path[0], path[2]) == ("relay", "relay")
                counter = session.counters[("recv", "video")]
                await wait_until(lambda: counter.frames >= 5)
            # Another user's token does not let "mallory" in.
            async with Peer("mallory", media=SMALL) as mallory:
                with pytest.raises(SignalingError, match='issued to "me"'):
                    await mallory.join(signal_url, "lab", token=token)
            await stop(bot)
        code, _, err = await stop(server)
        assert code == 0, err
