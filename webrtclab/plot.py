"""Matplotlib plots of lab stats (no pyplot state: safe in scripts, CI and notebooks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["plot_timeline"]


def plot_timeline(
    stats: pd.DataFrame,
    path: str | Path | None = None,
    title: str = "",
    links: pd.DataFrame | None = None,
) -> Figure:
    """Bitrate, RTT and loss over time, one line per (peer, remote, kind).

    Receive bitrate and loss come from recv rows, RTT from send rows (the only
    side where aiortc measures it).  With ``links`` (the lab's link log), the
    configured conditions are drawn dashed in grey: rate caps, the RTT the delays
    add up to, and the configured loss, so cause and effect share one time axis.
    Saves a PNG when ``path`` is given.
    """
    fig = Figure(figsize=(9, 7), layout="constrained")
    ax_rate, ax_rtt, ax_loss = fig.subplots(3, 1, sharex=True)
    if title:
        fig.suptitle(title)
    recv = stats[stats["direction"] == "recv"]
    send = stats[stats["direction"] == "send"]
    for (peer, remote, kind), rows in recv.groupby(["peer", "remote", "kind"], sort=True):
        label = f"{remote}→{peer} {kind}"
        ax_rate.plot(rows["time_s"], rows["bitrate_kbps"], label=label)
        ax_loss.plot(rows["time_s"], rows["loss_fraction"] * 100, label=label)
    for (peer, remote, kind), rows in send.groupby(["peer", "remote", "kind"], sort=True):
        ax_rtt.plot(rows["time_s"], rows["rtt_ms"], marker=".", label=f"{peer}↔{remote} {kind}")
    if links is not None and not links.empty:
        _draw_conditions(links, ax_rate, ax_rtt, ax_loss)
    ax_rate.set_ylabel("receive bitrate (kbps)")
    ax_rtt.set_ylabel("RTT (ms)")
    ax_loss.set_ylabel("loss (%)")
    ax_loss.set_xlabel("time (s)")
    ax_loss.set_ylim(bottom=0)
    for ax in (ax_rate, ax_rtt, ax_loss):
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small", loc="upper right")
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def _draw_conditions(links: pd.DataFrame, ax_rate: Axes, ax_rtt: Axes, ax_loss: Axes) -> None:
    style: dict[str, Any] = {
        "color": "0.4",
        "linestyle": "--",
        "linewidth": 1.2,
        "drawstyle": "steps-post",
    }
    for (src, dst), rows in links.groupby(["src", "dst"], sort=True):
        if rows["rate_kbps"].notna().any():
            ax_rate.plot(rows["time_s"], rows["rate_kbps"], label=f"cap {src}→{dst}", **style)
        ax_loss.plot(rows["time_s"], rows["loss"] * 100, label=f"set {src}→{dst}", **style)
    # The RTT a pair's configured one-way delays add up to.
    by_time = links.groupby("time_s")["delay_ms"]
    rtt = by_time.sum() if links[["src", "dst"]].drop_duplicates().shape[0] == 2 else None
    if rtt is not None:
        ax_rtt.plot(rtt.index, rtt.to_numpy(), label="configured RTT", **style)
