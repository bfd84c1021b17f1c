"""Result folders that survive crashes, and loading them back.

A run writes, in its folder:

==================  =====================================================================
``metadata.json``   the scenario as run, package versions, seed, host, times, ``status``
                    (``running``, ``completed``, ``interrupted``, ``failed``) and summary
``<table>.jsonl``   the journal: every batch of rows is appended and flushed as it is
                    sampled (one JSON array per row), so a SIGKILL loses nothing that was
                    measured; a torn last line is ignored on load
``<table>.parquet`` the same rows as Parquet, rewritten atomically every few seconds and
                    at the end; once a run completes, the journals are removed
==================  =====================================================================

Tables: ``stats`` (:data:`webrtclab.stats.STATS_COLUMNS`), ``links``
(:data:`webrtclab.netem.relay.LINK_COLUMNS`), ``events``
(:data:`webrtclab.events.EVENT_COLUMNS`), ``frames`` and ``messages``
(:mod:`webrtclab.quality`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import platform
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import IO, Any

import msgspec
import pandas as pd

from ..exceptions import ConfigurationError
from ..tables import SCHEMAS, Feed

__all__ = ["Result", "ResultWriter", "TABLES", "load"]

logger = logging.getLogger(__name__)


#: the columns of every table of a result folder (declared in :mod:`webrtclab.tables`)
TABLES: dict[str, list[str]] = {name: schema.columns for name, schema in SCHEMAS.items()}
COMPACT_EVERY_S = 5.0
_encoder = msgspec.json.Encoder()
_VERSIONED = ("webrtclab", "aiortc", "aioice", "av", "aiohttp", "numpy", "pandas", "pyarrow")


def _versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in _VERSIONED:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _frame(table: str, rows: Sequence[Sequence[Any]]) -> pd.DataFrame:
    """Rows of ``table`` as a DataFrame with its declared dtypes."""
    return SCHEMAS[table].frame(rows)


class ResultWriter:
    """Writes one run's result folder incrementally (see the module docstring).

    :param out: the folder; created if missing, refused if it holds another result.
    :param scenario: the scenario mapping as run (recorded in ``metadata.json``).
    """

    def __init__(
        self,
        out: str | Path,
        scenario: Mapping[str, Any],
        *,
        seed: int,
        overwrite: bool = False,
        compact_every_s: float = COMPACT_EVERY_S,
    ) -> None:
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise ConfigurationError(f"result path {str(self.out)!r} is not a directory")
        if (self.out / "metadata.json").exists() and not overwrite:
            raise ConfigurationError(
                f"{str(self.out)!r} already holds a result; choose another --out"
            )
        self.out.mkdir(parents=True, exist_ok=True)
        self.compact_every_s = compact_every_s
        self.rows: dict[str, list[Sequence[Any]]] = {name: [] for name in list(TABLES)}
        self._journals: dict[str, IO[bytes]] = {}
        for name in self.rows:
            for suffix in (".jsonl", ".parquet"):
                (self.out / f"{name}{suffix}").unlink(missing_ok=True)
        self._last_compact = time.monotonic()
        self._dirty = False
        self._finished = False
        self.metadata: dict[str, Any] = {
            "format": 1,
            "status": "running",
            "scenario": dict(scenario),
            "seed": seed,
            "host": socket.gethostname(),
            "platform": platform.platform(),
            "versions": _versions(),
            "started": _now_iso(),
            "ended": None,
            "error": None,
            "summary": {},
        }
        self._write_metadata()

    def _write_metadata(self) -> None:
        text = json.dumps(self.metadata, indent=2, default=str, allow_nan=False)
        _atomic_write(self.out / "metadata.json", text.encode())

    def append(self, table: str, rows: Iterable[Sequence[Any]]) -> None:
        """Journal ``rows`` of ``table`` now (flushed to the OS before returning)."""
        rows = list(rows)
        if not rows or self._finished:
            return
        journal = self._journals.get(table)
        if journal is None:
            if table not in self.rows:
                raise ConfigurationError(f"unknown result table {table!r}")
            journal = self._journals[table] = (self.out / f"{table}.jsonl").open("ab")
        journal.write(b"".join(_encoder.encode(list(row)) + b"\n" for row in rows))
        journal.flush()  # in the kernel's hands: survives SIGKILL of this process
        self.rows[table].extend(rows)
        self._dirty = True
        if time.monotonic() - self._last_compact >= self.compact_every_s:
            self.compact()

    def follow(self, feed: Feed[Any]) -> Callable[[], None]:
        """Journal the rows of ``feed`` (a table of the same name) as they come.

        Returns the unsubscribe function.
        """
        if feed.schema.name not in self.rows:
            raise ConfigurationError(f"unknown result table {feed.schema.name!r}")
        return feed.subscribe(lambda rows: self.append(feed.schema.name, rows))

    def compact(self) -> None:
        """Rewrite every table's Parquet file from the rows so far (atomically)."""
        self._last_compact = time.monotonic()
        if not self._dirty:
            return
        # Every table, empty ones too: a folder's layout does not depend on what happened.
        for table, rows in self.rows.items():
            tmp = self.out / f"{table}.parquet.tmp"
            _frame(table, rows).to_parquet(tmp, index=False)
            os.replace(tmp, self.out / f"{table}.parquet")
        self._dirty = False

    def result(self) -> Result:
        """The rows written so far as a :class:`Result`, without reading the folder."""
        tables = {name: _frame(name, rows) for name, rows in self.rows.items()}
        return Result(
            self.out,
            self.metadata,
            stats=tables["stats"],
            links=tables["links"],
            events=tables["events"],
            frames=tables["frames"],
            messages=tables["messages"],
            rtt=tables["rtt"],
        )

    def finish(
        self, status: str, *, error: str | None = None, summary: Mapping[str, float] | None = None
    ) -> None:
        """Final Parquet files and metadata; journals removed once completed. Idempotent."""
        if self._finished:
            return
        self._finished = True
        for journal in self._journals.values():
            journal.close()
        self._dirty = True
        self.compact()
        self.metadata.update(
            status=status,
            ended=_now_iso(),
            error=error,
            summary={k: (None if _nan(v) else v) for k, v in (summary or {}).items()},
        )
        self._write_metadata()
        if status == "completed":
            for table in self.rows:
                (self.out / f"{table}.jsonl").unlink(missing_ok=True)


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


@dataclass
class Result:
    """A result folder loaded back: metadata plus one DataFrame per table."""

    path: Path
    metadata: dict[str, Any]
    stats: pd.DataFrame
    links: pd.DataFrame
    events: pd.DataFrame
    frames: pd.DataFrame
    messages: pd.DataFrame
    # The RTT of every RTCP report (stats' rtt_ms is aiortc's smoothed value).
    rtt: pd.DataFrame = field(default_factory=lambda: SCHEMAS["rtt"].frame())
    # What every NAT box did (see Lab.nat_bindings); empty without NATs.
    nat_bindings: pd.DataFrame = field(default_factory=lambda: SCHEMAS["nat_bindings"].frame())
    # Browser metrics in long format (field data; scenarios have no browser peers).
    browser_stats: pd.DataFrame = field(default_factory=lambda: SCHEMAS["browser_stats"].frame())
    recordings: list[Path] = field(default_factory=list)

    @property
    def status(self) -> str:
        return str(self.metadata.get("status"))

    @property
    def name(self) -> str:
        return str(self.metadata.get("scenario", {}).get("name", self.path.name))

    def summary(self) -> dict[str, float]:
        """Headline metrics of the run (see :func:`summarize`)."""
        from .summary import summarize

        return summarize(self)


def _read_journal(path: Path, columns: list[str]) -> list[list[Any]]:
    rows = []
    with path.open("rb") as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                break  # the line being written when the process died
            # Folders written before a table gained columns have shorter rows.
            if isinstance(row, list) and 0 < len(row) <= len(columns):
                rows.append(row + [None] * (len(columns) - len(row)))
    return rows


def _load_table(out: Path, table: str) -> pd.DataFrame:
    columns = TABLES[table]
    journal = out / f"{table}.jsonl"
    parquet = out / f"{table}.parquet"
    if journal.exists():
        # The journal is complete up to the last flushed batch; Parquet may lag.
        rows = _read_journal(journal, columns)
        for row in rows:
            row[:] = [math.nan if v is None else v for v in row]
        return _frame(table, rows)
    if parquet.exists():
        frame = pd.read_parquet(parquet)
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            # Written before the table gained these columns: they were not measured.
            frame = pd.concat([frame, _frame(table, [])[missing]], axis=1)
        return frame
    return _frame(table, [])


def load(path: str | Path) -> Result:
    """Load a result folder written by ``webrtclab run`` (complete or not)."""
    out = Path(path)
    meta_path = out / "metadata.json"
    if not meta_path.exists():
        raise ConfigurationError(
            f"{str(out)!r} is not a webrtclab result folder (no metadata.json)"
        )
    try:
        metadata = json.loads(meta_path.read_text())
    except ValueError as exc:
        raise ConfigurationError(f"{str(meta_path)!r} is not valid JSON: {exc}") from None
    tables = {table: _load_table(out, table) for table in list(TABLES)}
    recordings = sorted(p for p in out.glob("recording-*") if p.is_file())
    return Result(out, metadata, recordings=recordings, **tables)
