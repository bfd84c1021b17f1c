"""Transport-wide congestion control feedback (TWCC): the RTCP message, both ends of it.

Pure Python, no I/O, no clock: callers pass times in seconds.

* :class:`TransportFeedback`, :func:`parse_feedback` and :meth:`TransportFeedback.to_bytes`:
  the RTPFB message of draft-holmer-rmcat-transport-wide-cc-extensions-01, section 3.1.
* :func:`split_compound`: takes the transport-feedback packets out of a compound RTCP
  datagram and leaves the rest, byte for byte, to another RTCP parser.
* :class:`FeedbackRecorder` (receiver): records the arrival of each transport-wide
  sequence number and builds the feedback, the way libwebrtc's and pion's recorders do.
* :class:`SendHistory` (sender): hands out the sequence numbers, remembers what was sent
  and turns feedback into :class:`~webrtclab.cc.types.PacketResult` values.

Sequence numbers are 16 bits on the wire; :class:`SendHistory` reports them unwrapped.
Times on the wire are 250 µs ticks (receive deltas) from a 24-bit reference time in
64 ms units, so arrival times round-trip to within 125 µs.
"""

from __future__ import annotations

import re
import struct
from array import array
from collections import deque
from dataclasses import dataclass

from ..exceptions import ConfigurationError, WebrtcLabError
from .types import PacketResult

__all__ = [
    "RTCP_RTPFB",
    "TWCC_FMT",
    "TWCC_URI",
    "FeedbackError",
    "FeedbackRecorder",
    "SendHistory",
    "TransportFeedback",
    "parse_feedback",
    "split_compound",
]

#: the RTP header extension carrying the transport-wide sequence number (draft section 2)
TWCC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
#: RTCP packet type of transport-layer feedback (RFC 4585 section 6.1)
RTCP_RTPFB = 205
#: the feedback message type of transport-wide feedback (draft section 3.1)
TWCC_FMT = 15

# Draft section 3.1: 4-byte RTCP header, sender and media SSRC, base sequence number,
# packet status count, 24-bit reference time and feedback packet count.
_FIXED = struct.Struct("!BBHIIHHI")
_FIXED_SIZE = _FIXED.size  # 20
_TICKS_PER_S = 4000  # receive deltas count 250 µs (section 3.1.5)
_TICKS_PER_REF = 256  # the reference time counts 64 ms = 256 ticks (section 3.1)
_REF_WRAP = 1 << 24
_REF_HALF = 1 << 23
_MAX_RUN = 0x1FFF  # 13-bit run length (section 3.1.3)
_MAX_STATUSES = 0xFFFF  # 16-bit packet status count


class FeedbackError(WebrtcLabError, ValueError):
    """A transport-wide feedback packet is malformed, or a value cannot be encoded."""


# --- status symbols (section 3.1.1) and chunks (sections 3.1.3, 3.1.4) -----------------
#
# Symbols are kept as bytes (one symbol a byte: 0 not received, 1 small delta, 2 large or
# negative delta) so that counting, searching and run detection run in C.


def _vector_table(bits: int, width: int) -> tuple[bytes, ...]:
    """Symbols (most significant first) of every ``width``-bit value, ``bits`` each."""
    n = width // bits
    mask = (1 << bits) - 1
    return tuple(
        bytes((value >> (bits * (n - 1 - k))) & mask for k in range(n))
        for value in range(1 << width)
    )


# A status vector chunk's 14 bits of symbols = 6 bits of its first byte + its second byte.
_ONE_BIT_HI = _vector_table(1, 6)
_ONE_BIT_LO = _vector_table(1, 8)
_TWO_BIT_HI = _vector_table(2, 6)
_TWO_BIT_LO = _vector_table(2, 8)
_SYMBOL = (b"\x00", b"\x01", b"\x02", b"\x03")
_DIGITS = bytes.maketrans(b"\x00\x01\x02\x03", b"0123")
_RUNS = re.compile(rb"(.)\1*", re.DOTALL)


def _encode_chunks(symbols: bytes | bytearray) -> list[int]:
    """The packet chunks for ``symbols``: at each point, whichever chunk covers more.

    A run-length chunk (section 3.1.3) covers a run of one symbol up to 8191 long; a
    status vector (section 3.1.4) covers 14 one-bit symbols when no large delta is among
    them, else 7 two-bit symbols.  Only the last chunk may hold fewer symbols than it
    can (the receiver stops at the packet status count), as libwebrtc does.
    """
    chunks: list[int] = []
    n = len(symbols)
    runs = _RUNS.finditer(symbols)
    run_end = 0
    i = 0
    while i < n:
        while run_end <= i:
            run_end = next(runs).end()
        run = min(run_end - i, _MAX_RUN)
        one_bit = symbols.find(2, i, i + 14) < 0
        capacity = min(14 if one_bit else 7, n - i)
        if run >= capacity:
            chunks.append((symbols[i] << 13) | run)
            i += run
        elif one_bit:
            bits = int(symbols[i : i + capacity].translate(_DIGITS), 2)
            chunks.append(0x8000 | (bits << (14 - capacity)))
            i += capacity
        else:
            bits = int(symbols[i : i + capacity].translate(_DIGITS), 4)
            chunks.append(0xC000 | (bits << (2 * (7 - capacity))))
            i += capacity
    return chunks


def _encode(
    sender_ssrc: int,
    media_ssrc: int,
    base_sequence: int,
    reference_time_64ms: int,
    feedback_count: int,
    symbols: bytes | bytearray,
    deltas: list[int],
) -> bytes:
    """One whole RTCP packet; ``deltas`` are 250 µs ticks, one per received symbol."""
    chunks = _encode_chunks(symbols)
    # Receive deltas (section 3.1.5): 1 byte unsigned if small, else 2 bytes signed.
    if 2 not in symbols:
        delta_bytes = bytes(deltas)
    else:
        out = bytearray()
        for delta in deltas:
            if 0 <= delta <= 0xFF:
                out.append(delta)
            else:
                out += (delta & 0xFFFF).to_bytes(2, "big")
        delta_bytes = bytes(out)
    size = _FIXED_SIZE + 2 * len(chunks) + len(delta_bytes)
    pad = -size % 4
    # RFC 3550 section 6.4.1 padding, as libwebrtc and pion pad: zeros, then the count.
    padding = bytes(pad - 1) + bytes((pad,)) if pad else b""
    head = _FIXED.pack(
        0x80 | (0x20 if pad else 0) | TWCC_FMT,
        RTCP_RTPFB,
        (size + pad) // 4 - 1,
        sender_ssrc,
        media_ssrc,
        base_sequence,
        len(symbols),
        ((reference_time_64ms & 0xFFFFFF) << 8) | feedback_count,
    )
    return b"".join((head, struct.pack(f"!{len(chunks)}H", *chunks), delta_bytes, padding))


# --- the message -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransportFeedback:
    """One transport-wide feedback message (draft section 3.1).

    ``packets`` has one ``(sequence, arrival_time_s)`` entry per reported packet, in
    sequence order from ``base_sequence``; the arrival is ``None`` for a packet not
    received, else ``reference_time_64ms * 0.064`` plus the receive deltas so far
    (seconds on the receiver's clock, 250 µs resolution).
    """

    sender_ssrc: int
    media_ssrc: int
    #: 16-bit transport-wide sequence number of the first reported packet
    base_sequence: int
    #: the signed 24-bit reference time as sent, in 64 ms units
    reference_time_64ms: int
    #: 8-bit count of feedback packets sent, to detect lost feedback
    feedback_count: int
    packets: tuple[tuple[int, float | None], ...]

    def to_bytes(self) -> bytes:
        """The RTCP packet, padded to 32 bits; arrival times are rounded to 250 µs.

        Raises :class:`FeedbackError` for a field out of range, a sequence number out of
        order, or a gap between two arrivals that a 16-bit delta cannot hold (±8.19 s).
        """
        for name, value, top in (
            ("sender_ssrc", self.sender_ssrc, 0xFFFFFFFF),
            ("media_ssrc", self.media_ssrc, 0xFFFFFFFF),
            ("base_sequence", self.base_sequence, 0xFFFF),
            ("feedback_count", self.feedback_count, 0xFF),
        ):
            if not 0 <= value <= top:
                raise FeedbackError(f"{name}={value!r} is outside 0..{top}")
        ref = self.reference_time_64ms
        if not -_REF_HALF <= ref < _REF_HALF:
            raise FeedbackError(f"reference_time_64ms={ref!r} is not a signed 24-bit value")
        count = len(self.packets)
        if count > _MAX_STATUSES:
            raise FeedbackError(f"{count} packets reported; a feedback holds at most 65535")
        symbols = bytearray(count)
        deltas: list[int] = []
        last = ref * _TICKS_PER_REF
        base = self.base_sequence
        for index, (sequence, arrival) in enumerate(self.packets):
            if sequence != (base + index) & 0xFFFF:
                raise FeedbackError(
                    f"packets[{index}] has sequence number {sequence!r}, "
                    f"expected {(base + index) & 0xFFFF} (base {base} + {index})"
                )
            if arrival is None:
                continue
            try:
                ticks = round(arrival * _TICKS_PER_S)
            except (ValueError, OverflowError, TypeError):
                raise FeedbackError(f"packets[{index}] has arrival time {arrival!r}") from None
            delta = ticks - last
            if not -0x8000 <= delta <= 0x7FFF:
                raise FeedbackError(
                    f"packets[{index}] arrives {delta / _TICKS_PER_S:+.4f} s after the "
                    "previous arrival (or the reference time); a receive delta holds "
                    "-8.192..8.19175 s"
                )
            symbols[index] = 1 if 0 <= delta <= 0xFF else 2
            deltas.append(delta)
            last = ticks
        return _encode(
            self.sender_ssrc,
            self.media_ssrc,
            base,
            ref,
            self.feedback_count,
            symbols,
            deltas,
        )


def parse_feedback(packet: bytes) -> TransportFeedback:
    """Decode one whole transport-wide feedback RTCP packet (header included).

    Raises :class:`FeedbackError`, naming what is wrong, for anything malformed: not
    RTPFB/FMT 15, a length that is not the packet's, bad padding (RFC 3550: with the P
    bit set the last byte counts the padding and must be 1 or more), chunks or deltas
    running past the end, or the reserved status symbol 3.  Bytes left between the
    receive deltas and the padding are ignored, as libwebrtc ignores them.
    """
    size = len(packet)
    if size < 4:
        raise FeedbackError(f"{size}-byte packet is shorter than the 4-byte RTCP header")
    first = packet[0]
    if first >> 6 != 2:
        raise FeedbackError(f"RTCP version is {first >> 6}, expected 2")
    fmt, packet_type = first & 0x1F, packet[1]
    if packet_type != RTCP_RTPFB or fmt != TWCC_FMT:
        raise FeedbackError(
            f"not transport-wide feedback: PT={packet_type} FMT={fmt} "
            f"(expected PT={RTCP_RTPFB} FMT={TWCC_FMT})"
        )
    declared = (((packet[2] << 8) | packet[3]) + 1) * 4
    if declared != size:
        raise FeedbackError(f"packet is {size} bytes but its length field says {declared}")
    if size < _FIXED_SIZE:
        raise FeedbackError(f"{size}-byte packet is shorter than the 20-byte feedback header")
    end = size
    if first & 0x20:
        pad = packet[-1]
        if pad == 0:
            raise FeedbackError("P bit set but the padding count (last byte) is 0")
        if pad > size - _FIXED_SIZE:
            raise FeedbackError(
                f"padding count {pad} runs into the 20-byte feedback header ({size} bytes)"
            )
        end = size - pad
    _, _, _, sender_ssrc, media_ssrc, base, count, word = _FIXED.unpack_from(packet)
    ref = word >> 8
    if ref & _REF_HALF:
        ref -= _REF_WRAP
    feedback_count = word & 0xFF

    # Packet status chunks (sections 3.1.2 to 3.1.4): the last one may say more than
    # the packet status count; the surplus is dropped (libwebrtc's LastChunk::Decode).
    symbols = bytearray()
    left = count
    pos = _FIXED_SIZE
    while left > 0:
        if pos + 2 > end:
            raise FeedbackError(
                f"packet chunks run past the end ({end} bytes without padding): "
                f"{count - left} of {count} packet statuses decoded"
            )
        high, low = packet[pos], packet[pos + 1]
        pos += 2
        if not high & 0x80:  # run-length chunk
            run = min(((high & 0x1F) << 8) | low, left)
            symbols += _SYMBOL[(high >> 5) & 0x03] * run
            left -= run
        elif not high & 0x40:  # status vector chunk, 14 one-bit symbols
            vector = _ONE_BIT_HI[high & 0x3F] + _ONE_BIT_LO[low]
            take = min(14, left)
            symbols += vector[:take]
            left -= take
        else:  # status vector chunk, 7 two-bit symbols
            vector = _TWO_BIT_HI[high & 0x3F] + _TWO_BIT_LO[low]
            take = min(7, left)
            symbols += vector[:take]
            left -= take

    reserved = symbols.find(3)
    if reserved >= 0:
        raise FeedbackError(
            f"reserved status symbol 3 for sequence number {(base + reserved) & 0xFFFF}"
        )
    small, large = symbols.count(1), symbols.count(2)
    need = small + 2 * large
    if pos + need > end:
        raise FeedbackError(
            f"receive deltas of {small + large} received packets need {need} bytes "
            f"from byte {pos}, but only {end - pos} remain"
        )

    # Receive deltas (section 3.1.5), cumulative from the reference time, in ticks.
    ticks = ref * _TICKS_PER_REF
    packets: list[tuple[int, float | None]] = []
    append = packets.append
    sequence = base
    for symbol in symbols:
        if symbol == 1:
            ticks += packet[pos]
            pos += 1
            append((sequence & 0xFFFF, ticks / _TICKS_PER_S))
        elif symbol == 0:
            append((sequence & 0xFFFF, None))
        else:
            delta = (packet[pos] << 8) | packet[pos + 1]
            ticks += delta - 0x10000 if delta & 0x8000 else delta
            pos += 2
            append((sequence & 0xFFFF, ticks / _TICKS_PER_S))
        sequence += 1
    return TransportFeedback(sender_ssrc, media_ssrc, base, ref, feedback_count, tuple(packets))


def split_compound(data: bytes) -> tuple[list[bytes], bytes]:
    """Split a (decrypted) compound RTCP datagram: ``(feedback packets, the rest)``.

    The feedback packets are the RTPFB/FMT 15 ones, each whole; the rest is every other
    packet, in order and unchanged.  If any packet's header is malformed (version not 2,
    or a length running past the datagram), or there is no feedback, the result is
    ``([], data)``, so the usual RTCP parser sees (and rejects) exactly what came in.
    """
    feedback: list[bytes] = []
    rest: list[bytes] = []
    size = len(data)
    pos = 0
    while pos < size:
        if size - pos < 4 or data[pos] >> 6 != 2:
            return [], data
        end = pos + (((data[pos + 2] << 8) | data[pos + 3]) + 1) * 4
        if end > size:
            return [], data
        if data[pos + 1] == RTCP_RTPFB and data[pos] & 0x1F == TWCC_FMT:
            feedback.append(bytes(data[pos:end]))
        else:
            rest.append(data[pos:end])
        pos = end
    if not feedback:
        return [], data
    return feedback, b"".join(rest)


# --- receiver side ---------------------------------------------------------------------


class FeedbackRecorder:
    """Receiver side: records arrivals and builds feedback (libwebrtc/pion recorder behaviour).

    Call :meth:`record` for every RTP packet carrying a transport-wide sequence number and
    :meth:`build` periodically (libwebrtc: every 50-250 ms) to get the feedback to send.

    Each build reports from where the previous one stopped (so packets never received
    are reported as lost) to the newest sequence number recorded.  A packet that arrives
    after being reported lost is reported again, received, in the next build, provided
    it is not older than the base of the last build; older ones are ignored.  Only the
    first arrival of a sequence number counts.  A feedback packet reports at most
    ``max_packets_per_feedback`` sequence numbers (received or lost); a build makes as
    many packets as needed, also starting a new one where a receive delta would not fit
    in 16 bits.  Of a run of losses longer than that limit, only the newest
    ``max_packets_per_feedback - 1`` are reported (libwebrtc reports none of such a run).
    """

    __slots__ = (
        "_arrivals",
        "_feedback_count",
        "_last_base",
        "_limit",
        "_media_ssrc",
        "_pending",
        "_sender_ssrc",
        "_top",
        "_window",
    )

    def __init__(self, sender_ssrc: int, *, max_packets_per_feedback: int = 500) -> None:
        if not 0 <= sender_ssrc <= 0xFFFFFFFF:
            raise ConfigurationError(f"sender_ssrc={sender_ssrc!r} is not a 32-bit value")
        if not 1 <= max_packets_per_feedback <= _MAX_STATUSES:
            raise ConfigurationError(
                f"max_packets_per_feedback={max_packets_per_feedback!r} is outside 1..65535"
            )
        self._sender_ssrc = sender_ssrc
        self._limit = max_packets_per_feedback
        self._media_ssrc = 0
        self._feedback_count = 0
        #: unwrapped sequence number -> first arrival time, from the last build's base on
        self._arrivals: dict[int, float] = {}
        self._top: int | None = None  # newest unwrapped sequence number recorded
        self._window = 0  # where the next build starts
        self._last_base = -(1 << 62)  # arrivals before this are ignored
        self._pending = 0

    def __repr__(self) -> str:
        return (
            f"FeedbackRecorder(sender_ssrc={self._sender_ssrc:#010x}, pending={self._pending}, "
            f"feedback_count={self._feedback_count})"
        )

    @property
    def pending(self) -> int:
        """Packets recorded and not yet reported."""
        return self._pending

    def record(self, sequence: int, arrival_time_s: float, media_ssrc: int) -> None:
        """Note that the packet with 16-bit transport ``sequence`` arrived at ``arrival_time_s``."""
        self._media_ssrc = media_ssrc
        top = self._top
        if top is None:
            unwrapped = sequence & 0xFFFF
            self._top = self._window = unwrapped
        else:
            # Unwrap against the newest: within 2**15 either way (draft section 2).
            step = (sequence - top) & 0xFFFF
            unwrapped = top + step - 0x10000 if step & 0x8000 else top + step
            if unwrapped < self._last_base:
                return
            if unwrapped > top:
                self._top = unwrapped
        arrivals = self._arrivals
        if unwrapped in arrivals:
            return
        arrivals[unwrapped] = arrival_time_s
        if unwrapped < self._window:
            self._window = unwrapped
        self._pending += 1

    def build(self) -> list[bytes]:
        """Feedback packets for everything recorded since the last build (or none)."""
        if not self._pending or self._top is None:
            return []
        window, top, limit = self._window, self._top, self._limit
        received = sorted(item for item in self._arrivals.items() if item[0] >= window)
        out: list[bytes] = []
        base = window
        first_base: int | None = None
        symbols = bytearray()
        deltas: list[int] = []
        ref = last = 0
        for sequence, arrival in received:
            ticks = round(arrival * _TICKS_PER_S)
            if not symbols:
                if sequence - base >= limit:
                    base = sequence - limit + 1  # the oldest of the losses go unreported
            elif sequence - base >= limit or not -0x8000 <= ticks - last <= 0x7FFF:
                # Full, or a delta beyond 16 bits: the next packet starts with the losses
                # between the two, if they fit.
                out.append(self._packet(base, ref, symbols, deltas))
                symbols, deltas, base = bytearray(), [], base + len(symbols)
                if sequence - base >= limit:
                    base = sequence - limit + 1
            if not symbols:
                if first_base is None:
                    first_base = base
                ref = ticks // _TICKS_PER_REF  # section 3.1: 64 ms units, floored
                last = ref * _TICKS_PER_REF
            gap = sequence - base - len(symbols)
            if gap:
                symbols += bytes(gap)
            delta = ticks - last
            symbols.append(1 if 0 <= delta <= 0xFF else 2)
            deltas.append(delta)
            last = ticks
        if symbols:
            out.append(self._packet(base, ref, symbols, deltas))
        self._pending = 0
        self._window = top + 1
        if first_base is not None:
            self._last_base = first_base
            self._arrivals = {s: t for s, t in self._arrivals.items() if s >= first_base}
        return out

    def _packet(self, base: int, ref: int, symbols: bytearray, deltas: list[int]) -> bytes:
        count = self._feedback_count
        self._feedback_count = (count + 1) & 0xFF
        # The reference time wraps in 24 bits (about 12.4 days), signed (section 3.1).
        wrapped = ((ref + _REF_HALF) & (_REF_WRAP - 1)) - _REF_HALF
        return _encode(
            self._sender_ssrc,
            self._media_ssrc & 0xFFFFFFFF,
            base & 0xFFFF,
            wrapped,
            count,
            symbols,
            deltas,
        )


# --- sender side -----------------------------------------------------------------------

_RING_BITS = 15
_RING = 1 << _RING_BITS  # entries kept: sequence numbers stay unambiguous within 2**15
_RING_MASK = _RING - 1
# Per-entry state.
_IN_FLIGHT = 0  # sent, not reported, counted in flight
_LOST = 1  # reported lost (a later feedback may still report it received)
_RECEIVED = 2  # reported received: final
_UNCOUNTED = 3  # not reported, no longer counted in flight (too old, or an empty slot)
_EMPTY = -(1 << 62)  # the sequence number of an empty slot: never an unwrapped one


class SendHistory:
    """Sender side: what was sent with which transport-wide sequence number.

    Turns feedback into :class:`~webrtclab.cc.types.PacketResult` values.

    Keeps the last 2**15 packets sent (a ring), and among those answers only for packets
    sent at most ``horizon_s`` before the newest one.  ``in_flight_window_s`` bounds how
    long an unreported packet counts in :meth:`in_flight_bytes` (see there).
    """

    __slots__ = (
        "_in_flight",
        "_in_flight_window",
        "_horizon",
        "_latest_send",
        "_next",
        "_ref",
        "_rtx",
        "_seq",
        "_size",
        "_state",
        "_time",
        "_top",
        "_unreported",
    )

    def __init__(self, *, horizon_s: float = 60.0, in_flight_window_s: float = 1.0) -> None:
        if not horizon_s > 0:
            raise ConfigurationError(f"horizon_s={horizon_s!r} must be positive")
        if not in_flight_window_s > 0:
            raise ConfigurationError(f"in_flight_window_s={in_flight_window_s!r} must be positive")
        self._horizon = float(horizon_s)
        self._in_flight_window = float(in_flight_window_s)
        self._next = 1
        self._top: int | None = None  # newest unwrapped sequence number sent
        self._latest_send = float("-inf")
        self._ref: int | None = None  # last unwrapped reference time (64 ms units)
        self._seq = array("q", [_EMPTY]) * _RING
        self._time = array("d", [0.0]) * _RING
        self._size = array("q", [0]) * _RING
        self._rtx = array("b", [0]) * _RING
        self._state = array("b", [_UNCOUNTED]) * _RING
        self._in_flight = 0
        self._unreported: deque[int] = deque()  # unwrapped sequence numbers, send order

    def __repr__(self) -> str:
        return f"SendHistory(top={self._top}, in_flight={self._in_flight} B)"

    def next_sequence(self) -> int:
        """The 16-bit number for the next packet's header extension (1, 2, ... wrapping)."""
        value = self._next
        self._next = value + 1
        return value & 0xFFFF

    def sent(
        self, sequence: int, send_time_s: float, size: int, *, is_retransmission: bool = False
    ) -> None:
        """Remember that packet ``sequence`` (16 bits) left at ``send_time_s``, ``size`` bytes."""
        top = self._top
        if top is None:
            unwrapped = sequence & 0xFFFF
            self._top = unwrapped
        else:
            step = (sequence - top) & 0xFFFF
            unwrapped = top + step - 0x10000 if step & 0x8000 else top + step
            if unwrapped > top:
                self._top = unwrapped
        slot = unwrapped & _RING_MASK
        state = self._state
        if state[slot] == _IN_FLIGHT:  # evicting (or re-sending) an unreported packet
            self._in_flight -= self._size[slot]
        self._seq[slot] = unwrapped
        self._time[slot] = send_time_s
        self._size[slot] = size
        self._rtx[slot] = is_retransmission
        state[slot] = _IN_FLIGHT
        self._in_flight += size
        if send_time_s > self._latest_send:
            self._latest_send = send_time_s
        unreported = self._unreported
        unreported.append(unwrapped)
        if len(unreported) > _RING:
            unreported.popleft()

    def on_feedback(self, feedback: TransportFeedback) -> list[PacketResult]:
        """The :class:`PacketResult` of each reported packet this history knows.

        Unknown packets (never sent, evicted, or beyond the horizon) are skipped.  A
        packet reported lost and later reported received comes back again with its
        arrival; repeated reports of a loss, and any report after a receipt, are skipped
        so that no packet counts twice.  Arrival times are the feedback's, kept
        continuous across the reference time's 24-bit wrap.
        """
        ref = feedback.reference_time_64ms
        last_ref = self._ref
        if last_ref is None:
            unwrapped_ref = ref
        else:
            step = (ref - last_ref) & (_REF_WRAP - 1)
            unwrapped_ref = last_ref + step - _REF_WRAP if step & _REF_HALF else last_ref + step
        self._ref = unwrapped_ref
        offset = (unwrapped_ref - ref) * (_TICKS_PER_REF / _TICKS_PER_S)
        top = self._top
        if top is None:
            return []
        oldest = self._latest_send - self._horizon
        seqs, times, sizes, rtx, state = self._seq, self._time, self._size, self._rtx, self._state
        results: list[PacketResult] = []
        for sequence, arrival in feedback.packets:
            unwrapped = top - ((top - sequence) & 0xFFFF)
            slot = unwrapped & _RING_MASK
            if seqs[slot] != unwrapped:
                continue
            current = state[slot]
            if current == _RECEIVED or (arrival is None and current == _LOST):
                continue
            send_time = times[slot]
            if send_time < oldest:
                continue
            if current == _IN_FLIGHT:
                self._in_flight -= sizes[slot]
            if arrival is None:
                state[slot] = _LOST
            else:
                state[slot] = _RECEIVED
                arrival += offset
            results.append(
                PacketResult(unwrapped, send_time, sizes[slot], arrival, bool(rtx[slot]))
            )
        return results

    def in_flight_bytes(self, now_s: float) -> int:
        """Bytes sent and not yet reported (received or lost) by any feedback.

        Only packets sent within ``in_flight_window_s`` (default 1 s) before ``now_s``
        count: an older unreported packet is taken as gone with its feedback, so that a
        lost feedback packet does not inflate the figure for ever.
        """
        oldest = now_s - self._in_flight_window
        unreported = self._unreported
        seqs, times, sizes, state = self._seq, self._time, self._size, self._state
        while unreported:
            unwrapped = unreported[0]
            slot = unwrapped & _RING_MASK
            if seqs[slot] == unwrapped and state[slot] == _IN_FLIGHT:
                if times[slot] >= oldest:
                    break
                state[slot] = _UNCOUNTED
                self._in_flight -= sizes[slot]
            unreported.popleft()
        return self._in_flight
