"""Recording received media to a file, without taking frames from anyone.

A :class:`Recorder` reads relay subscriptions (:meth:`webrtclab.peer.PeerSession.subscribe`),
so the session's own consumer (counters, frame listeners, quality monitor) still
gets every frame.  Usually made by :meth:`webrtclab.peer.Peer.record`.

Video frames are timed by their arrival (milliseconds since the recording
started), so the file shows what the receiver saw, freezes included; audio is
timed by its samples from the arrival of its first frame.  Received frames are
never modified: other subscribers hold the same objects.  Every track is one
stream, titled ``"<remote>/<kind>"``.

The container follows the file name: ``.mkv`` (Matroska: H.264 and lossless
PCM by default), ``.mp4`` (H.264 and AAC) or ``.webm`` (VP8 and Opus).
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ._tasks import cancel_and_wait
from .exceptions import ConfigurationError, InvalidStateError, LabTimeoutError

__all__ = ["Recorder"]

logger = logging.getLogger(__name__)

VIDEO_TIME_BASE = fractions.Fraction(1, 1000)  # Matroska's own timestamp unit
MAX_ERRORS = 20  # kept in Recorder.errors; a codec failing on every frame logs once
AUDIO_RATE = 48000
# Container, default video codec, default audio codec, by file name suffix.
FORMATS = {
    ".mkv": ("matroska", "libx264", "pcm_s16le"),
    ".mp4": ("mp4", "libx264", "aac"),
    ".webm": ("webm", "libvpx", "libopus"),
}
# ultrafast: about 0.4 ms per 320x240 frame in the event loop, at near-transparent quality.
DEFAULT_VIDEO_OPTIONS = {
    "libx264": {"preset": "ultrafast", "crf": "20"},
    "libvpx": {"deadline": "realtime", "cpu-used": "8", "crf": "10", "b": "2M"},
}


class _Writer:
    """One output stream: timestamps, format conversion and encoding for one track."""

    stream: Any

    def __init__(self, container: Any, name: str) -> None:
        self.container = container
        self.name = name
        self.frames = 0

    def write(self, frame: Any, offset_s: float) -> None:
        """Encode ``frame``, which arrived ``offset_s`` after the recording started."""
        raise NotImplementedError

    def flush(self) -> None:
        """Write what the encoder still holds."""
        self.container.mux(self.stream.encode(None))


class _VideoWriter(_Writer):
    def __init__(
        self,
        container: Any,
        name: str,
        first: av.VideoFrame,
        codec: str,
        options: dict[str, str],
    ) -> None:
        super().__init__(container, name)
        self._last_pts = -1
        self.stream = container.add_stream(codec, options=options)
        self.stream.width, self.stream.height = first.width, first.height
        self.stream.pix_fmt = "yuv420p"
        self.stream.time_base = VIDEO_TIME_BASE
        self.stream.codec_context.time_base = VIDEO_TIME_BASE
        self.stream.metadata["title"] = name

    def write(self, frame: av.VideoFrame, offset_s: float) -> None:
        stream = self.stream
        if (frame.format.name, frame.width, frame.height) != (
            "yuv420p",
            stream.width,
            stream.height,
        ):
            # A remote may change its resolution mid-call; the stream keeps its size.
            frame = frame.reformat(width=stream.width, height=stream.height, format="yuv420p")
        # Frames read in one burst (after a stall) may share a millisecond.
        pts = max(round(offset_s * 1000), self._last_pts + 1)
        self._last_pts = pts
        # Other subscribers hold this very frame: its timestamps are lent to the
        # encoder (which reads them when the frame is sent) and given back.
        saved = frame.pts, frame.time_base
        frame.pts, frame.time_base = pts, VIDEO_TIME_BASE
        try:
            packets = stream.encode(frame)
        finally:
            frame.pts, frame.time_base = saved
        self.container.mux(packets)
        self.frames += 1


class _AudioWriter(_Writer):
    """Audio resampled to the encoder's format and re-chunked to its frame size."""

    def __init__(self, container: Any, name: str, first: av.AudioFrame, codec: str) -> None:
        super().__init__(container, name)
        layout = first.layout.name if len(first.layout.channels) <= 2 else "stereo"
        self.stream = container.add_stream(codec, rate=AUDIO_RATE)
        self.stream.layout = layout
        self.stream.metadata["title"] = name
        context = self.stream.codec_context
        context.format = context.codec.audio_formats[0].name
        context.open()  # now frame_size is known: AAC 1024, Opus 960, PCM 0 (any)
        self._resampler = av.AudioResampler(format=context.format, layout=layout, rate=AUDIO_RATE)
        self._fifo = av.AudioFifo()
        self._next_pts: int | None = None

    def write(self, frame: av.AudioFrame, offset_s: float) -> None:
        if self._next_pts is None:
            self._next_pts = round(offset_s * AUDIO_RATE)
        for chunk in self._resampler.resample(frame):
            # The file counts samples from the first frame's arrival, not RTP time.
            # The chunk may be the received frame itself (nothing to convert), which
            # other subscribers hold: its pts is given back once the fifo copied it.
            saved, chunk.pts = chunk.pts, None
            try:
                self._fifo.write(chunk)
            finally:
                chunk.pts = saved
        self._drain(final=False)
        self.frames += 1

    def _drain(self, *, final: bool) -> None:
        size = self.stream.codec_context.frame_size or self._fifo.samples
        while self._fifo.samples >= size > 0 or (final and self._fifo.samples):
            chunk = self._fifo.read(min(size, self._fifo.samples))
            assert chunk is not None and self._next_pts is not None
            chunk.pts, chunk.time_base = self._next_pts, fractions.Fraction(1, AUDIO_RATE)
            self._next_pts += chunk.samples
            self.container.mux(self.stream.encode(chunk))

    def flush(self) -> None:
        if self._next_pts is not None:
            self._drain(final=True)
        super().flush()


class Recorder:
    """Records media tracks to a ``.mkv``, ``.mp4`` or ``.webm`` file.

    :param tracks: ``(name, track)`` pairs; each track should be a subscription of
        its own (the recorder reads it and stops it at the end).
    :param clock: seconds, for the video timestamps (the lab clock in a lab).
    :param video_codec: an FFmpeg encoder the container takes; by default
        ``libx264`` (``libvpx`` for WebM).  ``"ffv1"`` in Matroska is lossless,
        for frame-by-frame analysis later.
    :param audio_codec: by default ``pcm_s16le`` in Matroska (lossless, no CPU),
        ``aac`` in MP4, ``libopus`` in WebM.
    :param on_stop: called with the recorder once it is stopped.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        tracks: Sequence[tuple[str, MediaStreamTrack]],
        *,
        clock: Callable[[], float] = time.monotonic,
        video_codec: str | None = None,
        video_options: dict[str, str] | None = None,
        audio_codec: str | None = None,
        on_stop: Callable[[Recorder], None] | None = None,
    ) -> None:
        if not tracks:
            raise ConfigurationError(f"nothing to record to {os.fspath(path)!r}: no tracks")
        suffix = Path(path).suffix.lower()
        if suffix not in FORMATS:
            raise ConfigurationError(
                f"cannot record to {os.fspath(path)!r}: the name must end in {', '.join(FORMATS)}"
            )
        self.format, default_video, default_audio = FORMATS[suffix]
        video_codec = video_codec or default_video
        audio_codec = audio_codec or default_audio
        for name, track in tracks:
            if track.kind not in ("audio", "video"):
                raise ConfigurationError(f"cannot record track {name!r} of kind {track.kind!r}")
        for kind, codec in (("video", video_codec), ("audio", audio_codec)):
            try:
                av.Codec(codec, "w")
            except Exception as exc:  # av raises several types for unknown codecs
                raise ConfigurationError(f"no {kind} encoder {codec!r}: {exc}") from exc
        self.path = Path(path)
        self.clock = clock
        self.video_codec = video_codec
        self.video_options = dict(
            DEFAULT_VIDEO_OPTIONS.get(video_codec, {}) if video_options is None else video_options
        )
        self.audio_codec = audio_codec
        self.errors: list[Exception] = []
        self._tracks = list(tracks)
        self._writers: dict[str, _Writer] = {}
        self._container: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._on_stop = on_stop
        self._t0 = 0.0
        self._started = False
        self._stopped = False

    def __repr__(self) -> str:
        return f"Recorder({os.fspath(self.path)!r})"

    @property
    def recording(self) -> bool:
        """True between a successful :meth:`start` and :meth:`stop`."""
        return self._started and not self._stopped

    @property
    def frames(self) -> dict[str, int]:
        """Frames written so far, per stream name."""
        return {name: writer.frames for name, writer in self._writers.items()}

    async def start(self, timeout: float = 5.0) -> None:
        """Wait for each track's first frame (its format sets the stream's), then record.

        Tracks without a frame within ``timeout`` are left out (with a warning);
        :class:`~webrtclab.exceptions.LabTimeoutError` if no track has one.
        """
        if self._started or self._stopped:
            raise InvalidStateError(f"{self!r} was already started")
        self._started = True
        try:
            # FFmpeg opens the file only when the header is written: find out now.
            self.path.open("wb").close()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot write a recording to {os.fspath(self.path)!r}: {exc}"
            ) from exc
        self._t0 = self.clock()
        firsts = await asyncio.gather(*(self._first_frame(t, timeout) for _, t in self._tracks))
        present = [(n, t, f) for (n, t), f in zip(self._tracks, firsts, strict=True) if f]
        for (name, track), first in zip(self._tracks, firsts, strict=True):
            if first is None:
                logger.warning(
                    "%r: no frame from %s within %.1f s; not recorded", self, name, timeout
                )
                track.stop()
        if not present:
            names = ", ".join(name for name, _ in self._tracks)
            raise LabTimeoutError(f"{self!r}: no frame to record from {names} within {timeout} s")
        try:
            self._container = av.open(os.fspath(self.path), "w", format=self.format)
        except (OSError, av.FFmpegError) as exc:
            raise ConfigurationError(
                f"cannot write a recording to {os.fspath(self.path)!r}: {exc}"
            ) from exc
        # Every stream exists before the first packet: that writes the header.
        for name, _, (frame, _) in present:
            writer: _Writer
            if isinstance(frame, av.VideoFrame):
                writer = _VideoWriter(
                    self._container, name, frame, self.video_codec, self.video_options
                )
            else:
                writer = _AudioWriter(self._container, name, frame, self.audio_codec)
            self._writers[name] = writer
        for name, track, (frame, arrival) in present:
            writer = self._writers[name]
            self._write(writer, frame, arrival)
            self._tasks.append(asyncio.create_task(self._run(writer, track)))

    async def _first_frame(
        self, track: MediaStreamTrack, timeout: float
    ) -> tuple[Any, float] | None:
        try:
            async with asyncio.timeout(timeout):
                frame = await track.recv()
        except (TimeoutError, MediaStreamError):
            return None
        return frame, self.clock()

    async def _run(self, writer: _Writer, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return  # the session closed; the other streams go on
            self._write(writer, frame, self.clock())

    def _write(self, writer: _Writer, frame: Any, arrival: float) -> None:
        try:
            writer.write(frame, arrival - self._t0)
        except (av.FFmpegError, ValueError) as exc:
            # One bad frame must not end the recording of the others.
            if not self.errors:
                logger.warning("%r: cannot write a frame of %s: %s", self, writer.name, exc)
            if len(self.errors) < MAX_ERRORS:
                self.errors.append(exc)

    async def stop(self) -> None:
        """Stop recording and finalise the file (trailer written); safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        try:
            await cancel_and_wait(*self._tasks)
        finally:
            # Also when the task stopping us is being cancelled: the file must be
            # playable whatever ended the run.
            for _, track in self._tracks:
                track.stop()
            try:
                self._finalise()
            finally:
                if self._on_stop is not None:
                    self._on_stop(self)

    def _finalise(self) -> None:
        container, self._container = self._container, None
        if container is None:
            return
        try:
            for writer in self._writers.values():
                try:
                    writer.flush()
                except (av.FFmpegError, ValueError) as exc:
                    logger.warning("%r: cannot flush %s: %s", self, writer.name, exc)
                    self.errors.append(exc)
        finally:
            container.close()
        logger.debug("%r: finalised, frames %s", self, self.frames)

    async def __aenter__(self) -> Recorder:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
