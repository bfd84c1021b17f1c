"""Transport-wide congestion control feedback: the RTCP message, the recorder, the history."""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webrtclab.cc.twcc import (
    RTCP_RTPFB,
    TWCC_FMT,
    TWCC_URI,
    FeedbackError,
    FeedbackRecorder,
    SendHistory,
    TransportFeedback,
    parse_feedback,
    split_compound,
)
from webrtclab.cc.types import PacketResult
from webrtclab.exceptions import ConfigurationError, WebrtcLabError

TICK = 0.00025  # one receive-delta tick, 250 µs


def feedback(
    statuses: Sequence[int | None],
    *,
    base: int = 100,
    ref: int = 1000,
    count: int = 0,
    sender: int = 0x11223344,
    media: int = 0x55667788,
) -> TransportFeedback:
    """A feedback from receive deltas in ticks (None = not received), arrivals exact."""
    ticks = ref * 256
    packets: list[tuple[int, float | None]] = []
    for index, delta in enumerate(statuses):
        if delta is None:
            packets.append(((base + index) & 0xFFFF, None))
        else:
            ticks += delta
            packets.append(((base + index) & 0xFFFF, ticks / 4000))
    return TransportFeedback(sender, media, base, ref, count, tuple(packets))


def chunks_of(packet: bytes) -> list[int]:
    """The packet chunks of a serialised feedback (enough of them to cover the count)."""
    count = struct.unpack_from("!H", packet, 14)[0]
    chunks, covered, pos = [], 0, 20
    while covered < count:
        chunk = struct.unpack_from("!H", packet, pos)[0]
        pos += 2
        chunks.append(chunk)
        if not chunk & 0x8000:
            covered += chunk & 0x1FFF
        else:
            covered += 7 if chunk & 0x4000 else 14
    return chunks


def rtcp(packet_type: int, count: int, body: bytes, *, padding: bool = False) -> bytes:
    """A raw RTCP packet with a consistent length field."""
    assert len(body) % 4 == 0
    first = 0x80 | (0x20 if padding else 0) | count
    return struct.pack("!BBH", first, packet_type, len(body) // 4) + body


def twcc_raw(count: int, rest: bytes, *, base: int = 0, ref: int = 0, first: int = 0x8F) -> bytes:
    """A transport-feedback packet with any chunk/delta bytes (``rest`` padded by caller)."""
    body = struct.pack("!IIHHI", 1, 2, base, count, (ref & 0xFFFFFF) << 8) + rest
    return struct.pack("!BBH", first, 205, (len(body) + 4) // 4 - 1) + body


# --- constants and the wire format -----------------------------------------------------


def test_constants() -> None:
    assert TWCC_URI == "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
    assert (RTCP_RTPFB, TWCC_FMT) == (205, 15)
    assert issubclass(FeedbackError, WebrtcLabError)
    assert issubclass(FeedbackError, ValueError)


# Test vectors from pion/rtcp, transport_layer_cc_test.go, TestTransportLayerCC_Unmarshal
# (https://github.com/pion/rtcp/blob/master/transport_layer_cc_test.go).  pion states each
# receive delta in microseconds; the arrival is the reference time (64 ms units) plus
# the deltas so far.

# pion "example1": one packet, a run-length chunk, one small delta, one byte of padding.
PION_EXAMPLE1 = bytes(
    [0xAF, 0xCD, 0x00, 0x05, 0xFA, 0x17, 0xFA, 0x17, 0x43, 0x03, 0x2F, 0xA0,
     0x00, 0x99, 0x00, 0x01, 0x3D, 0xE8, 0x02, 0x17, 0x20, 0x01, 0x94, 0x01]
)  # fmt: skip
# pion "example4": a run of 7 small deltas, three bytes of padding.
PION_EXAMPLE4 = bytes(
    [0xAF, 0xCD, 0x00, 0x07, 0xFA, 0x17, 0xFA, 0x17, 0x19, 0x3D, 0xD8, 0xBB,
     0x00, 0x04, 0x00, 0x07, 0x10, 0x63, 0x6E, 0x01, 0x20, 0x07, 0x4C, 0x24,
     0x24, 0x10, 0x0C, 0x0C, 0x10, 0x00, 0x00, 0x03]
)  # fmt: skip
# pion "example6": a two-bit status vector (small, small, small, small, small, lost,
# large), then a run-length chunk of 48 "not received" cut to the status count of 9.
PION_EXAMPLE6 = bytes(
    [0xAF, 0xCD, 0x00, 0x07, 0x9B, 0x74, 0xF6, 0x1F, 0x93, 0x71, 0xDC, 0xBC,
     0x85, 0x3C, 0x00, 0x09, 0x63, 0xF9, 0x16, 0xB3, 0xD5, 0x52, 0x00, 0x30,
     0x9B, 0xAA, 0x6A, 0xAA, 0x7B, 0x01, 0x09, 0x01]
)  # fmt: skip


def assert_arrivals(fb: TransportFeedback, deltas_us: list[int | None]) -> None:
    expected: list[int | None] = []
    t_us = fb.reference_time_64ms * 64_000
    for delta in deltas_us:
        if delta is None:
            expected.append(None)
        else:
            t_us += delta
            expected.append(t_us)
    got = [None if a is None else a * 1e6 for _, a in fb.packets]
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert (g is None) == (e is None)
        if g is not None:
            assert g == pytest.approx(e, abs=1e-3)


def test_pion_example1() -> None:
    fb = parse_feedback(PION_EXAMPLE1)
    assert (fb.sender_ssrc, fb.media_ssrc) == (4195875351, 1124282272)
    assert (fb.base_sequence, fb.reference_time_64ms, fb.feedback_count) == (153, 4057090, 23)
    assert [s for s, _ in fb.packets] == [153]
    assert_arrivals(fb, [37000])
    # pion's Marshal "example1" gives the same bytes.
    assert fb.to_bytes() == PION_EXAMPLE1


def test_pion_example4() -> None:
    fb = parse_feedback(PION_EXAMPLE4)
    assert (fb.sender_ssrc, fb.media_ssrc) == (4195875351, 423483579)
    assert (fb.base_sequence, fb.reference_time_64ms, fb.feedback_count) == (4, 1074030, 1)
    assert [s for s, _ in fb.packets] == list(range(4, 11))
    assert_arrivals(fb, [19000, 9000, 9000, 4000, 3000, 3000, 4000])
    assert fb.to_bytes() == PION_EXAMPLE4


def test_pion_example6() -> None:
    fb = parse_feedback(PION_EXAMPLE6)
    assert (fb.sender_ssrc, fb.media_ssrc) == (2608133663, 2473712828)
    assert (fb.base_sequence, fb.reference_time_64ms, fb.feedback_count) == (34108, 6551830, 179)
    assert [s for s, _ in fb.packets] == list(range(34108, 34117))
    assert_arrivals(fb, [38750, 42500, 26500, 42500, 30750, None, 66250, None, None])
    # We write the trailing run as 2, not 48: same values, same size.
    again = fb.to_bytes()
    assert len(again) == len(PION_EXAMPLE6)
    assert chunks_of(again) == [0xD552, 0x0002]
    assert parse_feedback(again) == fb


def test_pion_marshal_example6_one_bit_vector() -> None:
    # pion TestTransportLayerCC_Marshal "example6": 12 statuses in one 1-bit vector.
    deltas_us = [48250, 15750, 14750, 15750, 20750, None, 36000, 14750, None, None, None, None]
    statuses = [None if d is None else d // 250 for d in deltas_us]
    fb = feedback(statuses, base=39956, ref=7701536, count=0, sender=4195875351, media=1124282272)
    expected = bytes(
        [0xAF, 0xCD, 0x00, 0x07, 0xFA, 0x17, 0xFA, 0x17, 0x43, 0x03, 0x2F, 0xA0,
         0x9C, 0x14, 0x00, 0x0C, 0x75, 0x84, 0x20, 0x00, 0xBE, 0xC0, 0xC1, 0x3F,
         0x3B, 0x3F, 0x53, 0x90, 0x3B, 0x00, 0x00, 0x03]
    )  # fmt: skip
    assert fb.to_bytes() == expected
    assert parse_feedback(expected) == fb


def test_pion_packet_with_padding_bit_but_no_padding_is_rejected() -> None:
    # pion "example3" sets P but its last byte (a receive delta) is 0: RFC 3550 says the
    # last byte counts the padding, and libwebrtc's CommonHeader rejects a count of 0.
    example3 = bytes(
        [0xAF, 0xCD, 0x00, 0x07, 0xFA, 0x17, 0xFA, 0x17, 0x19, 0x3D, 0xD8, 0xBB,
         0x01, 0x74, 0x00, 0x06, 0x45, 0xB1, 0x5A, 0x40, 0x40, 0x02, 0x20, 0x04,
         0x1F, 0xFE, 0x1F, 0x9A, 0xD0, 0x00, 0xD0, 0x00]
    )  # fmt: skip
    with pytest.raises(FeedbackError, match="padding count"):
        parse_feedback(example3)
    # The same packet without the P bit decodes to pion's values.
    fb = parse_feedback(bytes([0x8F]) + example3[1:])
    assert fb.base_sequence == 372
    assert_arrivals(fb, [2047500, 2022500, 52000, 0, 52000, 0])


def test_empty_feedback_parses() -> None:
    # pion "example7": a 20-byte feedback with no packets at all.
    example7 = bytes([0x8F, 0xCD, 0x00, 0x04, 0x9A, 0xCB, 0x04, 0x42] + [0] * 12)
    fb = parse_feedback(example7)
    assert fb.packets == ()
    assert fb.sender_ssrc == 2596996162
    assert fb.to_bytes() == example7


def test_draft_status_vector_example() -> None:
    # Draft section 3.1.4, first example: 0x9F1C, one-bit symbols.
    statuses = [None, 0, 0, 0, 0, 0, None, None, None, 0, 0, 0, None, None]
    assert chunks_of(feedback(statuses).to_bytes()) == [0x9F1C]
    # Draft section 3.1.3, first example: a run of 221 "not received" (0x00DD).
    packet = feedback([None] * 221 + [5]).to_bytes()
    assert chunks_of(packet)[0] == 0x00DD


# --- round trips ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statuses",
    [
        [4] * 50,  # all received, small deltas
        [0] * 3,
        [None, 1, None, None, 2, 3, None],  # gaps
        [1, None] * 40,
        [300, -4, 0x7FFF, -0x8000, 255, 256, 0, -1],  # large and negative deltas
        [5] + [None] * 20000 + [7],  # losses beyond one run-length chunk (8191)
        [None] * 8191 + [1] + [None] * 8192 + [2],
        [1] * 9000,  # received beyond one run-length chunk
        [1, 2, -3] * 30,
    ],
)
def test_round_trip(statuses: list[int | None]) -> None:
    fb = feedback(statuses)
    packet = fb.to_bytes()
    assert len(packet) % 4 == 0
    assert parse_feedback(packet) == fb


def test_round_trip_sequence_wrap() -> None:
    fb = feedback([1, None, 2, 3, None, 4, 5, 6], base=65532)
    assert [s for s, _ in fb.packets] == [65532, 65533, 65534, 65535, 0, 1, 2, 3]
    assert parse_feedback(fb.to_bytes()) == fb


@pytest.mark.parametrize("ref", [0, 1, -1, -(1 << 23), (1 << 23) - 1, 4057090])
def test_round_trip_reference_time(ref: int) -> None:
    fb = feedback([3, None, -2, 1000], ref=ref)
    parsed = parse_feedback(fb.to_bytes())
    assert parsed.reference_time_64ms == ref
    assert parsed == fb
    assert parsed.packets[0][1] == pytest.approx(ref * 0.064 + 3 * TICK)


def test_arrivals_are_quantised_to_250_us() -> None:
    fb = TransportFeedback(1, 2, 7, 10, 0, ((7, 0.640_1), (8, 0.640_9), (9, 0.700_0)))
    parsed = parse_feedback(fb.to_bytes())
    for (_, sent), (_, got) in zip(fb.packets, parsed.packets, strict=True):
        assert sent is not None and got is not None
        assert abs(got - sent) <= TICK / 2 + 1e-12


@pytest.mark.parametrize("received", range(0, 9))
def test_padding_to_32_bits(received: int) -> None:
    packet = feedback([7] * received + [None]).to_bytes()
    unpadded = 20 + 2 + received
    pad = -unpadded % 4
    assert len(packet) == unpadded + pad
    assert struct.unpack_from("!H", packet, 2)[0] == len(packet) // 4 - 1
    if pad:
        assert packet[0] & 0x20
        assert packet[-1] == pad
        assert packet[unpadded:-1] == bytes(pad - 1)
    else:
        assert not packet[0] & 0x20
    assert parse_feedback(packet).packets == feedback([7] * received + [None]).packets


def test_header_fields() -> None:
    packet = feedback([1], base=0xBEEF, ref=-2, count=0xAB, sender=1, media=0xFFFFFFFF).to_bytes()
    assert packet[0] >> 6 == 2 and packet[0] & 0x1F == 15 and packet[1] == 205
    assert struct.unpack_from("!IIHH", packet, 4) == (1, 0xFFFFFFFF, 0xBEEF, 1)
    assert packet[16:19] == b"\xff\xff\xfe" and packet[19] == 0xAB


# --- chunk choice --------------------------------------------------------------------------


def test_chunks_run_length_for_uniform_statuses() -> None:
    assert chunks_of(feedback([1] * 100).to_bytes()) == [0x2000 | 100]
    assert chunks_of(feedback([-1] * 20).to_bytes()) == [0x4000 | 20]
    # A received packet and 13 losses in a vector, then the rest of the losses in runs.
    assert chunks_of(feedback([1] + [None] * 10000 + [1]).to_bytes()) == [
        0x8000 | 1 << 13,
        0x1FFF,
        10000 - 13 - 8191,
        0x2001,
    ]


def test_chunks_vectors_for_mixed_statuses() -> None:
    # Alternating received / lost, no large delta: one-bit vectors of 14.
    chunks = chunks_of(feedback([1, None] * 14).to_bytes())
    assert chunks == [0xAAAA, 0xAAAA]
    # A large delta among them: two-bit vectors of 7.
    chunks = chunks_of(feedback([1, None, -1, 1, None, 1, 1]).to_bytes())
    assert chunks == [0xC000 | 0b01_00_10_01_00_01_01]
    # A short tail is left-aligned in the last vector.
    chunks = chunks_of(feedback([1, None, 1]).to_bytes())
    assert chunks == [0x8000 | (0b101 << 11)]


def test_chunks_prefer_a_run_covering_more_than_a_vector() -> None:
    # 10 small, then one large: a two-bit vector would cover 7, the run covers 10.
    chunks = chunks_of(feedback([1] * 10 + [-1]).to_bytes())
    assert chunks == [0x2000 | 10, 0x4000 | 1]
    # 10 small then a loss: a one-bit vector covers 14 > 10.
    chunks = chunks_of(feedback([1] * 10 + [None] + [1] * 3).to_bytes())
    assert chunks == [0x8000 | 0b11111111110111]


statuses_strategy = st.lists(
    st.one_of(
        st.none(),
        st.integers(0, 255),
        st.integers(-0x8000, 0x7FFF),
    ),
    max_size=300,
)


@settings(derandomize=True, database=None, max_examples=300, deadline=None)
@given(
    statuses=statuses_strategy,
    base=st.integers(0, 0xFFFF),
    ref=st.integers(-(1 << 23), (1 << 23) - 1),
    count=st.integers(0, 255),
)
def test_round_trip_property(statuses: list[int | None], base: int, ref: int, count: int) -> None:
    fb = feedback(statuses, base=base, ref=ref, count=count)
    packet = fb.to_bytes()
    assert len(packet) % 4 == 0
    assert parse_feedback(packet) == fb


# --- encoding errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fb", "message"),
    [
        (TransportFeedback(1, 2, 5, 0, 0, ((6, None),)), "expected 5"),
        (TransportFeedback(1, 2, 5, 0, 0, ((5, 1.0), (6, 10.0))), "receive delta holds"),
        (TransportFeedback(1, 2, 5, 0, 0, ((5, -9.0),)), "receive delta holds"),
        (TransportFeedback(1, 2, 5, 0, 0, ((5, float("nan")),)), "arrival time nan"),
        (TransportFeedback(-1, 2, 5, 0, 0, ()), "sender_ssrc=-1"),
        (TransportFeedback(1, 1 << 32, 5, 0, 0, ()), "media_ssrc"),
        (TransportFeedback(1, 2, 65536, 0, 0, ()), "base_sequence"),
        (TransportFeedback(1, 2, 5, 0, 256, ()), "feedback_count"),
        (TransportFeedback(1, 2, 5, 1 << 23, 0, ()), "signed 24-bit"),
        (
            TransportFeedback(1, 2, 0, 0, 0, tuple((i & 0xFFFF, None) for i in range(65536))),
            "at most 65535",
        ),
    ],
)
def test_to_bytes_rejects(fb: TransportFeedback, message: str) -> None:
    with pytest.raises(FeedbackError, match=message):
        fb.to_bytes()


# --- parsing errors ----------------------------------------------------------------------


GOOD = feedback([1, None, 2, -3, 4]).to_bytes()


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (b"", "shorter than the 4-byte RTCP header"),
        (b"\x8f\xcd\x00", "shorter than the 4-byte RTCP header"),
        (bytes([0x4F]) + GOOD[1:], "RTCP version is 1"),
        (GOOD[:1] + bytes([200]) + GOOD[2:], "PT=200 FMT=15"),
        (bytes([0x81]) + GOOD[1:], "PT=205 FMT=1"),
        (GOOD + b"\x00\x00\x00\x00", "length field says"),
        (GOOD[:-4], "length field says"),
        (rtcp(205, 15, bytes(12)), "shorter than the 20-byte feedback header"),
        (twcc_raw(0, b"\x00\x00\x00\x00", first=0xAF), r"padding count \(last byte\) is 0"),
        (twcc_raw(0, b"\x00\x00\x00\x08", first=0xAF), "padding count 8 runs into"),
        (twcc_raw(100, b""), "packet chunks run past the end"),
        (twcc_raw(20, b"\x20\x05\x00\x00"), r"5 of 20 packet statuses decoded"),
        (
            twcc_raw(2, b"\x20\x01\x60\x01", base=9),
            "reserved status symbol 3 for sequence number 10",
        ),
        (twcc_raw(2, b"\x20\x01\xf0\x00", base=65535), "symbol 3 for sequence number 0"),
        (twcc_raw(3, b"\x20\x03\x01\x02"), r"3 received packets need 3 bytes from byte 22"),
        (twcc_raw(1, b"\x40\x01\x01\x01", first=0xAF), "need 2 bytes from byte 22, but only 1"),
    ],
)
def test_parse_rejects(packet: bytes, message: str) -> None:
    with pytest.raises(FeedbackError, match=message):
        parse_feedback(packet)


def test_parse_ignores_bytes_after_the_deltas() -> None:
    packet = twcc_raw(1, b"\x20\x01\x05\x00\x00\x00\x00\x00")
    fb = parse_feedback(packet)
    assert fb.packets == ((0, 5 * TICK),)


@settings(derandomize=True, database=None, max_examples=1000, deadline=None)
@given(st.binary(max_size=120))
def test_fuzz_random_bytes(data: bytes) -> None:
    try:
        parse_feedback(data)
    except FeedbackError:
        pass


@settings(derandomize=True, database=None, max_examples=1500, deadline=None)
@given(
    first=st.sampled_from([0x8F, 0xAF]),
    count=st.integers(0, 0xFFFF) | st.integers(0, 40),
    ref=st.integers(0, 0xFFFFFF),
    rest=st.binary(max_size=160),
)
def test_fuzz_valid_header_random_body(first: int, count: int, ref: int, rest: bytes) -> None:
    rest += bytes(-len(rest) % 4)
    packet = twcc_raw(count, rest, ref=ref, first=first)
    try:
        fb = parse_feedback(packet)
    except FeedbackError:
        return
    # Whatever parses re-encodes, and re-parses to the same values.
    assert len(fb.packets) == count
    assert parse_feedback(fb.to_bytes()) == fb


@settings(derandomize=True, database=None, max_examples=1000, deadline=None)
@given(
    statuses=statuses_strategy,
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), max_size=4),
    cut=st.integers(0, 10_000),
)
def test_fuzz_mutated_packets(
    statuses: list[int | None], flips: list[tuple[int, int]], cut: int
) -> None:
    packet = bytearray(feedback(statuses).to_bytes())
    for position, xor in flips:
        packet[position % len(packet)] ^= xor
    for candidate in (bytes(packet), bytes(packet[: cut % (len(packet) + 1)])):
        try:
            parse_feedback(candidate)
        except FeedbackError:
            pass


# --- compound RTCP ----------------------------------------------------------------------

SR = rtcp(200, 1, bytes(24 + 24))  # sender info and one report block
RR = rtcp(201, 1, bytes(4 + 24))
SDES = rtcp(202, 1, b"\x00\x00\x00\x01\x01\x03abc\x00\x00\x00")
NACK = rtcp(205, 1, bytes(12))  # RTPFB too, but FMT 1
REMB = rtcp(206, 15, bytes(20))  # PSFB FMT 15: not ours either


def test_split_compound_takes_feedback_out() -> None:
    fb1 = feedback([1, 2, None]).to_bytes()
    fb2 = feedback([None, 3], base=7).to_bytes()
    data = SR + fb1 + RR + NACK + fb2 + SDES + REMB
    packets, rest = split_compound(data)
    assert packets == [fb1, fb2]
    assert rest == SR + RR + NACK + SDES + REMB
    assert [parse_feedback(p).base_sequence for p in packets] == [100, 7]


def test_split_compound_feedback_only() -> None:
    fb1 = feedback([1]).to_bytes()
    assert split_compound(fb1 + fb1) == ([fb1, fb1], b"")


def test_split_compound_without_feedback_is_unchanged() -> None:
    data = SR + SDES
    packets, rest = split_compound(data)
    assert packets == [] and rest is data


@pytest.mark.parametrize(
    "data",
    [
        b"",
        SR + feedback([1]).to_bytes() + b"\x81",  # trailing bytes shorter than a header
        SR + feedback([1]).to_bytes()[:-4],  # length runs past the end
        SR[:-4] + feedback([1]).to_bytes(),  # a length that lands mid-packet
        bytes([0x40]) + SR[1:] + feedback([1]).to_bytes(),  # version 1
        b"\x8f\xcd\xff\xff" + bytes(16),  # length far past the end
    ],
)
def test_split_compound_malformed_is_unchanged(data: bytes) -> None:
    packets, rest = split_compound(data)
    assert packets == [] and rest is data


# --- FeedbackRecorder ---------------------------------------------------------------------


def build_parsed(recorder: FeedbackRecorder) -> list[TransportFeedback]:
    return [parse_feedback(packet) for packet in recorder.build()]


def test_recorder_reports_arrivals_and_gaps() -> None:
    recorder = FeedbackRecorder(0xCAFE)
    assert recorder.build() == [] and recorder.pending == 0
    for sequence, arrival in [(10, 5.0), (11, 5.0102), (14, 5.03), (13, 5.025)]:
        recorder.record(sequence, arrival, media_ssrc=0x1234)
    assert recorder.pending == 4
    (fb,) = build_parsed(recorder)
    assert recorder.pending == 0 and recorder.build() == []
    assert (fb.sender_ssrc, fb.media_ssrc, fb.base_sequence, fb.feedback_count) == (
        0xCAFE,
        0x1234,
        10,
        0,
    )
    assert fb.reference_time_64ms == int(5.0 / 0.064)
    assert [s for s, _ in fb.packets] == [10, 11, 12, 13, 14]
    arrivals = [a for _, a in fb.packets]
    assert arrivals[2] is None
    for got, want in zip(arrivals, [5.0, 5.0102, None, 5.025, 5.03], strict=True):
        if want is not None:
            assert got == pytest.approx(want, abs=TICK / 2 + 1e-9)


def test_recorder_continues_where_the_last_build_stopped() -> None:
    recorder = FeedbackRecorder(1)
    recorder.record(1, 1.0, 9)
    recorder.record(2, 1.001, 9)
    build_parsed(recorder)
    recorder.record(5, 1.1, 9)  # 3 and 4 never arrive
    (fb,) = build_parsed(recorder)
    assert fb.base_sequence == 3
    assert [(s, a is None) for s, a in fb.packets] == [(3, True), (4, True), (5, False)]
    assert fb.feedback_count == 1


def test_recorder_ignores_duplicates() -> None:
    recorder = FeedbackRecorder(1)
    recorder.record(1, 1.0, 9)
    recorder.record(1, 1.5, 9)
    assert recorder.pending == 1
    (fb,) = build_parsed(recorder)
    assert fb.packets == ((1, pytest.approx(1.0)),)
    recorder.record(1, 2.0, 9)  # a duplicate of a packet already reported
    assert recorder.pending == 0 and recorder.build() == []


def test_recorder_reports_a_late_packet_again() -> None:
    recorder = FeedbackRecorder(1)
    recorder.record(10, 1.0, 9)
    recorder.record(12, 1.02, 9)
    (first,) = build_parsed(recorder)
    assert first.packets[1] == (11, None)
    recorder.record(11, 1.05, 9)  # reported lost, then arrives
    recorder.record(13, 1.06, 9)
    (second,) = build_parsed(recorder)
    assert second.base_sequence == 11
    assert [s for s, _ in second.packets] == [11, 12, 13]
    assert [a for _, a in second.packets] == pytest.approx([1.05, 1.02, 1.06], abs=2e-4)


def test_recorder_ignores_packets_older_than_the_last_base() -> None:
    recorder = FeedbackRecorder(1)
    recorder.record(10, 1.0, 9)
    recorder.record(12, 1.02, 9)
    build_parsed(recorder)
    recorder.record(13, 1.03, 9)
    build_parsed(recorder)  # base 13
    recorder.record(11, 1.04, 9)  # older than 13: ignored
    recorder.record(9, 1.04, 9)
    assert recorder.pending == 0 and recorder.build() == []


def test_recorder_sequence_wrap_and_reordering() -> None:
    recorder = FeedbackRecorder(1)
    order = [65533, 65534, 0, 65535, 2, 1]
    for index, sequence in enumerate(order):
        recorder.record(sequence, 2.0 + index * 0.001, 9)
    (fb,) = build_parsed(recorder)
    assert fb.base_sequence == 65533
    assert [s for s, _ in fb.packets] == [65533, 65534, 65535, 0, 1, 2]
    arrivals = dict(fb.packets)
    for index, sequence in enumerate(order):
        assert arrivals[sequence] == pytest.approx(2.0 + index * 0.001, abs=TICK / 2 + 1e-9)
    recorder.record(3, 2.01, 9)
    (fb,) = build_parsed(recorder)
    assert fb.base_sequence == 3


def test_recorder_splits_at_max_packets() -> None:
    recorder = FeedbackRecorder(1, max_packets_per_feedback=100)
    for sequence in range(250):
        recorder.record(sequence, 1.0 + sequence * 0.001, 9)
    parsed = build_parsed(recorder)
    assert [len(fb.packets) for fb in parsed] == [100, 100, 50]
    assert [fb.base_sequence for fb in parsed] == [0, 100, 200]
    assert [fb.feedback_count for fb in parsed] == [0, 1, 2]
    arrivals = [a for fb in parsed for _, a in fb.packets]
    assert arrivals == pytest.approx([1.0 + s * 0.001 for s in range(250)], abs=TICK / 2 + 1e-9)


def test_recorder_default_packet_fits_a_datagram() -> None:
    recorder = FeedbackRecorder(1)
    rng = random.Random(3)
    for sequence in range(2000):
        if rng.random() < 0.3:
            recorder.record(sequence, sequence * 0.001 + rng.random() * 0.2, 9)
    packets = recorder.build()
    assert len(packets) >= 2
    assert all(len(p) <= 1200 for p in packets)
    assert all(len(parse_feedback(p).packets) <= 500 for p in packets)


def test_recorder_long_gaps_start_new_packets() -> None:
    recorder = FeedbackRecorder(1, max_packets_per_feedback=100)
    recorder.record(0, 1.0, 9)
    recorder.record(1000, 1.1, 9)
    first, second = build_parsed(recorder)
    assert (first.base_sequence, len(first.packets)) == (0, 1)
    # Only the newest 99 losses fit with the packet after them.
    assert (second.base_sequence, len(second.packets)) == (901, 100)
    assert sum(a is None for _, a in second.packets) == 99
    # The same for a gap at the start of a build.
    recorder.record(1500, 1.2, 9)
    (fb,) = build_parsed(recorder)
    assert (fb.base_sequence, len(fb.packets)) == (1401, 100)
    assert sum(a is None for _, a in fb.packets) == 99
    # A gap that fits goes into the next packet.
    for sequence in [*range(1501, 1591), 1600, 1650]:
        recorder.record(sequence, 1.3, 9)
    first, second = build_parsed(recorder)
    assert (first.base_sequence, len(first.packets)) == (1501, 100)
    assert (second.base_sequence, len(second.packets)) == (1601, 50)
    assert sum(a is None for _, a in second.packets) == 49


def test_recorder_splits_when_a_delta_does_not_fit() -> None:
    recorder = FeedbackRecorder(1)
    recorder.record(1, 1.0, 9)
    recorder.record(2, 1.0 + 8.5, 9)  # more than 8.19 s later
    recorder.record(3, 1.0 + 8.6, 9)
    recorder.record(4, 1.0, 9)  # 8.6 s earlier than the previous
    parsed = build_parsed(recorder)
    assert [fb.base_sequence for fb in parsed] == [1, 2, 4]
    arrivals = [a for fb in parsed for _, a in fb.packets]
    assert arrivals == pytest.approx([1.0, 9.5, 9.6, 1.0], abs=TICK / 2 + 1e-9)
    # Losses between the two go with the later packet.
    recorder.record(10, 30.0, 9)
    recorder.record(12, 40.0, 9)
    first, second = build_parsed(recorder)
    assert first.packets == (*((s, None) for s in range(5, 10)), (10, pytest.approx(30.0)))
    assert second.packets == ((11, None), (12, pytest.approx(40.0)))


def test_recorder_negative_delta_within_a_packet() -> None:
    recorder = FeedbackRecorder(1)
    recorder.record(2, 1.0, 9)
    recorder.record(1, 1.5, 9)  # lower sequence number, later arrival
    (fb,) = build_parsed(recorder)
    assert fb.packets == ((1, pytest.approx(1.5)), (2, pytest.approx(1.0)))
    assert chunks_of(fb.to_bytes())[0] == 0xC000 | (0b01_10 << 10)


def test_recorder_feedback_count_wraps_and_media_ssrc_is_the_last() -> None:
    recorder = FeedbackRecorder(1)
    counts = []
    for sequence in range(300):
        recorder.record(sequence, sequence * 0.01, 1000 + sequence)
        (fb,) = build_parsed(recorder)
        counts.append(fb.feedback_count)
        assert fb.media_ssrc == 1000 + sequence
    assert counts == [i & 0xFF for i in range(300)]


def test_recorder_reference_time_wraps() -> None:
    wrap = (1 << 24) * 0.064
    recorder = FeedbackRecorder(1)
    recorder.record(1, wrap / 2 - 0.032, 9)  # the largest positive reference time
    (first,) = build_parsed(recorder)
    assert first.reference_time_64ms == (1 << 23) - 1
    recorder.record(2, wrap / 2 + 0.040, 9)
    (second,) = build_parsed(recorder)
    assert second.reference_time_64ms == -(1 << 23)
    history = SendHistory()
    history.sent(1, 0.0, 100)
    history.sent(2, 0.07, 100)
    results = history.on_feedback(first) + history.on_feedback(second)
    arrivals = [r.arrival_time_s for r in results]
    assert arrivals[0] is not None and arrivals[1] is not None
    assert arrivals[1] - arrivals[0] == pytest.approx(0.072, abs=TICK)


def test_recorder_rejects_bad_settings() -> None:
    with pytest.raises(ConfigurationError, match="max_packets_per_feedback"):
        FeedbackRecorder(1, max_packets_per_feedback=0)
    with pytest.raises(ConfigurationError, match="sender_ssrc"):
        FeedbackRecorder(1 << 32)


# --- SendHistory --------------------------------------------------------------------------


def test_next_sequence_starts_at_one_and_wraps() -> None:
    history = SendHistory()
    assert [history.next_sequence() for _ in range(3)] == [1, 2, 3]
    for _ in range(65535 - 4):
        history.next_sequence()
    assert [history.next_sequence() for _ in range(3)] == [65535, 0, 1]


def test_history_turns_feedback_into_results() -> None:
    history = SendHistory()
    for index in range(5):
        history.sent(history.next_sequence(), 10.0 + index * 0.01, 100 + index)
    history.sent(history.next_sequence(), 10.05, 500, is_retransmission=True)
    fb = feedback([4, None, 8, 4, None, 2, 9], base=1)  # sequence 7 was never sent
    results = history.on_feedback(fb)
    assert [r.sequence for r in results] == [1, 2, 3, 4, 5, 6]
    assert results[0] == PacketResult(1, 10.0, 100, fb.packets[0][1], False)
    assert results[1] == PacketResult(2, 10.01, 101, None, False)
    assert results[5] == PacketResult(6, 10.05, 500, fb.packets[5][1], True)


def test_history_lost_then_received_is_returned_again() -> None:
    history = SendHistory()
    for index in range(4):
        history.sent(history.next_sequence(), index * 0.01, 100)
    first = history.on_feedback(feedback([1, None, 1], base=1))
    assert [(r.sequence, r.arrival_time_s is None) for r in first] == [
        (1, False),
        (2, True),
        (3, False),
    ]
    again = feedback([1, 1, 1, 1], base=1)
    second = history.on_feedback(again)
    # 1 and 3 were already reported received: only 2 (now received) and 4 (new) come back.
    assert [(r.sequence, r.arrival_time_s) for r in second] == [
        (2, again.packets[1][1]),
        (4, again.packets[3][1]),
    ]
    # Further reports change nothing: no packet counts twice.
    assert history.on_feedback(feedback([None, None, 1, None], base=1)) == []


def test_history_reports_a_repeated_loss_once() -> None:
    history = SendHistory()
    history.sent(history.next_sequence(), 0.0, 100)
    history.sent(history.next_sequence(), 0.0, 100)
    assert len(history.on_feedback(feedback([None, None], base=1))) == 2
    assert history.on_feedback(feedback([None, None], base=1)) == []


def test_history_skips_unknown_packets() -> None:
    history = SendHistory()
    assert history.on_feedback(feedback([1, 2], base=1)) == []
    history.sent(history.next_sequence(), 0.0, 100)
    assert [r.sequence for r in history.on_feedback(feedback([1, 1, 1], base=65535))] == [1]


def test_history_unwraps_sequence_numbers() -> None:
    history = SendHistory()
    sent = []
    for index in range(70_000):
        sequence = history.next_sequence()
        if index >= 65_530:
            history.sent(sequence, index * 0.001, 50)
            sent.append(sequence)
    assert sent[:8] == [65531, 65532, 65533, 65534, 65535, 0, 1, 2]
    results = history.on_feedback(feedback([1] * 8, base=65533))
    assert [r.sequence for r in results] == list(range(65533, 65541))
    # Much later, the same 16-bit numbers mean other packets.
    history = SendHistory()
    history.sent(65535, 0.0, 10)
    for sequence in range(0, 40_000):
        history.sent(sequence, 0.0, 10)
    results = history.on_feedback(feedback([1, 1], base=39_998))
    assert [r.sequence for r in results] == [65536 + 39_998, 65536 + 39_999]


def test_history_keeps_2_to_the_15_packets() -> None:
    history = SendHistory()
    total = (1 << 15) + 10
    for _ in range(total):
        history.sent(history.next_sequence(), 0.0, 1)
    assert history.in_flight_bytes(0.0) == 1 << 15
    assert history.on_feedback(feedback([1] * 10, base=1)) == []  # evicted
    assert len(history.on_feedback(feedback([1] * 10, base=11))) == 10
    assert history.in_flight_bytes(0.0) == (1 << 15) - 10


def test_history_horizon() -> None:
    history = SendHistory(horizon_s=10.0)
    history.sent(history.next_sequence(), 0.0, 100)
    history.sent(history.next_sequence(), 20.0, 100)
    assert [r.sequence for r in history.on_feedback(feedback([1, 1], base=1))] == [2]


def test_history_in_flight_bytes() -> None:
    history = SendHistory()
    assert history.in_flight_bytes(0.0) == 0
    for send_time, size in [(0.0, 100), (0.5, 200), (1.0, 300)]:
        history.sent(history.next_sequence(), send_time, size)
    assert history.in_flight_bytes(1.0) == 600
    history.on_feedback(feedback([1], base=1))
    assert history.in_flight_bytes(1.0) == 500
    # Unreported for more than a second: no longer counted.
    assert history.in_flight_bytes(1.6) == 300
    # Reported later all the same: still a result, and nothing counted twice.
    results = history.on_feedback(feedback([1, None], base=2))
    assert [(r.sequence, r.arrival_time_s is None) for r in results] == [(2, False), (3, True)]
    assert history.in_flight_bytes(1.6) == 0


def test_history_reference_time_unwrap() -> None:
    history = SendHistory()
    for index in range(4):
        history.sent(history.next_sequence(), index * 0.05, 100)
    top = (1 << 23) - 1
    feedbacks = [
        feedback([10], base=1, ref=top),
        feedback([10], base=2, ref=-(1 << 23)),  # one 64 ms step later, wrapped
        feedback([10], base=3, ref=-(1 << 23) + 2),
        feedback([10], base=4, ref=top),  # a late, reordered feedback from before
    ]
    arrivals = [history.on_feedback(fb)[0].arrival_time_s for fb in feedbacks]
    assert arrivals[0] == pytest.approx(top * 0.064 + 10 * TICK)
    steps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]  # type: ignore[operator]
    assert steps == pytest.approx([0.064, 0.128, -0.192])


def test_history_rejects_bad_settings() -> None:
    with pytest.raises(ConfigurationError, match="horizon_s"):
        SendHistory(horizon_s=0)
    with pytest.raises(ConfigurationError, match="in_flight_window_s"):
        SendHistory(in_flight_window_s=-1.0)


# --- end to end ----------------------------------------------------------------------------


def test_end_to_end_with_losses_reordering_and_duplicates() -> None:
    rng = random.Random(20240611)
    history = SendHistory()
    recorder = FeedbackRecorder(sender_ssrc=0xFEED, max_packets_per_feedback=16)
    for _ in range(65_000):  # start near the 16-bit wrap
        history.next_sequence()
    receiver_offset = 5000.0  # the receiver's clock is not the sender's

    sent: dict[int, tuple[float, int, bool]] = {}
    deliveries: list[tuple[float, int, int]] = []  # (arrival, 16-bit, unwrapped)
    late: set[int] = set()
    for index in range(1000):
        send_time = index * 0.005
        sequence = history.next_sequence()
        unwrapped = 65_001 + index
        assert sequence == unwrapped & 0xFFFF
        size = 200 + rng.randrange(1000)
        rtx = index % 17 == 0
        history.sent(sequence, send_time, size, is_retransmission=rtx)
        sent[unwrapped] = (send_time, size, rtx)
        if rng.random() < 0.05:
            continue  # lost
        delay = 0.040 + rng.random() * 0.002  # jitter reorders neighbours
        if rng.random() < 0.03:
            delay += 0.030
            late.add(unwrapped)
        deliveries.append((send_time + delay, sequence, unwrapped))
        if rng.random() < 0.02:
            deliveries.append((send_time + delay + 0.001, sequence, unwrapped))
    deliveries.sort()

    results: list[PacketResult] = []
    counts: list[int] = []

    def deliver_feedback() -> None:
        for packet in recorder.build():
            fb = parse_feedback(packet)
            assert fb.sender_ssrc == 0xFEED and fb.media_ssrc == 0xABC
            counts.append(fb.feedback_count)
            results.extend(history.on_feedback(fb))

    first_arrival: dict[int, float] = {}
    next_build = 0.1
    for arrival, sequence, unwrapped in deliveries:
        while arrival >= next_build:
            deliver_feedback()
            next_build += 0.1
        recorder.record(sequence, arrival + receiver_offset, 0xABC)
        first_arrival.setdefault(unwrapped, arrival)

    # Before the last feedback: in flight is what was sent in the last second, unreported.
    now = max(t for t, _, _ in sent.values())
    reported = {r.sequence for r in results}
    expected = sum(size for u, (t, size, _) in sent.items() if u not in reported and t >= now - 1)
    assert expected > 0
    assert history.in_flight_bytes(now) == expected
    deliver_feedback()
    assert recorder.pending == 0
    assert history.in_flight_bytes(now) == 0

    assert counts == [i & 0xFF for i in range(len(counts))]
    received: dict[int, list[float]] = {}
    lost: dict[int, int] = {}
    for result in results:
        assert result.sequence in sent
        assert (result.send_time_s, result.size, result.is_retransmission) == sent[result.sequence]
        if result.arrival_time_s is None:
            lost[result.sequence] = lost.get(result.sequence, 0) + 1
        else:
            received.setdefault(result.sequence, []).append(result.arrival_time_s)

    # Every packet that arrived is reported received exactly once, at its first arrival.
    assert set(received) == set(first_arrival)
    for unwrapped, arrivals in received.items():
        assert len(arrivals) == 1
        assert arrivals[0] == pytest.approx(
            first_arrival[unwrapped] + receiver_offset, abs=TICK / 2 + 1e-6
        )
    # Every packet that never arrived (before the newest arrival) is reported lost once.
    newest = max(first_arrival)
    never = {u for u in sent if u not in first_arrival and u < newest}
    assert never and set(lost) - set(received) == never
    assert all(times == 1 for times in lost.values())
    # Some late packets were reported lost first, then received.
    assert late & set(lost) & set(received)
    # Every packet up to the newest arrival was reported.
    assert {u for u in sent if u <= newest} == set(received) | set(lost)
