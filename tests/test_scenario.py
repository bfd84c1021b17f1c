"""Scenario files: parsing, validation (every refusal), overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from webrtclab import ConfigurationError
from webrtclab.experiment import Scenario, load_scenario
from webrtclab.experiment.scenario import SCENARIOS_DIR
from webrtclab.netem import LinkConditions
from webrtclab.netem.traces import TRACES_DIR

DATA = SCENARIOS_DIR


def test_defaults() -> None:
    scenario = Scenario.from_mapping({})
    assert scenario.peer_names == ["alice", "bob"]
    assert scenario.duration_s == 10.0 and scenario.seed == 0
    assert scenario.link is None and scenario.schedules == {}
    assert scenario.chat_interval_s == 1.0 and scenario.cursor_rate_hz == 10.0


def test_shipped_scenarios_load() -> None:
    demo = load_scenario(DATA / "demo.toml")
    assert demo.name == "demo" and demo.duration_s == 10
    assert demo.link == (
        LinkConditions(delay_ms=40, jitter_ms=2, loss=0.01),
        LinkConditions(delay_ms=40, jitter_ms=2, loss=0.01),
    )
    step = load_scenario(DATA / "3g-step.toml")
    assert step.link is not None and step.link[0].rate_kbps == 1600
    assert [at for at, _ in step.schedules["a_to_b"]] == [10, 20]
    assert step.schedules["a_to_b"] == step.schedules["b_to_a"]


def test_per_direction_link_and_schedule_direction() -> None:
    scenario = Scenario.from_mapping(
        {
            "link": {
                "delay_ms": 20,
                "b_to_a": {"rate_kbps": 500},
                "schedule": [{"at_s": 5, "loss": 0.1, "direction": "a_to_b"}],
            }
        }
    )
    assert scenario.link is not None
    a_to_b, b_to_a = scenario.link
    assert a_to_b.rate_kbps is None and b_to_a.rate_kbps == 500
    assert a_to_b.delay_ms == b_to_a.delay_ms == 20
    assert list(scenario.schedules) == ["a_to_b"]


def test_peer_media_seeds_differ_per_peer() -> None:
    scenario = Scenario.from_mapping({"seed": 2, "peers": [{"name": "a"}, {"name": "b"}]})
    assert scenario.peers[0].media.seed != scenario.peers[1].media.seed


def test_with_overrides_builds_a_new_valid_scenario() -> None:
    base = Scenario.from_mapping({"link": {"delay_ms": 20}})
    changed = base.with_overrides({"link.loss": 0.05, "duration_s": 3})
    assert changed.link is not None and changed.link[0].loss == 0.05
    assert changed.link[0].delay_ms == 20 and changed.duration_s == 3
    assert base.link is not None and base.link[0].loss == 0  # the original is untouched
    fresh = Scenario.from_mapping({}).with_overrides({"link.delay_ms": 30})
    assert fresh.link is not None and fresh.link[0].delay_ms == 30


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"durations": 3}, "unknown key 'durations'"),
        ({"duration_s": 0}, "duration_s"),
        ({"duration_s": "10"}, "duration_s"),
        ({"seed": 1.5}, "seed"),
        ({"stats_interval_s": 0}, "stats_interval_s"),
        ({"peers": [{"name": "solo"}]}, "at least two"),
        ({"peers": [{"name": "a"}, {"name": "a"}]}, "unique"),
        ({"peers": [{"name": "a"}, {"name": "b", "colour": 1}]}, "unknown key 'colour'"),
        ({"peers": [{"name": "a"}, {"name": ""}]}, "name"),
        ({"peers": [{"name": "a"}, {"name": "b", "width": "wide"}]}, "width"),
        ({"peers": [{"name": "a"}, {"name": "b", "fps": 0}]}, "fps"),
        ({"link": {"loss": 2}}, "loss"),
        ({"link": {"lossy": 1}}, "unknown key 'lossy'"),
        ({"link": 5}, "link must be a table"),
        ({"link": {"schedule": [{"at_s": 1, "direction": "up"}]}}, "direction"),
        ({"switch": [{"at_s": 1, "peer": "carol", "source": "screen"}]}, "switch.peer"),
        ({"switch": [{"at_s": 1, "peer": "alice", "source": "tv"}]}, "switch.source"),
        ({"switch": {"at_s": 1}}, "array of tables"),
        ({"record": [{"peer": "alice", "remote": "alice"}]}, "record.remote"),
        ({"record": [{"peer": "alice", "format": "avi"}]}, "record.format"),
        ({"traffic": {"chat_hz": 1}}, "unknown key 'chat_hz'"),
        ({"quality": {"psnr_every": -1}}, "psnr_every"),
    ],
)
def test_bad_scenarios_are_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Scenario.from_mapping(data)


def test_overrides_reach_into_the_peers_array() -> None:
    base = Scenario.from_mapping({"peers": [{"name": "a"}, {"name": "b", "fps": 10}]})
    changed = base.with_overrides({"peers.1.fps": 5, "peers.0.congestion_control": "remb"})
    assert changed.peers[1].media.fps == 5 and changed.peers[0].media.fps == 15
    assert changed.peers[0].congestion_control.mode == "remb"
    assert base.peers[1].media.fps == 10
    # No [[peers]] in the scenario: the default peers, alice and bob, get the override.
    fresh = Scenario.from_mapping({}).with_overrides({"peers.1.width": 160})
    assert fresh.peer_names == ["alice", "bob"] and fresh.peers[1].media.width == 160
    with pytest.raises(ConfigurationError, match="'2' is not an entry of the array"):
        base.with_overrides({"peers.2.fps": 5})
    with pytest.raises(ConfigurationError, match="names an array entry"):
        base.with_overrides({"peers.1": 5})


def test_bad_overrides_are_refused() -> None:
    base = Scenario.from_mapping({"duration_s": 5})
    with pytest.raises(ConfigurationError, match="not a table"):
        base.with_overrides({"duration_s.x": 1})
    with pytest.raises(ConfigurationError, match="bad override key"):
        base.with_overrides({"link..loss": 1})
    with pytest.raises(ConfigurationError, match="loss"):
        base.with_overrides({"link.loss": 7})


def test_load_scenario_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_scenario(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("duration_s = [")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load_scenario(bad)
    named = tmp_path / "my-call.toml"
    named.write_text("duration_s = 2\n")
    assert load_scenario(named).name == "my-call"
    with pytest.raises(ConfigurationError, match="cannot read scenario file"):
        load_scenario(tmp_path)


def test_shipped_scenarios_load_by_name_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()  # e.g. `webrtclab demo --out demo`: not a scenario file
    for name in ("demo", "3g-step", "turn-relay"):
        assert load_scenario(name) == load_scenario(SCENARIOS_DIR / f"{name}.toml")
        assert load_scenario(name).name == name


def test_a_scenario_file_wins_over_a_shipped_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").write_text('name = "mine"\nduration_s = 2\n')
    assert load_scenario("demo").name == "mine"


@pytest.mark.parametrize("given", ["no-such-scenario", "demo.toml", "sub/demo"])
def test_unknown_scenarios_are_refused_with_the_shipped_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    # Only a bare name means a shipped scenario: not a file name, not a path.
    monkeypatch.chdir(tmp_path)
    message = (
        f"scenario file '{given}' does not exist "
        r"\(shipped scenarios, usable by name: 3g-step, demo, turn-relay\)"
    )
    with pytest.raises(ConfigurationError, match=message):
        load_scenario(given)


def test_relative_trace_paths_in_a_scenario_are_read_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.trace").write_text((TRACES_DIR / "step-down.trace").read_text())
    (tmp_path / "call.toml").write_text('[link]\ntrace = "mine.trace"\n')
    scenario = load_scenario("call.toml")
    assert scenario.link is not None and scenario.link[0].capacity_trace is not None
    assert scenario.link[0].capacity_trace.period_ms == 20_000
