"""Headline metrics of a run: one row of a sweep's summary table."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd

from ..viewer import displayed_summary

if TYPE_CHECKING:
    from .results import Result

__all__ = ["SUMMARY_METRICS", "candidate_types", "ice_summary", "steady", "summarize"]

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
    "connect_s",
    "relayed_fraction",
    "selected_host",
    "selected_srflx",
    "selected_prflx",
    "selected_relay",
]
#: RFC 8445 candidate types, in the order of the ``selected_*`` metrics
CANDIDATE_TYPES = ("host", "srflx", "prflx", "relay")


def _f(value: object) -> float:
    try:
        result = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return result


def _selected(events: pd.DataFrame) -> dict[tuple[str, str], tuple[str, str]]:
    """(local type, remote type) of each session's first selected pair, by (peer, remote).

    From the ``selected-path`` events: ``"srflx 127.1.0.1:5000 -> prflx 127.1.0.2:6000"``.
    """
    found: dict[tuple[str, str], tuple[str, str]] = {}
    if events.empty:
        return found
    rows = events[events["event"] == "selected-path"]
    for peer, remote, detail in zip(rows["peer"], rows["remote"], rows["detail"], strict=True):
        local, _, other = str(detail).partition(" -> ")
        if local and other:
            found.setdefault((str(peer), str(remote)), (local.split()[0], other.split()[0]))
    return found


def ice_summary(events: pd.DataFrame) -> dict[str, float]:
    """Connection set-up from the events table (see :func:`summarize`)."""
    out = {"connect_s": math.nan, "relayed_fraction": math.nan}
    out.update({f"selected_{kind}": math.nan for kind in CANDIDATE_TYPES})
    if events.empty:
        return out
    connected = events[events["event"] == "ice-connected"]
    if not connected.empty:
        seconds = connected["detail"].astype(str).str.removesuffix(" s")
        first = pd.to_numeric(seconds, errors="coerce").groupby(
            [connected["peer"], connected["remote"]]
        )
        out["connect_s"] = _f(first.first().max())
    pairs = list(_selected(events).values())
    if pairs:
        out["relayed_fraction"] = sum("relay" in pair for pair in pairs) / len(pairs)
        for kind in CANDIDATE_TYPES:
            out[f"selected_{kind}"] = sum(local == kind for local, _ in pairs) / len(pairs)
    return out


def candidate_types(events: pd.DataFrame) -> str:
    """The candidate types of the selected pairs, as a label: ``"prflx-srflx"``.

    One ``a-b`` per connection (the two sides' local candidate types, sorted, which is
    what each side's ``candidate_type`` stat shows), distinct ones joined by ``", "``;
    ``""`` when nothing connected.  ``"prflx-relay"``: one side sent from a relay
    candidate, the other (which sees it as its remote) from a peer-reflexive one.
    """
    selected = _selected(events)
    labels = set()
    for (peer, remote), (local, far) in selected.items():
        other = selected.get((remote, peer), (far, local))[0]
        labels.add("-".join(sorted((local, other))))
    return ", ".join(sorted(labels))


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

    Connection set-up, from the events table (NaN when nothing connected):
    ``connect_s``, the slowest session's ICE time (from its creation to its
    ``ice-connected`` event); ``relayed_fraction``, the share of sessions whose
    selected pair has a relay (TURN) candidate at either end; ``selected_host``,
    ``selected_srflx``, ``selected_prflx``, ``selected_relay``, the share of sessions
    whose selected local candidate has that type (they add up to 1;
    :func:`candidate_types` gives the same as a label such as ``"prflx-srflx"``).
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
    out.update(ice_summary(result.events))
    return out
