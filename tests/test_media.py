"""Media sources: the synthetic video, the tone, and open_media with files."""

from __future__ import annotations

import fractions
import time
from pathlib import Path

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from webrtclab import ConfigurationError, MediaSpec, SyntheticVideoTrack, ToneAudioTrack
from webrtclab.media import AUDIO_RATE, VIDEO_CLOCK_RATE, open_media

# --- SyntheticVideoTrack ------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(320, 240), (64, 48), (16, 16), (130, 96)])
async def test_video_frames_have_the_configured_size(width: int, height: int) -> None:
    track = SyntheticVideoTrack(width, height, fps=120)
    try:
        for _ in range(2):
            frame = await track.recv()
            assert isinstance(frame, av.VideoFrame)
            assert (frame.width, frame.height) == (width, height)
        assert track.render(5).shape == (height, width, 3)
        assert track.render(5).dtype == np.uint8
    finally:
        track.stop()


def test_video_frames_have_detail_and_motion() -> None:
    track = SyntheticVideoTrack(320, 240, fps=15)
    frames = [track.render(i).astype(np.float64) for i in range(10)]
    for frame in frames:
        # Not flat: strong spatial variation in every channel.
        assert frame.std() > 30
        assert min(frame[..., c].std() for c in range(3)) > 20
        # Fine detail too: neighbouring pixels differ (high-frequency content).
        assert np.abs(np.diff(frame, axis=1)).mean() > 5
    for a, b in zip(frames, frames[1:], strict=False):
        diff = np.abs(a - b)
        assert diff.mean() > 10, "consecutive frames should differ substantially"
        assert (diff.max(axis=-1) > 0).mean() > 0.5, "motion should cover most of the frame"


def test_video_has_a_moving_object() -> None:
    track = SyntheticVideoTrack(160, 120)
    disc = np.array([250, 220, 40], dtype=np.uint8)

    def centroid(index: int) -> tuple[float, float]:
        ys, xs = np.nonzero(np.all(track.render(index) == disc, axis=-1))
        assert len(ys) > 50, "the disc should be drawn"
        return float(ys.mean()), float(xs.mean())

    assert centroid(0) != centroid(3)


def test_render_is_deterministic_for_a_seed() -> None:
    a = SyntheticVideoTrack(96, 64, seed=7)
    b = SyntheticVideoTrack(96, 64, seed=7)
    c = SyntheticVideoTrack(96, 64, seed=8)
    for index in (0, 1, 17, 1000):
        assert np.array_equal(a.render(index), b.render(index))
        assert np.array_equal(a.render(index), a.render(index))
    assert not np.array_equal(a.render(0), c.render(0))


def test_rendered_frames_are_independent_copies() -> None:
    track = SyntheticVideoTrack(64, 48, seed=5)
    picture = track.render(0)
    assert picture.flags.writeable
    reference = picture.copy()
    picture[:] = 0  # scribbling on a frame must not leak into later frames or other tracks
    assert np.array_equal(track.render(0), reference)
    assert np.array_equal(SyntheticVideoTrack(64, 48, seed=5).render(0), reference)


async def test_recv_delivers_render_frames_in_order() -> None:
    track = SyntheticVideoTrack(64, 48, fps=120, seed=3)
    try:
        for index in range(3):
            frame = await track.recv()
            assert np.array_equal(frame.to_ndarray(format="rgb24"), track.render(index))
    finally:
        track.stop()


@pytest.mark.parametrize("fps", [30.0, 15.0, 7.5])
async def test_video_recv_paces_at_the_configured_fps(fps: float) -> None:
    track = SyntheticVideoTrack(32, 32, fps=fps)
    count = 4
    try:
        start = time.monotonic()
        frames = [await track.recv() for _ in range(count)]
        elapsed = time.monotonic() - start
    finally:
        track.stop()
    step = round(VIDEO_CLOCK_RATE / fps)
    assert [f.pts for f in frames] == [i * step for i in range(count)]
    assert all(f.time_base == fractions.Fraction(1, VIDEO_CLOCK_RATE) for f in frames)
    # In media time the frames are 1/fps apart...
    assert float((frames[-1].pts - frames[0].pts) * frames[0].time_base) == pytest.approx(
        (count - 1) / fps
    )
    # ...and recv() does not run ahead of real time (lower bound only: sleeps never end early).
    assert elapsed >= (count - 1) / fps - 0.01
    assert track.frames_produced == count


async def test_stopped_track_raises_media_stream_error() -> None:
    video, audio = SyntheticVideoTrack(32, 32), ToneAudioTrack()
    for track in (video, audio):
        await track.recv()
        track.stop()
        assert track.readyState == "ended"
        with pytest.raises(MediaStreamError):
            await track.recv()


@pytest.mark.parametrize(
    ("width", "height"), [(15, 16), (16, 15), (14, 16), (16, 14), (0, 0), (-32, 32), (321, 240)]
)
def test_bad_video_size_is_a_configuration_error(width: int, height: int) -> None:
    with pytest.raises(ConfigurationError, match="video size"):
        SyntheticVideoTrack(width, height)


@pytest.mark.parametrize("fps", [0, -1, 120.5, 1000, float("nan")])
def test_bad_fps_is_a_configuration_error(fps: float) -> None:
    with pytest.raises(ConfigurationError, match="fps"):
        SyntheticVideoTrack(64, 64, fps=fps)


def test_configuration_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        SyntheticVideoTrack(3, 3)


# --- ToneAudioTrack -------------------------------------------------------------------------


async def test_tone_frames_are_20ms_48khz_s16_mono() -> None:
    track = ToneAudioTrack()
    try:
        frames = [await track.recv() for _ in range(3)]
    finally:
        track.stop()
    for index, frame in enumerate(frames):
        assert isinstance(frame, av.AudioFrame)
        assert frame.sample_rate == AUDIO_RATE == 48000
        assert frame.samples == 960  # 20 ms at 48 kHz
        assert frame.format.name == "s16"
        assert frame.layout.name == "mono"
        assert frame.pts == index * 960
        assert frame.time_base == fractions.Fraction(1, 48000)
        assert frame.to_ndarray().shape == (1, 960)


@pytest.mark.parametrize("frequency", [440.0, 1000.0, 3000.0])
async def test_tone_dominant_frequency_is_the_configured_one(frequency: float) -> None:
    amplitude = 0.5
    track = ToneAudioTrack(frequency, amplitude=amplitude)
    try:
        frames = [await track.recv() for _ in range(5)]
    finally:
        track.stop()
    signal = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float64)
    assert len(signal) == 4800  # 100 ms: 10 Hz FFT bins
    spectrum = np.abs(np.fft.rfft(signal))
    freqs = np.fft.rfftfreq(len(signal), 1 / AUDIO_RATE)
    assert freqs[int(np.argmax(spectrum))] == pytest.approx(frequency, abs=10)
    # Continuous phase across frames and the configured amplitude.
    t = np.arange(len(signal)) / AUDIO_RATE
    expected = np.sin(2 * np.pi * frequency * t) * amplitude * 32767
    assert np.abs(signal - expected).max() <= 1.0


@pytest.mark.parametrize("frequency", [0, 19.9, 20000.5, -440, float("nan")])
def test_bad_tone_frequency_is_a_configuration_error(frequency: float) -> None:
    with pytest.raises(ConfigurationError, match="frequency"):
        ToneAudioTrack(frequency)


@pytest.mark.parametrize("amplitude", [-0.01, 1.01, 2, float("nan")])
def test_bad_tone_amplitude_is_a_configuration_error(amplitude: float) -> None:
    with pytest.raises(ConfigurationError, match="amplitude"):
        ToneAudioTrack(440, amplitude=amplitude)


def test_tone_limits_are_accepted() -> None:
    for frequency, amplitude in ((20, 0), (20000, 1)):
        track = ToneAudioTrack(frequency, amplitude=amplitude)
        assert (track.frequency, track.amplitude) == (frequency, amplitude)


# --- open_media -------------------------------------------------------------------------------


def _stop(*tracks: MediaStreamTrack | None) -> None:
    for track in tracks:
        if track is not None:
            track.stop()


def test_open_media_none() -> None:
    assert open_media(MediaSpec(video="none", audio="none")) == (None, None, None)


def test_open_media_defaults_are_synthetic_and_tone() -> None:
    audio, video, player = open_media(MediaSpec(width=64, height=48, fps=10, seed=4))
    try:
        assert player is None
        assert isinstance(audio, ToneAudioTrack)
        assert isinstance(video, SyntheticVideoTrack)
        assert (video.width, video.height, video.fps) == (64, 48, 10)
        assert np.array_equal(video.render(2), SyntheticVideoTrack(64, 48, seed=4).render(2))
    finally:
        _stop(audio, video)


def test_open_media_bad_synthetic_size() -> None:
    with pytest.raises(ConfigurationError):
        open_media(MediaSpec(width=15, height=15))


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One second of 64x64 mpeg4 video at 10 fps plus an AAC tone, in an .mp4."""
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=10)
        video.width = video.height = 64
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=48000)
        audio.layout = "mono"
        for index in range(10):
            picture = np.full((64, 64, 3), index * 20, np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode())
        n = 1024
        for index in range(47):
            t = (np.arange(n) + index * n) / 48000
            samples = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16).reshape(1, -1)
            chunk = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            chunk.sample_rate = 48000
            chunk.pts = index * n
            container.mux(audio.encode(chunk))
        container.mux(audio.encode())
    return path


@pytest.fixture(scope="module")
def other_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A video-only clip (VP8 in WebM)."""
    path = tmp_path_factory.mktemp("media") / "other.webm"
    with av.open(str(path), "w") as container:
        video = container.add_stream("libvpx", rate=10)
        video.width, video.height = 32, 32
        video.pix_fmt = "yuv420p"
        for index in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode())
    return path


async def test_open_media_file_for_audio_and_video(clip: Path) -> None:
    audio, video, player = open_media(MediaSpec(video=str(clip), audio=str(clip)))
    try:
        assert player is not None
        assert audio is not None and audio.kind == "audio"
        assert video is not None and video.kind == "video"
        frame = await video.recv()
        assert isinstance(frame, av.VideoFrame)
        assert (frame.width, frame.height) == (64, 64)
        sound = await audio.recv()
        assert isinstance(sound, av.AudioFrame)
    finally:
        _stop(audio, video)


async def test_open_media_file_video_with_synthetic_audio(clip: Path) -> None:
    audio, video, player = open_media(MediaSpec(video=str(clip), audio="tone"))
    try:
        assert player is not None
        assert isinstance(audio, ToneAudioTrack)
        assert video is not None and not isinstance(video, SyntheticVideoTrack)
        frame = await video.recv()
        assert (frame.width, frame.height) == (64, 64)
    finally:
        _stop(audio, video)


def test_open_media_file_audio_only(clip: Path) -> None:
    audio, video, player = open_media(MediaSpec(video="none", audio=str(clip)))
    try:
        assert player is not None and video is None
        assert audio is not None and audio.kind == "audio"
    finally:
        _stop(audio, video)


def test_open_media_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.mp4"
    with pytest.raises(ConfigurationError, match="cannot open media file") as info:
        open_media(MediaSpec(video=str(missing), audio=str(missing)))
    assert "missing.mp4" in str(info.value)


def test_open_media_not_a_media_file(tmp_path: Path) -> None:
    # Random bytes (plain text would be opened by FFmpeg's "tty" demuxer as ANSI art).
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ConfigurationError, match="cannot open media file"):
        open_media(MediaSpec(video=str(junk), audio="none"))


def test_open_media_two_different_files(clip: Path, other_clip: Path) -> None:
    with pytest.raises(ConfigurationError, match="one file"):
        open_media(MediaSpec(video=str(other_clip), audio=str(clip)))


def test_open_media_two_different_files_is_checked_before_opening(tmp_path: Path) -> None:
    spec = MediaSpec(video=str(tmp_path / "a.mp4"), audio=str(tmp_path / "b.mp4"))
    with pytest.raises(ConfigurationError, match="one file"):
        open_media(spec)


def test_open_media_file_without_the_requested_stream(other_clip: Path) -> None:
    # other_clip has video only.
    with pytest.raises(ConfigurationError, match="audio"):
        audio, video, _ = open_media(MediaSpec(video="none", audio=str(other_clip)))
        _stop(audio, video)
