"""Scenarios: a declarative experiment (peers, media, network, duration, seed), from TOML.

:func:`load_scenario` takes a path or the name of a shipped scenario (``"demo"``,
``"3g-step"``, ``"turn-relay"``: the files in :data:`SCENARIOS_DIR`).

Example ``call.toml``::

    name = "3g-call"
    duration_s = 30
    seed = 1
    congestion_control = "gcc"  # every peer's, unless its [[peers]] entry sets one

    [[peers]]
    name = "alice"
    width = 320
    height = 240
    fps = 15

    [[peers]]
    name = "bob"
    congestion_control = "gcc"  # or "remb", "none", "fixed:800000"

    [link]                    # every pair, both directions (see webrtclab.netem)
    preset = "3g"
    loss = 0.02
    [link.b_to_a]
    rate_kbps = 500

    [[link.schedule]]         # changes at set times after the call starts
    at_s = 10
    rate_kbps = 300
    [[link.schedule]]
    at_s = 20
    reset = true

    [[switch]]                # replaceTrack mid-call
    at_s = 5
    peer = "alice"
    source = "screen"

    [[record]]                # record what bob receives from alice
    peer = "bob"
    remote = "alice"

    [traffic]
    chat_interval_s = 1.0
    cursor_rate_hz = 20

    [turn]                    # a coturn on loopback, started for the run
    relay_only = true         # every path through the relay
    [turn.link]               # each peer <-> TURN server (same keys as [link])
    delay_ms = 20

Peers behind emulated NATs (see webrtclab.netem.nat; not with [link] or [turn.link] yet)::

    [nat]
    default = "symmetric"           # every peer's NAT: a preset, "none", or a table:
                                    # {preset = "symmetric", lifetime_s = 30, hairpinning = false}
    ice_check_retransmissions = 2   # a failing ICE check gives up after 3.5 s (aioice: 63.5 s)
    [nat.access_link]               # each NAT box's access link (keys of [link])
    delay_ms = 40
    [nat.access_link.uplink]        # overrides for one direction (or: downlink)
    rate_kbps = 1000

    [[peers]]
    name = "alice"
    nat = "full-cone"               # this peer's NAT ("none": no NAT, whatever the default)
    access_link = {delay_ms = 10}   # this peer's access link (needs a NAT)
"""

from __future__ import annotations

import copy
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._shipped import DATA_DIR, resolve_shipped
from ..cc.control import CongestionControl, parse_congestion_control
from ..exceptions import ConfigurationError
from ..media import MediaSpec
from ..netem.conditions import LinkConditions, Schedule, link_from_mapping, parse_schedule
from ..netem.nat import NatConfig, nat_config
from ..signaling.messages import MAX_ID_LENGTH

__all__ = ["SCENARIOS_DIR", "PeerSpec", "Scenario", "TurnSpec", "load_scenario"]

SCENARIOS_DIR = DATA_DIR / "scenarios"
"""The shipped example scenarios (package data): ``<name>.toml``, loadable by name."""

_TOP_KEYS = {
    "name",
    "duration_s",
    "seed",
    "stats_interval_s",
    "peers",
    "link",
    "switch",
    "record",
    "traffic",
    "quality",
    "turn",
    "congestion_control",
    "nat",
}
_PEER_KEYS = {
    "name",
    "video",
    "audio",
    "width",
    "height",
    "fps",
    "congestion_control",
    "nat",
    "access_link",
}
_SWITCH_KEYS = {"at_s", "peer", "source"}
_RECORD_KEYS = {"peer", "remote", "format"}
_TRAFFIC_KEYS = {"chat_interval_s", "cursor_rate_hz"}
_QUALITY_KEYS = {"psnr_every", "freeze_ms"}
_TURN_KEYS = {"enabled", "relay_only", "link"}
_NAT_KEYS = {"default", "ice_check_retransmissions", "access_link"}
#: an access link's per-direction sub-tables, and the [link] ones they stand for
_ACCESS_DIRECTIONS = {"uplink": "a_to_b", "downlink": "b_to_a"}
#: a NAT value that means "no NAT" (TOML has no null): a peer's ``nat`` or ``[nat] default``
NO_NAT = "none"
_SCHEDULE_DIRECTIONS = ("both", "a_to_b", "b_to_a")
DEFAULT_PEERS: tuple[dict[str, Any], ...] = ({"name": "alice"}, {"name": "bob"})


@dataclass(frozen=True)
class PeerSpec:
    """One peer of a scenario and what it sends."""

    name: str
    media: MediaSpec = field(default_factory=MediaSpec)
    #: "gcc" (the default), "remb", "none" or "fixed:<bps>" (see webrtclab.cc)
    congestion_control: CongestionControl = field(default_factory=CongestionControl)
    #: the NAT this peer sits behind (its own box), or None
    nat: NatConfig | None = None
    #: its box's access link (uplink, downlink), or None
    access_link: tuple[LinkConditions, LinkConditions] | None = None


@dataclass(frozen=True)
class Switch:
    at_s: float
    peer: str
    source: str


@dataclass(frozen=True)
class Record:
    peer: str
    remote: str | None
    format: str = "mkv"


@dataclass(frozen=True)
class TurnSpec:
    """The run's TURN server: relay-only or not, and the peer <-> TURN link."""

    relay_only: bool = False
    # (peer -> TURN, TURN -> peer), or None for an unimpaired path.
    link: tuple[LinkConditions, LinkConditions] | None = None


@dataclass(frozen=True)
class Scenario:
    """A validated experiment description; build it with :meth:`from_mapping` or TOML.

    ``data`` keeps the mapping it was built from (what the result folder records and
    what sweeps override); the other attributes are its parsed form.
    """

    data: Mapping[str, Any]
    name: str
    duration_s: float
    seed: int
    stats_interval_s: float
    peers: tuple[PeerSpec, ...]
    link: tuple[LinkConditions, LinkConditions] | None
    schedules: dict[str, Schedule]
    switches: tuple[Switch, ...]
    records: tuple[Record, ...]
    chat_interval_s: float | None
    cursor_rate_hz: float | None
    psnr_every: int
    freeze_ms: float | None
    turn: TurnSpec | None = None
    #: [nat] ice_check_retransmissions: for every peer (None: aioice's 6)
    ice_check_retransmissions: int | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Scenario:
        """Validate ``data`` (a parsed TOML document) into a scenario."""
        if not isinstance(data, Mapping):
            raise ConfigurationError(f"a scenario must be a table, got {type(data).__name__}")
        _check_keys(data, _TOP_KEYS, "scenario")
        data = copy.deepcopy(dict(data))
        name = _str(data.get("name", "scenario"), "name")
        duration = _number(data.get("duration_s", 10.0), "duration_s", 0.5, 86400.0)
        seed = data.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigurationError(f"seed must be an integer, got {seed!r}")
        interval = _number(data.get("stats_interval_s", 0.5), "stats_interval_s", 0.05, 60.0)

        raw_peers = data.get("peers", list(DEFAULT_PEERS))
        if not isinstance(raw_peers, list) or len(raw_peers) < 2:
            raise ConfigurationError(f"peers must list at least two peers, got {raw_peers!r}")
        control = data.get("congestion_control", "gcc")
        default_nat, retransmissions, default_access = _nat(data.get("nat"))
        peers = tuple(
            _peer(p, i, seed, control, default_nat, default_access) for i, p in enumerate(raw_peers)
        )
        names = [p.name for p in peers]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"peer names must be unique, got {names}")

        link = None
        schedules: dict[str, Schedule] = {}
        if "link" in data:
            table = data["link"]
            if not isinstance(table, Mapping):
                raise ConfigurationError(f"link must be a table, got {table!r}")
            steps = table.get("schedule", [])
            link = link_from_mapping({k: v for k, v in table.items() if k != "schedule"})
            schedules = _schedules(steps)

        switches = tuple(_switch(s, names) for s in _list(data.get("switch", []), "switch"))
        records = tuple(_record(r, names) for r in _list(data.get("record", []), "record"))
        traffic = data.get("traffic", {})
        if not isinstance(traffic, Mapping):
            raise ConfigurationError(f"traffic must be a table, got {traffic!r}")
        _check_keys(traffic, _TRAFFIC_KEYS, "traffic")
        chat = traffic.get("chat_interval_s", 1.0)
        cursor = traffic.get("cursor_rate_hz", 10.0)
        chat = None if chat == 0 else _number(chat, "traffic.chat_interval_s", 0.01, 3600.0)
        cursor = None if cursor == 0 else _number(cursor, "traffic.cursor_rate_hz", 0.1, 1000.0)
        quality = data.get("quality", {})
        if not isinstance(quality, Mapping):
            raise ConfigurationError(f"quality must be a table, got {quality!r}")
        _check_keys(quality, _QUALITY_KEYS, "quality")
        psnr_every = quality.get("psnr_every", 1)
        if not isinstance(psnr_every, int) or isinstance(psnr_every, bool) or psnr_every < 0:
            raise ConfigurationError(
                f"quality.psnr_every must be an integer >= 0 (0: no PSNR), got {psnr_every!r}"
            )
        freeze = quality.get("freeze_ms")
        if freeze is not None:
            freeze = _number(freeze, "quality.freeze_ms", 1.0, 60000.0)
        turn = _turn(data.get("turn"))
        if turn is not None and "turn" in names:
            # The emulator names the TURN server "turn" (webrtclab.lab.TURN_NODE).
            raise ConfigurationError('a peer cannot be named "turn" in a scenario with [turn]')
        behind = [p.name for p in peers if p.nat is not None]
        if default_access is not None and not behind:
            raise ConfigurationError(
                "nat.access_link is the access link of the peers' NAT boxes, but no peer is "
                "behind a NAT: set nat.default or a peer's nat"
            )
        if behind and (link is not None or schedules or (turn is not None and turn.link)):
            table = "[link]" if link is not None or schedules else "[turn.link]"
            raise ConfigurationError(
                f"[nat] cannot be combined with {table} yet: peers behind NATs "
                f"({', '.join(behind)}) do not run through the network emulator; "
                f"remove {table} or the NATs"
            )
        return cls(
            data=data,
            name=name,
            duration_s=duration,
            seed=seed,
            stats_interval_s=interval,
            peers=peers,
            link=link,
            schedules=schedules,
            switches=switches,
            records=records,
            chat_interval_s=chat,
            cursor_rate_hz=cursor,
            psnr_every=psnr_every,
            freeze_ms=freeze,
            turn=turn,
            ice_check_retransmissions=retransmissions,
        )

    def with_overrides(self, overrides: Mapping[str, Any]) -> Scenario:
        """A copy with dotted keys replaced, e.g. ``{"link.loss": 0.02, "duration_s": 5}``.

        A number after an array of tables picks an entry: ``"peers.1.nat"`` is the
        second peer's NAT (the default peers, alice and bob, when the scenario lists
        none).  Used by sweeps; the result is validated like any scenario.
        """
        data = copy.deepcopy(dict(self.data))
        for dotted, value in overrides.items():
            parts = dotted.split(".")
            if not all(parts):
                raise ConfigurationError(f"bad override key {dotted!r}")
            if parts[0] == "peers" and len(parts) > 1:
                data.setdefault("peers", copy.deepcopy(list(DEFAULT_PEERS)))
            table: Any = data  # a table (dict) or an array of tables (list)
            for part in parts[:-1]:
                nested: Any
                if isinstance(table, list):
                    if not part.isdigit() or int(part) >= len(table):
                        raise ConfigurationError(
                            f"cannot set {dotted!r}: {part!r} is not an entry of the array "
                            f"(0-{len(table) - 1})"
                        )
                    nested = table[int(part)]
                else:
                    nested = table.setdefault(part, {})
                if not isinstance(nested, dict | list):
                    raise ConfigurationError(
                        f"cannot set {dotted!r}: {part!r} is not a table in the scenario"
                    )
                table = nested
            if isinstance(table, list):
                raise ConfigurationError(
                    f"cannot set {dotted!r}: it names an array entry, not a key of one"
                )
            table[parts[-1]] = value
        return Scenario.from_mapping(data)

    @property
    def peer_names(self) -> list[str]:
        return [p.name for p in self.peers]


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario TOML file, or a shipped scenario by name (``"demo"``).

    An existing file wins over a shipped name.  Relative trace paths inside the file are
    read from the working directory, as everywhere else.
    """
    path = resolve_shipped(path, SCENARIOS_DIR, ".toml", "scenario")
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigurationError(f"cannot read scenario file {str(path)!r}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"scenario file {str(path)!r} is not valid TOML: {exc}") from None
    data.setdefault("name", path.stem)
    return Scenario.from_mapping(data)


# --- validation helpers ---------------------------------------------------------------------


def _turn(table: Any) -> TurnSpec | None:
    if table is None:
        return None
    if not isinstance(table, Mapping):
        raise ConfigurationError(f"turn must be a table, got {table!r}")
    _check_keys(table, _TURN_KEYS, "turn")
    for key in ("enabled", "relay_only"):
        if not isinstance(table.get(key, True), bool):
            raise ConfigurationError(f"turn.{key} must be true or false, got {table[key]!r}")
    if not table.get("enabled", True):
        return None
    link = None
    if "link" in table:
        if not isinstance(table["link"], Mapping):
            raise ConfigurationError(f"turn.link must be a table, got {table['link']!r}")
        link = link_from_mapping(table["link"])
    return TurnSpec(relay_only=table.get("relay_only", False), link=link)


def _nat(
    table: Any,
) -> tuple[NatConfig | None, int | None, tuple[LinkConditions, LinkConditions] | None]:
    """[nat]: every peer's default NAT, ICE checks' retransmissions, the default access link."""
    if table is None:
        return None, None, None
    if not isinstance(table, Mapping):
        raise ConfigurationError(f"nat must be a table, got {table!r}")
    _check_keys(table, _NAT_KEYS, "nat")
    default = _nat_value(table.get("default", NO_NAT), "nat.default")
    retransmissions = table.get("ice_check_retransmissions")
    if retransmissions is not None and (
        not isinstance(retransmissions, int)
        or isinstance(retransmissions, bool)
        or not 0 <= retransmissions <= 10
    ):
        raise ConfigurationError(
            f"nat.ice_check_retransmissions must be an integer in 0-10, got {retransmissions!r}"
        )
    access = None
    if "access_link" in table:
        access = _access_link(table["access_link"], "nat.access_link")
    return default, retransmissions, access


def _access_link(value: Any, where: str) -> tuple[LinkConditions, LinkConditions]:
    """An access link table: the keys of [link], ``uplink``/``downlink`` sub-tables."""
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{where} must be a table (the keys of [link]), got {value!r}")
    for key in value:
        if key in _ACCESS_DIRECTIONS.values():
            raise ConfigurationError(
                f"{where}: unknown key {key!r} (an access link's directions are "
                f"{' and '.join(_ACCESS_DIRECTIONS)})"
            )
    renamed = {_ACCESS_DIRECTIONS.get(str(k), str(k)): v for k, v in value.items()}
    try:
        return link_from_mapping(renamed)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None


def _nat_value(value: Any, where: str) -> NatConfig | None:
    """A preset name, ``"none"``, or a table (``preset``, ``mapping``, ``filtering``,
    ``lifetime_s``, ``hairpinning``, ``inbound_refresh``)."""
    if isinstance(value, str) and value.strip().lower() == NO_NAT:
        return None
    if not isinstance(value, str | Mapping):
        raise ConfigurationError(
            f'{where} must be a NAT preset name, "{NO_NAT}" or a table, got {value!r}'
        )
    try:
        return nat_config(value)
    except (ConfigurationError, TypeError) as exc:
        raise ConfigurationError(f"{where}: {exc}") from None


def _check_keys(table: Mapping[str, Any], known: set[str], where: str) -> None:
    for key in table:
        if key not in known:
            raise ConfigurationError(
                f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})"
            )


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise ConfigurationError(
            f"{where} must be a string of 1-{MAX_ID_LENGTH} characters, got {value!r}"
        )
    return value


def _number(value: Any, where: str, low: float, high: float) -> float:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or math.isnan(value)
        or not low <= value <= high
    ):
        raise ConfigurationError(f"{where} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def _list(value: Any, where: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise ConfigurationError(f"{where} must be an array of tables ([[{where}]]), got {value!r}")
    return value


def _peer(
    raw: Any,
    index: int,
    seed: int,
    default_control: Any = "gcc",
    default_nat: NatConfig | None = None,
    default_access: tuple[LinkConditions, LinkConditions] | None = None,
) -> PeerSpec:
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"peers[{index}] must be a table, got {raw!r}")
    _check_keys(raw, _PEER_KEYS, f"peers[{index}]")
    name = _str(raw.get("name", f"peer{index}"), f"peers[{index}].name")
    width, height = raw.get("width", 320), raw.get("height", 240)
    for key, value in (("width", width), ("height", height)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigurationError(f"peers[{index}].{key} must be an integer, got {value!r}")
    fps = _number(raw.get("fps", 15.0), f"peers[{index}].fps", 0.1, 120.0)
    video = raw.get("video", "synthetic")
    audio = raw.get("audio", "tone")
    if not isinstance(video, str) or not isinstance(audio, str):
        raise ConfigurationError(f"peers[{index}].video and .audio must be strings")
    # Each peer's synthetic texture differs, so PSNR compares against the right picture.
    media = MediaSpec(
        video=video, audio=audio, width=width, height=height, fps=fps, seed=seed * 1000 + index
    )
    where = f"peers[{index}].congestion_control"
    if "congestion_control" not in raw:
        where = "congestion_control"
    control = raw.get("congestion_control", default_control)
    if not isinstance(control, str):
        raise ConfigurationError(f"{where} must be a string, got {control!r}")
    try:
        congestion_control = parse_congestion_control(control)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None
    nat = default_nat
    if "nat" in raw:
        nat = _nat_value(raw["nat"], f"peers[{index}].nat")
    access = default_access if nat is not None else None
    if "access_link" in raw:
        access = _access_link(raw["access_link"], f"peers[{index}].access_link")
        if nat is None:
            raise ConfigurationError(
                f"peers[{index}].access_link is the access link of its NAT box, but the "
                "peer is not behind a NAT: give it nat= (or nat.default)"
            )
    return PeerSpec(name, media, congestion_control, nat, access)


def _schedules(steps: Any) -> dict[str, Schedule]:
    """[[link.schedule]] entries, split by direction ("both" by default)."""
    entries = _list(steps, "link.schedule")
    split: dict[str, list[dict[str, Any]]] = {"a_to_b": [], "b_to_a": []}
    for entry in entries:
        entry = dict(entry)
        direction = entry.pop("direction", "both")
        if direction not in _SCHEDULE_DIRECTIONS:
            raise ConfigurationError(
                f"link.schedule direction must be one of {_SCHEDULE_DIRECTIONS}, got {direction!r}"
            )
        for key in ("a_to_b", "b_to_a"):
            if direction in ("both", key):
                split[key].append(entry)
    return {key: parse_schedule(value) for key, value in split.items() if value}


def _switch(raw: Mapping[str, Any], names: list[str]) -> Switch:
    _check_keys(raw, _SWITCH_KEYS, "switch")
    at_s = _number(raw.get("at_s"), "switch.at_s", 0.0, 86400.0)
    peer = raw.get("peer")
    if peer not in names:
        raise ConfigurationError(f"switch.peer must be one of {names}, got {peer!r}")
    source = raw.get("source")
    if source not in ("screen", "camera"):
        raise ConfigurationError(f'switch.source must be "screen" or "camera", got {source!r}')
    return Switch(at_s, str(peer), str(source))


def _record(raw: Mapping[str, Any], names: list[str]) -> Record:
    _check_keys(raw, _RECORD_KEYS, "record")
    peer = raw.get("peer")
    if peer not in names:
        raise ConfigurationError(f"record.peer must be one of {names}, got {peer!r}")
    remote = raw.get("remote")
    if remote is not None and (remote not in names or remote == peer):
        raise ConfigurationError(f"record.remote must be another peer of {names}, got {remote!r}")
    fmt = raw.get("format", "mkv")
    if fmt not in ("mkv", "mp4", "webm"):
        raise ConfigurationError(f'record.format must be "mkv", "mp4" or "webm", got {fmt!r}')
    return Record(str(peer), None if remote is None else str(remote), fmt)
