"""Matplotlib plots of lab stats and results (no pyplot state: safe in scripts, CI, notebooks).

Every function returns a :class:`~matplotlib.figure.Figure` (a notebook shows it when it
is a cell's value) and saves a PNG when given a ``path``.  Importing this module inside
a Jupyter kernel lets the kernel show any Figure as a picture without pyplot (see
:mod:`webrtclab._display`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._display import register as _register_display
from .exceptions import ConfigurationError

if TYPE_CHECKING:
    from .experiment.results import Result

__all__ = ["plot_cdf", "plot_compare", "plot_result", "plot_timeline"]

_CONDITION_STYLE: dict[str, Any] = {
    "color": "0.4",
    "linestyle": "--",
    "linewidth": 1.2,
    "drawstyle": "steps-post",
}
_CONDITION_KEYS = ["delay_ms", "jitter_ms", "loss", "rate_kbps"]

_register_display()  # in a Jupyter kernel, a Figure as a cell's value shows as a PNG


def plot_timeline(
    stats: pd.DataFrame,
    path: str | Path | None = None,
    title: str = "",
    links: pd.DataFrame | None = None,
    frames: pd.DataFrame | None = None,
) -> Figure:
    """Bitrate, RTT, loss (and frame latency) over time, one line per stream.

    Receive bitrate and loss come from recv rows, RTT from send rows (the only side
    where aiortc measures it).  With ``links`` (a link log), the configured conditions
    are drawn dashed in grey and the periods where they differ from the start are
    shaded, so cause and effect share one time axis.  With ``frames`` (the quality
    table), a fourth panel shows per-frame end-to-end latency and marks freezes.
    """
    rows = 4 if frames is not None and not frames.empty else 3
    fig = Figure(figsize=(9, 2.3 * rows + 0.4), layout="constrained")
    axes = list(fig.subplots(rows, 1, sharex=True))
    if title:
        fig.suptitle(title)
    _draw_stats(stats, axes[0], axes[1], axes[2])
    if rows == 4 and frames is not None:
        _draw_frames(frames, axes[3])
    if links is not None and not links.empty:
        _draw_conditions(links, axes[0], axes[1], axes[2])
        _shade_changes(links, axes)
    axes[-1].set_xlabel("time (s)")
    _finish(axes)
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def plot_result(result: Result, path: str | Path | None = None) -> Figure:
    """The timeline of a loaded result folder: stats, link conditions, frame latency."""
    return plot_timeline(
        result.stats, path, title=result.name, links=result.links, frames=result.frames
    )


def _label(result: Result | Any, fallback: str) -> str:
    return str(getattr(result, "name", fallback))


def plot_compare(
    results: Mapping[str, Result] | Sequence[Result], path: str | Path | None = None
) -> Figure:
    """Several results side by side: one column each, shared axes, same panels."""
    named = _named(results)
    fig = Figure(figsize=(4.2 * len(named) + 1, 8), layout="constrained")
    grid = fig.subplots(4, len(named), sharex="col", sharey="row", squeeze=False)
    for column, (name, result) in enumerate(named.items()):
        axes = [grid[row][column] for row in range(4)]
        axes[0].set_title(name)
        _draw_stats(result.stats, axes[0], axes[1], axes[2], legend_labels=column == 0)
        _draw_frames(result.frames, axes[3])
        if not result.links.empty:
            _draw_conditions(result.links, axes[0], axes[1], axes[2])
            _shade_changes(result.links, axes)
        axes[3].set_xlabel("time (s)")
        _finish(axes, ylabels=column == 0, legends=column == 0)
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def plot_cdf(
    results: Mapping[str, Result | pd.DataFrame] | Sequence[Result],
    column: str = "latency_ms",
    table: str = "frames",
    path: str | Path | None = None,
) -> Figure:
    """Empirical CDFs of one column (frame latency by default) across results.

    ``results`` maps names to results (their ``table`` is used) or straight to
    DataFrames (a live lab's ``quality.messages.dataframe()``, for instance).
    """
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for name, result in _named(results).items():
        frame = result if isinstance(result, pd.DataFrame) else getattr(result, table)
        if column not in frame.columns:
            raise ConfigurationError(
                f"cannot plot the CDF of {column!r} for {name!r}: its columns are "
                f"{', '.join(map(str, frame.columns))}"
            )
        values = frame[column].dropna().to_numpy(dtype=float)
        if values.size == 0:
            continue
        values = np.sort(values)
        ax.step(values, np.arange(1, values.size + 1) / values.size, where="post", label=name)
    ax.set_xlabel(column.replace("_", " "))
    ax.set_ylabel("fraction ≤ x")
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="small", loc="lower right")
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


# --- drawing helpers -------------------------------------------------------------------------


def _named(results: Mapping[str, Any] | Sequence[Result]) -> dict[str, Any]:
    if isinstance(results, Mapping):
        return dict(results)
    named: dict[str, Any] = {}
    for index, result in enumerate(results):
        name = _label(result, f"run {index}")
        named[name if name not in named else f"{name} ({index})"] = result
    return named


def _draw_stats(
    stats: pd.DataFrame, ax_rate: Axes, ax_rtt: Axes, ax_loss: Axes, legend_labels: bool = True
) -> None:
    if stats.empty:
        return
    recv = stats[stats["direction"] == "recv"]
    send = stats[stats["direction"] == "send"]
    for (peer, remote, kind), rows in recv.groupby(["peer", "remote", "kind"], sort=True):
        label = f"{remote}→{peer} {kind}"
        ax_rate.plot(rows["time_s"], rows["bitrate_kbps"], label=label)
        ax_loss.plot(rows["time_s"], rows["loss_fraction"] * 100, label=label)
    for (peer, remote, kind), rows in send.groupby(["peer", "remote", "kind"], sort=True):
        ax_rtt.plot(rows["time_s"], rows["rtt_ms"], marker=".", label=f"{peer}↔{remote} {kind}")


def _draw_frames(frames: pd.DataFrame, ax: Axes) -> None:
    if frames.empty:
        return
    for (peer, remote), rows in frames.groupby(["peer", "remote"], sort=True):
        ax.plot(rows["time_s"], rows["latency_ms"], linewidth=0.8, label=f"{remote}→{peer}")
        frozen = rows[rows["freeze"].fillna(False).astype(bool)]
        if not frozen.empty:
            ax.plot(frozen["time_s"], frozen["latency_ms"], "x", color="crimson")


def _draw_conditions(links: pd.DataFrame, ax_rate: Axes, ax_rtt: Axes, ax_loss: Axes) -> None:
    for (src, dst), rows in links.groupby(["src", "dst"], sort=True):
        if rows["rate_kbps"].notna().any():
            ax_rate.plot(
                rows["time_s"], rows["rate_kbps"], label=f"cap {src}→{dst}", **_CONDITION_STYLE
            )
        ax_loss.plot(
            rows["time_s"], rows["loss"] * 100, label=f"set {src}→{dst}", **_CONDITION_STYLE
        )
    # The RTT a pair's configured one-way delays add up to.
    if links[["src", "dst"]].drop_duplicates().shape[0] == 2:
        rtt = links.groupby("time_s")["delay_ms"].sum()
        ax_rtt.plot(rtt.index, rtt.to_numpy(), label="configured RTT", **_CONDITION_STYLE)


def _shade_changes(links: pd.DataFrame, axes: Sequence[Axes]) -> None:
    """Shade the periods where any link's conditions differ from its first sample."""
    changed = pd.Series(False, index=sorted(links["time_s"].unique()))
    for _, rows in links.groupby(["src", "dst"], sort=True):
        conditions = rows[_CONDITION_KEYS].fillna(-1.0)
        differs = (conditions != conditions.iloc[0]).any(axis=1)
        changed = changed | pd.Series(differs.to_numpy(), index=rows["time_s"]).reindex(
            changed.index, fill_value=False
        )
    start: float | None = None
    times = [float(t) for t in changed.index]
    for i, (t, flag) in enumerate(zip(times, changed.to_numpy(), strict=True)):
        if flag and start is None:
            start = times[i - 1] if i else t
        if not flag and start is not None:
            for ax in axes:
                ax.axvspan(start, times[i - 1], color="orange", alpha=0.12, linewidth=0)
            start = None
    if start is not None:
        for ax in axes:
            ax.axvspan(start, times[-1], color="orange", alpha=0.12, linewidth=0)


def _finish(axes: Sequence[Axes], ylabels: bool = True, legends: bool = True) -> None:
    names = ["receive bitrate (kbps)", "RTT (ms)", "loss (%)", "frame latency (ms)"]
    for ax, name in zip(axes, names, strict=False):
        ax.grid(True, alpha=0.3)
        if ylabels:
            ax.set_ylabel(name)
        if legends and ax.lines:
            ax.legend(fontsize="x-small", loc="upper right")
    axes[2].set_ylim(bottom=0)
