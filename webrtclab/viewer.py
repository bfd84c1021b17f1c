"""What a viewer sees: the picture on screen at each source frame time, scored.

Decoded-frame PSNR scores each frame that reached the decoder.  NACK repairs
frames late, so that score barely moves under loss while the viewer watches a
frozen picture.  Full-reference quality tools therefore score the *displayed*
sequence: after aligning it in time with the source, every source frame time is
compared with what the screen showed then, a repeated (frozen) picture counting
as the last one shown.  :class:`Screen` does this for one stream, online:

- a frame is shown when it arrives, but not before its playout time, the
  frame's send time plus a playout delay: the largest frame latency among the
  last :data:`PLAYOUT_WINDOW` frames plus :data:`RENDER_DELAY_S`, as a jitter
  buffer sized for the recent jitter (a frame later than that misses its time
  and the previous picture stays);
- a frame whose stamp cannot be read (a picture broken by loss) is shown as soon
  as it arrives, and scored like any other picture on screen;
- source frame ``i`` should be on screen at its send time plus the same delay
  (frames that never arrived are placed between their neighbours' send times);
- each such time is scored (luma PSNR and SSIM against frame ``i``'s reference
  picture) when the next frame arrives, so the scores of a freeze land on the row
  of the frame that ends it, like the freeze itself.

SSIM is Wang et al.'s index ("Image quality assessment: from error visibility to
structural similarity", IEEE Trans. Image Processing 13(4), 2004), over 8x8
windows on a 4-pixel grid as x264 and ffmpeg's ``ssim`` filter compute it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .media import stamp_band

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "PLAYOUT_WINDOW",
    "PSNR_CAP_DB",
    "RENDER_DELAY_S",
    "Scores",
    "Screen",
    "displayed_means",
    "displayed_summary",
    "psnr",
    "ssim",
]

PLAYOUT_WINDOW = 30
# libwebrtc's default render delay (kDefaultRenderDelayMs, modules/video_coding/timing),
# on top of the jitter delay: a frame a millisecond later than the recent worst is on time.
RENDER_DELAY_S = 0.010
# Identical pictures have an infinite PSNR; capped so that means over a freeze stay finite.
PSNR_CAP_DB = 100.0
# At most this many source frame times are scored at one arrival (after a long outage):
# an evenly spaced sample, weighted as all of them, keeps one arrival's work bounded.
MAX_SCORED = 32

# SSIM's stabilizing constants for 8-bit pictures (Wang et al., K1 = 0.01, K2 = 0.03).
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2


def _scored_rows(height: int, width: int) -> int:
    """Rows above the stamp band: the stamp differs from frame to frame by design."""
    band = stamp_band(width, height)
    return band[0] if band is not None else height


def psnr(received: np.ndarray, reference: np.ndarray) -> float:
    """Luma PSNR (dB) of a picture against its reference, above the stamp band; inf if equal."""
    rows = _scored_rows(*reference.shape)
    diff = np.subtract(received[:rows], reference[:rows], dtype=np.int32)
    mse = float(np.einsum("ij,ij->", diff, diff)) / diff.size
    return math.inf if mse == 0 else 10 * math.log10(255 * 255 / mse)


def ssim(received: np.ndarray, reference: np.ndarray) -> float:
    """Mean SSIM of two luma planes above the stamp band (8x8 windows, 4-pixel steps)."""
    rows = _scored_rows(*reference.shape) // 4 * 4
    cols = reference.shape[1] // 4 * 4
    if rows < 8 or cols < 8:
        return math.nan
    x = received[:rows, :cols].astype(np.float64)
    y = reference[:rows, :cols].astype(np.float64)

    def windows(values: np.ndarray) -> np.ndarray:
        blocks = values.reshape(rows // 4, 4, cols // 4, 4).sum(axis=(1, 3))
        return blocks[:-1, :-1] + blocks[1:, :-1] + blocks[:-1, 1:] + blocks[1:, 1:]

    n = 64.0
    mx, my = windows(x) / n, windows(y) / n
    vx = windows(x * x) / n - mx * mx
    vy = windows(y * y) / n - my * my
    cov = windows(x * y) / n - mx * my
    index = ((2 * mx * my + _C1) * (2 * cov + _C2)) / ((mx * mx + my * my + _C1) * (vx + vy + _C2))
    return float(index.mean())


Picture = Callable[[tuple[int, ...]], np.ndarray]
"""A received frame's luma plane at a given (height, width): scaled back up if needed."""


@dataclass(frozen=True)
class Scores:
    """The source frame times scored at one arrival: mean PSNR (capped), mean SSIM, count."""

    psnr_db: float = math.nan
    ssim: float = math.nan
    frames: int = 0


@dataclass
class _Frame:
    index: int | None  # None: its stamp could not be read
    sent_s: float
    arrived_s: float
    picture: Picture
    reference: np.ndarray | None
    psnr_db: float


class Screen:
    """The playout of one video stream at a viewer, scored at every source frame time.

    :param reference: the sender's reference luma plane of a frame index (None when
        it cannot be rendered: that time is not scored).
    :param every: score only the source frame times whose index is a multiple of this.
    """

    def __init__(self, reference: Callable[[int], np.ndarray | None], *, every: int = 1) -> None:
        self._reference = reference
        self._every = max(1, every)
        self._latencies: deque[float] = deque(maxlen=PLAYOUT_WINDOW)
        self._waiting: deque[_Frame] = deque()  # arrived, not yet on screen
        self._shown: _Frame | None = None
        self._newest: _Frame | None = None
        self._next = 0  # the next source frame time to score

    @property
    def delay_s(self) -> float:
        """The playout delay now (NaN before the first frame)."""
        return max(self._latencies) + RENDER_DELAY_S if self._latencies else math.nan

    def arrive(
        self,
        index: int | None,
        sent_s: float,
        arrived_s: float,
        picture: Picture,
        *,
        reference: np.ndarray | None = None,
        psnr_db: float = math.nan,
    ) -> Scores:
        """A decoded frame arrives; score the source frame times that came due before it.

        ``index`` is None for a picture whose stamp could not be read (``sent_s``
        is then ignored).  ``reference`` and ``psnr_db``, when the caller already
        has them for this frame, are reused for the time the frame is on screen.
        """
        frame = _Frame(index, sent_s, arrived_s, picture, reference, psnr_db)
        newest = self._newest
        if index is None:
            if newest is None:
                return Scores()  # nothing to place it against yet
            scores = self._score_due(newest.index, arrived_s, None)
            self._waiting.append(frame)
            return scores
        if newest is None or newest.index is None or index <= newest.index:
            # The first frame, or the sender started over (a new session): a new playout.
            self._waiting.clear()
            self._latencies.clear()
            self._shown = None
            self._next = index
            scores = Scores()
        else:
            scores = self._score_due(index, arrived_s, frame)
        self._newest = frame
        self._waiting.append(frame)
        self._latencies.append(arrived_s - sent_s)
        return scores

    def _score_due(self, last: int | None, now: float, arriving: _Frame | None) -> Scores:
        """Score the source frame times up to index ``last`` whose playout time is past."""
        assert last is not None
        delay = self.delay_s
        # Send times of the frames we know, to place the ones that never arrived.
        known = [
            f
            for f in (self._shown, *self._waiting, arriving)
            if f is not None and f.index is not None
        ]
        indices = np.array([f.index for f in known], dtype=np.float64)
        sent = np.array([f.sent_s for f in known], dtype=np.float64)
        due = self._next
        while due <= last:
            deadline = float(np.interp(due, indices, sent)) + delay
            if deadline > now:
                break
            due += 1
        slots = [i for i in range(self._next, due) if i % self._every == 0]
        if len(slots) > MAX_SCORED:
            picks = np.linspace(0, len(slots) - 1, MAX_SCORED).round().astype(int)
            sample = [slots[p] for p in picks]
        else:
            sample = slots
        psnrs: list[float] = []
        ssims: list[float] = []
        picked = set(sample)
        for i in range(self._next, due):
            self._show_at(i, float(np.interp(i, indices, sent)) + delay)
            if i in picked and self._shown is not None:
                scored = self._score(self._shown, i)
                if scored is not None:
                    psnrs.append(scored[0])
                    ssims.append(scored[1])
        self._next = due
        if not psnrs:
            return Scores()
        # A sample stands for all the due times it was drawn from.
        count = round(len(psnrs) * len(slots) / len(sample))
        return Scores(float(np.mean(psnrs)), float(np.nanmean(ssims)), count)

    def _show_at(self, index: int, time_s: float) -> None:
        """Show the newest frame that arrived by ``time_s`` and is not ahead of ``index``."""
        waiting = self._waiting
        while waiting and waiting[0].arrived_s <= time_s:
            ahead = waiting[0].index
            if ahead is not None and ahead > index:
                break
            previous, self._shown = self._shown, waiting.popleft()
            if previous is not None:
                previous.reference = None  # its own time has passed

    def _score(self, shown: _Frame, index: int) -> tuple[float, float] | None:
        own = shown.index == index
        reference = shown.reference if own and shown.reference is not None else None
        if reference is None:
            reference = self._reference(index)
            if reference is None:
                return None
        plane = shown.picture(reference.shape)
        value = shown.psnr_db if own and not math.isnan(shown.psnr_db) else psnr(plane, reference)
        return min(value, PSNR_CAP_DB), ssim(plane, reference)


def displayed_means(psnr_db: np.ndarray, ssim: np.ndarray, frames: np.ndarray) -> dict[str, float]:
    """``displayed_psnr_db_mean`` and ``displayed_ssim_mean`` over source frame times.

    The arrays are the frames table's ``displayed_*`` columns: each row's means
    weigh as many times as it covers.
    """
    weights = np.nan_to_num(frames.astype(np.float64))
    out = {}
    for name, values in (("displayed_psnr_db_mean", psnr_db), ("displayed_ssim_mean", ssim)):
        ok = ~np.isnan(values) & (weights > 0)
        total = weights[ok].sum()
        out[name] = float((values[ok] * weights[ok]).sum() / total) if total else math.nan
    return out


def displayed_summary(frames: pd.DataFrame) -> dict[str, float]:
    """:func:`displayed_means` of a frames table (its ``displayed_*`` columns)."""
    return displayed_means(
        *(
            frames[column].to_numpy(np.float64, na_value=np.nan)
            for column in ("displayed_psnr_db", "displayed_ssim", "displayed_frames")
        )
    )
