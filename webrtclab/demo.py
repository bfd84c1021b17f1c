"""The headless demo experiment: a two-peer call over an emulated link, into a result folder."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ._shipped import DATA_DIR
from .exceptions import ConfigurationError
from .plot import plot_result

if TYPE_CHECKING:
    from .experiment.results import Result

__all__ = ["DEMO_SCENARIO", "DemoResult", "run_demo"]

# What `make demo` runs: the shipped scenario "demo" (320x240 at 15 fps both ways over
# 40 ms +-2 ms and 1 % loss each way, chat every second, cursor updates at 20 Hz).
DEMO_SCENARIO = DATA_DIR / "scenarios" / "demo.toml"


@dataclass
class DemoResult:
    """Where the demo wrote its files and what it measured."""

    out: Path
    stats: pd.DataFrame
    events: pd.DataFrame
    chat_delivered: int
    connect_s: float
    result: Result | None = None

    def summary(self) -> dict[str, float]:
        """Headline numbers: medians over the call (after the first second)."""
        from .experiment.summary import steady

        stats = steady(self.stats)
        recv = stats[stats["direction"] == "recv"]
        send = stats[stats["direction"] == "send"]
        video = recv[recv["kind"] == "video"]
        quality = self.result.summary() if self.result is not None else {}
        return {
            "connect_s": round(self.connect_s, 3),
            "rtt_ms_median": round(float(send["rtt_ms"].median()), 2),
            "video_recv_kbps_median": round(float(video["bitrate_kbps"].median()), 1),
            "audio_recv_kbps_median": round(
                float(recv[recv["kind"] == "audio"]["bitrate_kbps"].median()), 1
            ),
            "video_fps_median": round(float(video["frames_per_s"].median()), 1),
            "loss_fraction_mean": round(float(recv["loss_fraction"].mean()), 4),
            "frame_latency_ms_p50": round(quality.get("frame_latency_ms_p50", math.nan), 1),
            "psnr_db_mean": round(quality.get("psnr_db_mean", math.nan), 1),
            "chat_delivered": float(self.chat_delivered),
        }


async def run_demo(
    out: str | Path,
    duration: float = 10.0,
    *,
    progress: bool = True,
) -> DemoResult:
    """Run :data:`DEMO_SCENARIO` for ``duration`` seconds into the folder ``out``.

    Besides the result folder (see :mod:`webrtclab.experiment.results`), writes
    ``stats.csv``, ``events.csv`` and ``timeline.png``; a previous demo in ``out``
    is replaced.
    """
    from .experiment import load_scenario, run_scenario

    if not (isinstance(duration, int | float) and 1.0 <= duration <= 24 * 3600):
        raise ConfigurationError(f"demo duration must be in [1, 86400] s, got {duration}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"output path {str(out)!r} exists and is not a directory")
    scenario = load_scenario(DEMO_SCENARIO).with_overrides({"duration_s": duration})
    result = await run_scenario(scenario, out, progress=progress, overwrite=True)
    result.stats.to_csv(out / "stats.csv", index=False)
    result.events.to_csv(out / "events.csv", index=False)
    plot_result(result, out / "timeline.png")
    events = result.events
    joined = events[events["event"] == "joined"]["time_s"]
    connected = events[(events["event"] == "connection-state") & (events["detail"] == "connected")][
        "time_s"
    ]
    connect_s = (
        float(connected.max() - joined.max()) if len(joined) and len(connected) else math.nan
    )
    messages = result.messages
    chats = int((messages["channel"] == "chat").sum()) if not messages.empty else 0
    return DemoResult(out, result.stats, result.events, chats, connect_s, result)
