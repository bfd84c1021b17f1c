"""Matplotlib plots of lab stats (no pyplot state: safe in scripts, CI and notebooks)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

__all__ = ["plot_timeline"]


def plot_timeline(stats: pd.DataFrame, path: str | Path | None = None, title: str = "") -> Figure:
    """Bitrate, RTT and loss over time, one line per (peer, remote, kind).

    Receive bitrate and loss come from recv rows, RTT from send rows (the only
    side where aiortc measures it).  Saves a PNG when ``path`` is given.
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
    ax_rate.set_ylabel("receive bitrate (kbps)")
    ax_rtt.set_ylabel("RTT (ms)")
    ax_loss.set_ylabel("loss (%)")
    ax_loss.set_xlabel("time (s)")
    for ax in (ax_rate, ax_rtt, ax_loss):
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small", loc="upper right")
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
