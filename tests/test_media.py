"""Media sources: the synthetic videos, their stamps, the tone, and open_media with files."""

from __future__ import annotations

import asyncio
import fractions
import time
from pathlib import Path

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from webrtclab import (
    ConfigurationError,
    MediaSpec,
    ScreenLikeVideoTrack,
    Stamp,
    SyntheticVideoTrack,
    ToneAudioTrack,
)
from webrtclab.media import (
    AUDIO_RATE,
    VIDEO_CLOCK_RATE,
    draw_stamp,
    luma,
    luma_plane,
    open_media,
    read_stamp,
    stamp_band,
    yuv420p_frame,
)

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
            # yuv420p, as the encoder wants it: its luma is exactly the rendered picture's.
            assert frame.format.name == "yuv420p"
            assert np.array_equal(luma_plane(frame), luma(track.render(index)))
            # colour too, to within chroma subsampling
            error = np.abs(frame.to_ndarray(format="rgb24").astype(int) - track.render(index))
            assert error.mean() < 12
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
    first, last = frames[0], frames[-1]
    assert first.pts is not None and last.pts is not None and first.time_base is not None
    assert float((last.pts - first.pts) * first.time_base) == pytest.approx((count - 1) / fps)
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
        assert isinstance(frame, av.VideoFrame)  # aiortc's recv says Frame | Packet
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


# --- frame stamps ---------------------------------------------------------------------------

# aiortc's VP8 encoder settings (aiortc/codecs/vpx.py), the temporal denoiser included:
# it is what the stamp has to survive in a call.
AIORTC_VP8_OPTIONS = {
    "cpu-used": "-6",
    "deadline": "realtime",
    "lag-in-frames": "0",
    "noise-sensitivity": "4",
    "overshoot-pct": "15",
    "partitions": "0",
    "static-thresh": "1",
    "undershoot-pct": "100",
}


@pytest.mark.parametrize(("width", "height"), [(160, 120), (320, 240), (130, 96), (640, 480)])
def test_stamp_round_trip_on_raw_frames(width: int, height: int) -> None:
    track = SyntheticVideoTrack(width, height)
    band = stamp_band(width, height)
    assert band is not None and band[0] >= height // 2
    for index in [0, 1, 255, 256, 65535, 65536, 65537, 123457]:
        for sent_ms in (0, 1, 40000, 65535, 65536 + 17):
            image = track.render(index)
            draw_stamp(image, index, sent_ms)
            assert read_stamp(image) == Stamp(index & 0xFFFF, sent_ms & 0xFFFF)
            # ...from luma planes and VideoFrames alike
            assert read_stamp(luma(image)) == Stamp(index & 0xFFFF, sent_ms & 0xFFFF)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            assert read_stamp(frame.reformat(format="yuv420p")) == read_stamp(image)
            assert read_stamp(frame) == read_stamp(image)
    # Only the band is drawn on.
    image = track.render(9)
    draw_stamp(image, 9, 1234)
    assert np.array_equal(image[: band[0]], track.render(9)[: band[0]])


@pytest.mark.parametrize("cls", [SyntheticVideoTrack, ScreenLikeVideoTrack])
@pytest.mark.parametrize(("width", "height", "bitrate"), [(160, 120, 100_000), (320, 240, 150_000)])
def test_stamp_survives_vp8_at_low_bitrate(
    cls: type[SyntheticVideoTrack], width: int, height: int, bitrate: int
) -> None:
    """Every frame's stamp decodes after libvpx, configured as aiortc does, at low bitrate."""
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.time_base = fractions.Fraction(1, 15)
    encoder.bit_rate = bitrate
    encoder.gop_size, encoder.qmin, encoder.qmax = 3000, 2, 56
    rate = str(bitrate)
    encoder.options = {**AIORTC_VP8_OPTIONS, "bufsize": rate, "minrate": rate, "maxrate": rate}
    decoder = av.CodecContext.create("vp8", "r")
    assert isinstance(decoder, av.VideoCodecContext)  # PyAV's stubs only know "libvpx"
    track = cls(width, height, fps=15)
    rng = np.random.default_rng(1)
    sent_ms = 65000  # wraps during the run
    expected: list[Stamp] = []
    decoded: list[Stamp | None] = []
    for index in range(150):
        sent_ms += int(rng.integers(60, 74))
        image = track.render(index)
        draw_stamp(image, index, sent_ms)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = index
        expected.append(Stamp(index, sent_ms & 0xFFFF))
        for packet in encoder.encode(frame):
            decoded.extend(read_stamp(f) for f in decoder.decode(packet))
    for packet in encoder.encode(None):
        decoded.extend(read_stamp(f) for f in decoder.decode(packet))
    assert decoded == expected


def test_stamp_checksum_rejects_garbage() -> None:
    rng = np.random.default_rng(0)
    # Random pictures, noise in the band: never a stamp.
    for _ in range(200):
        noise = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
        assert read_stamp(noise) is None
    # Random clean blocks (unambiguous bits, random checksum): about 1/256 pass.
    band = stamp_band(160, 120)
    assert band is not None
    y0, block_w, block_h = band
    accepted = 0
    for _ in range(2000):
        image = np.zeros((120, 160, 3), np.uint8)
        bits = rng.integers(0, 2, (2, 20))
        levels = np.where(bits, 215, 40).astype(np.uint8)
        image[y0:, : 20 * block_w] = np.repeat(np.repeat(levels, block_h, 0), block_w, 1)[..., None]
        accepted += read_stamp(image) is not None
    assert accepted < 2000 * 4 / 256
    # Flat bands, and any single flipped block of a valid stamp.
    for level in (0, 40, 128, 215, 255):
        assert read_stamp(np.full((120, 160, 3), level, np.uint8)) is None
    image = SyntheticVideoTrack(160, 120).render(0)
    draw_stamp(image, 4242, 777)
    for bit in range(40):
        row, column = divmod(bit, 20)
        flipped = image.copy()
        block = flipped[
            y0 + row * block_h : y0 + (row + 1) * block_h, column * block_w : (column + 1) * block_w
        ]
        block[...] = 255 - block
        assert read_stamp(flipped) is None, bit


def test_small_frames_carry_no_stamp() -> None:
    assert stamp_band(64, 48) is None and stamp_band(78, 120) is None
    assert stamp_band(80, 120) is not None
    image = SyntheticVideoTrack(64, 48).render(3)
    draw_stamp(image, 3, 3)
    assert np.array_equal(image, SyntheticVideoTrack(64, 48).render(3))
    assert read_stamp(image) is None


@pytest.mark.parametrize("cls", [SyntheticVideoTrack, ScreenLikeVideoTrack])
async def test_recv_stamps_frame_number_and_clock(cls: type[SyntheticVideoTrack]) -> None:
    now = [12.3456]
    track = cls(160, 120, fps=120, clock=lambda: now[0])
    y0 = 104
    try:
        for index, sent_ms in enumerate([12345, 72345 - 65536, 132345 % 65536]):
            frame = await track.recv()
            assert read_stamp(frame) == Stamp(index, sent_ms)
            assert np.array_equal(luma_plane(frame)[:y0], track.render_luma(index)[:y0])
            now[0] += 60
    finally:
        track.stop()


@pytest.mark.parametrize("cls", [SyntheticVideoTrack, ScreenLikeVideoTrack])
def test_render_luma_is_the_luma_of_render(cls: type[SyntheticVideoTrack]) -> None:
    track = cls(160, 120, seed=3)
    for index in (0, 1, 59, 60, 61, 1000):
        assert np.array_equal(track.render_luma(index), luma(track.render(index)))


def test_luma_matches_the_encoders_conversion() -> None:
    """aiortc's encoder converts rgb24 to yuv420p with swscale; luma() agrees to +-1."""
    image = SyntheticVideoTrack(320, 240).render(5)
    plane = luma_plane(av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p"))
    diff = luma(image).astype(np.int16) - plane
    assert np.abs(diff).max() <= 1
    assert (diff == 0).mean() > 0.99
    assert np.array_equal(luma_plane(yuv420p_frame(image)), luma(image))


# --- the screen-like source ----------------------------------------------------------------


def test_screen_like_video_is_static_sharp_and_changes_slides() -> None:
    track = ScreenLikeVideoTrack(320, 240, fps=10, slide_seconds=4)
    frames = [track.render(i).astype(np.int16) for i in range(41)]
    for a, b in zip(frames[:39], frames[1:40], strict=True):
        # Within a slide only the cursor moves: most pixels do not change.
        assert (np.abs(a - b).max(axis=-1) > 0).mean() < 0.02
    # Sharp, high-contrast content: text-like dark blocks on a light page.
    grey = frames[0].mean(axis=-1)
    assert (grey > 230).mean() > 0.4 and (grey < 50).mean() > 0.03
    assert np.abs(np.diff(grey, axis=1)).max() > 180
    # The slide changes after slide_seconds (frame 40 at 10 fps).
    assert (np.abs(frames[40] - frames[39]).max(axis=-1) > 0).mean() > 0.1
    # Deterministic for a seed.
    assert np.array_equal(track.render(77), ScreenLikeVideoTrack(320, 240, fps=10).render(77))
    assert not np.array_equal(track.render(0), ScreenLikeVideoTrack(320, 240, seed=1).render(0))


def test_screen_like_video_validates_like_the_camera() -> None:
    with pytest.raises(ConfigurationError, match="video size"):
        ScreenLikeVideoTrack(15, 16)
    with pytest.raises(ConfigurationError, match="slide_seconds"):
        ScreenLikeVideoTrack(slide_seconds=0)


def test_open_media_screen() -> None:
    audio, video, player = open_media(MediaSpec(video="screen", width=160, height=120, fps=10))
    try:
        assert player is None and isinstance(audio, ToneAudioTrack)
        assert isinstance(video, ScreenLikeVideoTrack)
        assert (video.width, video.height, video.fps) == (160, 120, 10)
    finally:
        _stop(audio, video)


# --- pacing shared across a source switch ---------------------------------------------------


async def test_sources_sharing_a_pacer_continue_the_frame_numbers() -> None:
    camera = SyntheticVideoTrack(160, 120, fps=60)
    screen = ScreenLikeVideoTrack(160, 120, fps=60, pacer=camera.pacer)
    try:
        first = [await camera.recv() for _ in range(3)]
        camera.stop()
        then = [await screen.recv() for _ in range(3)]
    finally:
        screen.stop()
    stamps = [read_stamp(f) for f in first + then]
    assert [s.frame for s in stamps if s is not None] == list(range(6))
    assert [f.pts for f in first + then] == [i * 1500 for i in range(6)]
    pacer = camera.pacer
    assert [pacer.source_of(i) for i in range(6)] == [camera] * 3 + [screen] * 3
    assert pacer.source_of(6) is None and pacer.source_of(-1) is None
    assert pacer.resolve(5) == 5 and pacer.resolve(6) is None
    assert camera.frames_produced == 3 and screen.frames_produced == 3


def test_pacer_resolves_wrapped_frame_numbers() -> None:
    track = SyntheticVideoTrack(160, 120)
    pacer = track.pacer
    pacer.next_index = 70000  # frames 0..69999 sent
    assert pacer.resolve(69999 & 0xFFFF) == 69999
    assert pacer.resolve(0) == 65536
    assert pacer.resolve(65535) == 65535
    assert pacer.resolve(70000 & 0xFFFF) == 70000 - 65536  # not sent yet: 65536 frames ago


async def test_a_stopped_source_does_not_take_its_successors_frame() -> None:
    camera = SyntheticVideoTrack(160, 120, fps=20)
    screen = ScreenLikeVideoTrack(160, 120, fps=20, pacer=camera.pacer)
    try:
        await camera.recv()  # frame 0 starts the clock
        waiting = asyncio.ensure_future(camera.recv())  # waits for frame 1
        await asyncio.sleep(0)
        camera.stop()
        frame = await screen.recv()
        assert read_stamp(frame) == Stamp(1, read_stamp(frame).sent_ms)  # type: ignore[union-attr]
        with pytest.raises(MediaStreamError):
            await waiting
    finally:
        screen.stop()


def test_a_shared_pacer_needs_the_same_frame_rate() -> None:
    camera = SyntheticVideoTrack(160, 120, fps=15)
    with pytest.raises(ConfigurationError, match="same frame rate"):
        ScreenLikeVideoTrack(160, 120, fps=10, pacer=camera.pacer)
