"""Media sources for lab peers: a synthetic video with motion and detail, a tone, files.

aiortc's ``VideoStreamTrack`` sends a flat green frame (about 25 kbps), which
says nothing about a codec under pressure; :class:`SyntheticVideoTrack` scrolls
a detailed texture and moves a bright object so that VP8 has real work to do.
"""

from __future__ import annotations

import asyncio
import fractions
import functools
import math
import time
from dataclasses import dataclass

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .exceptions import ConfigurationError

__all__ = ["MediaSpec", "SyntheticVideoTrack", "ToneAudioTrack", "open_media"]

VIDEO_CLOCK_RATE = 90000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
AUDIO_RATE = 48000
AUDIO_PTIME = 0.020
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)


class _PacedTrack(MediaStreamTrack):
    """Paces frames in real time from the first ``recv()``, as aiortc's tracks do."""

    _clock_rate: int
    _step: int

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None
        self._pts: int = 0
        self.frames_produced = 0

    async def _next_pts(self) -> int:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
            self._pts = 0
        else:
            self._pts += self._step
            wait = self._start + self._pts / self._clock_rate - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        self.frames_produced += 1
        return self._pts


class SyntheticVideoTrack(_PacedTrack):
    """A video source with motion and fine detail.

    A seeded texture (gradients, fine checker and noise) scrolls diagonally while
    a bright disc bounces across it, so consecutive frames differ everywhere.
    """

    kind = "video"

    def __init__(self, width: int = 320, height: int = 240, fps: float = 15.0, seed: int = 0):
        if width < 16 or height < 16 or width % 2 or height % 2:
            raise ConfigurationError(
                f"video size must be even and at least 16x16, got {width}x{height}"
            )
        if not 0 < fps <= 120:
            raise ConfigurationError(f"fps must be in (0, 120], got {fps}")
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self._clock_rate = VIDEO_CLOCK_RATE
        self._step = int(round(VIDEO_CLOCK_RATE / fps))
        self._texture = _texture(width, height, seed)
        self._index = 0

    def render(self, index: int) -> np.ndarray:
        """The RGB picture of frame ``index`` (height x width x 3, uint8)."""
        h, w = self.height, self.width
        dy, dx = (index * 2) % h, (index * 3) % w
        img = self._texture[dy : dy + h, dx : dx + w].copy()
        # A bouncing disc: large-scale motion the encoder has to track.
        r = max(4, min(w, h) // 8)
        px = _bounce(index * 4, w - 2 * r) + r
        py = _bounce(index * 3, h - 2 * r) + r
        y0, y1, x0, x1 = py - r, py + r, px - r, px + r
        yy, xx = np.ogrid[y0:y1, x0:x1]
        mask = (yy - py) ** 2 + (xx - px) ** 2 <= r * r
        img[y0:y1, x0:x1][mask] = (250, 220, 40)
        return img

    async def recv(self) -> av.VideoFrame:
        pts = await self._next_pts()
        frame = av.VideoFrame.from_ndarray(self.render(self._index), format="rgb24")
        self._index += 1
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE
        return frame


class ToneAudioTrack(_PacedTrack):
    """A continuous sine tone, 48 kHz mono, in 20 ms frames."""

    kind = "audio"

    def __init__(self, frequency: float = 440.0, amplitude: float = 0.2) -> None:
        if not 20 <= frequency <= 20000:
            raise ConfigurationError(f"tone frequency must be in 20-20000 Hz, got {frequency}")
        if not 0 <= amplitude <= 1:
            raise ConfigurationError(f"tone amplitude must be in [0, 1], got {amplitude}")
        super().__init__()
        self.frequency, self.amplitude = frequency, amplitude
        self._clock_rate = AUDIO_RATE
        self._step = int(AUDIO_RATE * AUDIO_PTIME)

    async def recv(self) -> av.AudioFrame:
        pts = await self._next_pts()
        t = (np.arange(self._step) + pts) / AUDIO_RATE
        samples = (np.sin(2 * math.pi * self.frequency * t) * self.amplitude * 32767).astype(
            np.int16
        )
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = pts
        frame.time_base = AUDIO_TIME_BASE
        return frame


@dataclass(frozen=True)
class MediaSpec:
    """What a peer sends.

    ``video``: ``"synthetic"``, ``"none"`` or a media file path; ``audio``:
    ``"tone"``, ``"none"`` or a media file path (may be the same file).
    """

    video: str = "synthetic"
    audio: str = "tone"
    width: int = 320
    height: int = 240
    fps: float = 15.0
    seed: int = 0


def open_media(
    spec: MediaSpec,
) -> tuple[MediaStreamTrack | None, MediaStreamTrack | None, object | None]:
    """Open the tracks ``spec`` describes: (audio, video, player to close or None)."""
    player = None
    files = {v for v in (spec.video, spec.audio) if v not in ("synthetic", "tone", "none")}
    if len(files) > 1:
        raise ConfigurationError(f"audio and video must come from one file, got {sorted(files)}")
    if files:
        from aiortc.contrib.media import MediaPlayer

        path = files.pop()
        try:
            with av.open(path) as container:
                kinds = {s.type for s in container.streams}
        except (OSError, av.FFmpegError) as exc:
            raise ConfigurationError(f"cannot open media file {path!r}: {exc}") from exc
        for kind in ("audio", "video"):
            if getattr(spec, kind) == path and kind not in kinds:
                raise ConfigurationError(f"media file {path!r} has no {kind} stream")
        player = MediaPlayer(path, loop=True)
    if spec.video == "synthetic":
        video: MediaStreamTrack | None = SyntheticVideoTrack(
            spec.width, spec.height, spec.fps, spec.seed
        )
    elif spec.video == "none":
        video = None
    else:
        video = player.video if player is not None else None
    if spec.audio == "tone":
        audio: MediaStreamTrack | None = ToneAudioTrack()
    elif spec.audio == "none":
        audio = None
    else:
        audio = player.audio if player is not None else None
    return audio, video, player


def _bounce(position: int, span: int) -> int:
    if span <= 0:
        return 0
    position %= 2 * span
    return position if position < span else 2 * span - position


@functools.lru_cache(maxsize=8)
def _texture(width: int, height: int, seed: int) -> np.ndarray:
    """A detailed picture twice the frame size, so scrolling never runs out.

    Cached (read-only) because making it costs tens of milliseconds at 640x480,
    which would otherwise add to every peer's setup time.
    """
    rng = np.random.default_rng(seed)
    h, w = 2 * height, 2 * width
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    red = 128 + 90 * np.sin(2 * np.pi * x / width)
    green = 128 + 90 * np.sin(2 * np.pi * (x + y) / (height * 0.7))
    blue = 128 + 90 * np.cos(2 * np.pi * y / height)
    img = np.stack([red, green, blue], axis=-1)
    checker = (((x // 8) + (y // 8)) % 2) * 40 - 20
    img += checker[..., None]
    img += rng.normal(0, 12, size=img.shape)
    texture = np.clip(img, 0, 255).astype(np.uint8)
    texture.flags.writeable = False
    return texture
