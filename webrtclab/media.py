"""Media sources for lab peers: synthetic camera and screen video, a tone, files.

aiortc's ``VideoStreamTrack`` sends a flat green frame (about 25 kbps), which
says nothing about a codec under pressure; :class:`SyntheticVideoTrack` scrolls
a detailed texture and moves a bright object so that VP8 has real work to do,
and :class:`ScreenLikeVideoTrack` shows mostly static slides with sharp text.

Both draw a :class:`Stamp` into every frame they send: the frame number and the
send time, as a band of dark and bright blocks at the bottom of the picture that
survives VP8 at low bitrates.  A receiver reads it back with :func:`read_stamp`
and, in the same process, re-renders the exact reference picture for PSNR
(``render(index)`` is deterministic and draws no stamp).  Frames leave as
yuv420p, whose luma plane is exactly :func:`luma` of the rendered picture.
"""

from __future__ import annotations

import asyncio
import bisect
import fractions
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .exceptions import ConfigurationError

__all__ = [
    "MediaSpec",
    "ScreenLikeVideoTrack",
    "Stamp",
    "SyntheticVideoTrack",
    "ToneAudioTrack",
    "draw_stamp",
    "luma",
    "luma_plane",
    "open_media",
    "read_stamp",
    "stamp_band",
    "synthetic_video_assets",
    "yuv420p_frame",
]

VIDEO_CLOCK_RATE = 90000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
AUDIO_RATE = 48000
AUDIO_PTIME = 0.020
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)

# --- frame stamps -------------------------------------------------------------------------

STAMP_COLUMNS = 20
STAMP_ROWS = 2
# Grey levels of 0 and 1 bits, with a dither of +-STAMP_DITHER that changes every
# frame: without it, VP8 as aiortc configures it (temporal denoiser on) leaves a
# block of the otherwise flat band stale in about one frame in three.
STAMP_DARK = 40
STAMP_BRIGHT = 215
STAMP_DITHER = 20
# A block decodes only when its mean is clearly dark or bright (in RGB or in
# limited-range luma, where the levels become about 50 and 200).
_STAMP_DARK_MAX = 95
_STAMP_BRIGHT_MIN = 155
# BT.601 limited-range luma, as swscale computes it when aiortc converts rgb24
# frames to yuv420p for the encoder (matches it exactly for 99.5 % of pixels).
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32) * np.float32(219 / 255)


@dataclass(frozen=True)
class Stamp:
    """What a frame carries in its picture: frame number and send time, both mod 65536."""

    frame: int
    sent_ms: int


def stamp_band(width: int, height: int) -> tuple[int, int, int] | None:
    """(first row, block width, block height) of the stamp band; None if the frame is too small.

    The band is 2 rows of 20 blocks at the bottom; blocks are ``width // 20`` wide
    (at least 4 pixels, so frames from 80 pixels wide) and as high, at least 8.
    """
    block_w = width // STAMP_COLUMNS
    block_h = max(8, block_w)
    if block_w < 4 or STAMP_ROWS * block_h > height // 2:
        return None
    return height - STAMP_ROWS * block_h, block_w, block_h


def _crc8(data: bytes) -> int:
    # CRC-8 (polynomial 0x07) with initial value 0xFF, so that neither an all-dark
    # nor an all-bright band has a valid checksum.
    crc = 0xFF
    for byte in data:
        crc = _CRC8_TABLE[crc ^ byte]
    return crc


def _crc8_table() -> list[int]:
    table = []
    for value in range(256):
        crc = value
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return table


_CRC8_TABLE = _crc8_table()
_BIT_WEIGHTS = 1 << np.arange(15, -1, -1)


def _stamp_bits(frame: int, sent_ms: int) -> np.ndarray:
    payload = bytes([(frame >> 8) & 0xFF, frame & 0xFF, (sent_ms >> 8) & 0xFF, sent_ms & 0xFF])
    word = int.from_bytes(payload + bytes([_crc8(payload)]), "big")
    return np.array([(word >> (39 - i)) & 1 for i in range(40)], dtype=np.uint8)


def draw_stamp(image: np.ndarray, frame: int, sent_ms: int) -> None:
    """Draw the stamp (frame and sent_ms, each taken mod 65536) into an RGB image in place."""
    band = stamp_band(image.shape[1], image.shape[0])
    if band is None:
        return
    y0, block_w, block_h = band
    bits = _stamp_bits(frame & 0xFFFF, sent_ms & 0xFFFF).reshape(STAMP_ROWS, STAMP_COLUMNS)
    levels = np.where(bits, STAMP_BRIGHT, STAMP_DARK).astype(np.uint8)
    blocks = np.repeat(np.repeat(levels, block_h, axis=0), block_w, axis=1)
    blocks += _dither(blocks.shape)[frame % STAMP_DITHER_PATTERNS]
    image[y0:, : STAMP_COLUMNS * block_w] = blocks[..., None]


STAMP_DITHER_PATTERNS = 8


@functools.lru_cache(maxsize=8)
def _dither(shape: tuple[int, ...]) -> np.ndarray:
    """Independent dither patterns (uint8, wrapping: added to levels, they subtract too)."""
    rng = np.random.default_rng(0)
    noise = rng.integers(-STAMP_DITHER, STAMP_DITHER + 1, (STAMP_DITHER_PATTERNS, *shape))
    patterns = noise.astype(np.uint8)  # two's complement: adding wraps to level - n
    patterns.flags.writeable = False
    return patterns


def synthetic_video_assets(width: int, height: int, seed: int) -> bytes:
    """What a page needs to draw :class:`SyntheticVideoTrack`'s frames and stamps itself.

    The scrolled texture (``2 * height`` rows of ``2 * width`` RGB pixels), then the
    stamp's dither patterns (:data:`STAMP_DITHER_PATTERNS` of the band's shape, bytes
    that wrap when added), so a browser that composes frame ``i`` as ``_draw`` and
    :func:`draw_stamp` do sends the very pictures a lab peer would.
    """
    texture = _texture(width, height, seed)
    band = stamp_band(width, height)
    dither = b""
    if band is not None:
        y0, block_w, _ = band
        dither = _dither((height - y0, STAMP_COLUMNS * block_w)).tobytes()
    return texture.tobytes() + dither


def read_stamp(image: np.ndarray | av.VideoFrame) -> Stamp | None:
    """Decode the stamp of a frame (RGB or luma array, or a VideoFrame); None if unreadable.

    Each block is read as the mean of its central half, which compression
    blurs least; a block that is neither clearly dark nor clearly bright, or a
    checksum mismatch, makes the stamp unreadable.
    """
    plane = luma_plane(image) if isinstance(image, av.VideoFrame) else image
    band = stamp_band(plane.shape[1], plane.shape[0])
    if band is None:
        return None
    y0, block_w, block_h = band
    region = plane[y0:, : STAMP_COLUMNS * block_w]
    if region.ndim == 3:
        region = region @ np.array([0.299, 0.587, 0.114], np.float32)
    blocks = region.reshape(STAMP_ROWS, block_h, STAMP_COLUMNS, block_w)
    my, mx = block_h // 4, block_w // 4
    means = blocks[:, my : block_h - my, :, mx : block_w - mx].mean(axis=(1, 3)).ravel()
    bright = means >= _STAMP_BRIGHT_MIN
    if not np.all(bright | (means <= _STAMP_DARK_MAX)):
        return None
    frame = int(bright[:16] @ _BIT_WEIGHTS)
    sent_ms = int(bright[16:32] @ _BIT_WEIGHTS)
    checksum = int(bright[32:] @ _BIT_WEIGHTS[8:])
    payload = bytes([frame >> 8, frame & 0xFF, sent_ms >> 8, sent_ms & 0xFF])
    if _crc8(payload) != checksum:
        return None
    return Stamp(frame, sent_ms)


def luma_plane(frame: av.VideoFrame) -> np.ndarray:
    """The luma plane of a frame (a view, without copying, for YUV frames)."""
    if frame.format.name in ("yuv420p", "yuvj420p", "yuv422p", "yuv444p", "nv12"):
        plane = frame.planes[0]
        rows = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)
        return rows[:, : plane.width]
    return luma(frame.to_ndarray(format="rgb24"))


def luma(image: np.ndarray) -> np.ndarray:
    """Limited-range BT.601 luma of an RGB image (swscale's rgb24 to yuv420p, to within 1)."""
    return (image @ _LUMA_WEIGHTS + np.float32(16.5)).astype(np.uint8)


_CHROMA_WEIGHTS = np.array(
    [[-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], np.float32
).T * np.float32(224 / 255 / 2)  # applied to the sum of two pixels


def yuv420p_frame(image: np.ndarray) -> av.VideoFrame:
    """A yuv420p VideoFrame of an RGB image (even size), converted with numpy.

    Sources send yuv420p so that aiortc's encoder threads need no conversion: a
    relay hands one frame object to every session's sender, and PyAV converts
    with a scaler kept on the frame, which two threads then share and crash in.
    Its luma plane is exactly :func:`luma` of the image.
    """
    height, width = image.shape[:2]
    frame = av.VideoFrame(width, height, "yuv420p")
    # Chroma of each 2x2 block from its diagonal pair: a quarter of the cost of all
    # four, and only colour (not luma, which PSNR compares) is approximated.
    pairs = image[::2, ::2].astype(np.uint16) + image[1::2, 1::2]
    chroma = (pairs @ _CHROMA_WEIGHTS + np.float32(128.5)).clip(0, 255).astype(np.uint8)
    for plane, data in zip(
        frame.planes, (luma(image), chroma[..., 0], chroma[..., 1]), strict=True
    ):
        rows = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)
        rows[:, : plane.width] = data
    return frame


# --- pacing -------------------------------------------------------------------------------


class FramePacer:
    """Real-time pacing and frame numbering for the sources that take turns on one sender.

    Frames are numbered from 0 at the first ``recv()`` and due at
    ``start + index * step / clock_rate``.  When a peer switches its video
    source, the new source shares the old one's pacer, so frame numbers and
    timestamps continue; the pacer remembers which source produced which frame.
    """

    def __init__(self, clock_rate: int, step: int) -> None:
        self.clock_rate = clock_rate
        self.step = step
        self.next_index = 0
        self._start: float | None = None
        self._first: list[int] = []  # first index of each run of frames from one source
        self._sources: list[MediaStreamTrack] = []

    async def claim(self, track: MediaStreamTrack) -> int:
        """Wait until the next frame is due and take its number for ``track``."""
        while True:
            # Checked after every sleep: a source stopped while it waited must not
            # take the frame its successor is waiting for.
            if track.readyState != "live":
                raise MediaStreamError
            index = self.next_index
            if self._start is None:
                self._start = time.monotonic()
                break
            wait = self._start + index * self.step / self.clock_rate - time.monotonic()
            if wait <= 0:
                break
            await asyncio.sleep(wait)
        self.next_index = index + 1
        if not self._sources or self._sources[-1] is not track:
            self._first.append(index)
            self._sources.append(track)
        return index

    def resolve(self, number: int) -> int | None:
        """The latest frame index whose number mod 65536 is ``number``; None if none yet."""
        last = self.next_index - 1
        index = last - ((last - number) & 0xFFFF)
        return index if index >= 0 else None

    def source_of(self, index: int) -> MediaStreamTrack | None:
        """The source that produced frame ``index``."""
        position = bisect.bisect_right(self._first, index) - 1
        if position < 0 or index >= self.next_index:
            return None
        return self._sources[position]


class _PacedTrack(MediaStreamTrack):
    """Paces frames in real time from the first ``recv()``, as aiortc's tracks do."""

    def __init__(self, clock_rate: int, step: int, pacer: FramePacer | None = None) -> None:
        super().__init__()
        if pacer is None:
            pacer = FramePacer(clock_rate, step)
        elif (pacer.clock_rate, pacer.step) != (clock_rate, step):
            raise ConfigurationError(
                f"a shared pacer must have the same frame rate: {pacer.step}/{pacer.clock_rate} s "
                f"per frame, got {step}/{clock_rate} s"
            )
        self.pacer = pacer
        self.frames_produced = 0

    async def _next_index(self) -> int:
        index = await self.pacer.claim(self)
        self.frames_produced += 1
        return index


class _RenderedVideoTrack(_PacedTrack):
    """A deterministic picture per frame index, stamped with frame number and send time."""

    kind = "video"

    def __init__(
        self,
        width: int,
        height: int,
        fps: float,
        seed: int,
        *,
        clock: Callable[[], float] | None,
        pacer: FramePacer | None,
    ) -> None:
        if width < 16 or height < 16 or width % 2 or height % 2:
            raise ConfigurationError(
                f"video size must be even and at least 16x16, got {width}x{height}"
            )
        if not 0 < fps <= 120:
            raise ConfigurationError(f"fps must be in (0, 120], got {fps}")
        super().__init__(VIDEO_CLOCK_RATE, int(round(VIDEO_CLOCK_RATE / fps)), pacer)
        self.width, self.height, self.fps, self.seed = width, height, fps, seed
        self.clock = clock or time.monotonic

    def render(self, index: int) -> np.ndarray:
        """The RGB picture of frame ``index`` (height x width x 3, uint8), without the stamp."""
        raise NotImplementedError

    def render_luma(self, index: int) -> np.ndarray:
        """``luma(render(index))`` (height x width, uint8), faster: for PSNR at the receiver."""
        return luma(self.render(index))

    async def recv(self) -> av.VideoFrame:
        index = await self._next_index()
        image = self.render(index)
        draw_stamp(image, index, int(self.clock() * 1000))
        frame = yuv420p_frame(image)
        frame.pts = index * self.pacer.step
        frame.time_base = VIDEO_TIME_BASE
        return frame


class SyntheticVideoTrack(_RenderedVideoTrack):
    """A camera-like source with motion and fine detail.

    A seeded texture (gradients, fine checker and noise) scrolls diagonally while
    a bright disc bounces across it, so consecutive frames differ everywhere.

    :param clock: seconds on the time base of the stamps' send times (the lab
        clock in a lab; ``time.monotonic`` by default).
    :param pacer: shared with the source this one replaces (see :class:`FramePacer`).
    """

    def __init__(
        self,
        width: int = 320,
        height: int = 240,
        fps: float = 15.0,
        seed: int = 0,
        *,
        clock: Callable[[], float] | None = None,
        pacer: FramePacer | None = None,
    ) -> None:
        super().__init__(width, height, fps, seed, clock=clock, pacer=pacer)
        self._texture = _texture(width, height, seed)

    def render(self, index: int) -> np.ndarray:
        """The RGB picture of frame ``index`` (height x width x 3, uint8), without the stamp."""
        return self._draw(index, self._texture, _DISC)

    def render_luma(self, index: int) -> np.ndarray:
        """``luma(render(index))`` (height x width, uint8), from a cached luma texture."""
        return self._draw(index, _texture_luma(self.width, self.height, self.seed), _DISC_LUMA)

    def _draw(self, index: int, texture: np.ndarray, disc: Any) -> np.ndarray:
        h, w = self.height, self.width
        dy, dx = (index * 2) % h, (index * 3) % w
        img = texture[dy : dy + h, dx : dx + w].copy()
        # A bouncing disc: large-scale motion the encoder has to track.
        r = max(4, min(w, h) // 8)
        px = _bounce(index * 4, w - 2 * r) + r
        py = _bounce(index * 3, h - 2 * r) + r
        y0, y1, x0, x1 = py - r, py + r, px - r, px + r
        yy, xx = np.ogrid[y0:y1, x0:x1]
        mask = (yy - py) ** 2 + (xx - px) ** 2 <= r * r
        img[y0:y1, x0:x1][mask] = disc
        return img


class ScreenLikeVideoTrack(_RenderedVideoTrack):
    """A screen-share-like source: static slides of sharp text-like blocks and a slow cursor.

    Each slide (a title bar, lines of dark "words" on a light page, a coloured
    figure) stays for ``slide_seconds``; only the cursor moves in between.
    """

    def __init__(
        self,
        width: int = 320,
        height: int = 240,
        fps: float = 15.0,
        seed: int = 0,
        *,
        slide_seconds: float = 4.0,
        clock: Callable[[], float] | None = None,
        pacer: FramePacer | None = None,
    ) -> None:
        if not slide_seconds > 0:
            raise ConfigurationError(f"slide_seconds must be positive, got {slide_seconds}")
        super().__init__(width, height, fps, seed, clock=clock, pacer=pacer)
        self.slide_seconds = slide_seconds
        self._cursor = _cursor_mask(max(6, height // 10))

    def render(self, index: int) -> np.ndarray:
        """The RGB picture of frame ``index`` (height x width x 3, uint8), without the stamp."""
        return self._draw(index, _slide, (255, 255, 255), (0, 0, 0))

    def render_luma(self, index: int) -> np.ndarray:
        """``luma(render(index))`` (height x width, uint8), from cached luma slides."""
        return self._draw(index, _slide_luma, _WHITE_LUMA, _BLACK_LUMA)

    def _draw(
        self, index: int, slide: Callable[[int, int, int, int], np.ndarray], white: Any, black: Any
    ) -> np.ndarray:
        h, w = self.height, self.width
        t = index / self.fps
        img = slide(w, h, self.seed, int(t // self.slide_seconds)).copy()
        # The cursor drifts on a slow Lissajous path (periods of 7 and 11 s).
        size = self._cursor.shape[0]
        cx = int((w - size) * (0.5 + 0.45 * math.sin(2 * math.pi * t / 7)))
        cy = int((h - size) * (0.5 + 0.45 * math.sin(2 * math.pi * t / 11 + 1)))
        region = img[cy : cy + size, cx : cx + size]
        mask = self._cursor[: region.shape[0], : region.shape[1]]
        region[mask == 1] = white
        region[mask == 2] = black
        return img


class ToneAudioTrack(_PacedTrack):
    """A continuous sine tone, 48 kHz mono, in 20 ms frames."""

    kind = "audio"

    def __init__(self, frequency: float = 440.0, amplitude: float = 0.2) -> None:
        if not 20 <= frequency <= 20000:
            raise ConfigurationError(f"tone frequency must be in 20-20000 Hz, got {frequency}")
        if not 0 <= amplitude <= 1:
            raise ConfigurationError(f"tone amplitude must be in [0, 1], got {amplitude}")
        super().__init__(AUDIO_RATE, int(AUDIO_RATE * AUDIO_PTIME))
        self.frequency, self.amplitude = frequency, amplitude

    async def recv(self) -> av.AudioFrame:
        step = self.pacer.step
        pts = await self._next_index() * step
        t = (np.arange(step) + pts) / AUDIO_RATE
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

    ``video``: ``"synthetic"`` (camera-like), ``"screen"`` (screen-share-like),
    ``"none"`` or a media file path; ``audio``: ``"tone"``, ``"none"`` or a media
    file path (may be the same file).
    """

    video: str = "synthetic"
    audio: str = "tone"
    width: int = 320
    height: int = 240
    fps: float = 15.0
    seed: int = 0


SYNTHETIC_SOURCES = {"synthetic": "camera", "camera": "camera", "screen": "screen"}


def synthetic_video(
    source: str,
    spec: MediaSpec,
    *,
    clock: Callable[[], float] | None = None,
    pacer: FramePacer | None = None,
) -> SyntheticVideoTrack | ScreenLikeVideoTrack:
    """A rendered video source: ``"camera"`` (or ``"synthetic"``) or ``"screen"``."""
    kind = SYNTHETIC_SOURCES.get(source)
    if kind is None:
        raise ConfigurationError(f'video source must be "camera" or "screen", got {source!r}')
    cls = SyntheticVideoTrack if kind == "camera" else ScreenLikeVideoTrack
    return cls(spec.width, spec.height, spec.fps, spec.seed, clock=clock, pacer=pacer)


def open_media(
    spec: MediaSpec, *, clock: Callable[[], float] | None = None
) -> tuple[MediaStreamTrack | None, MediaStreamTrack | None, object | None]:
    """Open the tracks ``spec`` describes: (audio, video, player to close or None).

    :param clock: the time base of the video stamps' send times (``time.monotonic``
        by default; a lab passes its clock).
    """
    player = None
    files = {
        v for v in (spec.video, spec.audio) if v not in ("synthetic", "screen", "tone", "none")
    }
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
    if spec.video in SYNTHETIC_SOURCES:
        video: MediaStreamTrack | None = synthetic_video(spec.video, spec, clock=clock)
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


_DISC = (250, 220, 40)
_DISC_LUMA = int(luma(np.array([[_DISC]], np.uint8))[0, 0])
_WHITE_LUMA = int(luma(np.full((1, 1, 3), 255, np.uint8))[0, 0])
_BLACK_LUMA = int(luma(np.zeros((1, 1, 3), np.uint8))[0, 0])


def _bounce(position: int, span: int) -> int:
    if span <= 0:
        return 0
    position %= 2 * span
    return position if position < span else 2 * span - position


@functools.lru_cache(maxsize=8)
def _texture(width: int, height: int, seed: int) -> np.ndarray:
    """A detailed picture twice the frame size, so scrolling never runs out.

    Two by two copies of one frame-sized tile, so the scroll wraps without a seam in
    time: every frame is its predecessor moved, never a scene cut (a cut every few
    seconds would make the encoder emit near-keyframes that no camera does).
    Cached (read-only) because making it costs tens of milliseconds at 640x480,
    which would otherwise add to every peer's setup time.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    red = 128 + 90 * np.sin(2 * np.pi * x / width)
    green = 128 + 90 * np.sin(2 * np.pi * (2 * x / width + y / height))
    blue = 128 + 90 * np.cos(2 * np.pi * y / height)
    img = np.stack([red, green, blue], axis=-1)
    checker = (((x // 8) + (y // 8)) % 2) * 40 - 20
    img += checker[..., None]
    img += rng.normal(0, 12, size=img.shape)
    tile = np.clip(img, 0, 255).astype(np.uint8)
    texture = np.tile(tile, (2, 2, 1))
    texture.flags.writeable = False
    return texture


@functools.lru_cache(maxsize=16)
def _slide(width: int, height: int, seed: int, number: int) -> np.ndarray:
    """Slide ``number``: a title bar, lines of dark "words" and a figure on a light page.

    Cached (read-only): a slide is shown for seconds, so it is drawn once.
    """
    rng = np.random.default_rng((seed, number))
    img = np.full((height, width, 3), 246, np.uint8)
    bar = max(6, height // 9)
    img[:bar] = rng.integers(20, 120, 3, dtype=np.uint8)
    # Title "words" in white on the bar.
    margin = max(2, width // 32)
    glyph_h = max(2, bar // 3)
    x = margin
    while x < width // 2:
        word = int(rng.integers(3, 9)) * max(1, width // 80)
        img[bar // 3 : bar // 3 + glyph_h, x : x + word] = 255
        x += word + max(2, width // 60)
    # Body text lines, with a figure on the right half of some slides.
    line_h = max(2, height // 40)
    figure = number % 2 == 0
    right = width // 2 if figure else width - margin
    y = bar + 2 * line_h
    while y + line_h < height - 2 * line_h:
        x = margin + (2 * line_h if rng.random() < 0.3 else 0)
        end = right - int(rng.integers(0, max(1, right // 3)))
        while x < end:
            word = int(rng.integers(2, 10)) * max(1, width // 100)
            img[y : y + line_h, x : min(x + word, end)] = 30
            x += word + max(2, width // 80)
        y += 2 * line_h + (line_h if rng.random() < 0.2 else 0)
    if figure:
        fy0, fy1 = bar + 2 * line_h, height * 3 // 4
        fx0, fx1 = width // 2 + margin, width - margin
        img[fy0:fy1, fx0:fx1] = rng.integers(60, 220, 3, dtype=np.uint8)
        img[fy0 + line_h : fy1 - line_h : 3 * line_h, fx0 + line_h : fx1 - line_h] = 255
    img.flags.writeable = False
    return img


@functools.lru_cache(maxsize=4)
def _cursor_mask(size: int) -> np.ndarray:
    """An arrow pointer: 2 inside (black), 1 on the outline (white), 0 outside."""
    yy, xx = np.mgrid[0:size, 0:size]
    inside = xx <= yy * 0.6
    outline = xx <= yy * 0.6 + 1.5
    mask = np.where(inside, 2, np.where(outline, 1, 0)).astype(np.uint8)
    mask[-1, :] = np.where(mask[-1, :] > 0, 1, 0)
    mask.flags.writeable = False
    return mask


@functools.lru_cache(maxsize=8)
def _texture_luma(width: int, height: int, seed: int) -> np.ndarray:
    plane = luma(_texture(width, height, seed))
    plane.flags.writeable = False
    return plane


@functools.lru_cache(maxsize=16)
def _slide_luma(width: int, height: int, seed: int, number: int) -> np.ndarray:
    plane = luma(_slide(width, height, seed, number))
    plane.flags.writeable = False
    return plane
