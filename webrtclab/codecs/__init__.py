"""Encoders whose bitrate congestion control can move many times per second.

- :class:`Vp8Encoder` -- VP8 over PyAV's bundled libvpx through ``ctypes``; the target
  changes in place (``vpx_codec_enc_config_set``), without a keyframe, down to 30 kbit/s.
- :class:`OpusEncoder` -- aiortc's Opus encoder with a target in 6-96 kbit/s, applied by
  rebuilding the codec context (PyAV cannot change an open one) under hysteresis.
- :func:`make_encoder` -- one of the two for ``video/VP8`` and ``audio/opus``, aiortc's
  encoder for anything else.

Both are drop-ins for :class:`aiortc.codecs.base.Encoder` and expose ``target_bitrate``
in bit/s, the attribute aiortc's ``RTCRtpSender`` sets on REMB.  Importing this package
does not load libvpx; the first :class:`Vp8Encoder` does.
"""

from __future__ import annotations

from aiortc.codecs import get_encoder
from aiortc.codecs.base import Encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from webrtclab.exceptions import ConfigurationError

from .opus import OpusEncoder
from .vp8 import CodecError, Vp8Encoder, libvpx_version

__all__ = [
    "CodecError",
    "OpusEncoder",
    "Vp8Encoder",
    "libvpx_version",
    "make_encoder",
]


# Below this many bits per pixel and frame VP8 sends a smaller picture (see Vp8Encoder).
MIN_BITS_PER_PIXEL = 0.07


def _check_range(name: str, value: object) -> tuple[int, int]:
    if (
        not isinstance(value, tuple)
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) for v in value)
        or not 0 < value[0] <= value[1]
    ):
        raise ConfigurationError(
            f"{name}={value!r} must be a (low, high) pair of ints with 0 < low <= high"
        )
    return value[0], value[1]


def make_encoder(
    codec: RTCRtpCodecParameters,
    *,
    video_range: tuple[int, int],
    audio_range: tuple[int, int],
    start_bps: int,
    adaptive: bool = True,
) -> Encoder:
    """An encoder for ``codec``: ours for VP8 and Opus, aiortc's for anything else.

    ``video_range`` and ``audio_range`` are the ``(min, max)`` bit/s of the target;
    ``start_bps`` is the first target, clamped into the range of the codec's media.
    ``adaptive`` lets VP8 adapt to its picture as libwebrtc does (a rate cap for the
    picture size, a smaller picture under a low target); off, it sends at the target.
    """
    video_low, video_high = _check_range("video_range", video_range)
    audio_low, audio_high = _check_range("audio_range", audio_range)
    if isinstance(start_bps, bool) or not isinstance(start_bps, int) or start_bps <= 0:
        raise ConfigurationError(f"start_bps={start_bps!r} must be a positive int")
    mime = codec.mimeType.lower()
    if mime == "video/vp8":
        return Vp8Encoder(
            bitrate=start_bps,
            min_bitrate=video_low,
            max_bitrate=video_high,
            size_max=adaptive,
            min_bits_per_pixel=MIN_BITS_PER_PIXEL if adaptive else 0,
        )
    if mime == "audio/opus":
        return OpusEncoder(bitrate=start_bps, min_bitrate=audio_low, max_bitrate=audio_high)
    return get_encoder(codec)
