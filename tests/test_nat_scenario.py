"""Scenarios with peers behind emulated NATs: the [nat] table, runs and sweeps over NAT types.

Parsing and every refusal first (nothing runs); then short runs on loopback: a direct call
through a symmetric and a full-cone NAT, a call between two symmetric NATs that fails fast
without TURN (a failed result folder, not a hang) and connects through the lab's coturn
with it; then a 2 x 2 sweep over the peers' NAT presets.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from webrtclab import ConfigurationError
from webrtclab.experiment import Scenario, load, load_scenario, run_scenario
from webrtclab.experiment.runner import IceFailedError
from webrtclab.experiment.summary import SUMMARY_METRICS, candidate_types, ice_summary
from webrtclab.experiment.sweep import parse_grid, sweep
from webrtclab.netem.nat import NAT_PRESETS, NatConfig

needs_coturn = pytest.mark.skipif(
    shutil.which("turnserver") is None, reason="coturn (turnserver) is not installed"
)

PEERS = [
    {"name": "alice", "width": 160, "height": 120, "fps": 10},
    {"name": "bob", "width": 160, "height": 120, "fps": 10},
]


def nat_scenario(alice: str, bob: str, **extra: Any) -> Scenario:
    data: dict[str, Any] = {
        "name": "nat",
        "duration_s": 2,
        "stats_interval_s": 0.25,
        "peers": [{**PEERS[0], "nat": alice}, {**PEERS[1], "nat": bob}],
        "nat": {"ice_check_retransmissions": 2},
        "traffic": {"cursor_rate_hz": 0, "chat_interval_s": 0},
    }
    data.update(extra)
    return Scenario.from_mapping(data)


# --- parsing --------------------------------------------------------------------------------


def test_nat_default_per_peer_nats_and_none() -> None:
    scenario = Scenario.from_mapping(
        {
            "nat": {"default": "symmetric", "ice_check_retransmissions": 2},
            "peers": [
                {"name": "alice"},
                {"name": "bob", "nat": "Full-Cone"},
                {"name": "carol", "nat": "none"},
                {"name": "dave", "nat": {"preset": "symmetric", "lifetime_s": 30}},
                {"name": "erin", "nat": {"mapping": "EIM", "filtering": "ADF"}},
            ],
        }
    )
    nats = {p.name: p.nat for p in scenario.peers}
    assert nats["alice"] == NAT_PRESETS["symmetric"]
    assert nats["bob"] == NAT_PRESETS["full-cone"]
    assert nats["carol"] is None
    assert nats["dave"] == NatConfig(
        "address-and-port-dependent", "address-and-port-dependent", lifetime_s=30
    )
    assert nats["erin"] is not None and nats["erin"].name == "restricted-cone"
    assert scenario.ice_check_retransmissions == 2


def test_without_nat_nothing_changes() -> None:
    scenario = Scenario.from_mapping({})
    assert all(p.nat is None for p in scenario.peers)
    assert scenario.ice_check_retransmissions is None
    # A [nat] table without a default puts no one behind a NAT, so [link] is fine.
    plain = Scenario.from_mapping({"nat": {"ice_check_retransmissions": 3}, "link": {}})
    assert all(p.nat is None for p in plain.peers) and plain.ice_check_retransmissions == 3
    assert Scenario.from_mapping({"nat": {"default": "none"}}).peers[0].nat is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"nat": "symmetric"}, "nat must be a table"),
        (
            {"nat": {"type": "symmetric"}},
            r"nat: unknown key 'type' \(known: access_link, default, ice_check",
        ),
        ({"nat": {"default": "cone"}}, "nat.default: unknown NAT preset 'cone'"),
        ({"nat": {"default": 5}}, "nat.default must be a NAT preset name"),
        ({"nat": {"default": True}}, "nat.default must be a NAT preset name"),
        ({"nat": {"default": {"colour": "red"}}}, "nat.default: unknown NAT setting.*colour"),
        ({"nat": {"default": {"mapping": "random"}}}, "nat.default: NAT mapping must be one"),
        ({"nat": {"default": {"filtering": 1}}}, "nat.default: NAT filtering must be one"),
        ({"nat": {"default": {"lifetime_s": 0}}}, "nat.default: NAT lifetime_s"),
        ({"nat": {"default": {"lifetime_s": "long"}}}, "nat.default: NAT lifetime_s"),
        ({"nat": {"default": {"hairpinning": "yes"}}}, "nat.default: NAT hairpinning"),
        ({"nat": {"default": {"preset": "none"}}}, "nat.default: unknown NAT preset 'none'"),
        ({"nat": {"ice_check_retransmissions": -1}}, "ice_check_retransmissions must be"),
        ({"nat": {"ice_check_retransmissions": 11}}, "ice_check_retransmissions must be"),
        ({"nat": {"ice_check_retransmissions": True}}, "ice_check_retransmissions must be"),
        ({"nat": {"ice_check_retransmissions": "2"}}, "ice_check_retransmissions must be"),
        (
            {"peers": [{"name": "a", "nat": "symetric"}, {"name": "b"}]},
            r"peers\[0\].nat: unknown NAT preset 'symetric'",
        ),
        (
            {"peers": [{"name": "a"}, {"name": "b", "nat": ["symmetric"]}]},
            r"peers\[1\].nat must be a NAT preset name",
        ),
        (
            {"nat": {"default": "symmetric"}, "link": {"delay_ms": 20}},
            r"\[nat\] cannot be combined with \[link\] yet.*\(alice, bob\)",
        ),
        (
            {"nat": {"default": "symmetric"}, "link": {"schedule": [{"at_s": 1, "loss": 0.1}]}},
            r"\[nat\] cannot be combined with \[link\]",
        ),
        (
            {"peers": [{"name": "a", "nat": "full-cone"}, {"name": "b"}], "link": {}},
            r"\[nat\] cannot be combined with \[link\] yet.*\(a\)",
        ),
        (
            {"nat": {"default": "full-cone"}, "turn": {"link": {"delay_ms": 20}}},
            r"\[nat\] cannot be combined with \[turn.link\] yet",
        ),
    ],
)
def test_bad_nat_settings_are_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Scenario.from_mapping(data)


def test_nat_from_a_toml_file(tmp_path: Path) -> None:
    toml = tmp_path / "nat.toml"
    toml.write_text(
        '[nat]\ndefault = { preset = "port-restricted-cone", hairpinning = false }\n'
        "ice_check_retransmissions = 2\n"
        '[[peers]]\nname = "alice"\nnat = "symmetric"\n[[peers]]\nname = "bob"\n'
        "[turn]\n"
    )
    scenario = load_scenario(toml)
    alice, bob = scenario.peers
    assert alice.nat == NAT_PRESETS["symmetric"]
    assert bob.nat is not None and bob.nat.name == "port-restricted-cone"
    assert not bob.nat.hairpinning
    assert scenario.turn is not None and not scenario.turn.relay_only


def test_sweep_overrides_reach_nat_settings() -> None:
    base = nat_scenario("full-cone", "full-cone")
    changed = base.with_overrides({"peers.1.nat": "symmetric", "nat.default": "restricted-cone"})
    assert [p.nat.name if p.nat else None for p in changed.peers] == ["full-cone", "symmetric"]
    # Peers without a nat key take the default; the scenario's default peers too.
    fresh = Scenario.from_mapping({}).with_overrides({"nat.default": "symmetric"})
    assert {p.nat.name if p.nat else None for p in fresh.peers} == {"symmetric"}
    one = Scenario.from_mapping({}).with_overrides({"peers.0.nat": "full-cone"})
    assert [p.nat.name if p.nat else None for p in one.peers] == ["full-cone", None]
    assert one.peer_names == ["alice", "bob"]
    with pytest.raises(ConfigurationError, match=r"peers\[1\].nat: unknown NAT preset 'open'"):
        base.with_overrides({"peers.1.nat": "open"})
    with pytest.raises(ConfigurationError, match="'2' is not an entry of the array"):
        base.with_overrides({"peers.2.nat": "symmetric"})
    with pytest.raises(ConfigurationError, match="'first' is not an entry of the array"):
        base.with_overrides({"peers.first.nat": "symmetric"})
    with pytest.raises(ConfigurationError, match="names an array entry"):
        base.with_overrides({"peers.0": "symmetric"})
    with pytest.raises(ConfigurationError, match="cannot be combined with"):
        base.with_overrides({"link.delay_ms": 20})
    grid = parse_grid(["nat.default=full-cone,symmetric", "peers.0.nat=none,symmetric"])
    assert grid == {"nat.default": ["full-cone", "symmetric"], "peers.0.nat": ["none", "symmetric"]}


def test_ice_summary_of_events_without_a_connection() -> None:
    empty = pd.DataFrame(columns=["time_s", "peer", "remote", "event", "detail"])
    summary = ice_summary(empty)
    assert set(summary) <= set(SUMMARY_METRICS)
    assert all(math.isnan(v) for v in summary.values())
    assert candidate_types(empty) == ""
    events = pd.DataFrame(
        [
            (0.1, "alice", "bob", "ice-connected", "0.100 s"),
            (0.2, "bob", "alice", "ice-connected", "0.250 s"),
            (0.2, "alice", "bob", "selected-path", "relay 127.0.0.1:1 -> prflx 127.1.0.2:2"),
            (0.2, "bob", "alice", "selected-path", "prflx 127.1.0.2:2 -> relay 127.0.0.1:1"),
            (9.0, "alice", "bob", "ice-connected", "7.000 s"),  # re-established later
        ],
        columns=["time_s", "peer", "remote", "event", "detail"],
    )
    summary = ice_summary(events)
    assert summary["connect_s"] == pytest.approx(0.25)  # first per session, slowest session
    assert summary["relayed_fraction"] == 1.0
    assert (summary["selected_relay"], summary["selected_prflx"]) == (0.5, 0.5)
    assert summary["selected_host"] == summary["selected_srflx"] == 0.0
    assert candidate_types(events) == "prflx-relay"


# --- runs -----------------------------------------------------------------------------------


async def test_run_behind_nats_records_connect_time_and_candidate_types(tmp_path: Path) -> None:
    result = await run_scenario(
        nat_scenario("symmetric", "full-cone"), tmp_path / "run", progress=False
    )
    assert result.status == "completed"
    events = result.events
    assert set(events[events["event"] == "nat"]["peer"]) == {"alice", "bob"}
    summary = result.summary()
    assert 0 < summary["connect_s"] < 5, summary
    # A direct pair: the symmetric side sends from a mapping learned in the checks.
    assert (summary["selected_prflx"], summary["selected_srflx"]) == (0.5, 0.5)
    assert summary["relayed_fraction"] == 0.0 and summary["selected_host"] == 0.0
    assert candidate_types(events) == "prflx-srflx"
    assert result.metadata["summary"]["connect_s"] == pytest.approx(summary["connect_s"])
    assert set(result.stats["candidate_type"].dropna()) == {"prflx", "srflx"}
    assert result.summary()["recv_fps"] > 5
    # The boxes' bindings are a table of the folder, journaled as they happened.
    created = result.nat_bindings[result.nat_bindings["event"] == "mapping-created"]
    assert set(created["nat"]) == {"alice-nat", "bob-nat"}


async def test_a_call_that_cannot_connect_fails_fast_into_a_failed_result(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    started = time.monotonic()
    with pytest.raises(IceFailedError, match="ICE failed between .* no TURN server"):
        await run_scenario(nat_scenario("symmetric", "symmetric"), out, progress=False)
    # Checks give up after 0.5 + 1 + 2 s: the run ends then, not at a timeout.
    assert time.monotonic() - started < 10
    result = load(out)
    assert result.status == "failed"
    assert "IceFailedError: ICE failed" in result.metadata["error"]
    assert "alice: symmetric, bob: symmetric" in result.metadata["error"]
    events = result.events
    assert set(events[events["event"] == "ice-failed"]["peer"]) == {"alice", "bob"}
    assert not events[events["event"] == "ice-checks"].empty
    assert "call-start" not in set(events["event"])
    # What the symmetric boxes refused is kept, though the run failed.
    assert (result.nat_bindings["event"] == "filtered").any()
    assert math.isnan(result.summary()["connect_s"])
    assert result.metadata["summary"]["connect_s"] is None  # NaN, as strict JSON


@needs_coturn
async def test_two_symmetric_nats_connect_through_turn_in_a_scenario(tmp_path: Path) -> None:
    result = await run_scenario(
        nat_scenario("symmetric", "symmetric", turn={}), tmp_path / "run", progress=False
    )
    assert result.status == "completed"
    summary = result.summary()
    assert summary["relayed_fraction"] == 1.0
    assert summary["selected_relay"] >= 0.5 and summary["selected_srflx"] == 0.0
    assert candidate_types(result.events) in ("prflx-relay", "relay-relay")


def test_sweep_over_nat_presets(tmp_path: Path) -> None:
    base = nat_scenario("full-cone", "full-cone")
    out = tmp_path / "sweep"
    summary = sweep(
        base,
        {"peers.0.nat": ["full-cone", "symmetric"], "peers.1.nat": ["full-cone", "symmetric"]},
        out,
        workers=2,
        progress=False,
    )
    assert list(summary.columns) == [
        "run",
        "path",
        "status",
        "error",
        "peers.0.nat",
        "peers.1.nat",
        *SUMMARY_METRICS,
    ]
    by_pair = summary.set_index(["peers.0.nat", "peers.1.nat"])
    assert by_pair["status"].to_dict() == {
        ("full-cone", "full-cone"): "completed",
        ("full-cone", "symmetric"): "completed",
        ("symmetric", "full-cone"): "completed",
        ("symmetric", "symmetric"): "failed",
    }
    error = by_pair.loc[("symmetric", "symmetric"), "error"]
    assert isinstance(error, str)  # a failed run's row says why
    assert "IceFailedError" in error
    assert by_pair.loc[("full-cone", "full-cone"), "selected_srflx"] == 1.0
    for pair in (("full-cone", "symmetric"), ("symmetric", "full-cone")):
        assert by_pair.loc[pair, "selected_prflx"] == 0.5
    connected = summary[summary["status"] == "completed"]
    assert (connected["connect_s"] > 0).all() and (connected["connect_s"] < 5).all()
    assert (connected["relayed_fraction"] == 0).all()
    # The failed run's folder says why, too.
    failed_path = by_pair.loc[("symmetric", "symmetric"), "path"]
    assert isinstance(failed_path, str)  # the sweep writes each run's folder as a string
    failed = load(failed_path)
    assert failed.status == "failed" and "ice-failed" in set(failed.events["event"])
