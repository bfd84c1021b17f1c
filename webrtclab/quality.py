"""Quality as the receiver sees it: frame latency, PSNR, freezes, data-channel latency and loss.

aiortc measures none of these.  A :class:`QualityMonitor` reads the stamp every
lab video source draws into its frames (:func:`webrtclab.media.read_stamp`) and,
since sender and receiver share a process and a clock, compares each received
frame with the exact picture that was sent.  Browser peers are measured too: a
lab peer receiving a browser's synthetic video (``video="synthetic"``) re-renders
its frames like a lab sender's, and a browser page reads the stamps of the frames
Chrome presents and reports them (latency, intervals, freezes; no PSNR, the pixels
stay in the page).  Data-channel messages carry ``seq``
and ``sent_ms`` (:meth:`webrtclab.peer.PeerSession.send_cursor`).

Frames table, one row per received video frame (:data:`FRAME_COLUMNS`):

===============  ==========================================================================
``time_s``       receive time, on the lab clock (decoded by aiortc; presented by Chrome)
``peer``         the receiver
``remote``       the sender
``frame``        the sender's frame index (its 16-bit stamp value when the sender is not
                 in this process); missing when the stamp is unreadable (a file source)
``latency_ms``   receive time - send time (capture to decoded, both on the lab clock)
``psnr_db``      luma PSNR against the sent picture, stamp band excluded; ``inf`` for an
                 identical picture, NaN when not computed (``psnr_every``, file sources,
                 a browser's camera); a frame the sender scaled down is scaled back up
                 (bilinear) first, as a player shows it
``interval_ms``  time since the previous frame from the same sender (NaN for the first)
``freeze``       whether this frame ends a freeze (W3C webrtc-stats ``freezeCount``):
                 its interval is at least max(3 x average, average + 150 ms), the
                 average over the previous 30 intervals (from the 5th frame on); the
                 freeze lasted ``interval_ms``.  ``freeze_ms=`` sets a fixed threshold
``displayed_psnr_db``  what the viewer saw until this frame arrived
                 (:mod:`webrtclab.viewer`): mean luma PSNR, capped at 100 dB, of the
                 picture on screen at each source frame time against the frame that
                 should have been shown then; a frozen picture scores against newer
                 frames.  NaN where nothing was scored
``displayed_ssim``  the same times' mean SSIM
``displayed_frames``  how many source frame times those means cover (0: none; more
                 than 1 after a freeze or a skipped frame)
===============  ==========================================================================

Messages table, one row per received chat or cursor message (:data:`MESSAGE_COLUMNS`):
``time_s``, ``peer`` (receiver), ``remote`` (sender), ``channel`` (``chat`` or
``cursors``), ``seq``, ``latency_ms`` (from ``sent_ms``), ``in_order`` (``seq``
higher than any before it on that channel).  Chat echoes from bots are not counted.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import av
import numpy as np

from .browser import BrowserPeer
from .events import LabClock
from .exceptions import ConfigurationError
from .media import Stamp, luma_plane, read_stamp
from .peer import Peer, PeerSession
from .tables import FRAMES, MESSAGES, Feed, FrameRow, MessageRow
from .viewer import Scores, Screen, displayed_means, psnr

if TYPE_CHECKING:
    from .lab import Lab

__all__ = ["BATCH_ROWS", "BATCH_S", "FRAME_COLUMNS", "MESSAGE_COLUMNS", "QualityMonitor"]

logger = logging.getLogger(__name__)

FRAME_COLUMNS = FRAMES.columns
MESSAGE_COLUMNS = MESSAGES.columns

# webrtc-stats freezeCount: the average frame duration is over the last 30 frames;
# as libwebrtc, judge from the 5th interval on.
FREEZE_WINDOW = 30
FREEZE_MIN_INTERVALS = 5
FREEZE_MIN_INCREASE_MS = 150.0
# Rows go to subscribers in batches of this many, or this old.
BATCH_ROWS = 50
BATCH_S = 0.5


class FrameSender(Protocol):
    """A member whose sent frames can be re-rendered: lab peers, synthetic browser peers."""

    def sent_frame_index(self, number: int) -> int | None: ...

    def reference_frame(self, index: int, *, luma: bool = False) -> np.ndarray | None: ...


@dataclass
class _VideoStream:
    """Per (receiver, sender): what the freeze detector and the frame rate need."""

    first_s: float
    last_s: float
    frames: int = 0
    intervals: deque[float] = field(default_factory=lambda: deque(maxlen=FREEZE_WINDOW))
    screen: Screen | None = None


@dataclass
class _Channel:
    """Per (receiver, sender, channel): sequence numbers seen."""

    received: int = 0
    sequenced: int = 0
    first_seq: int | None = None
    max_seq: int | None = None


class QualityMonitor:
    """Measures received video and data-channel quality at every peer of a lab.

    :param lab_or_peers: a :class:`~webrtclab.lab.Lab` (its current and future
        peers are monitored) or some peers.
    :param clock: the time base of the senders' stamps and ``sent_ms``: the lab
        clock (the default, for a lab or for peers that share one).
    :param psnr_every: compute PSNR on every Nth frame of each stream (0: never).
    :param freeze_ms: a fixed freeze threshold instead of the W3C rule.

    Rows go to two feeds (:mod:`webrtclab.tables`), :attr:`frames` and
    :attr:`messages`, whose subscribers get them in small batches.
    """

    def __init__(
        self,
        lab_or_peers: Lab | Iterable[Peer],
        *,
        clock: LabClock | Callable[[], float] | None = None,
        psnr_every: int = 1,
        freeze_ms: float | None = None,
    ) -> None:
        if isinstance(psnr_every, bool) or not isinstance(psnr_every, int) or psnr_every < 0:
            raise ConfigurationError(f"psnr_every must be an integer >= 0, got {psnr_every!r}")
        if freeze_ms is not None and not freeze_ms > 0:
            raise ConfigurationError(f"freeze_ms must be positive, got {freeze_ms!r}")
        self.psnr_every = psnr_every
        self.freeze_ms = freeze_ms
        self.frames: Feed[FrameRow] = Feed(FRAMES, batch_rows=BATCH_ROWS, batch_s=BATCH_S)
        self.messages: Feed[MessageRow] = Feed(MESSAGES, batch_rows=BATCH_ROWS, batch_s=BATCH_S)
        self._streams: dict[tuple[str, str], _VideoStream] = {}
        self._channels: dict[tuple[str, str, str], _Channel] = {}
        self._handlers: dict[Peer, Callable[[str, str, Any], None]] = {}
        self._browsers: list[BrowserPeer] = []
        self._unwatch: Callable[[], None] | None = None
        self._closed = False
        # Where a receiver finds the sender of a stream, to re-render its frames: the
        # lab's live dicts (senders that join later are found), or the peers given.
        self._senders: Callable[[str], FrameSender | None]
        if isinstance(lab_or_peers, Peer):
            lab_or_peers = [lab_or_peers]
        members: list[Peer | BrowserPeer]
        if isinstance(lab_or_peers, Iterable):
            peers = list(lab_or_peers)
            self._senders = {p.user_id: p for p in peers}.get
            default_clock: LabClock | None = peers[0].events.clock if peers else None
            members = list(peers)
        else:
            lab = lab_or_peers
            self._senders = lab.members.get
            default_clock = lab.clock
            self._unwatch = lab.on_member_added(self._attach)
            members = list(lab.members.values())
        clock = clock if clock is not None else default_clock
        if clock is None:
            raise ConfigurationError("QualityMonitor needs a clock= when given no peers")
        self._clock: Callable[[], float] = clock.now if isinstance(clock, LabClock) else clock
        for member in members:
            self._attach(member)

    def __repr__(self) -> str:
        return f"QualityMonitor({len(self._handlers)} peers, {len(self.frames.rows)} frames)"

    # --- attaching -------------------------------------------------------------------------

    def _attach(self, peer: Peer | BrowserPeer) -> None:
        if self._closed or peer in self._handlers or peer in self._browsers:
            return
        if isinstance(peer, BrowserPeer):
            # The page reads the stamps of what Chrome shows (no PSNR: the pixels stay
            # in the page) and reports them in batches.
            peer.frame_listeners.append(self._on_browser_frame)
            self._browsers.append(peer)
            return

        def on_message(remote: str, label: str, payload: Any) -> None:
            self._on_message(peer, remote, label, payload)

        peer.frame_listeners.append(self._on_frame)
        peer.on("message", on_message)
        self._handlers[peer] = on_message

    def close(self) -> None:
        """Detach from every peer and deliver the rows still batched; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._unwatch is not None:
            self._unwatch()
        for peer, handler in self._handlers.items():
            if self._on_frame in peer.frame_listeners:
                peer.frame_listeners.remove(self._on_frame)
            peer.remove_listener("message", handler)
        self._handlers.clear()
        for browser in self._browsers:
            if self._on_browser_frame in browser.frame_listeners:
                browser.frame_listeners.remove(self._on_browser_frame)
        self._browsers.clear()
        self.flush()

    def flush(self) -> None:
        """Deliver batched rows to the subscribers now."""
        self.frames.flush()
        self.messages.flush()

    # --- video -----------------------------------------------------------------------------

    def _on_frame(
        self, session: PeerSession, kind: str, frame: av.AudioFrame | av.VideoFrame
    ) -> None:
        if kind != "video" or not isinstance(frame, av.VideoFrame):
            return
        now = self._clock()
        stream = self._stream(session.peer.user_id, session.remote)
        plane = luma_plane(frame)
        stamp = read_stamp(plane)
        psnr_db = math.nan
        index = self._index(session.remote, stamp)
        sender = self._senders(session.remote)
        if index is None and stream.screen is not None:
            # A picture broken by loss (its stamp unreadable) is on screen all the same.
            scores = stream.screen.arrive(None, now, now, _Picture(frame, plane))
            self._add_frame(session.peer.user_id, session.remote, now, stamp, None, psnr_db, scores)
            return
        if index is None or sender is None or not self.psnr_every:
            self._add_frame(session.peer.user_id, session.remote, now, stamp, index, psnr_db)
            return
        picture = _Picture(frame, plane)
        reference = None
        if (stream.frames - 1) % self.psnr_every == 0:
            reference = sender.reference_frame(index, luma=True)
            if reference is not None:
                psnr_db = psnr(picture(reference.shape), reference)
        if stream.screen is None:
            stream.screen = Screen(
                lambda i: sender.reference_frame(i, luma=True), every=self.psnr_every
            )
        assert stamp is not None
        scores = stream.screen.arrive(
            index,
            now - _latency_ms(now, stamp) / 1000,
            now,
            picture,
            reference=reference,
            psnr_db=psnr_db,
        )
        self._add_frame(session.peer.user_id, session.remote, now, stamp, index, psnr_db, scores)

    def _on_browser_frame(
        self, receiver: str, remote: str, time_s: float, stamp: Stamp | None
    ) -> None:
        self._stream(receiver, remote)
        self._add_frame(receiver, remote, time_s, stamp, self._index(remote, stamp), math.nan)

    def _stream(self, receiver: str, remote: str) -> _VideoStream:
        stream = self._streams.get((receiver, remote))
        if stream is None:
            stream = self._streams[(receiver, remote)] = _VideoStream(math.nan, math.nan)
        stream.frames += 1
        return stream

    def _index(self, remote: str, stamp: Stamp | None) -> int | None:
        sender = self._senders(remote) if stamp is not None else None
        return sender.sent_frame_index(stamp.frame) if sender and stamp else None

    def _add_frame(
        self,
        receiver: str,
        remote: str,
        now: float,
        stamp: Stamp | None,
        index: int | None,
        psnr_db: float,
        scores: Scores = Scores(),
    ) -> None:
        stream = self._streams[(receiver, remote)]
        if math.isnan(stream.last_s):
            stream.first_s = now
            interval_ms = math.nan
        else:
            interval_ms = (now - stream.last_s) * 1000
        freeze = self._is_freeze(stream, interval_ms)
        stream.last_s = now
        number: int | None = None
        latency_ms = math.nan
        if stamp is not None:
            number = stamp.frame if index is None else index
            latency_ms = _latency_ms(now, stamp)
        row = FrameRow(
            now,
            receiver,
            remote,
            number,
            latency_ms,
            psnr_db,
            interval_ms,
            freeze,
            scores.psnr_db,
            scores.ssim,
            scores.frames,
        )
        self.frames.extend([row], now)

    def _is_freeze(self, stream: _VideoStream, interval_ms: float) -> bool:
        if math.isnan(interval_ms):
            return False
        intervals = stream.intervals
        if self.freeze_ms is not None:
            freeze = interval_ms >= self.freeze_ms
        elif len(intervals) >= FREEZE_MIN_INTERVALS:
            average = sum(intervals) / len(intervals)
            freeze = interval_ms >= max(3 * average, average + FREEZE_MIN_INCREASE_MS)
        else:
            freeze = False
        intervals.append(interval_ms)
        return freeze

    # --- data channels ---------------------------------------------------------------------

    def _on_message(self, peer: Peer, remote: str, label: str, payload: Any) -> None:
        if label not in ("chat", "cursors") or not isinstance(payload, dict):
            return
        if payload.get("echo"):
            return  # a bot's echo carries our own seq: not a message of its stream
        now = self._clock()
        seq = payload.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int):
            seq = None
        sent_ms = payload.get("sent_ms")
        latency_ms = math.nan
        if isinstance(sent_ms, int | float) and not isinstance(sent_ms, bool):
            latency_ms = now * 1000 - float(sent_ms)
        channel = self._channels.setdefault((peer.user_id, remote, label), _Channel())
        channel.received += 1
        in_order: bool | None = None
        if seq is not None:
            channel.sequenced += 1
            if channel.first_seq is None or channel.max_seq is None:
                in_order = True
                channel.first_seq = channel.max_seq = seq
            else:
                in_order = seq > channel.max_seq
                channel.first_seq = min(channel.first_seq, seq)
                channel.max_seq = max(channel.max_seq, seq)
        self.messages.extend(
            [MessageRow(now, peer.user_id, remote, label, seq, latency_ms, in_order)], now
        )

    # --- results ---------------------------------------------------------------------------

    def summary(self) -> dict[str, float]:
        """Headline numbers over everything recorded so far (NaN where there is no data).

        ``frame_latency_ms_p50``/``_p95``, ``recv_fps`` (mean over streams),
        ``freezes``, ``freeze_total_s``, ``psnr_db_mean`` (over finite values),
        ``displayed_psnr_db_mean`` and ``displayed_ssim_mean`` (over source frame times),
        ``cursor_latency_ms_p50``, ``cursor_loss_fraction`` (sequence numbers
        missing between each stream's first and last received), ``chat_delivered``,
        ``chat_in_order`` (1 or 0), and ``frames`` (rows).
        """
        rows = self.frames.rows
        latency = np.array([r.latency_ms for r in rows], dtype=np.float64)
        psnr = np.array([r.psnr_db for r in rows], dtype=np.float64)
        freezes = [r.interval_ms for r in rows if r.freeze]
        fps = [
            (s.frames - 1) / (s.last_s - s.first_s)
            for s in self._streams.values()
            if s.frames > 1 and s.last_s > s.first_s
        ]
        cursors = [r for r in self.messages.rows if r.channel == "cursors"]
        chat = [r for r in self.messages.rows if r.channel == "chat"]
        expected = received = 0
        for (_, _, label), channel in self._channels.items():
            if label == "cursors" and channel.max_seq is not None:
                assert channel.first_seq is not None
                expected += channel.max_seq - channel.first_seq + 1
                received += channel.sequenced
        return {
            "frames": float(len(rows)),
            "frame_latency_ms_p50": _percentile(latency, 50),
            "frame_latency_ms_p95": _percentile(latency, 95),
            "recv_fps": float(np.mean(fps)) if fps else math.nan,
            "freezes": float(len(freezes)),
            "freeze_total_s": float(sum(freezes)) / 1000,
            "psnr_db_mean": _mean(psnr[np.isfinite(psnr)]),
            **displayed_means(
                np.array([r.displayed_psnr_db for r in rows], dtype=np.float64),
                np.array([r.displayed_ssim for r in rows], dtype=np.float64),
                np.array([r.displayed_frames for r in rows], dtype=np.float64),
            ),
            "cursor_latency_ms_p50": _percentile(
                np.array([r.latency_ms for r in cursors], dtype=np.float64), 50
            ),
            "cursor_loss_fraction": 1 - received / expected if expected else math.nan,
            "chat_delivered": float(len(chat)),
            "chat_in_order": float(all(r.in_order is not False for r in chat))
            if chat
            else math.nan,
        }


def _latency_ms(now: float, stamp: Stamp) -> float:
    """Receive time minus the stamped send time, in ms.

    Both ends truncate to ms on one clock; the difference is exact mod 65536, read
    as signed: a page's clock a few ms off the lab's shows as a small negative
    latency, not as 65 s.
    """
    return float(((int(now * 1000) - stamp.sent_ms + 0x8000) & 0xFFFF) - 0x8000)


class _Picture:
    """A decoded frame's luma plane at the reference's size, scaled once when needed."""

    def __init__(self, frame: av.VideoFrame, plane: np.ndarray) -> None:
        self.frame = frame
        self.plane = plane

    def __call__(self, shape: tuple[int, ...]) -> np.ndarray:
        if self.plane.shape != shape:
            # Scaled down by the sender (libwebrtc adapts resolution): compared as a
            # viewer sees it, scaled back up.
            height, width = shape
            scaled = self.frame.reformat(width, height, "yuv420p", interpolation="BILINEAR")
            self.plane = luma_plane(scaled)
        return self.plane


def _percentile(values: np.ndarray, q: float) -> float:
    values = values[~np.isnan(values)]
    return float(np.percentile(values, q)) if values.size else math.nan


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan
