"""Headline metrics of a run: one row of a sweep's summary table."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd

from ..viewer import displayed_summary

if TYPE_CHECKING:
    from .results import Result

__all__ = ["SUMMARY_METRICS", "steady", "summarize"]

WARMUP_S = 1.0
SUMMARY_METRICS = [
    "rtt_ms_median",
    "recv_kbps_mean",
    "loss_fraction",
    "recv_fps",
    "frame_latency_ms_p50",
    "frame_latency_ms_p95",
    "freezes",
    "psnr_db_mean",
    "displayed_psnr_db_mean",
    "displayed_ssim_mean",
    "cursor_latency_ms_p50",
    "cursor_loss_fraction",
    "send_target_kbps_mean",
    "send_wire_kbps_mean",
    "send_rtx_kbps_mean",
]


def _f(value: object) -> float:
    try:
        result = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return result


def steady(stats: pd.DataFrame) -> pd.DataFrame:
    """Stats rows after the first :data:`WARMUP_S` (all rows if the call was shorter)."""
    if stats.empty:
        return stats
    late = stats[stats["time_s"] >= stats["time_s"].min() + WARMUP_S]
    return late if not late.empty else stats


def summarize(result: Result) -> dict[str, float]:
    """Medians and means over the call, after the first second (connection set-up).

    ``rtt_ms_median``: send rows' RTT; ``recv_kbps_mean``: received video bitrate;
    ``loss_fraction``: mean receive-side loss; ``recv_fps``: received video frame rate;
    frame latency percentiles, freeze count, mean decoded and displayed PSNR and
    displayed SSIM from the frames table;
    cursor latency and loss from the messages table; the video senders' target,
    wire and retransmission rates (``send_*_kbps_mean``, summed over senders).
    """
    stats = steady(result.stats)
    send = stats[stats["direction"] == "send"] if not stats.empty else stats
    recv = stats[stats["direction"] == "recv"] if not stats.empty else stats
    video = recv[recv["kind"] == "video"] if not recv.empty else recv
    frames = result.frames
    messages = result.messages
    cursors = messages[messages["channel"] == "cursors"] if not messages.empty else pd.DataFrame()
    out = {
        "rtt_ms_median": _f(send["rtt_ms"].median()) if not send.empty else math.nan,
        "recv_kbps_mean": _f(video["bitrate_kbps"].mean()) if not video.empty else math.nan,
        "loss_fraction": _f(recv["loss_fraction"].mean()) if not recv.empty else math.nan,
        "recv_fps": _f(video["frames_per_s"].mean()) if not video.empty else math.nan,
        "frame_latency_ms_p50": math.nan,
        "frame_latency_ms_p95": math.nan,
        "freezes": math.nan,
        "psnr_db_mean": math.nan,
        "displayed_psnr_db_mean": math.nan,
        "displayed_ssim_mean": math.nan,
        "cursor_latency_ms_p50": math.nan,
        "cursor_loss_fraction": math.nan,
    }
    sent = send[send["kind"] == "video"] if not send.empty else send
    for column, metric in (
        ("target_kbps", "send_target_kbps_mean"),
        ("wire_kbps", "send_wire_kbps_mean"),
        ("rtx_kbps", "send_rtx_kbps_mean"),
    ):
        if sent.empty:
            out[metric] = math.nan
        else:
            # Mean per sample time, summed over the video senders of that time.
            per_time = sent.groupby("time_s")[column].sum(min_count=1)
            out[metric] = _f(per_time.mean())
    if not frames.empty:
        latency = frames["latency_ms"].dropna()
        if not latency.empty:
            out["frame_latency_ms_p50"] = _f(latency.quantile(0.5))
            out["frame_latency_ms_p95"] = _f(latency.quantile(0.95))
        out["freezes"] = _f(frames["freeze"].fillna(False).astype(bool).sum())
        out["psnr_db_mean"] = _f(frames["psnr_db"].replace(math.inf, math.nan).mean())
        out.update(displayed_summary(frames))
    if not cursors.empty:
        out["cursor_latency_ms_p50"] = _f(cursors["latency_ms"].median())
        # Sequence numbers are per (sender, receiver): missing ones were lost.
        expected = 0
        for _, group in cursors.groupby(["peer", "remote"]):
            seqs = group["seq"].dropna()
            if not seqs.empty:
                expected += int(seqs.max() - seqs.min() + 1)
        if expected:
            out["cursor_loss_fraction"] = 1.0 - len(cursors) / expected
    return out
