"""webrtclab.codecs: VP8 over libvpx with in-place rate changes, Opus with a target rate.

Frames are synthetic and seeded: a smooth noise texture scrolling a few pixels per frame,
a moving bright square, and (where the encoder needs something to spend bits on) a little
fresh sensor noise per frame.  Everything is decoded back with aiortc's own decoders.
"""

from __future__ import annotations

import fractions
import math
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TypedDict, cast

import av
import numpy as np
import pytest
from aiortc.codecs import PCMU_CODEC, H264Encoder, PcmuEncoder
from aiortc.codecs.opus import OpusDecoder
from aiortc.codecs.vpx import PACKET_MAX, Vp8Decoder, VpxPayloadDescriptor, vp8_depayload
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from webrtclab.codecs import CodecError, OpusEncoder, Vp8Encoder, make_encoder
from webrtclab.codecs.vp8 import (
    MIN_SCALED_WIDTH,
    SCALE_HOLD_S,
    SUPPORTED_LIBVPX,
    VpxEncCfg,
    check_config_layout,
    default_config,
    default_max_bitrate,
    encoder_abi_version,
    find_libvpx,
    is_vp8_keyframe,
    libvpx_version,
    packetize_vp8,
)
from webrtclab.exceptions import ConfigurationError

VIDEO_CLOCK = 90_000
VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90_000, payloadType=97)
OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48_000, channels=2, payloadType=96)
H264 = RTCRtpCodecParameters(
    mimeType="video/H264",
    clockRate=90_000,
    payloadType=99,
    parameters={"packetization-mode": "1", "profile-level-id": "42e01f"},
)


# --- synthetic media -------------------------------------------------------------------


def texture(width: int, height: int, seed: int) -> np.ndarray:
    """Smooth seeded noise: 8x8 random blocks, box-blurred."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(16, 240, size=(height // 8 + 1, width // 8 + 1)).astype(np.float32)
    image: np.ndarray = np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)[:height, :width]
    for axis in (0, 1):
        # A sum of arrays is an array (typeshed allows the empty sum's 0).
        image = (
            cast(np.ndarray, sum(np.roll(image, shift, axis=axis) for shift in range(-2, 3))) / 5
        )
    return image.astype(np.uint8)


def video(
    width: int, height: int, count: int, fps: int, *, seed: int = 1, noise: float = 0.0
) -> Iterator[tuple[av.VideoFrame, np.ndarray]]:
    """``count`` yuv420p frames (with 90 kHz pts) and the luma plane of each."""
    wide = texture(width * 2, height, seed)
    rng = np.random.default_rng(seed + 1000)
    chroma_w, chroma_h = (width + 1) // 2, (height + 1) // 2
    u = np.full((chroma_h, chroma_w), 110, np.uint8)
    u[:, : chroma_w // 2] = 90
    v = np.full((chroma_h, chroma_w), 150, np.uint8)
    side = height // 6
    for index in range(count):
        luma = np.roll(wide, -3 * index, axis=1)[:, :width].copy()
        x = (7 * index) % (width - side)
        y = (3 * index) % (height - side)
        luma[y : y + side, x : x + side] = 230
        if noise:
            luma = np.clip(luma + rng.normal(0, noise, luma.shape), 0, 255).astype(np.uint8)
        frame = av.VideoFrame(width, height, "yuv420p")
        for plane, data in zip(frame.planes, (luma, u, v), strict=True):
            rows, cols = data.shape
            view = np.frombuffer(memoryview(plane), np.uint8)
            view[: rows * plane.line_size].reshape(rows, plane.line_size)[:, :cols] = data
        frame.pts = index * VIDEO_CLOCK // fps
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        yield frame, luma


def tone(index: int, samples: int = 960, rate: int = 48_000) -> av.AudioFrame:
    """20 ms of a 440 Hz tone, s16 stereo, with continuous pts."""
    t = (np.arange(samples) + index * samples) / rate
    mono = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(
        np.repeat(mono, 2).reshape(1, -1), format="s16", layout="stereo"
    )
    frame.sample_rate = rate
    frame.pts = index * samples
    frame.time_base = fractions.Fraction(1, rate)
    return frame


def psnr(decoded: av.VideoFrame, luma: np.ndarray) -> float:
    """Luma PSNR of a decoded frame against the source plane."""
    height, width = luma.shape
    plane = decoded.planes[0]
    got = np.frombuffer(memoryview(plane), np.uint8)[: height * plane.line_size]
    got = got.reshape(height, plane.line_size)[:, :width]
    mse = float(np.mean((got.astype(np.float64) - luma) ** 2))
    return 10 * math.log10(255**2 / max(mse, 1e-9))


def bitstream(payloads: list[bytes]) -> bytes:
    """One encoded frame back from its RTP payloads (aiortc's depayloader)."""
    return b"".join(vp8_depayload(payload) for payload in payloads)


def kbps(sizes: list[int], fps: int) -> float:
    return sum(sizes) * 8 / (len(sizes) / fps) / 1000


# --- libvpx, versions and layout ------------------------------------------------------------


def test_the_bundled_libvpx_is_used_and_supported() -> None:
    bundled = Path(av.__file__).resolve().parent.parent / "av.libs"
    if bundled.is_dir():  # a manylinux wheel of PyAV
        assert Path(find_libvpx()).parent == bundled
    version = libvpx_version()
    assert encoder_abi_version(version) > 0  # does not raise


@pytest.mark.parametrize(
    ("version", "abi"),
    [("v1.16.0", 39), ("v1.16.0-12-gabcdef", 39), ("1.16.2", 39), ("v1.15.1", 37)],
)
def test_encoder_abi_version_of_supported_releases(version: str, abi: int) -> None:
    assert encoder_abi_version(version) == abi


@pytest.mark.parametrize("version", ["v1.12.0", "v1.14.1", "v2.0.0", "nonsense"])
def test_unsupported_versions_raise_codec_error_naming_both(version: str) -> None:
    with pytest.raises(CodecError) as caught:
        encoder_abi_version(version)
    assert version in str(caught.value)
    assert SUPPORTED_LIBVPX in str(caught.value)
    assert isinstance(caught.value, RuntimeError)


def test_layout_check_accepts_the_defaults_and_names_a_wrong_field() -> None:
    cfg = default_config()  # runs check_config_layout itself
    check_config_layout(cfg)
    cfg.rc_buf_sz = 1234
    with pytest.raises(CodecError, match=r"rc_buf_sz=1234 \(expected 6000\)"):
        check_config_layout(cfg)
    with pytest.raises(CodecError, match="g_w=0"):
        check_config_layout(VpxEncCfg())


# --- packetization ----------------------------------------------------------------------------


def test_packetize_splits_like_aiortc() -> None:
    data = bytes(range(256)) * 12  # 3072 bytes
    payloads = packetize_vp8(data, picture_id=1234)
    assert len(payloads) == 3
    assert all(len(payload) <= PACKET_MAX for payload in payloads)
    starts = []
    for payload in payloads:
        descriptor, rest = VpxPayloadDescriptor.parse(payload)
        assert descriptor.picture_id == 1234
        assert descriptor.partition_id == 0
        assert len(payload) - len(rest) == 4  # extended header, 15-bit PictureID
        starts.append(descriptor.partition_start)
    assert starts == [1, 0, 0]
    assert bitstream(payloads) == data
    assert packetize_vp8(b"", 1) == []


def test_pack_packetizes_an_encoded_packet() -> None:
    encoder = Vp8Encoder()
    packet = av.Packet(b"\x10\x02\x00" + bytes(2000))
    packet.pts = 3000
    packet.time_base = fractions.Fraction(1, 1000)
    first = encoder.picture_id
    payloads, timestamp = encoder.pack(packet)
    assert timestamp == 270_000
    assert VpxPayloadDescriptor.parse(payloads[0])[0].picture_id == first
    assert encoder.picture_id == (first + 1) % (1 << 15)
    encoder.close()


# --- VP8 encoding -------------------------------------------------------------------------------


def test_320x240_at_500k_decodes_with_good_psnr() -> None:
    fps = 15
    encoder = Vp8Encoder(bitrate=500_000, framerate=fps)
    decoder = Vp8Decoder()
    picture_ids, scores = [], []
    for frame, luma in video(320, 240, 3 * fps, fps):
        payloads, timestamp = encoder.encode(frame)
        assert payloads and all(len(payload) <= PACKET_MAX for payload in payloads)
        assert timestamp == frame.pts  # already in the 90 kHz clock
        descriptors = [VpxPayloadDescriptor.parse(payload)[0] for payload in payloads]
        assert [d.partition_start for d in descriptors] == [1] + [0] * (len(payloads) - 1)
        assert len({d.picture_id for d in descriptors}) == 1
        picture_id = descriptors[0].picture_id
        assert picture_id is not None
        picture_ids.append(picture_id)
        decoded = decoder.decode(JitterFrame(bitstream(payloads), timestamp))
        assert len(decoded) == 1
        assert isinstance(decoded[0], av.VideoFrame)  # aiortc's Decoder.decode says Frame
        assert (decoded[0].width, decoded[0].height) == (320, 240)
        scores.append(psnr(decoded[0], luma))
    assert all((b - a) % (1 << 15) == 1 for a, b in zip(picture_ids, picture_ids[1:]))
    assert min(scores) > 25, scores
    assert encoder.keyframes == 1
    encoder.close()


def test_640x480_and_odd_sizes_decode() -> None:
    for width, height in ((640, 480), (321, 241)):
        encoder = Vp8Encoder(bitrate=1_000_000)
        decoder = av.CodecContext.create("libvpx", "r")
        for frame, luma in video(width, height, 8, 30):
            payloads, _ = encoder.encode(frame)
            (decoded,) = decoder.decode(av.Packet(bitstream(payloads)))
            assert (decoded.width, decoded.height) == (width, height)
            assert psnr(decoded, luma) > 25
        encoder.close()


def test_input_in_another_format_is_reformatted() -> None:
    encoder = Vp8Encoder()
    frame, _ = next(video(160, 120, 1, 15))
    payloads, _ = encoder.encode(frame.reformat(format="rgb24"))
    assert is_vp8_keyframe(bitstream(payloads))
    with pytest.raises(TypeError):
        encoder.encode(tone(0))
    encoder.close()


def test_rate_follows_an_in_place_switch_without_a_keyframe() -> None:
    fps = 15
    encoder = Vp8Encoder(bitrate=1_000_000, framerate=fps)
    frames = video(320, 240, 8 * fps, fps, noise=3)
    phases = {}
    keyframes = []
    for target in (1_000_000, 200_000):
        encoder.target_bitrate = target
        sizes = []
        for _ in range(4 * fps):
            frame, _ = next(frames)
            payloads, _ = encoder.encode(frame)
            data = bitstream(payloads)
            keyframes.append(is_vp8_keyframe(data))
            sizes.append(len(data))
        phases[target] = kbps(sizes[2 * fps :], fps) * 1000
    for target, measured in phases.items():
        assert abs(measured / target - 1) <= 0.25, (target, measured)
    assert [i for i, key in enumerate(keyframes) if key] == [0]
    assert encoder.keyframes == 1
    assert encoder.inits == 1  # never re-initialised
    assert encoder.rate_updates >= 1  # vpx_codec_enc_config_set did the switch
    encoder.close()


def test_150k_floor_at_320x240_15fps_keeps_every_frame() -> None:
    fps = 15
    encoder = Vp8Encoder(bitrate=150_000, framerate=fps)
    sizes = []
    for frame, _ in video(320, 240, 6 * fps, fps, noise=3):
        payloads, _ = encoder.encode(frame)
        assert payloads, "a frame was dropped"
        sizes.append(len(bitstream(payloads)))
    assert encoder.dropped_frames == 0
    assert encoder.frames == 6 * fps
    assert abs(kbps(sizes[3 * fps :], fps) / 150 - 1) <= 0.30, kbps(sizes[3 * fps :], fps)
    encoder.close()


def test_force_keyframe_and_resolution_change() -> None:
    encoder = Vp8Encoder()
    keys = []
    for index, (frame, _) in enumerate(video(160, 120, 6, 15)):
        payloads, _ = encoder.encode(frame, force_keyframe=index == 3)
        keys.append(is_vp8_keyframe(bitstream(payloads)))
    assert keys == [True, False, False, True, False, False]
    assert encoder.keyframes == 2
    frame, _ = next(video(320, 240, 1, 15))
    frame.pts = 10 * VIDEO_CLOCK  # later than the small frames
    payloads, _ = encoder.encode(frame)
    assert is_vp8_keyframe(bitstream(payloads))
    assert (encoder.inits, encoder.keyframes) == (2, 3)
    encoder.close()


def decoded_sizes(payload_lists: list[list[bytes]]) -> list[tuple[int, int]]:
    decoder = Vp8Decoder()
    sizes = []
    for payloads in payload_lists:
        for frame in decoder.decode(JitterFrame(bitstream(payloads), 0)):
            assert isinstance(frame, av.VideoFrame)  # aiortc's Decoder.decode says Frame
            sizes.append((frame.width, frame.height))
    return sizes


def test_a_low_target_halves_the_picture_and_a_high_one_restores_it() -> None:
    # 640x480 at 30 fps: 300 kbit/s is 0.033 bits per pixel and frame, under 0.07.
    fps = 30
    encoder = Vp8Encoder(bitrate=300_000, framerate=fps, min_bits_per_pixel=0.07)
    frames = list(video(640, 480, 5 * fps, fps))
    encoded = []
    for index, (frame, _) in enumerate(frames):
        if index == 3 * fps:
            encoder.target_bitrate = 1_200_000  # 0.13 at full size, over 1.5 x 0.07
        encoded.append(encoder.encode(frame)[0])
    sizes = decoded_sizes(encoded)
    hold = int(SCALE_HOLD_S * fps)
    assert set(sizes[: hold - 1]) == {(640, 480)}  # nothing changes within the hold
    assert sizes[hold + 1 : 3 * fps] == [(320, 240)] * (3 * fps - hold - 1)
    assert sizes[-1] == (640, 480)
    assert encoder.scale == 1.0
    assert encoder.inits == 3 and encoder.keyframes == 3  # one rebuild (keyframe) per change
    encoder.close()


def test_scaling_stops_at_the_smallest_width_and_is_off_by_default() -> None:
    encoder = Vp8Encoder(bitrate=30_000, framerate=15, min_bits_per_pixel=0.07)
    for frame, _ in video(320, 240, 8 * 15, 15):
        encoder.encode(frame)
    assert encoder.scale == MIN_SCALED_WIDTH / 320  # 160 wide, not 80
    encoder.close()
    plain = Vp8Encoder(bitrate=30_000, framerate=15)
    for frame, _ in video(320, 240, 3 * 15, 15):
        plain.encode(frame)
    assert (plain.scale, plain.inits, plain.size_max_bitrate) == (1.0, 1, None)
    plain.close()


@pytest.mark.parametrize(
    ("size", "kbps"),
    [
        ((320, 240), 600),
        ((160, 120), 600),
        ((640, 480), 1700),
        ((960, 540), 2000),
        ((1280, 720), 2500),
    ],
)
def test_default_max_bitrate_by_picture_size(size: tuple[int, int], kbps: int) -> None:
    assert default_max_bitrate(*size) == kbps * 1000


def test_size_max_caps_what_libvpx_is_asked_for() -> None:
    fps = 15
    encoder = Vp8Encoder(bitrate=2_000_000, framerate=fps, size_max=True)
    sizes = [
        len(bitstream(encoder.encode(f)[0])) for f, _ in video(320, 240, 4 * fps, fps, noise=6)
    ]
    assert encoder.size_max_bitrate == 600_000
    assert encoder.target_bitrate == 2_000_000  # the target stays what the controller set
    assert kbps(sizes[2 * fps :], fps) <= 600 * 1.3
    encoder.close()


def test_target_bitrate_is_clamped() -> None:
    encoder = Vp8Encoder(bitrate=10, min_bitrate=50_000, max_bitrate=1_000_000)
    assert encoder.target_bitrate == 50_000
    encoder.target_bitrate = 10**9
    assert encoder.target_bitrate == 1_000_000
    encoder.target_bitrate = 123_456.7  # type: ignore[assignment]  # congestion control floats
    assert encoder.target_bitrate == 123_456
    encoder.target_bitrate = -5
    assert encoder.target_bitrate == 50_000
    for bad in ("fast", float("nan"), None):
        with pytest.raises(ConfigurationError):
            encoder.target_bitrate = bad  # type: ignore[assignment]
    assert Vp8Encoder().min_bitrate == 30_000 and Vp8Encoder().max_bitrate == 2_500_000
    encoder.close()


@pytest.mark.parametrize(
    ("kwargs", "quoted"),
    [
        ({"min_bitrate": 500_000, "max_bitrate": 100_000}, "max_bitrate=100000"),
        ({"min_bitrate": 0}, "min_bitrate=0"),
        ({"max_bitrate": "2M"}, "max_bitrate='2M'"),
        ({"framerate": 0}, "framerate=0"),
        ({"cpu_used": 20}, "cpu_used=20"),
        ({"max_quantizer": 64}, "max_quantizer=64"),
        ({"drop_frame_threshold": 101}, "drop_frame_threshold=101"),
        ({"threads": 0}, "threads=0"),
        ({"min_bits_per_pixel": -0.1}, "min_bits_per_pixel=-0.1"),
        ({"min_bits_per_pixel": True}, "min_bits_per_pixel=True"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object], quoted: str) -> None:
    with pytest.raises(ConfigurationError, match=quoted):
        Vp8Encoder(**kwargs)  # type: ignore[arg-type]


def test_rate_changes_from_another_thread_while_encoding() -> None:
    """aiortc encodes in an executor thread while the event loop sets the target."""
    encoder = Vp8Encoder(bitrate=300_000)
    stop = threading.Event()

    def hammer() -> None:
        rate = 100_000
        while not stop.is_set():
            encoder.target_bitrate = rate
            rate = 100_000 if rate > 800_000 else rate + 50_000

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        for frame, _ in video(160, 120, 60, 30):
            assert encoder.encode(frame)[0]
    finally:
        stop.set()
        thread.join()
    assert encoder.keyframes == 1 and encoder.inits == 1
    assert encoder.rate_updates > 1
    encoder.close()


def test_close_is_idempotent_and_final() -> None:
    encoder = Vp8Encoder()
    encoder.encode(next(video(160, 120, 1, 15))[0])
    encoder.close()
    encoder.close()
    with pytest.raises(CodecError, match="closed"):
        encoder.encode(next(video(160, 120, 1, 15))[0])
    Vp8Encoder().close()  # never opened: nothing to free


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_no_leak_over_2000_frames() -> None:
    frames = [frame for frame, _ in video(96, 64, 50, 30)]
    encoder = Vp8Encoder(bitrate=200_000)
    for index in range(200):  # warm up allocators
        frame = frames[index % 50]
        frame.pts = index * 3000
        encoder.encode(frame)
    before = rss_bytes()
    for index in range(200, 2200):
        frame = frames[index % 50]
        frame.pts = index * 3000
        encoder.encode(frame)
        if index % 100 == 0:
            encoder.target_bitrate = 100_000 + (index % 700) * 1000
            Vp8Encoder().close()
            short_lived = Vp8Encoder()
            short_lived.encode(frame)
            short_lived.close()
    encoder.close()
    growth = rss_bytes() - before
    assert growth < 4 * 1024 * 1024, f"RSS grew by {growth / 1e6:.1f} MB"


# --- Opus -------------------------------------------------------------------------------------


def opus_kbps(encoder: OpusEncoder, first: int, count: int) -> tuple[float, list[int]]:
    total, timestamps = 0, []
    for index in range(first, first + count):
        payloads, timestamp = encoder.encode(tone(index))
        total += sum(len(payload) for payload in payloads)
        timestamps.append(timestamp)
    return total * 8 / (count * 0.02) / 1000, timestamps


def test_opus_target_moves_the_encoded_rate() -> None:
    high, _ = opus_kbps(OpusEncoder(bitrate=96_000), 0, 100)
    low, _ = opus_kbps(OpusEncoder(bitrate=24_000), 0, 100)
    assert abs(high / 96 - 1) < 0.2, high
    assert abs(low / 24 - 1) < 0.2, low


def test_opus_rate_change_keeps_timestamps_continuous() -> None:
    encoder = OpusEncoder()
    before, stamps = opus_kbps(encoder, 0, 100)
    encoder.target_bitrate = 24_000
    _, settling = opus_kbps(encoder, 100, 10)
    after, more = opus_kbps(encoder, 110, 90)
    assert encoder.rebuilds == 1 and encoder.applied_bitrate == 24_000
    assert after < before / 2.5, (before, after)
    every = stamps + settling + more
    assert all(b - a == 960 for a, b in zip(every, every[1:])), every
    decoder = OpusDecoder()  # the new codec's packets decode as the same stream
    for index in range(100, 110):
        payloads, timestamp = encoder.encode(tone(index + 100))
        assert decoder.decode(JitterFrame(payloads[0], timestamp))


def test_opus_hysteresis_and_interval() -> None:
    encoder = OpusEncoder(bitrate=96_000)
    opus_kbps(encoder, 0, 60)  # 1.2 s at 96k
    encoder.target_bitrate = 85_000  # -11 %: inside the band
    opus_kbps(encoder, 60, 5)
    assert encoder.rebuilds == 0
    encoder.target_bitrate = 48_000
    opus_kbps(encoder, 65, 5)
    assert encoder.rebuilds == 1
    encoder.target_bitrate = 24_000  # too soon after the last rebuild
    opus_kbps(encoder, 70, 40)
    assert (encoder.rebuilds, encoder.applied_bitrate) == (1, 48_000)
    opus_kbps(encoder, 110, 15)  # > 1 s of audio since the rebuild
    assert (encoder.rebuilds, encoder.applied_bitrate) == (2, 24_000)


def test_opus_target_before_the_first_frame_needs_no_rebuild() -> None:
    encoder = OpusEncoder()
    encoder.target_bitrate = 16_000
    rate, _ = opus_kbps(encoder, 0, 100)
    assert encoder.rebuilds == 0 and abs(rate / 16 - 1) < 0.2


def test_opus_clamping_and_refusals() -> None:
    encoder = OpusEncoder()
    encoder.target_bitrate = 1_000
    assert encoder.target_bitrate == 6_000
    encoder.target_bitrate = 500_000
    assert encoder.target_bitrate == 96_000
    with pytest.raises(ConfigurationError):
        encoder.target_bitrate = "loud"  # type: ignore[assignment]
    with pytest.raises(ConfigurationError, match="max_bitrate=8000"):
        OpusEncoder(min_bitrate=16_000, max_bitrate=8_000)
    with pytest.raises(ConfigurationError, match="hysteresis=2"):
        OpusEncoder(hysteresis=2)


# --- the factory --------------------------------------------------------------------------------


class _Ranges(TypedDict):
    video_range: tuple[int, int]
    audio_range: tuple[int, int]


def test_make_encoder_picks_ours_or_aiortcs() -> None:
    ranges: _Ranges = {"video_range": (50_000, 1_500_000), "audio_range": (8_000, 64_000)}
    video_encoder = make_encoder(VP8, start_bps=3_000_000, **ranges)
    assert isinstance(video_encoder, Vp8Encoder)
    assert (video_encoder.min_bitrate, video_encoder.max_bitrate) == (50_000, 1_500_000)
    assert video_encoder.target_bitrate == 1_500_000
    video_encoder.close()
    audio_encoder = make_encoder(OPUS, start_bps=300_000, **ranges)
    assert isinstance(audio_encoder, OpusEncoder)
    assert (audio_encoder.target_bitrate, audio_encoder.min_bitrate) == (64_000, 8_000)
    assert isinstance(make_encoder(H264, start_bps=300_000, **ranges), H264Encoder)
    assert isinstance(make_encoder(PCMU_CODEC, start_bps=300_000, **ranges), PcmuEncoder)
    for bad in ({"video_range": (0, 10)}, {"audio_range": (64_000, 8_000)}, {"start_bps": 0}):
        arguments: dict[str, object] = {**ranges, "start_bps": 100_000, **bad}
        with pytest.raises(ConfigurationError):
            make_encoder(VP8, **arguments)  # type: ignore[arg-type]
