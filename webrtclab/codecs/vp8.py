"""A VP8 encoder over PyAV's bundled libvpx, driven through ``ctypes``.

aiortc's own :class:`aiortc.codecs.vpx.Vp8Encoder` goes through PyAV, which cannot change an
open encoder's bitrate: it clamps the target to 250 kbit/s-1.5 Mbit/s and rebuilds the
encoder (a keyframe) whenever the target moves by more than 10 %.  This encoder talks to
libvpx directly and changes the target **in place** with ``vpx_codec_enc_config_set()``,
as libwebrtc's ``LibvpxVp8Encoder::SetRates`` does: no re-initialisation, no keyframe,
and a floor low enough (30 kbit/s by default) for video through a 150 kbit/s link.

The settings follow libwebrtc's realtime VP8 encoder (``libvpx_vp8_encoder.cc``): CBR,
no lag, undershoot 100 % / overshoot 15 %, a 1000/500/600 ms buffer model, quantizer
2..56, automatic keyframes at most every 3000 frames, no frame dropping unless asked for,
``VP8E_SET_MAX_INTRA_BITRATE_PCT`` from the optimal buffer and the frame rate.

ABI notes
---------
Only the prefix of ``vpx_codec_enc_cfg_t`` up to ``kf_max_dist`` is mirrored, as laid out
in the 1.15 and 1.16 headers (unchanged since ``rc_2pass_vbr_corpus_complexity`` arrived in
1.7; the fields after it have changed between releases).  :data:`CFG_PADDING` bytes follow it,
more than the whole real structure (about 500 bytes in 1.16), so libvpx copying the full
structure never reads past the buffer.  ``vpx_codec_ctx_t`` is mirrored with padding and
``vpx_image_t`` is an opaque 512-byte buffer that only ``vpx_img_wrap`` fills in.

``vpx_codec_enc_init_ver`` refuses any ``ver`` but the exact ``VPX_ENCODER_ABI_VERSION``
the library was built with (``VPX_CODEC_ABI_MISMATCH``, nothing else happens), so the value
is taken from the headers of each supported release::

    VPX_ENCODER_ABI_VERSION = 18 + VPX_CODEC_ABI_VERSION + VPX_EXT_RATECTRL_ABI_VERSION
    VPX_CODEC_ABI_VERSION   = 4 + VPX_IMAGE_ABI_VERSION (5)               = 9
    VPX_EXT_RATECTRL_ABI_VERSION:
        1.15.0        5 + VPX_TPL_ABI_VERSION (4) =  9   -> 36
        1.15.1-1.15.2 6 + VPX_TPL_ABI_VERSION (4) = 10   -> 37
        1.16.x        7 + VPX_TPL_ABI_VERSION (5) = 12   -> 39

(1.16.0, the version PyAV 17.1 ships, was checked against the library: 39 is the only
value it accepts.)  Other releases are refused with :class:`CodecError` by
:func:`encoder_abi_version`; the struct prefix is also checked at run time against the
VP8 defaults of ``vp8_cx_iface.c`` (:func:`check_config_layout`).

``vpx_codec_control_`` is variadic; it is called with fixed ``int`` arguments, which is
correct on x86-64 System V and Linux AArch64 (variadic integers travel in the same
registers as fixed ones), not on Apple arm64.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import math
import os
import random
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
from aiortc.codecs.base import Encoder
from aiortc.codecs.vpx import PACKET_MAX, VpxPayloadDescriptor, number_of_threads
from aiortc.mediastreams import VIDEO_TIME_BASE, convert_timebase
from av import VideoFrame
from av.packet import Packet

from webrtclab.exceptions import ConfigurationError, WebrtcLabError

__all__ = [
    "CFG_PADDING",
    "DEFAULT_BITRATE",
    "DEFAULT_MAX_BITRATE",
    "DEFAULT_MIN_BITRATE",
    "MIN_SCALED_WIDTH",
    "SCALE_HOLD_S",
    "SUPPORTED_LIBVPX",
    "CodecError",
    "Vp8Encoder",
    "VpxEncCfg",
    "check_config_layout",
    "default_config",
    "default_max_bitrate",
    "encoder_abi_version",
    "find_libvpx",
    "is_vp8_keyframe",
    "libvpx_version",
    "packetize_vp8",
]

logger = logging.getLogger(__name__)

DEFAULT_BITRATE = 500_000
DEFAULT_MIN_BITRATE = 30_000
DEFAULT_MAX_BITRATE = 2_500_000
# Resolution adaptation (Vp8Encoder's min_bits_per_pixel): the smallest width scaled to
# (a stamp band's blocks stay 8 pixels wide) and the frames between two changes.
MIN_SCALED_WIDTH = 160
SCALE_HOLD_S = 2.0
# Scaling back up also needs the higher target to have lasted this long: a rate that
# jumps (a probe result) and falls back at once must not cost two keyframes, and the
# keyframe of the larger picture then comes once the sender sends at the new rate.
SCALE_UP_HOLD_S = 1.0


def default_max_bitrate(width: int, height: int) -> int:
    """libwebrtc's default highest video rate for a picture size, in bit/s.

    ``GetMaxDefaultVideoBitrateKbps`` in libwebrtc's ``video/config/encoder_stream_factory.cc``
    (600, 1700, 2000 and 2500 kbit/s up to 320x240, 640x480, 960x540 and above): beyond
    these the picture barely improves, so a call does not spend the link on it.
    """
    pixels = width * height
    for limit, kbps in ((320 * 240, 600), (640 * 480, 1700), (960 * 540, 2000)):
        if pixels <= limit:
            return kbps * 1000
    return 2_500_000


#: Bytes of padding after the mirrored prefix of ``vpx_codec_enc_cfg_t``.
CFG_PADDING = 2048

#: Human-readable list of the libvpx releases this module knows the ABI of.
SUPPORTED_LIBVPX = "1.15.0-1.15.2, 1.16.x"

# (major, minor, patch or None for any patch) -> VPX_ENCODER_ABI_VERSION (see module doc)
_ENCODER_ABI: dict[tuple[int, int, int | None], int] = {
    (1, 15, 0): 36,
    (1, 15, 1): 37,
    (1, 15, 2): 37,
    (1, 16, None): 39,
}

# vpx_codec_err_t
_VPX_CODEC_OK = 0
_VPX_CODEC_ABI_MISMATCH = 3
# vpx_img_fmt_t: VPX_IMG_FMT_PLANAR | 2
_VPX_IMG_FMT_I420 = 0x102
# enum vpx_rc_mode / vpx_kf_mode / vpx_enc_pass
_VPX_CBR = 1
_VPX_KF_AUTO = 1
_VPX_KF_DISABLED = 0
_VPX_RC_ONE_PASS = 0
# encoder flags and packets
_VPX_EFLAG_FORCE_KF = 1
_VPX_CODEC_CX_FRAME_PKT = 0
_VPX_FRAME_IS_KEY = 0x1
_VPX_DL_REALTIME = 1
# enum vp8e_enc_control_id (vp8cx.h; these values have been stable since libvpx 1.0)
_VP8E_SET_CPUUSED = 13
_VP8E_SET_NOISE_SENSITIVITY = 15
_VP8E_SET_STATIC_THRESHOLD = 17
_VP8E_SET_TOKEN_PARTITIONS = 18
_VP8E_SET_MAX_INTRA_BITRATE_PCT = 26
_RESIZE_MAX_INTRA_PCT = 300


class CodecError(WebrtcLabError, RuntimeError):
    """libvpx is missing, of an unsupported version, or refused an operation."""


# --- structures ---------------------------------------------------------------------


class _Rational(ctypes.Structure):
    _fields_ = [("num", ctypes.c_int), ("den", ctypes.c_int)]


class _FixedBuf(ctypes.Structure):
    _fields_ = [("buf", ctypes.c_void_p), ("sz", ctypes.c_size_t)]


class VpxEncCfg(ctypes.Structure):
    """``vpx_codec_enc_cfg_t`` up to ``kf_max_dist``, then :data:`CFG_PADDING` bytes."""

    _fields_ = [
        ("g_usage", ctypes.c_uint),
        ("g_threads", ctypes.c_uint),
        ("g_profile", ctypes.c_uint),
        ("g_w", ctypes.c_uint),
        ("g_h", ctypes.c_uint),
        ("g_bit_depth", ctypes.c_int),
        ("g_input_bit_depth", ctypes.c_uint),
        ("g_timebase", _Rational),
        ("g_error_resilient", ctypes.c_uint32),
        ("g_pass", ctypes.c_int),
        ("g_lag_in_frames", ctypes.c_uint),
        ("rc_dropframe_thresh", ctypes.c_uint),
        ("rc_resize_allowed", ctypes.c_uint),
        ("rc_scaled_width", ctypes.c_uint),
        ("rc_scaled_height", ctypes.c_uint),
        ("rc_resize_up_thresh", ctypes.c_uint),
        ("rc_resize_down_thresh", ctypes.c_uint),
        ("rc_end_usage", ctypes.c_int),
        ("rc_twopass_stats_in", _FixedBuf),
        ("rc_firstpass_mb_stats_in", _FixedBuf),
        ("rc_target_bitrate", ctypes.c_uint),
        ("rc_min_quantizer", ctypes.c_uint),
        ("rc_max_quantizer", ctypes.c_uint),
        ("rc_undershoot_pct", ctypes.c_uint),
        ("rc_overshoot_pct", ctypes.c_uint),
        ("rc_buf_sz", ctypes.c_uint),
        ("rc_buf_initial_sz", ctypes.c_uint),
        ("rc_buf_optimal_sz", ctypes.c_uint),
        ("rc_2pass_vbr_bias_pct", ctypes.c_uint),
        ("rc_2pass_vbr_minsection_pct", ctypes.c_uint),
        ("rc_2pass_vbr_maxsection_pct", ctypes.c_uint),
        ("rc_2pass_vbr_corpus_complexity", ctypes.c_uint),
        ("kf_mode", ctypes.c_int),
        ("kf_min_dist", ctypes.c_uint),
        ("kf_max_dist", ctypes.c_uint),
        ("_rest", ctypes.c_ubyte * CFG_PADDING),
    ]


class _CodecCtx(ctypes.Structure):
    """``vpx_codec_ctx_t`` (56 bytes on LP64) with room to spare."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("iface", ctypes.c_void_p),
        ("err", ctypes.c_int),
        ("err_detail", ctypes.c_char_p),
        ("init_flags", ctypes.c_long),
        ("config", ctypes.c_void_p),
        ("priv", ctypes.c_void_p),
        ("_rest", ctypes.c_ubyte * 128),
    ]


class _CxFrame(ctypes.Structure):
    """The ``frame`` member of ``vpx_codec_cx_pkt_t.data`` (the part read here)."""

    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("sz", ctypes.c_size_t),
        ("pts", ctypes.c_int64),
        ("duration", ctypes.c_ulong),
        ("flags", ctypes.c_uint32),
        ("partition_id", ctypes.c_int),
    ]


class _CxPkt(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_int), ("frame", _CxFrame)]


_VpxImage = ctypes.c_ubyte * 512  # vpx_image_t is 136 bytes in 1.16; opaque here


# --- the library ----------------------------------------------------------------------


def find_libvpx() -> str:
    """Path (or soname) of the libvpx to use: PyAV's bundled copy, else the system one."""
    import av

    package_dir = Path(av.__file__).resolve().parent
    patterns = [
        (package_dir.parent / "av.libs", "libvpx*.so*"),  # manylinux wheels (auditwheel)
        (package_dir / ".dylibs", "libvpx*.dylib"),  # macOS wheels (delocate)
    ]
    for directory, pattern in patterns:
        found = sorted(directory.glob(pattern))
        if found:
            return str(found[0])
    name = ctypes.util.find_library("vpx")
    if name:
        return name
    raise CodecError(
        f"libvpx not found: no {patterns[0][1]} in {patterns[0][0]} and "
        "ctypes.util.find_library('vpx') found nothing"
    )


def _parse_version(version: str) -> tuple[int, int, int]:
    match = re.match(r"\s*v?(\d+)\.(\d+)\.(\d+)", version)
    if match is None:
        raise CodecError(f"cannot parse libvpx version {version!r}; expected {SUPPORTED_LIBVPX}")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def encoder_abi_version(version: str) -> int:
    """``VPX_ENCODER_ABI_VERSION`` of the libvpx release named by ``version``.

    ``version`` is what ``vpx_codec_version_str()`` returns (``"v1.16.0"``, possibly with a
    ``-12-gabcdef`` suffix).  Raises :class:`CodecError`, naming the found and the
    supported versions, for a release whose layout and ABI number this module does not know.
    """
    major, minor, patch = _parse_version(version)
    abi = _ENCODER_ABI.get((major, minor, patch), _ENCODER_ABI.get((major, minor, None)))
    if abi is None:
        raise CodecError(
            f"libvpx {version.strip()} is not supported: the vpx_codec_enc_cfg_t layout and "
            f"VPX_ENCODER_ABI_VERSION are known for libvpx {SUPPORTED_LIBVPX}"
        )
    return abi


# Defaults of vp8e_usage_cfg_map[0] in vp8/vp8_cx_iface.c that must read back through the
# mirrored prefix: spread over the whole prefix, including after the 8-aligned fixed bufs.
_LAYOUT_DEFAULTS: tuple[tuple[str, int], ...] = (
    ("g_w", 320),
    ("g_h", 240),
    ("g_bit_depth", 8),
    ("g_input_bit_depth", 8),
    ("g_timebase.num", 1),
    ("g_timebase.den", 30),
    ("rc_end_usage", 0),  # VPX_VBR
    ("rc_target_bitrate", 256),
    ("rc_min_quantizer", 4),
    ("rc_max_quantizer", 63),
    ("rc_undershoot_pct", 100),
    ("rc_overshoot_pct", 100),
    ("rc_buf_sz", 6000),
    ("rc_buf_initial_sz", 4000),
    ("rc_buf_optimal_sz", 5000),
    ("kf_mode", _VPX_KF_AUTO),
    ("kf_max_dist", 128),
)


def check_config_layout(cfg: VpxEncCfg) -> None:
    """Raise :class:`CodecError` unless ``cfg`` holds libvpx's VP8 defaults where expected.

    Call it on a structure freshly filled by ``vpx_codec_enc_config_default``: a field
    that does not read back means the mirrored layout is wrong for this library.
    """
    wrong = []
    for name, expected in _LAYOUT_DEFAULTS:
        if name.startswith("g_timebase."):
            actual = getattr(cfg.g_timebase, name.split(".", 1)[1])
        else:
            actual = getattr(cfg, name)
        if actual != expected:
            wrong.append(f"{name}={actual} (expected {expected})")
    if wrong:
        raise CodecError(
            "vpx_codec_enc_cfg_t layout does not match this libvpx: " + ", ".join(wrong)
        )


class _Libvpx:
    """The loaded library, its version and the VP8 encoder interface."""

    def __init__(self, path: str) -> None:
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            raise CodecError(f"cannot load libvpx from {path}: {exc}") from exc
        lib.vpx_codec_version_str.restype = ctypes.c_char_p
        lib.vpx_codec_version_str.argtypes = []
        raw = lib.vpx_codec_version_str()
        self.path = path
        self.version = raw.decode("ascii", "replace") if raw else "unknown"
        self.abi_version = encoder_abi_version(self.version)

        ctx_p = ctypes.POINTER(_CodecCtx)
        cfg_p = ctypes.POINTER(VpxEncCfg)
        lib.vpx_codec_vp8_cx.restype = ctypes.c_void_p
        lib.vpx_codec_vp8_cx.argtypes = []
        lib.vpx_codec_enc_config_default.restype = ctypes.c_int
        lib.vpx_codec_enc_config_default.argtypes = [ctypes.c_void_p, cfg_p, ctypes.c_uint]
        lib.vpx_codec_enc_init_ver.restype = ctypes.c_int
        lib.vpx_codec_enc_init_ver.argtypes = [
            ctx_p,
            ctypes.c_void_p,
            cfg_p,
            ctypes.c_long,
            ctypes.c_int,
        ]
        lib.vpx_codec_enc_config_set.restype = ctypes.c_int
        lib.vpx_codec_enc_config_set.argtypes = [ctx_p, cfg_p]
        lib.vpx_codec_control_.restype = ctypes.c_int
        lib.vpx_codec_control_.argtypes = [ctx_p, ctypes.c_int, ctypes.c_int]
        lib.vpx_codec_encode.restype = ctypes.c_int
        lib.vpx_codec_encode.argtypes = [
            ctx_p,
            ctypes.c_void_p,
            ctypes.c_int64,
            ctypes.c_ulong,
            ctypes.c_long,
            ctypes.c_ulong,
        ]
        lib.vpx_codec_get_cx_data.restype = ctypes.POINTER(_CxPkt)
        lib.vpx_codec_get_cx_data.argtypes = [ctx_p, ctypes.POINTER(ctypes.c_void_p)]
        lib.vpx_codec_destroy.restype = ctypes.c_int
        lib.vpx_codec_destroy.argtypes = [ctx_p]
        lib.vpx_codec_err_to_string.restype = ctypes.c_char_p
        lib.vpx_codec_err_to_string.argtypes = [ctypes.c_int]
        lib.vpx_codec_error_detail.restype = ctypes.c_char_p
        lib.vpx_codec_error_detail.argtypes = [ctx_p]
        lib.vpx_img_wrap.restype = ctypes.c_void_p
        lib.vpx_img_wrap.argtypes = [
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
        ]
        lib.vpx_img_set_rect.restype = ctypes.c_int
        lib.vpx_img_set_rect.argtypes = [ctypes.c_void_p] + [ctypes.c_uint] * 4
        self.lib = lib
        self.iface = lib.vpx_codec_vp8_cx()
        if not self.iface:
            raise CodecError(f"libvpx {self.version} at {path} has no VP8 encoder")

    def default_config(self) -> VpxEncCfg:
        cfg = VpxEncCfg()
        err = self.lib.vpx_codec_enc_config_default(self.iface, ctypes.byref(cfg), 0)
        if err != _VPX_CODEC_OK:
            raise CodecError(f"vpx_codec_enc_config_default failed: {self.describe(err)}")
        check_config_layout(cfg)
        return cfg

    def describe(self, err: int, ctx: _CodecCtx | None = None) -> str:
        text = self.lib.vpx_codec_err_to_string(err)
        message = text.decode("utf-8", "replace") if text else f"error {err}"
        if ctx is not None:
            detail = self.lib.vpx_codec_error_detail(ctypes.byref(ctx))
            if detail:
                message += f" ({detail.decode('utf-8', 'replace')})"
        return message


_LIBVPX: _Libvpx | None = None
_LIBVPX_LOCK = threading.Lock()


def _libvpx() -> _Libvpx:
    global _LIBVPX
    with _LIBVPX_LOCK:
        if _LIBVPX is None:
            _LIBVPX = _Libvpx(find_libvpx())
        return _LIBVPX


def default_config() -> VpxEncCfg:
    """libvpx's default VP8 encoder configuration, checked by :func:`check_config_layout`."""
    return _libvpx().default_config()


def libvpx_version() -> str:
    """``vpx_codec_version_str()`` of the library this module uses (loads it)."""
    return _libvpx().version


# --- payloads -----------------------------------------------------------------------------


def packetize_vp8(data: bytes, picture_id: int) -> list[bytes]:
    """Split one encoded VP8 frame into RTP payloads, as aiortc does.

    Every payload starts with the same 4-byte payload descriptor (extended, 15-bit
    PictureID; S=1 on the first payload only) and is at most ``PACKET_MAX`` bytes.
    """
    descriptor = VpxPayloadDescriptor(partition_start=1, partition_id=0, picture_id=picture_id)
    payloads = []
    pos = 0
    while pos < len(data):
        header = bytes(descriptor)
        size = min(len(data) - pos, PACKET_MAX - len(header))
        payloads.append(header + data[pos : pos + size])
        descriptor.partition_start = 0
        pos += size
    return payloads


def is_vp8_keyframe(frame: bytes) -> bool:
    """Whether an encoded VP8 frame is a keyframe (bit 0 of its frame tag is 0, RFC 6386)."""
    return len(frame) > 0 and frame[0] & 0x01 == 0


# --- the encoder ---------------------------------------------------------------------------


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigurationError(f"{name}={value!r} must be an integer in [{low}, {high}]")
    return value


class Vp8Encoder(Encoder):
    """VP8 encoder with in-place bitrate changes, a drop-in for aiortc's ``Vp8Encoder``.

    ``encode`` returns RTP payloads (aiortc's payload descriptor and PictureID handling,
    ``PACKET_MAX`` bytes at most) and the frame's timestamp in the 90 kHz clock.

    Setting :attr:`target_bitrate` changes libvpx's ``rc_target_bitrate`` with
    ``vpx_codec_enc_config_set`` -- immediately when no frame is being encoded, otherwise
    just before the next frame (``encode`` runs in an executor thread in aiortc, and the
    setter never waits for it).  Neither emits a keyframe.  A keyframe is produced on the
    first frame, on ``force_keyframe``, on a resolution change (the encoder is rebuilt) and
    when libvpx decides one is due (``kf_mode`` auto, at most ``keyframe_interval`` frames
    apart, as libwebrtc).  :attr:`keyframes` counts them.

    Arguments (keyword-only):

    - ``bitrate``: start target in bit/s, clamped to ``[min_bitrate, max_bitrate]``;
    - ``min_bitrate`` / ``max_bitrate``: the clamp for :attr:`target_bitrate`;
    - ``framerate``: the expected frame rate (frames per second), used for the duration
      given to libvpx with each frame and for the keyframe size limit; libvpx measures the
      actual rate from the frames' timestamps;
    - ``cpu_used``: ``VP8E_SET_CPUUSED`` (-16..16, negative means realtime speed ``|n|``),
      default ``-6`` as aiortc and libwebrtc on desktop;
    - ``max_quantizer``: ``rc_max_quantizer`` (libwebrtc 56);
    - ``low_bitrate_max_quantizer`` / ``low_bitrate_threshold``: below the threshold
      (bit/s) the quantizer may go up to this value instead (63 = VP8's maximum);
    - ``drop_frame_threshold``: ``rc_dropframe_thresh`` in percent, 0 never drops a frame;
    - ``keyframe_interval``: ``kf_max_dist`` in frames, 0 disables automatic keyframes;
    - ``noise_sensitivity``: ``VP8E_SET_NOISE_SENSITIVITY`` (libwebrtc's adaptive
      denoiser is 4 on desktop, 0 turns it off);
    - ``threads``: ``g_threads``; default as aiortc (and libwebrtc) for the resolution;
    - ``size_max``: also cap the rate at :func:`default_max_bitrate` of the source's size
      (:attr:`size_max_bitrate`), as libwebrtc does when no maximum is configured;
    - ``min_bits_per_pixel``: scale the picture down by half (to no less than
      :data:`MIN_SCALED_WIDTH` wide) while the target gives fewer bits per pixel and frame
      than this, and back up once the larger size would have got 1.5 times as many
      for ``SCALE_UP_HOLD_S`` seconds of frames, as libwebrtc's resolution adaptation
      does under a low estimate (a rebuild and a keyframe at each change, at most one
      per ``SCALE_HOLD_S`` seconds of frames);
      0 keeps the source size.  :attr:`scale` is the current factor.
    """

    def __init__(
        self,
        *,
        bitrate: int = DEFAULT_BITRATE,
        min_bitrate: int = DEFAULT_MIN_BITRATE,
        max_bitrate: int = DEFAULT_MAX_BITRATE,
        framerate: float = 30.0,
        cpu_used: int = -6,
        max_quantizer: int = 56,
        low_bitrate_max_quantizer: int = 63,
        low_bitrate_threshold: int = 200_000,
        drop_frame_threshold: int = 0,
        keyframe_interval: int = 3000,
        noise_sensitivity: int = 4,
        threads: int | None = None,
        size_max: bool = False,
        min_bits_per_pixel: float = 0.0,
    ) -> None:
        self._closed = True  # until fully constructed: __del__ must find nothing to free
        _check_int("min_bitrate", min_bitrate, 1_000, 1_000_000_000)
        _check_int("max_bitrate", max_bitrate, 1_000, 1_000_000_000)
        if max_bitrate < min_bitrate:
            raise ConfigurationError(
                f"max_bitrate={max_bitrate} must not be below min_bitrate={min_bitrate}"
            )
        _check_int("bitrate", bitrate, 0, 1_000_000_000)
        if (
            isinstance(framerate, bool)
            or not isinstance(framerate, int | float)
            or not (math.isfinite(framerate) and 1 <= framerate <= 240)
        ):
            raise ConfigurationError(f"framerate={framerate!r} must be in [1, 240]")
        _check_int("cpu_used", cpu_used, -16, 16)
        _check_int("max_quantizer", max_quantizer, 2, 63)
        _check_int("low_bitrate_max_quantizer", low_bitrate_max_quantizer, max_quantizer, 63)
        _check_int("low_bitrate_threshold", low_bitrate_threshold, 0, 1_000_000_000)
        _check_int("drop_frame_threshold", drop_frame_threshold, 0, 100)
        _check_int("keyframe_interval", keyframe_interval, 0, 1_000_000)
        _check_int("noise_sensitivity", noise_sensitivity, 0, 6)
        if threads is not None:
            _check_int("threads", threads, 1, 64)
        if (
            isinstance(min_bits_per_pixel, bool)
            or not isinstance(min_bits_per_pixel, int | float)
            or not 0 <= min_bits_per_pixel <= 10
        ):
            raise ConfigurationError(
                f"min_bits_per_pixel={min_bits_per_pixel!r} must be in [0, 10]"
            )

        self.min_bitrate = min_bitrate
        self.max_bitrate = max_bitrate
        self.framerate = float(framerate)
        self.cpu_used = cpu_used
        self.max_quantizer = max_quantizer
        self.low_bitrate_max_quantizer = low_bitrate_max_quantizer
        self.low_bitrate_threshold = low_bitrate_threshold
        self.drop_frame_threshold = drop_frame_threshold
        self.keyframe_interval = keyframe_interval
        self.noise_sensitivity = noise_sensitivity
        self.threads = threads
        self.min_bits_per_pixel = float(min_bits_per_pixel)
        self.size_max = size_max
        #: the cap for the source's size (``size_max``), once a frame has been seen
        self.size_max_bitrate: int | None = None
        #: the encoded size over the source's (1, 1/2, 1/4...)
        self.scale = 1.0
        self._scale_frames = 0  # frames encoded at the current scale
        self._up_frames = 0  # consecutive frames whose target would allow a larger scale

        self._lib = _libvpx()
        self._lock = threading.Lock()
        self._target = self._clamp(bitrate)
        self._ctx: _CodecCtx | None = None
        self._cfg: VpxEncCfg | None = None
        self._image = _VpxImage()
        self._buffer: np.ndarray[Any, np.dtype[np.uint8]] | None = None
        self._size: tuple[int, int] | None = None
        self._last_pts: int | None = None
        self._max_intra_pct = 0  # VP8E_SET_MAX_INTRA_BITRATE_PCT of the open encoder
        self._restore_intra = False  # set it again after the next frame

        #: RTP PictureID of the next frame (15 bits, random start, as aiortc)
        self.picture_id = random.randint(0, (1 << 15) - 1)
        #: frames encoded since construction, keyframes among them
        self.frames = 0
        self.keyframes = 0
        #: frames libvpx dropped (only with ``drop_frame_threshold`` > 0)
        self.dropped_frames = 0
        #: encoder (re)initialisations: 1 on the first frame, +1 per resolution change
        self.inits = 0
        #: successful in-place ``vpx_codec_enc_config_set`` calls
        self.rate_updates = 0
        self._closed = False

    # -- rate ------------------------------------------------------------------------

    def _clamp(self, bitrate: float) -> int:
        return int(max(self.min_bitrate, min(self.max_bitrate, bitrate)))

    @property
    def target_bitrate(self) -> int:
        """Target bitrate in bit/s, within ``[min_bitrate, max_bitrate]``."""
        return self._target

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:
        if isinstance(bitrate, bool) or not isinstance(bitrate, int | float):
            raise ConfigurationError(f"target_bitrate={bitrate!r} must be a number (bit/s)")
        if math.isnan(bitrate):
            raise ConfigurationError(f"target_bitrate={bitrate!r} must be a number (bit/s)")
        self._target = self._clamp(bitrate)
        # Apply now if the encoder is idle; otherwise encode() applies it before its next
        # frame.  Never block the caller (the event loop) behind an encode.
        if self._lock.acquire(blocking=False):
            try:
                self._apply_rate()
            finally:
                self._lock.release()

    def _effective_target(self) -> int:
        cap = self.size_max_bitrate
        return self._target if cap is None else min(self._target, cap)

    def _max_quantizer_for(self, bitrate: int) -> int:
        if bitrate < self.low_bitrate_threshold:
            return self.low_bitrate_max_quantizer
        return self.max_quantizer

    def _apply_rate(self) -> None:
        """Push the target into the open encoder in place.  Caller holds the lock."""
        ctx, cfg = self._ctx, self._cfg
        if ctx is None or cfg is None:
            return
        target = self._effective_target()
        kbps = max(1, round(target / 1000))
        max_q = self._max_quantizer_for(target)
        if kbps == cfg.rc_target_bitrate and max_q == cfg.rc_max_quantizer:
            return
        cfg.rc_target_bitrate = kbps
        cfg.rc_max_quantizer = max_q
        err = self._lib.lib.vpx_codec_enc_config_set(ctypes.byref(ctx), ctypes.byref(cfg))
        if err != _VPX_CODEC_OK:
            raise CodecError(
                f"vpx_codec_enc_config_set({kbps} kbit/s) failed: {self._lib.describe(err, ctx)}"
            )
        self.rate_updates += 1

    # -- lifecycle -----------------------------------------------------------------------

    def _open(self, width: int, height: int) -> None:
        """(Re)create the encoder for a resolution.  Caller holds the lock."""
        self._destroy()
        lib = self._lib
        cfg = lib.default_config()
        cfg.g_w = width
        cfg.g_h = height
        cfg.g_threads = self.threads or number_of_threads(width * height, os.cpu_count() or 1)
        cfg.g_timebase.num = VIDEO_TIME_BASE.numerator
        cfg.g_timebase.den = VIDEO_TIME_BASE.denominator
        cfg.g_lag_in_frames = 0
        cfg.g_error_resilient = 0  # libwebrtc: only with more than one temporal layer
        cfg.g_pass = _VPX_RC_ONE_PASS
        cfg.rc_dropframe_thresh = self.drop_frame_threshold
        cfg.rc_resize_allowed = 0
        cfg.rc_end_usage = _VPX_CBR
        target = self._effective_target()
        cfg.rc_target_bitrate = max(1, round(target / 1000))
        cfg.rc_min_quantizer = 2
        cfg.rc_max_quantizer = self._max_quantizer_for(target)
        cfg.rc_undershoot_pct = 100
        cfg.rc_overshoot_pct = 15
        cfg.rc_buf_sz = 1000
        cfg.rc_buf_initial_sz = 500
        cfg.rc_buf_optimal_sz = 600
        if self.keyframe_interval > 0:
            cfg.kf_mode = _VPX_KF_AUTO
            cfg.kf_min_dist = 0
            cfg.kf_max_dist = self.keyframe_interval
        else:
            cfg.kf_mode = _VPX_KF_DISABLED

        ctx = _CodecCtx()
        err = lib.lib.vpx_codec_enc_init_ver(
            ctypes.byref(ctx), lib.iface, ctypes.byref(cfg), 0, lib.abi_version
        )
        if err != _VPX_CODEC_OK:
            hint = ""
            if err == _VPX_CODEC_ABI_MISMATCH:
                hint = (
                    f"; libvpx {lib.version} was not built with VPX_ENCODER_ABI_VERSION "
                    f"{lib.abi_version}"
                )
            raise CodecError(
                f"vpx_codec_enc_init_ver({width}x{height}) failed: {lib.describe(err, ctx)}{hint}"
            )
        self._ctx, self._cfg = ctx, cfg
        # libwebrtc's MaxIntraTarget: half the optimal buffer, in % of a frame's share of
        # the rate, at least 3 frames' worth, so that a pacer can send a keyframe in time.
        max_intra_pct = max(300, int(cfg.rc_buf_optimal_sz * 0.5 * self.framerate / 10))
        self._max_intra_pct = max_intra_pct
        if self.inits:
            # A rebuild for a new picture size (the rate changed a lot, often up after a
            # probe): its keyframe gets 3 frames' worth (MaxIntraTarget's floor), not 9,
            # so that it does not fill the bottleneck's queue; the next frame restores
            # the limit.  (At 1.7 Mbit/s a 900 % keyframe is ~60 kB: 0.25 s of a 2 Mbit/s
            # link, read by the delay-based estimator as over-use.)
            max_intra_pct = _RESIZE_MAX_INTRA_PCT
        self._restore_intra = max_intra_pct != self._max_intra_pct
        for control, value in (
            (_VP8E_SET_CPUUSED, self.cpu_used),
            (_VP8E_SET_NOISE_SENSITIVITY, self.noise_sensitivity),
            (_VP8E_SET_STATIC_THRESHOLD, 1),
            (_VP8E_SET_TOKEN_PARTITIONS, 0),  # VP8_ONE_TOKENPARTITION
            (_VP8E_SET_MAX_INTRA_BITRATE_PCT, max_intra_pct),
        ):
            err = lib.lib.vpx_codec_control_(ctypes.byref(ctx), control, value)
            if err != _VPX_CODEC_OK:
                self._destroy()
                raise CodecError(
                    f"vpx_codec_control({control}, {value}) failed: {lib.describe(err)}"
                )

        # A contiguous I420 buffer with even dimensions (chroma planes of (w+1)//2 x
        # (h+1)//2), wrapped once; the visible rect is the real size.
        even_w, even_h = width + (width & 1), height + (height & 1)
        self._buffer = np.zeros(even_w * even_h * 3 // 2, dtype=np.uint8)
        pointer = self._buffer.ctypes.data
        if not lib.lib.vpx_img_wrap(
            ctypes.byref(self._image), _VPX_IMG_FMT_I420, even_w, even_h, 1, pointer
        ):
            self._destroy()
            raise CodecError(f"vpx_img_wrap({even_w}x{even_h}) failed")
        if lib.lib.vpx_img_set_rect(ctypes.byref(self._image), 0, 0, width, height) != 0:
            self._destroy()
            raise CodecError(f"vpx_img_set_rect({width}x{height}) failed")
        self._size = (width, height)
        self.inits += 1
        logger.debug(
            "VP8 encoder %dx%d at %d kbit/s, %d thread(s), libvpx %s",
            width,
            height,
            cfg.rc_target_bitrate,
            cfg.g_threads,
            lib.version,
        )

    def _destroy(self) -> None:
        ctx = self._ctx
        self._ctx = None
        self._cfg = None
        self._size = None
        if ctx is not None:
            self._lib.lib.vpx_codec_destroy(ctypes.byref(ctx))

    def close(self) -> None:
        """Free the libvpx encoder.  Idempotent; ``encode`` raises afterwards."""
        if getattr(self, "_closed", True):
            return
        with self._lock:
            self._closed = True
            self._destroy()
            self._buffer = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: ctypes or the library may be gone
            pass

    # -- encoding ------------------------------------------------------------------------

    def _copy_planes(self, frame: VideoFrame, width: int, height: int) -> None:
        buffer = self._buffer
        assert buffer is not None
        even_w, even_h = width + (width & 1), height + (height & 1)
        chroma_w, chroma_h = even_w // 2, even_h // 2
        luma_size = even_w * even_h
        chroma_size = chroma_w * chroma_h
        targets = (
            buffer[:luma_size].reshape(even_h, even_w),
            buffer[luma_size : luma_size + chroma_size].reshape(chroma_h, chroma_w),
            buffer[luma_size + chroma_size :].reshape(chroma_h, chroma_w),
        )
        sizes = ((width, height), ((width + 1) // 2, (height + 1) // 2))
        for index, (plane, target) in enumerate(zip(frame.planes, targets, strict=True)):
            plane_w, plane_h = sizes[min(index, 1)]
            source = np.frombuffer(memoryview(plane), dtype=np.uint8)
            source = source[: plane.line_size * plane_h].reshape(plane_h, plane.line_size)
            target[:plane_h, :plane_w] = source[:, :plane_w]

    def _next_pts(self, frame: VideoFrame) -> tuple[int, int]:
        """(RTP timestamp to report, strictly increasing pts to give libvpx)."""
        duration = max(1, round(VIDEO_TIME_BASE.denominator / self.framerate))
        if frame.pts is not None and frame.time_base is not None:
            timestamp = int(convert_timebase(frame.pts, frame.time_base, VIDEO_TIME_BASE))
        elif self._last_pts is not None:
            timestamp = self._last_pts + duration
        else:
            timestamp = 0
        pts = timestamp
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        return timestamp, pts

    def _collect(self, ctx: _CodecCtx) -> bytes:
        chunks = []
        iterator = ctypes.c_void_p()
        get = self._lib.lib.vpx_codec_get_cx_data
        while True:
            packet = get(ctypes.byref(ctx), ctypes.byref(iterator))
            if not packet:
                break
            content = packet.contents
            if content.kind != _VPX_CODEC_CX_FRAME_PKT:
                continue
            chunks.append(ctypes.string_at(content.frame.buf, content.frame.sz))
            if content.frame.flags & _VPX_FRAME_IS_KEY:
                self.keyframes += 1
        return b"".join(chunks)

    def _adapt_scale(self, width: int, height: int) -> float:
        """The scale for a source of this size under the current target (hysteresis)."""
        self._scale_frames += 1
        if not self.min_bits_per_pixel:
            return self.scale

        def bits_per_pixel(scale: float) -> float:
            return self._effective_target() / (width * height * scale * scale * self.framerate)

        scale = self.scale
        if scale < 1 and bits_per_pixel(scale * 2) >= 1.5 * self.min_bits_per_pixel:
            self._up_frames += 1
        else:
            self._up_frames = 0
        if self._scale_frames < SCALE_HOLD_S * self.framerate:
            return scale
        if (
            bits_per_pixel(scale) < self.min_bits_per_pixel
            and width * scale / 2 >= MIN_SCALED_WIDTH
        ):
            scale /= 2
        elif self._up_frames >= SCALE_UP_HOLD_S * self.framerate:
            scale *= 2
        if scale != self.scale:
            self.scale, self._scale_frames, self._up_frames = scale, 0, 0
        return scale

    def encode(self, frame: Any, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        """Encode one frame; returns its RTP payloads (maybe none) and 90 kHz timestamp."""
        if not isinstance(frame, VideoFrame):
            raise TypeError(f"Vp8Encoder encodes av.VideoFrame, not {type(frame).__name__}")
        if self.size_max:
            self.size_max_bitrate = default_max_bitrate(frame.width, frame.height)
        scale = self._adapt_scale(frame.width, frame.height)
        if scale < 1:
            # Even sizes: a stamp band and chroma planes that scale exactly.
            width = max(2, round(frame.width * scale / 2) * 2)
            height = max(2, round(frame.height * scale / 2) * 2)
            frame = frame.reformat(width, height, "yuv420p", interpolation="AREA")
        elif frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        width, height = frame.width, frame.height
        with self._lock:
            if self._closed:
                raise CodecError("Vp8Encoder is closed")
            if self._size != (width, height):
                self._open(width, height)
            else:
                self._apply_rate()
            ctx = self._ctx
            assert ctx is not None
            self._copy_planes(frame, width, height)
            timestamp, pts = self._next_pts(frame)
            duration = max(1, round(VIDEO_TIME_BASE.denominator / self.framerate))
            flags = _VPX_EFLAG_FORCE_KF if force_keyframe else 0
            err = self._lib.lib.vpx_codec_encode(
                ctypes.byref(ctx),
                ctypes.addressof(self._image),
                pts,
                duration,
                flags,
                _VPX_DL_REALTIME,
            )
            if err != _VPX_CODEC_OK:
                raise CodecError(f"vpx_codec_encode failed: {self._lib.describe(err, ctx)}")
            data = self._collect(ctx)
            if self._restore_intra:
                self._restore_intra = False
                self._lib.lib.vpx_codec_control_(
                    ctypes.byref(ctx), _VP8E_SET_MAX_INTRA_BITRATE_PCT, self._max_intra_pct
                )
            if data:
                self.frames += 1
            else:
                self.dropped_frames += 1
        payloads = packetize_vp8(data, self.picture_id)
        self.picture_id = (self.picture_id + 1) % (1 << 15)
        return payloads, timestamp

    def pack(self, packet: Packet) -> tuple[list[bytes], int]:
        """Packetize an already encoded VP8 frame, as aiortc does."""
        if packet.pts is None or packet.time_base is None:
            raise CodecError("cannot packetize a VP8 packet without pts and time_base")
        payloads = packetize_vp8(bytes(packet), self.picture_id)
        timestamp = convert_timebase(packet.pts, packet.time_base, VIDEO_TIME_BASE)
        self.picture_id = (self.picture_id + 1) % (1 << 15)
        return payloads, timestamp
