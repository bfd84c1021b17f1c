"""Evaluation in one call: estimators x traces as a sweep, a tidy table and plots.

Every cell is a real call through the emulator (``alice`` sends 320x240 video and
audio to ``bob``, who sends audio; the link follows the trace both ways), run by the
sweep machinery (:func:`webrtclab.experiment.sweep`): parallel, on Dask if asked, and
resumable -- run it again on the same folder and finished cells are read back, not
rerun.  ``evaluation.csv`` / ``evaluation.parquet`` hold the table
(:data:`EVALUATION_METRICS` per estimator and trace), ``evaluation.png`` the plots.

Estimators are congestion-control strings (``"gcc"``, ``"remb"``, ``"none"``,
``"fixed:<bps>"``, ``"estimator:package.module:Class"``): each cell runs in another
process, so an estimator must be importable there (a module or a ``.py`` file, not a
class defined in a notebook).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..exceptions import ConfigurationError
from ..viewer import displayed_summary

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["EVALUATION_METRICS", "cell_metrics", "evaluate", "plot_evaluation"]

#: The table's metrics, per (estimator, trace), over the call after its first second:
#: goodput (media bitrate bob receives) over the link's capacity, the link's p95 queue
#: delay (of its per-sample means) and drop fraction, bob's p95 frame latency, freezes
#: and mean PSNR.
EVALUATION_METRICS: list[str] = [
    "goodput_kbps",
    "capacity_kbps",
    "goodput_over_capacity",
    "queue_delay_ms_p95",
    "loss_fraction",
    "frame_latency_ms_p95",
    "freezes",
    "psnr_db_mean",
    "displayed_psnr_db_mean",
]
_SENDER, _RECEIVER = "alice", "bob"


def scenario_data(
    *,
    duration_s: float,
    delay_ms: float,
    queue_ms: float,
    width: int,
    height: int,
    fps: float,
    seed: int,
) -> dict[str, Any]:
    """The scenario every cell runs (the grid sets ``congestion_control`` and the trace)."""
    return {
        "name": "bwe-evaluation",
        "duration_s": duration_s,
        "seed": seed,
        # bob (receive-only video) joins first: the newcomer offers, so alice's offer
        # carries her video.
        "peers": [
            {"name": _RECEIVER, "video": "none"},
            {"name": _SENDER, "width": width, "height": height, "fps": fps},
        ],
        "link": {"delay_ms": delay_ms, "queue_ms": queue_ms, "trace": "step-down"},
        "traffic": {"chat_interval_s": 0, "cursor_rate_hz": 0},
    }


def cell_metrics(path: str | os.PathLike[str]) -> dict[str, float]:
    """:data:`EVALUATION_METRICS` of one finished run folder."""
    from ..experiment.results import load
    from ..experiment.summary import steady

    result = load(Path(path))
    out = dict.fromkeys(EVALUATION_METRICS, math.nan)
    stats = steady(result.stats)
    recv = stats[(stats["peer"] == _RECEIVER) & (stats["direction"] == "recv")]
    if not recv.empty:
        out["goodput_kbps"] = float(recv.groupby("time_s")["bitrate_kbps"].sum().mean())
    links = result.links
    if not links.empty:
        links = links[links["src"] == _SENDER]
        links = links[links["time_s"] >= links["time_s"].min() + 1.0]
    if not links.empty:
        out["capacity_kbps"] = float(links["rate_kbps"].mean())
        out["queue_delay_ms_p95"] = float(links["queue_delay_mean_ms"].quantile(0.95))
        first, last = links.iloc[0], links.iloc[-1]
        packets = float(last["packets_in"] - first["packets_in"])
        dropped = sum(
            float(last[c] - first[c])
            for c in ("dropped_loss", "dropped_burst", "dropped_queue", "dropped_outage")
        )
        out["loss_fraction"] = dropped / packets if packets > 0 else math.nan
    if out["capacity_kbps"] > 0:
        out["goodput_over_capacity"] = out["goodput_kbps"] / out["capacity_kbps"]
    frames = result.frames
    if not frames.empty:
        frames = frames[frames["peer"] == _RECEIVER]
    if not frames.empty:
        latency = frames["latency_ms"].dropna()
        if not latency.empty:
            out["frame_latency_ms_p95"] = float(latency.quantile(0.95))
        out["freezes"] = float(frames["freeze"].fillna(False).astype(bool).sum())
        out["psnr_db_mean"] = float(frames["psnr_db"].replace(math.inf, math.nan).mean())
        out["displayed_psnr_db_mean"] = displayed_summary(frames)["displayed_psnr_db_mean"]
    return out


def evaluate(
    estimators: Sequence[str],
    traces: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    duration_s: float = 20.0,
    delay_ms: float = 25.0,
    queue_ms: float = 300.0,
    width: int = 320,
    height: int = 240,
    fps: float = 15.0,
    seed: int = 1,
    workers: int | None = None,
    scheduler: str | Any | None = None,
    progress: bool = True,
    plot: bool = True,
) -> pd.DataFrame:
    """Run every estimator on every trace; returns the tidy table (one row per cell).

    :param estimators: congestion-control strings, e.g. ``["gcc",
        "estimator:fixed:800000", "estimator:mypkg.bwe:Estimator"]``; the estimator
        runs on both peers (so bob's receiver steers alice's sender).
    :param traces: shipped trace names, Mahimahi files or OpenNetLab JSON traces.
    :param workers: calls at once in local processes (default: one per core);
        ``scheduler``: a Dask scheduler address or client instead.
    """
    from ..experiment.scenario import Scenario
    from ..experiment.sweep import sweep

    if not estimators or not traces:
        raise ConfigurationError("evaluate needs at least one estimator and one trace")
    names = [str(t) for t in traces]
    data = scenario_data(
        duration_s=duration_s,
        delay_ms=delay_ms,
        queue_ms=queue_ms,
        width=width,
        height=height,
        fps=fps,
        seed=seed,
    )
    grid: Mapping[str, list[Any]] = {
        "congestion_control": list(estimators),
        "link.trace": names,
    }
    summary = sweep(
        Scenario.from_mapping(data),
        grid,
        Path(out),
        workers=workers,
        scheduler=scheduler,
        progress=progress,
    )
    rows = []
    for _, run in summary.sort_values("run").iterrows():
        row: dict[str, Any] = {
            "estimator": run["congestion_control"],
            "trace": Path(str(run["link.trace"])).stem,
            "status": run["status"],
            "run": run["run"],
        }
        metrics = dict.fromkeys(EVALUATION_METRICS, math.nan)
        if run["status"] == "completed":
            metrics = cell_metrics(run["path"])
        rows.append({**row, **metrics})
    table = pd.DataFrame(rows, columns=["estimator", "trace", "status", "run", *EVALUATION_METRICS])
    target = Path(out)
    table.to_csv(target / "evaluation.csv", index=False)
    table.to_parquet(target / "evaluation.parquet", index=False)
    if plot:
        figure = plot_evaluation(table)
        figure.savefig(target / "evaluation.png", dpi=100)
        import matplotlib.pyplot as plt

        plt.close(figure)
    return table


def plot_evaluation(table: pd.DataFrame) -> Figure:
    """One bar chart per metric: estimators side by side, grouped by trace."""
    import matplotlib.pyplot as plt

    metrics = [
        ("goodput_over_capacity", "goodput / capacity"),
        ("queue_delay_ms_p95", "p95 queue delay (ms)"),
        ("loss_fraction", "loss at the link"),
        ("frame_latency_ms_p95", "p95 frame latency (ms)"),
        ("freezes", "freezes"),
        # What viewers saw (freezes count), rather than what was decoded.
        ("displayed_psnr_db_mean", "displayed PSNR (dB)"),
    ]
    figure, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    for ax, (column, label) in zip(axes.flat, metrics, strict=True):
        pivot = table.pivot_table(index="trace", columns="estimator", values=column)
        if pivot.empty:
            ax.set_visible(False)
            continue
        pivot.plot.bar(ax=ax, rot=0, legend=False)
        ax.set_title(label)
        ax.set_xlabel("")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=max(1, len(labels)))
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    return figure
