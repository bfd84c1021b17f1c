"""Field data next to lab runs: Chrome's stats dumps in, lab results out as dumps.

:func:`load_webrtc_internals` reads, plain or gzip-compressed:

* a **chrome://webrtc-internals dump** (the page's "Download the webrtc-internals dump"):
  ``{"PeerConnections": {id: {"url", "rtcConfiguration", "updateLog", "stats"}},
  "getUserMedia", "UserAgent", ...}``, where ``stats`` maps ``"<statId>-<name>"`` to
  ``{"startTime", "endTime", "statsType", "values": "<JSON array>"}``, one series per
  metric of each stat object; the synthetic ``<statId>-timestamp`` series holds the
  object's report times, which its other series are aligned to;
* the same page's **rtcstats dump** ("Download the rtcstats dump"): a ``RTCStatsDump``
  line, a ``{"fileFormat": ...}`` line, then one JSON array per event, ``[event,
  connection, value, ..., delta_ms]``, whose ``getStats`` events hold full reports;
* a **getStats log**: one JSON object per line (or one JSON array of them),
  ``{"timestamp": <ms since the Unix epoch>, "peer": "alice", "remote": "bob",
  "stats": [<stat>, ...]}``; ``stats`` may also be an object of stats by id (what
  ``Object.fromEntries(await pc.getStats())`` gives) or be called ``report``, ``remote``
  may be called ``connection``, a line may be the bare list of stats; without
  ``timestamp`` the stats' latest ``timestamp`` is the sample's time.

Each sample goes through the lab's own converters (:func:`webrtclab.browser.browser_rows`
and :func:`~webrtclab.browser.raw_rows`), so ``stats`` and ``browser_stats`` have the
columns, dtypes and units of ``lab.stats()`` and ``lab.browser_stats()``.

**Who is who.** A dump names its page, not the other end: ``peer`` is the ``user``
query parameter of the connection's page URL (the lab's web client puts it there),
else the URL's host and path, else ``"local"``; ``remote`` is the URL's ``remote``
parameter (dumps written by :func:`export_webrtc_internals` carry it), else the
connection id (``"6-1"``: Chrome's renderer and connection numbers).  Both can be
given instead (``peer=``, ``remotes={"6-1": "bot"}``).

**Time.** ``time_s`` counts from ``origin`` (Unix seconds: pass the lab's start to
put a dump on a lab's time axis); by default from the first thing the file recorded
for any connection (an API call or a stats sample).
"""

from __future__ import annotations

import bisect
import datetime as dt
import gzip
import json
import math
import os
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlencode, urlsplit

import pandas as pd

from .browser import browser_rows, raw_rows
from .exceptions import ConfigurationError
from .experiment.results import Result, ResultWriter, load
from .tables import BROWSER_STATS, EVENTS, FRAMES, LINKS, MESSAGES, RTT, STATS

__all__ = ["FieldData", "export_webrtc_internals", "load_webrtc_internals"]

Row = tuple[Any, ...]
_TIMESTAMP = "-timestamp"
# Stats whose timestamp is when the remote's RTCP report arrived, not the sample's time.
_REMOTE_TYPES = frozenset({"remote-inbound-rtp", "remote-outbound-rtp"})
# Objects in every report of a connection: their times are the sample times.
_SAMPLE_TYPES = frozenset({"peer-connection", "transport"})
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass
class FieldData(Result):
    """A dump loaded as a lab result: ``stats``, ``events``, ``rtt`` as a run's, plus
    ``browser_stats`` (every numeric metric, long format, as ``lab.browser_stats()``).

    ``links``, ``frames`` and ``messages`` are empty (a dump has none); ``metadata``
    has ``source``: the file, its format, the origin of ``time_s`` and each
    connection's id, page URL, peer and remote.
    """

    def write(self, out: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write a result folder that :func:`webrtclab.experiment.load` reads back."""
        writer = ResultWriter(
            Path(out), self.metadata.get("scenario", {}), seed=0, overwrite=overwrite
        )
        writer.metadata["source"] = self.metadata.get("source", {})
        for table, frame in (
            ("stats", self.stats),
            ("events", self.events),
            ("rtt", self.rtt),
            ("browser_stats", self.browser_stats),
        ):
            writer.append(table, _plain_rows(frame))
        writer.finish("completed", summary=self.summary())
        return writer.out


@dataclass
class _Connection:
    """One peer connection of a file: its samples (time in ms, report) and API calls."""

    id: str
    url: str = ""
    peer: str | None = None
    remote: str | None = None
    samples: list[tuple[float, list[dict[str, Any]]]] = field(default_factory=list)
    updates: list[tuple[float, str, Any]] = field(default_factory=list)


# --- reading --------------------------------------------------------------------------------


def load_webrtc_internals(
    path: str | os.PathLike[str],
    *,
    peer: str | None = None,
    remotes: Mapping[str, str] | None = None,
    origin: float | None = None,
) -> FieldData:
    """Load a webrtc-internals dump, an rtcstats dump or a getStats log (see the module
    docstring) with all its connections.

    :param peer: the local peer's name for every connection (default: from the page URL).
    :param remotes: names for connection ids (default: the URL's ``remote``, else the id).
    :param origin: Unix time (s) that ``time_s`` counts from.
    :raises ConfigurationError: a missing or unreadable file, not JSON, no peer
        connections, no stats sample.
    """
    source = Path(path)
    text = _read_text(source)
    if not text.strip():
        raise ConfigurationError(f"{str(source)!r} is empty")
    info: dict[str, Any] = {}
    if text.lstrip().startswith("RTCStatsDump"):
        kind, connections = "rtcstats", _rtcstats_connections(source, text)
    else:
        document = _parse_json(source, text)
        if isinstance(document, dict) and "PeerConnections" in document:
            kind, connections = "webrtc-internals", _internals_connections(source, document)
            info = document
        elif isinstance(document, dict) and not _is_record(document):
            raise ConfigurationError(
                f"{str(source)!r} has no PeerConnections: not a chrome://webrtc-internals "
                f'dump (nor a getStats log, whose records have "stats")'
            )
        else:
            records = document if isinstance(document, list) else [document]
            kind, connections = "getstats-log", _log_connections(source, records)
    if not any(c.samples for c in connections):
        raise ConfigurationError(
            f"{str(source)!r} holds no getStats sample ({len(connections)} connection(s)); "
            "chrome://webrtc-internals records stats only while it is open"
        )
    marker: dict[str, Any] = info["webrtclab"] if isinstance(info.get("webrtclab"), dict) else {}
    if origin is not None:
        origin_ms = float(origin) * 1000
    elif isinstance(marker.get("origin_ms"), int | float):
        origin_ms = float(marker["origin_ms"])
    else:
        origin_ms = min(
            t
            for c in connections
            for t in [s[0] for s in c.samples] + [u[0] for u in c.updates]
            if math.isfinite(t)
        )
    name = str(marker.get("name") or source.name.split(".")[0])
    return _field_data(
        source, kind, connections, info, name, origin_ms, peer=peer, remotes=remotes or {}
    )


def _read_text(source: Path) -> str:
    try:
        data = source.read_bytes()
    except FileNotFoundError:
        raise ConfigurationError(f"no such file: {str(source)!r}") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read {str(source)!r}: {exc}") from None
    if data[:2] == b"\x1f\x8b":  # the page compresses its downloads by default
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise ConfigurationError(f"{str(source)!r} is not valid gzip: {exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigurationError(f"{str(source)!r} is not JSON (not even UTF-8 text)") from None


def _parse_json(source: Path, text: str) -> Any:
    """One JSON document, or the records of a JSON-lines file."""
    try:
        return json.loads(text)
    except ValueError as whole:
        lines = [line for line in text.splitlines() if line.strip()]
        records = []
        for number, line in enumerate(lines, 1):
            try:
                records.append(json.loads(line))
            except ValueError as exc:
                error = whole if number == 1 else exc
                where = "" if number == 1 else f" (line {number})"
                raise ConfigurationError(f"{str(source)!r} is not JSON{where}: {error}") from None
        return records


def _is_record(value: Any) -> bool:
    return isinstance(value, list) or (
        isinstance(value, dict) and ("stats" in value or "report" in value)
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _iso_ms(text: Any) -> int | None:
    """A series' startTime/endTime (a JavaScript Date as JSON) in whole ms, or None."""
    if not isinstance(text, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (moment - _EPOCH) // dt.timedelta(milliseconds=1)


def _iso(ms: float) -> str:
    """``new Date(ms).toISOString()``: whole milliseconds, UTC, ``Z``."""
    moment = _EPOCH + dt.timedelta(milliseconds=math.floor(ms))
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _internals_connections(source: Path, dump: dict[str, Any]) -> list[_Connection]:
    pcs = dump["PeerConnections"]
    if not isinstance(pcs, dict):
        raise ConfigurationError(f'{str(source)!r}: "PeerConnections" is not an object')
    if not pcs:
        raise ConfigurationError(
            f"{str(source)!r} has no peer connection (PeerConnections is empty)"
        )
    connections = []
    for cid, record in pcs.items():
        if not isinstance(record, dict):
            raise ConfigurationError(f"{str(source)!r}: connection {cid!r} is not an object")
        connection = _Connection(str(cid), url=str(record.get("url") or ""))
        connection.samples = _series_samples(source, str(cid), record.get("stats") or {})
        for update in record.get("updateLog") or []:
            moment = _number(update.get("timestamp")) if isinstance(update, dict) else None
            if moment is not None:
                connection.updates.append((moment, str(update.get("type")), update.get("value")))
        connections.append(connection)
    return connections


def _split_key(key: str, ids: set[str]) -> tuple[str, str]:
    """``"<statId>-<name>"`` split at the dash after a known stat id (ids have dashes too)."""
    at = key.rfind("-")
    while at > 0:
        if key[:at] in ids:
            return key[:at], key[at + 1 :]
        at = key.rfind("-", 0, at)
    head, _, name = key.rpartition("-")
    return head, name


def _positions(stamps: Sequence[float], count: int, start: int | None, end: int | None) -> range:
    """Where a series of ``count`` values sits among its stat object's report times.

    A metric can be missing from some reports (``roundTripTime`` before the first
    RTCP report): its series is shorter, and its start and end times (whole ms) say
    where it lies; without a match, it is taken to run to the last report.
    """
    total = len(stamps)
    if count >= total:
        return range(total)
    if start is not None and end is not None:
        for first in range(total - count, -1, -1):
            if math.floor(stamps[first]) == start and math.floor(stamps[first + count - 1]) == end:
                return range(first, first + count)
    return range(total - count, total)


def _series_samples(source: Path, cid: str, stats: Any) -> list[tuple[float, list[dict[str, Any]]]]:
    """A webrtc-internals connection's series back into reports, one per sample time."""
    if not isinstance(stats, dict):
        raise ConfigurationError(f"{str(source)!r}: the stats of {cid!r} are not an object")
    parsed: dict[str, tuple[list[Any], Any, int | None, int | None]] = {}
    for key, entry in stats.items():
        if not isinstance(entry, dict) or "values" not in entry:
            continue  # an empty series is written as {}
        values = entry["values"]
        if isinstance(values, str):
            try:
                values = json.loads(values)
            except ValueError:
                raise ConfigurationError(
                    f"{str(source)!r}: series {key!r} of {cid!r} has values that are not JSON"
                ) from None
        if isinstance(values, list) and values:
            start, end = _iso_ms(entry.get("startTime")), _iso_ms(entry.get("endTime"))
            parsed[key] = (values, entry.get("statsType"), start, end)
    ids = {key[: -len(_TIMESTAMP)] for key in parsed if key.endswith(_TIMESTAMP)}
    metrics: dict[str, list[tuple[str, list[Any], int | None, int | None]]] = {}
    types: dict[str, str] = {}
    for key, (values, stats_type, start, end) in parsed.items():
        stat_id, name = _split_key(key, ids)
        if isinstance(stats_type, str):
            types.setdefault(stat_id, stats_type)
        if name == "timestamp" and stat_id in ids:
            continue
        if name.startswith("["):
            continue  # the page's own derived rates ("[bytesSent_in_bits/s]"): not getStats
        metrics.setdefault(stat_id, []).append((name, values, start, end))
    objects: dict[str, list[dict[str, Any]]] = {}
    for stat_id, series in metrics.items():
        if stat_id in ids:
            stamps = [_number(v) for v in parsed[stat_id + _TIMESTAMP][0]]
            if any(s is None for s in stamps):
                continue
            times = [float(s) for s in stamps if s is not None]
        else:
            # No timestamp series (older dumps): spread the longest series over its span.
            _, values, start, end = max(series, key=lambda s: len(s[1]))
            if start is None or end is None:
                continue
            step = (end - start) / (len(values) - 1) if len(values) > 1 else 0.0
            times = [start + i * step for i in range(len(values))]
        made: list[dict[str, Any]] = [{"id": stat_id, "timestamp": t} for t in times]
        for name, values, start, end in series:
            values = values[-len(times) :]
            places = _positions(times, len(values), start, end)
            for index, value in zip(places, values, strict=True):
                if value is not None:
                    made[index][name] = value
        for stat in made:
            stat["type"] = types.get(stat_id, stat.get("type"))
        objects[stat_id] = made
    # The samples: the times of the objects every report has (Chrome stamps one report's
    # objects alike); other objects go to the nearest sample, remote-* ones (stamped when
    # their RTCP report arrived) to the first sample at or after that time.
    every = [stat for made in objects.values() for stat in made]
    sample_times = sorted({s["timestamp"] for s in every if s["type"] in _SAMPLE_TYPES})
    if not sample_times:
        sample_times = sorted({s["timestamp"] for s in every if s["type"] not in _REMOTE_TYPES})
    reports: list[list[dict[str, Any]]] = [[] for _ in sample_times]
    for made in objects.values():
        index = 0
        for stat in made:
            index = _place(sample_times, stat["timestamp"], index, stat["type"] in _REMOTE_TYPES)
            if index >= len(sample_times):
                break
            reports[index].append(stat)
            index += 1
    return [(t, report) for t, report in zip(sample_times, reports, strict=True) if report]


def _place(times: Sequence[float], stamp: float, lo: int, at_or_after: bool) -> int:
    """Index of the sample (from ``lo`` on) a stat object stamped ``stamp`` belongs to."""
    if at_or_after:
        return bisect.bisect_left(times, stamp - 0.5, lo=lo)
    index = bisect.bisect_left(times, stamp, lo=lo)
    if index > lo and (index == len(times) or stamp - times[index - 1] < times[index] - stamp):
        index -= 1
    return index


def _report(value: Any) -> list[dict[str, Any]] | None:
    """A getStats report given as a list of stats or an object of stats by id (without
    the derived ``"[...]"`` rates webrtc-internals adds to the reports it logs)."""
    if isinstance(value, dict):
        stats = [{"id": key, **stat} for key, stat in value.items() if isinstance(stat, dict)]
    elif isinstance(value, list):
        stats = [stat for stat in value if isinstance(stat, dict)]
    else:
        return None
    return [{k: v for k, v in stat.items() if not str(k).startswith("[")} for stat in stats]


def _report_time(report: list[dict[str, Any]]) -> float | None:
    stamps = [t for t in (_number(s.get("timestamp")) for s in report) if t is not None]
    return max(stamps) if stamps else None


def _rtcstats_connections(source: Path, text: str) -> list[_Connection]:
    lines = [line for line in text.splitlines() if line.strip()]
    connections: dict[str, _Connection] = {}
    now = 0.0  # each event carries the ms since the previous one
    for number, line in enumerate(lines[2:], 3):
        try:
            event = json.loads(line)
        except ValueError as exc:
            raise ConfigurationError(f"{str(source)!r} line {number} is not JSON: {exc}") from None
        if not isinstance(event, list) or len(event) < 3:
            raise ConfigurationError(f"{str(source)!r} line {number} is not an rtcstats event")
        delta = _number(event[-1]) if len(event) > 3 else None
        now += delta or 0.0
        name, cid, value = event[0], event[1], event[2]
        if cid is None or not isinstance(name, str) or name.startswith("navigator."):
            continue
        connection = connections.setdefault(str(cid), _Connection(str(cid)))
        if name == "create" and len(event) >= 5 and isinstance(event[3], str):
            connection.url = event[3]
        elif name == "getStats":
            report = _report(value)
            if report:
                connection.samples.append((_report_time(report) or now, report))
        else:
            connection.updates.append((now, name, value))
    return list(connections.values())


def _log_connections(source: Path, records: Iterable[Any]) -> list[_Connection]:
    connections: dict[tuple[str | None, str], _Connection] = {}
    for number, record in enumerate(records, 1):
        meta = record if isinstance(record, dict) else {}
        report = _report(meta.get("stats", meta.get("report")) if meta else record)
        if report is None:
            raise ConfigurationError(
                f'{str(source)!r} record {number}: no getStats report (a "stats" list or object)'
            )
        stamp = _number(meta.get("timestamp"))
        moment = stamp if stamp is not None else _report_time(report)
        if moment is None:
            raise ConfigurationError(
                f'{str(source)!r} record {number}: no "timestamp" and no stat with one'
            )
        remote = str(meta.get("remote", meta.get("connection", "pc")))
        peer = str(meta["peer"]) if meta.get("peer") is not None else None
        key = (peer, remote)
        connection = connections.setdefault(key, _Connection(remote, peer=peer, remote=remote))
        connection.samples.append((moment, report))
    return list(connections.values())


def _query(url: str, name: str) -> str | None:
    values = parse_qs(urlsplit(url).query).get(name)
    return values[0] if values else None


def _peer_of(url: str) -> str:
    user = _query(url, "user")
    if user:
        return user
    parts = urlsplit(url)
    return (parts.netloc + parts.path).rstrip("/") or "local"


def _update_value(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _event(kind: str, value: Any) -> tuple[str, str] | None:
    """An API call or callback of the dump as a lab event (connection states, tracks)."""
    value = _update_value(value)
    if kind in ("onconnectionstatechange", "connectionstatechange") and isinstance(value, str):
        return "connection-state", value
    if kind == "ontrack":
        if isinstance(value, dict) and isinstance(value.get("kind"), str):
            return "track", value["kind"]
        if isinstance(value, list) and value and isinstance(value[0], str):
            return "track", value[0]  # rtcstats: [kind, id, label, ...streams]
    return None


def _field_data(
    source: Path,
    kind: str,
    connections: list[_Connection],
    info: Mapping[str, Any],
    name: str,
    origin_ms: float,
    *,
    peer: str | None,
    remotes: Mapping[str, str],
) -> FieldData:
    stats_rows: list[Row] = []
    raw: list[Row] = []
    events: list[Row] = []
    rtt: list[Row] = []
    described = []
    for connection in connections:
        local = peer or connection.peer or _peer_of(connection.url)
        remote = (
            remotes.get(connection.id)
            or connection.remote
            or _query(connection.url, "remote")
            or connection.id
        )
        described.append(
            {"id": connection.id, "url": connection.url, "peer": local, "remote": remote}
        )
        previous: dict[tuple[str, str, str], Any] = {}
        measured: set[tuple[str, float]] = set()
        for moment, report in sorted(connection.samples, key=lambda s: s[0]):
            now = (moment - origin_ms) / 1000
            stats_rows.extend(browser_rows(local, {remote: report}, now, previous))
            raw.extend(raw_rows(local, {remote: report}, now))
            for stat in report:
                # Each RTCP report's RTT once, at the time it arrived (the rtt table).
                value = _number(stat.get("roundTripTime"))
                stamp = _number(stat.get("timestamp"))
                kind_of = str(stat.get("kind", ""))
                if stat.get("type") != "remote-inbound-rtp" or value is None or stamp is None:
                    continue
                if (kind_of, stamp) not in measured:
                    measured.add((kind_of, stamp))
                    rtt.append(((stamp - origin_ms) / 1000, local, remote, kind_of, value * 1000))
        seen: set[tuple[float, str, str]] = set()
        for moment, update, value in connection.updates:
            found = _event(update, value)
            if found is not None and (moment, *found) not in seen:
                # The page logs what happened before it opened twice: once is enough.
                seen.add((moment, *found))
                events.append(((moment - origin_ms) / 1000, local, remote, *found))
    stats_rows.sort(key=lambda row: row[0])
    raw.sort(key=lambda row: row[0])
    events.sort(key=lambda row: row[0])
    times = [row[0] for row in stats_rows]
    metadata: dict[str, Any] = {
        "format": 1,
        "status": "completed",
        "scenario": {"name": name},
        "source": {
            "file": str(source),
            "format": kind,
            "origin_unix_s": origin_ms / 1000,
            "user_agent": info.get("UserAgent"),
            "connections": described,
        },
        "started": _iso(origin_ms + min(times, default=0.0) * 1000),
        "ended": _iso(origin_ms + max(times, default=0.0) * 1000),
        "summary": {},
    }
    return FieldData(
        source,
        metadata,
        stats=STATS.frame(stats_rows),
        links=LINKS.frame(),
        events=EVENTS.frame(events),
        frames=FRAMES.frame(),
        messages=MESSAGES.frame(),
        rtt=RTT.frame(rtt),
        browser_stats=BROWSER_STATS.frame(raw),
    )


def _plain_rows(frame: pd.DataFrame) -> list[Row]:
    """A table's rows as plain Python values (None where missing), as writers journal them."""
    plain = frame.astype(object).where(frame.notna(), None)
    return list(plain.itertuples(index=False, name=None))


# --- writing --------------------------------------------------------------------------------


def export_webrtc_internals(
    source: Result | pd.DataFrame | str | os.PathLike[str],
    out: str | os.PathLike[str],
) -> Path:
    """Write a lab run as a chrome://webrtc-internals dump (gzip if ``out`` ends in ``.gz``).

    ``source`` is a result (or its folder) or a stats table such as ``lab.stats()``.
    Each (peer, remote) becomes a connection whose URL carries both names; each
    stream's rows become the getStats objects Chrome would have reported
    (outbound-rtp with its remote-inbound-rtp, inbound-rtp, the selected
    candidate-pair, its local candidate, the transport), one sample per row time,
    and connection-state and track events its ``updateLog``.  Loaded back with
    :func:`load_webrtc_internals`, the table has the same numbers, except what
    getStats cannot say: rates on a stream's first row (no interval yet), audio frame
    rates, a zero ``target_kbps``.
    """
    if isinstance(source, pd.DataFrame):
        stats, events, name, origin_ms = source, EVENTS.frame(), "lab", None
    else:
        result = source if isinstance(source, Result) else load(Path(source))
        stats, events, name = result.stats, result.events, result.name
        origin_ms = _origin_of(result.metadata)
    missing = [c for c in ("time_s", "peer", "remote", "direction", "kind") if c not in stats]
    if missing:
        raise ConfigurationError(f"cannot export stats without the columns {missing}")
    if stats.empty:
        raise ConfigurationError("nothing to export: the stats table is empty")
    if origin_ms is None:
        origin_ms = time.time() * 1000 - float(stats["time_s"].max()) * 1000
    connections: dict[str, Any] = {}
    peers = sorted(str(p) for p in stats["peer"].dropna().unique())
    for number, peer in enumerate(peers, 1):
        mine = stats[stats["peer"] == peer]
        for index, remote in enumerate(sorted(str(r) for r in mine["remote"].dropna().unique()), 1):
            rows = mine[mine["remote"] == remote].sort_values("time_s", kind="stable")
            reports = _reports(rows, origin_ms)
            theirs = events[(events["peer"] == peer) & (events["remote"] == remote)]
            connections[f"{number}-{index}"] = {
                "pid": 0,
                "url": "webrtclab://lab/?" + urlencode({"user": peer, "remote": remote}),
                "rtcConfiguration": "{}",
                "constraints": "",
                "updateLog": _update_log(theirs, origin_ms),
                "stats": _series(reports),
            }
    dump = {
        "getUserMedia": [],
        "PeerConnections": connections,
        "UserAgent": "webrtclab",
        "timestamp": time.time() * 1000,
        # Not Chrome's: the lab's time origin and run name, so a round trip keeps both.
        "webrtclab": {"origin_ms": origin_ms, "name": name},
    }
    target = Path(out)
    data = json.dumps(dump, indent=1, allow_nan=False).encode()
    if target.suffix == ".gz":
        data = gzip.compress(data)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


def _origin_of(metadata: Mapping[str, Any]) -> float | None:
    source = metadata.get("source")
    if isinstance(source, dict) and isinstance(source.get("origin_unix_s"), int | float):
        return float(source["origin_unix_s"]) * 1000
    started = _iso_ms(metadata.get("started"))
    return float(started) if started is not None else None


def _clean(value: Any) -> Any:
    """A table value as JSON: None where missing, plain Python numbers."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value.item() if hasattr(value, "item") else value


def _scaled(value: Any, factor: float) -> float | None:
    number = _clean(value)
    return float(number) * factor if number is not None else None


def _reports(rows: pd.DataFrame, origin_ms: float) -> list[tuple[float, list[dict[str, Any]]]]:
    """One (peer, remote)'s stats rows as the getStats reports Chrome would have made."""
    # Per stream: its last report time, sample time, bytes, and running totals of the
    # retransmitted and wire bytes (the rows keep only their rates).
    streams: dict[tuple[str, str], tuple[float, float, int, float, float]] = {}
    reports = []
    for key, sample in rows.groupby("time_s", sort=True):
        moment = origin_ms + float(cast(float, key)) * 1000
        report: list[dict[str, Any]] = []
        pair_rtt = estimate = candidate = None
        for row in cast(list[dict[str, Any]], sample.to_dict("records")):
            kind, sending = str(row["kind"]), row["direction"] == "send"
            tag = kind[:1].upper()
            candidate = _clean(row.get("candidate_type")) or candidate
            fps = _clean(row.get("frames_per_s")) if kind == "video" else None
            nbytes, bitrate = int(row["bytes"]), _clean(row.get("bitrate_kbps"))
            state = streams.get((str(row["direction"]), kind))
            stamp, rtx, wire = moment, 0.0, float(nbytes)
            if state is not None:
                last, last_moment, last_bytes, rtx, wire = state
                # A rate was measured over its source's report interval (Chrome's report
                # times, not the lab's sample times): the interval it implies keeps it.
                if bitrate and nbytes > last_bytes:
                    stamp = last + (nbytes - last_bytes) * 8 / bitrate  # kbit/s = bit/ms
                else:
                    stamp = last + moment - last_moment
                rtx += (_clean(row.get("rtx_kbps")) or 0.0) * (stamp - last) / 8
                wire += (_clean(row.get("wire_kbps")) or 0.0) * (stamp - last) / 8
            streams[(str(row["direction"]), kind)] = (stamp, moment, nbytes, rtx, wire)
            if sending:
                report.append(
                    {
                        "id": f"OT{tag}",
                        "type": "outbound-rtp",
                        "timestamp": stamp,
                        "kind": kind,
                        "bytesSent": nbytes,
                        "packetsSent": _clean(row["packets"]),
                        "framesEncoded": _clean(row.get("frames")),
                        "framesPerSecond": fps,
                        "targetBitrate": _scaled(row.get("target_kbps"), 1000),
                        "retransmittedBytesSent": round(rtx),
                        "headerBytesSent": round(wire) - nbytes,
                        "remoteId": f"RI{tag}",
                        "[bytesSent_in_bits/s]": _scaled(bitrate, 1000),
                    }
                )
                report.append(
                    {
                        "id": f"RI{tag}",
                        "type": "remote-inbound-rtp",
                        "kind": kind,
                        "roundTripTime": _scaled(row.get("rtt_ms"), 1e-3),
                        "fractionLost": _clean(row.get("loss_fraction")),
                        "jitter": _scaled(row.get("jitter_ms"), 1e-3),
                        "packetsLost": _clean(row.get("packets_lost")),
                        "localId": f"OT{tag}",
                    }
                )
            else:
                if pair_rtt is None or kind == "video":
                    pair_rtt = _scaled(row.get("rtt_ms"), 1e-3)
                    estimate = _scaled(row.get("estimate_kbps"), 1000)
                report.append(
                    {
                        "id": f"IT{tag}",
                        "type": "inbound-rtp",
                        "timestamp": stamp,
                        "kind": kind,
                        "bytesReceived": nbytes,
                        "packetsReceived": _clean(row["packets"]),
                        "packetsLost": _clean(row.get("packets_lost")),
                        "framesDecoded": _clean(row.get("frames")),
                        "framesPerSecond": fps,
                        "jitter": _scaled(row.get("jitter_ms"), 1e-3),
                        "[bytesReceived_in_bits/s]": _scaled(bitrate, 1000),
                    }
                )
        report += [
            {
                "id": "CP",
                "type": "candidate-pair",
                "localCandidateId": "L",
                "state": "succeeded",
                "nominated": True,
                "currentRoundTripTime": pair_rtt,
                "availableIncomingBitrate": estimate,
            },
            {"id": "L", "type": "local-candidate", "candidateType": candidate},
            {"id": "T", "type": "transport", "selectedCandidatePairId": "CP"},
        ]
        reports.append((moment, report))
    return reports


def _series(reports: Sequence[tuple[float, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Reports as webrtc-internals keeps them: one series per (stat object, metric).

    Every series of an object has a point per report it is in (null where the metric
    is missing), so its ``<id>-timestamp`` series places each point.
    """
    points: dict[str, tuple[str, list[float], list[Any]]] = {}
    for moment, report in reports:
        for stat in report:
            stamp = stat.get("timestamp", moment)
            for name, value in {**stat, "timestamp": stamp}.items():
                if name == "id":
                    continue
                _, times, values = points.setdefault(
                    f"{stat['id']}-{name}", (str(stat["type"]), [], [])
                )
                times.append(stamp)
                values.append(value)
    return {
        key: {
            "startTime": _iso(times[0]),
            "endTime": _iso(times[-1]),
            "statsType": stats_type,
            "values": json.dumps(values, allow_nan=False),
        }
        for key, (stats_type, times, values) in points.items()
    }


def _update_log(events: pd.DataFrame, origin_ms: float) -> list[dict[str, Any]]:
    """Connection-state and track events as the updateLog entries Chrome writes."""
    log = []
    rows = events.sort_values("time_s", kind="stable").to_dict("records")
    for row in cast(list[dict[str, Any]], rows):
        moment = origin_ms + float(row["time_s"]) * 1000
        detail = str(row["detail"])
        if row["event"] == "connection-state":
            log.append(
                {
                    "type": "onconnectionstatechange",
                    "value": json.dumps(detail),
                    "timestamp": moment,
                }
            )
        elif row["event"] == "track":
            track = {"kind": detail, "id": "", "label": "", "streams": []}
            log.append({"type": "ontrack", "value": json.dumps(track), "timestamp": moment})
    return log
