"""Sweeps: every combination of a grid of scenario overrides, in parallel processes or on Dask.

Each run is an ordinary result folder under the sweep folder; ``summary.parquet`` (and
``summary.csv``) has one row per run: ``run``, ``path``, ``status``, ``error``, one column
per grid key (named after it, e.g. ``link.loss``) and the headline metrics of
:data:`webrtclab.experiment.summary.SUMMARY_METRICS`.  The summary is rewritten after
every finished run, and a sweep started again on the same folder skips the runs that
completed, so an interrupted sweep resumes where it stopped.

Runs are real-time calls, so a sweep is bounded by wall clock and CPU, not arithmetic:
``workers`` caps how many calls run at once, and by default it is the number of cores
(see the sweep benchmark for how many calls this machine sustains without distorting
what they measure).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import logging
import multiprocessing
import os
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from ..exceptions import ConfigurationError
from .scenario import Scenario, load_scenario
from .summary import SUMMARY_METRICS

__all__ = ["default_workers", "grid_points", "parse_grid", "sweep"]

logger = logging.getLogger(__name__)

Grid = dict[str, list[Any]]


def default_workers() -> int:
    """Concurrent runs by default: one call per core."""
    return max(1, os.cpu_count() or 1)


def _value(text: str) -> Any:
    text = text.strip()
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_grid(items: Iterable[str]) -> Grid:
    """``["link.loss=0,0.02", "link.delay_ms=20,80"]`` -> ``{"link.loss": [0, 0.02], ...}``."""
    grid: Grid = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise ConfigurationError(f"a grid item must look like key=v1,v2,..., got {item!r}")
        if key in grid:
            raise ConfigurationError(f"grid key {key!r} given twice")
        grid[key] = [_value(v) for v in values.split(",")]
    return grid


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination, the last key varying fastest."""
    keys = list(grid)
    for key in keys:
        if not grid[key]:
            raise ConfigurationError(f"grid key {key!r} has no values")
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


def _run_name(index: int, point: Mapping[str, Any]) -> str:
    label = "_".join(f"{k}={v}" for k, v in point.items())
    return f"run-{index:03d}" + (f"_{re.sub(r'[^A-Za-z0-9.=_-]+', '-', label)}" if label else "")


def run_point(data: Mapping[str, Any], point: Mapping[str, Any], out: str) -> dict[str, Any]:
    """Run one grid point in this process; never raises (errors land in the row).

    Module-level so that process pools and Dask workers can pickle it.
    """
    from .results import load
    from .runner import run

    row: dict[str, Any] = {"path": out, "status": "failed", "error": None}
    try:
        meta = Path(out) / "metadata.json"
        if meta.exists() and json.loads(meta.read_text()).get("status") == "completed":
            result = load(out)  # resumed sweep: this run is done
        else:
            scenario = Scenario.from_mapping(data).with_overrides(point)
            result = run(scenario, out, progress=False, overwrite=True)
        row["status"] = result.status
        row.update(result.summary())
    except BaseException as exc:  # one bad run must not end the sweep
        row["error"] = f"{type(exc).__name__}: {exc}"
        logger.warning("run %s failed: %s", out, row["error"])
    return row


def _write_summary(out: Path, rows: list[dict[str, Any]], keys: list[str]) -> pd.DataFrame:
    columns = ["run", "path", "status", "error", *keys, *SUMMARY_METRICS]
    ordered: list[dict[str, Any]] = sorted(rows, key=lambda r: str(r["run"]))
    frame = pd.DataFrame(ordered, columns=columns)
    frame.to_parquet(out / "summary.parquet.tmp", index=False)
    os.replace(out / "summary.parquet.tmp", out / "summary.parquet")
    frame.to_csv(out / "summary.csv.tmp", index=False)
    os.replace(out / "summary.csv.tmp", out / "summary.csv")
    return frame


def sweep(
    scenario: Scenario | str | Path,
    grid: Mapping[str, Sequence[Any]],
    out: str | Path,
    *,
    workers: int | None = None,
    scheduler: str | Any | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run every grid point of ``scenario`` and return the summary table.

    :param grid: dotted scenario keys -> values, e.g. ``{"link.loss": [0, 0.05]}``.
    :param workers: concurrent runs in local processes (default: one per core).
    :param scheduler: a Dask scheduler address (or a ``distributed.Client``): runs go to
        its workers instead of local processes.
    """
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    points = grid_points(grid)
    for point in points:  # refuse a bad grid before running anything
        scenario.with_overrides(point)
    if workers is not None and workers < 1:
        raise ConfigurationError(f"workers must be >= 1, got {workers}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"sweep path {str(out)!r} is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    data = dict(scenario.data)
    keys = list(grid)
    jobs = [
        (_run_name(i, point), point, str(out / _run_name(i, point)))
        for i, point in enumerate(points)
    ]
    rows: list[dict[str, Any]] = []

    def finished(name: str, point: Mapping[str, Any], row: dict[str, Any]) -> None:
        rows.append({"run": name, **point, **row})
        _write_summary(out, rows, keys)

    bar = tqdm(total=len(jobs), unit="run", disable=not progress, desc="sweep")
    try:
        if scheduler is not None:
            _on_dask(scheduler, data, jobs, finished, bar)
        else:
            count = min(workers or default_workers(), len(jobs))
            # spawn: a forked child would inherit this process's event loop and threads.
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(count, mp_context=context) as pool:
                futures = {
                    pool.submit(run_point, data, point, path): (name, point)
                    for name, point, path in jobs
                }
                for future in concurrent.futures.as_completed(futures):
                    name, point = futures[future]
                    finished(name, point, future.result())
                    bar.update()
    finally:
        bar.close()
    return _write_summary(out, rows, keys)


def _on_dask(
    scheduler: str | Any,
    data: Mapping[str, Any],
    jobs: list[tuple[str, dict[str, Any], str]],
    finished: Any,
    bar: tqdm[Any],
) -> None:
    try:
        from distributed import Client, as_completed
    except ImportError:  # pragma: no cover - the cluster extra is missing
        raise ConfigurationError(
            "sweeps on a Dask cluster need the 'distributed' package "
            "(pip install 'webrtclab[cluster]')"
        ) from None
    own = isinstance(scheduler, str)
    client: Any = Client(scheduler) if own else scheduler
    try:
        futures = {
            # A fresh key: two runs of the same point are two experiments, not a cache hit.
            client.submit(
                run_point, data, point, path, key=f"webrtclab-{name}-{uuid.uuid4().hex}"
            ): (
                name,
                point,
            )
            for name, point, path in jobs
        }
        for future in as_completed(list(futures)):
            name, point = futures[future]
            finished(name, point, future.result())
            bar.update()
    finally:
        if own:
            client.close()
