"""The headless demo: a two-peer call on loopback, written to a result folder."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from .exceptions import ConfigurationError
from .lab import Lab
from .media import MediaSpec
from .plot import plot_timeline

__all__ = ["DemoResult", "run_demo"]

logger = logging.getLogger(__name__)


@dataclass
class DemoResult:
    """Where the demo wrote its files and what it measured."""

    out: Path
    stats: pd.DataFrame
    events: pd.DataFrame
    chat_round_trips: int
    connect_s: float

    def summary(self) -> dict[str, float]:
        """Headline numbers: medians over the call (after the first second)."""
        stats = self.stats[self.stats["time_s"] >= self.stats["time_s"].min() + 1.0]
        if stats.empty:  # a very short call: use every row rather than none
            stats = self.stats
        recv = stats[stats["direction"] == "recv"]
        send = stats[stats["direction"] == "send"]
        video = recv[recv["kind"] == "video"]
        return {
            "connect_s": round(self.connect_s, 3),
            "rtt_ms_median": round(float(send["rtt_ms"].median()), 2),
            "video_recv_kbps_median": round(float(video["bitrate_kbps"].median()), 1),
            "audio_recv_kbps_median": round(
                float(recv[recv["kind"] == "audio"]["bitrate_kbps"].median()), 1
            ),
            "video_fps_median": round(float(video["frames_per_s"].median()), 1),
            "loss_fraction_mean": round(float(recv["loss_fraction"].mean()), 4),
            "chat_round_trips": float(self.chat_round_trips),
        }


async def run_demo(
    out: str | Path,
    duration: float = 10.0,
    *,
    media: MediaSpec | None = None,
    stats_interval: float = 0.5,
    progress: bool = True,
) -> DemoResult:
    """Run a call between two lab peers for ``duration`` seconds and write the results.

    Writes ``stats.parquet``, ``stats.csv``, ``events.csv`` and ``timeline.png`` in ``out``.
    """
    if not 1.0 <= duration <= 24 * 3600:
        raise ConfigurationError(f"demo duration must be in [1, 86400] s, got {duration}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"output path {str(out)!r} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    async with Lab(stats_interval=stats_interval) as lab:
        alice = await lab.add_peer("alice", media=media)
        await lab.add_peer("bob", media=media, echo_chat=True)
        t0 = lab.clock.now()
        await lab.wait_connected()
        connect_s = lab.clock.now() - t0
        echoes = 0

        def on_message(remote: str, label: str, payload: object) -> None:
            nonlocal echoes
            if label == "chat" and isinstance(payload, dict) and payload.get("echo"):
                echoes += 1

        alice.on("message", on_message)
        start = lab.clock.now()
        with tqdm(
            total=duration,
            unit="s",
            disable=not progress,
            desc="call",
            bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s",
        ) as bar:
            tick = 0
            while (elapsed := lab.clock.now() - start) < duration:
                await asyncio.sleep(min(0.5, duration - elapsed))
                tick += 1
                if tick % 2 == 0:
                    await alice.send_chat(f"ping {tick}")
                alice.send_cursor(tick % 100, (tick * 7) % 100)
                bar.n = min(duration, lab.clock.now() - start)
                bar.refresh()
        stats = lab.stats()
        events = lab.events_frame()
    stats.to_parquet(out / "stats.parquet", index=False)
    stats.to_csv(out / "stats.csv", index=False)
    events.to_csv(out / "events.csv", index=False)
    plot_timeline(stats, out / "timeline.png", title=f"webrtclab demo: {duration:.0f} s call")
    return DemoResult(out, stats, events, echoes, connect_s)
