"""What the panel shows while a call runs: a rolling window of stats, the frame preview.

:class:`LiveStats` takes the rows the lab's stats sampler and quality monitor append
(read incrementally: no DataFrame is rebuilt per refresh) and keeps the last
``window_s`` seconds per link direction.  :func:`frame_jpeg` is pure and thread-safe,
so the panel runs it off the event loop.
"""

from __future__ import annotations

import io
import math
import statistics
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import av

from ..tables import FrameRow, StatsRow

__all__ = ["LiveStats", "Readout", "frame_jpeg"]

NAN = math.nan
# Frame latency in the readout: the median over this many most recent seconds.
LATENCY_SPAN_S = 1.0
LATENCY_BIN_S = 0.25


@dataclass
class Readout:
    """The latest numbers of one direction (media from ``src`` to ``dst``)."""

    src: str
    dst: str
    time_s: float = NAN
    bitrate_kbps: float = NAN
    rtt_ms: float = NAN
    loss_fraction: float = NAN
    frames_per_s: float = NAN
    frame_latency_ms: float = NAN
    packets: int = 0

    @property
    def direction(self) -> str:
        return f"{self.src}→{self.dst}"


@dataclass
class _Series:
    """Time-stamped values of one direction, pruned to the window."""

    bitrate: deque[tuple[float, float]] = field(default_factory=deque)
    rtt: deque[tuple[float, float]] = field(default_factory=deque)
    loss: deque[tuple[float, float]] = field(default_factory=deque)
    latency: deque[tuple[float, float]] = field(default_factory=deque)

    def all(self) -> tuple[deque[tuple[float, float]], ...]:
        return (self.bitrate, self.rtt, self.loss, self.latency)


class LiveStats:
    """Rolling per-direction series and latest values for the directions given."""

    def __init__(self, directions: Iterable[tuple[str, str]], window_s: float = 60.0) -> None:
        self.window_s = window_s
        self.readouts = {(s, d): Readout(s, d) for s, d in directions}
        self._series = {key: _Series() for key in self.readouts}
        self.now_s = 0.0
        self.version = 0  # bumped by every change: the panel redraws only when it moved

    def add_stats(self, rows: Sequence[StatsRow]) -> None:
        """Take new stats rows (video only; audio would hide the interesting line)."""
        for row in rows:
            if row.kind != "video":
                continue
            t = float(row.time_s)
            if row.direction == "recv":
                key = (row.remote, row.peer)
                readout = self.readouts.get(key)
                if readout is None:
                    continue
                readout.time_s = t
                readout.bitrate_kbps = float(row.bitrate_kbps)
                readout.loss_fraction = float(row.loss_fraction)
                readout.frames_per_s = float(row.frames_per_s)
                readout.packets = int(row.packets)
                series = self._series[key]
                series.bitrate.append((t, readout.bitrate_kbps))
                series.loss.append((t, readout.loss_fraction * 100))
            else:
                # RTT is measured by the sender, from the receiver's reports.
                key = (row.peer, row.remote)
                readout = self.readouts.get(key)
                if readout is None or math.isnan(row.rtt_ms):
                    continue
                readout.rtt_ms = float(row.rtt_ms)
                self._series[key].rtt.append((t, readout.rtt_ms))
            self.now_s = max(self.now_s, t)
            self.version += 1
        self._prune()

    def add_frames(self, rows: Sequence[FrameRow]) -> None:
        """Take new frame rows of a :class:`~webrtclab.quality.QualityMonitor`."""
        touched = set()
        for row in rows:
            key = (row.remote, row.peer)  # (sender, receiver)
            latency = row.latency_ms
            if key not in self._series or latency is None or math.isnan(latency):
                continue
            t = float(row.time_s)
            self._series[key].latency.append((t, float(latency)))
            self.now_s = max(self.now_s, t)
            touched.add(key)
        for key in touched:
            recent = [v for t, v in self._series[key].latency if t >= self.now_s - LATENCY_SPAN_S]
            self.readouts[key].frame_latency_ms = statistics.median(recent) if recent else NAN
            self.version += 1
        self._prune()

    def clear(self) -> None:
        """Forget the values of the previous call (the window restarts empty)."""
        for key in self.readouts:
            self.readouts[key] = Readout(*key)
            self._series[key] = _Series()
        self.version += 1

    def _prune(self) -> None:
        start = self.now_s - self.window_s
        for series in self._series.values():
            for values in series.all():
                while values and values[0][0] < start:
                    values.popleft()

    def chart_series(self) -> dict[str, dict[str, list[list[float]]]]:
        """The window for :class:`~webrtclab.widgets.chart.LiveChart`: direction -> key -> points.

        Frame latency is one point per frame; it goes as the median of each
        ``LATENCY_BIN_S`` to keep the message small (a few kB per refresh).
        """
        result = {}
        for (src, dst), series in self._series.items():
            result[f"{src}→{dst}"] = {
                "bitrate": _points(series.bitrate),
                "rtt": _points(series.rtt),
                "loss": _points(series.loss),
                "latency": _points(_binned(series.latency, LATENCY_BIN_S)),
            }
        return result


def _points(values: Iterable[tuple[float, float]]) -> list[list[float]]:
    return [[round(t, 3), round(v, 3)] for t, v in values if math.isfinite(v)]


def _binned(values: Iterable[tuple[float, float]], width: float) -> list[tuple[float, float]]:
    bins: dict[int, list[float]] = {}
    for t, v in values:
        bins.setdefault(int(t // width), []).append(v)
    return [((k + 0.5) * width, statistics.median(vs)) for k, vs in sorted(bins.items())]


def frame_jpeg(frame: av.VideoFrame, width: int = 240, quality: int = 70) -> bytes:
    """A decoded video frame as a JPEG ``width`` pixels wide (aspect kept)."""
    height = max(2, round(frame.height * width / frame.width))
    image = frame.reformat(width=width, height=height, format="rgb24").to_image()
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()
