"""SDP helpers: parsing, classifying and filtering ICE candidates."""

from __future__ import annotations

import pytest
from aiortc import RTCIceCandidate
from hypothesis import given, settings
from hypothesis import strategies as st

from webrtclab import ProtocolError
from webrtclab.sdp import filter_candidates, is_loopback, parse_candidate, sdp_candidates

HOST = "842163049 1 udp 1677729535 127.0.0.1 54400 typ host"
SRFLX = "3 1 udp 1686052607 198.51.100.7 61000 typ srflx raddr 192.0.2.10 rport 54400 generation 0"
TCP = "5 1 tcp 1518280447 192.0.2.10 9 typ host tcptype active"


@pytest.mark.parametrize(
    "text",
    [
        f"candidate:{HOST}",
        f"a=candidate:{HOST}",
        HOST,
        f"  candidate:{HOST}\r\n",
        f"a=candidate:{HOST}\n",
    ],
)
def test_parse_candidate_prefixes(text: str) -> None:
    candidate = parse_candidate(text)
    assert isinstance(candidate, RTCIceCandidate)
    assert candidate.foundation == "842163049"
    assert candidate.component == 1
    assert candidate.protocol == "udp"
    assert candidate.priority == 1677729535
    assert candidate.ip == "127.0.0.1"
    assert candidate.port == 54400
    assert candidate.type == "host"


def test_parse_candidate_related_address_and_tcp_type() -> None:
    srflx = parse_candidate(f"candidate:{SRFLX}")
    assert (srflx.type, srflx.ip, srflx.port) == ("srflx", "198.51.100.7", 61000)
    assert (srflx.relatedAddress, srflx.relatedPort) == ("192.0.2.10", 54400)
    tcp = parse_candidate(TCP)
    assert (tcp.protocol, tcp.tcpType) == ("tcp", "active")


def test_parse_candidate_ipv6_and_mdns() -> None:
    assert parse_candidate("candidate:1 1 udp 1 ::1 5000 typ host").ip == "::1"
    mdns = parse_candidate("candidate:1 1 udp 1 3f1b2c4d-1234.local 5000 typ host")
    assert mdns.ip == "3f1b2c4d-1234.local"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "candidate:",
        "a=candidate:",
        "garbage",
        "candidate:1 1 udp 1 127.0.0.1 5000 typ",  # too short
        "candidate:1 one udp 1 127.0.0.1 5000 typ host",  # component not a number
        "candidate:1 1 udp high 127.0.0.1 5000 typ host",  # priority not a number
        "candidate:1 1 udp 1 127.0.0.1 port typ host",  # port not a number
        "candidate:1 1 udp 1 127.0.0.1 5000 typ srflx rport x",  # bad related port
    ],
)
def test_parse_candidate_invalid(text: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_candidate(text)
    assert info.value.code == "invalid-candidate"
    assert isinstance(info.value, ValueError)
    assert repr(text) in str(info.value)


_TOKENS = st.one_of(
    st.sampled_from(["candidate:1", "1", "udp", "tcp", "typ", "host", "raddr", "rport", "::1"]),
    st.integers(-(2**40), 2**40).map(str),
    st.text(min_size=1, max_size=8).filter(lambda t: t.split() == [t]),
)


@settings(derandomize=True, database=None, max_examples=300)
@given(st.one_of(st.text(max_size=120), st.lists(_TOKENS, max_size=14).map(" ".join)))
def test_parse_candidate_only_raises_protocol_error(text: str) -> None:
    try:
        candidate = parse_candidate(text)
    except ProtocolError as exc:
        assert exc.code == "invalid-candidate"
    else:
        assert isinstance(candidate, RTCIceCandidate)


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.1.2.3", "127.255.255.254", "::1", "0:0:0:0:0:0:0:1"],
)
def test_is_loopback_true(host: str) -> None:
    assert is_loopback(host) is True


@pytest.mark.parametrize(
    "host",
    [
        "192.0.2.1",
        "10.0.0.1",
        "0.0.0.0",
        "::",
        "2001:db8::1",
        "128.0.0.1",
        "foo.local",
        "localhost",
        "",
        "127.0.0.1.nip.io",
    ],
)
def test_is_loopback_false(host: str) -> None:
    assert is_loopback(host) is False


SDP = (
    "\r\n".join(
        [
            "v=0",
            "o=- 1 1 IN IP4 0.0.0.0",
            "s=-",
            "t=0 0",
            "m=audio 54400 UDP/TLS/RTP/SAVPF 96",
            "c=IN IP4 127.0.0.1",
            "a=mid:0",
            f"a=candidate:{HOST}",
            "a=candidate:7 1 udp 2130706431 192.0.2.1 54401 typ host",
            "a=candidate:not a candidate",
            "a=candidate:9 1 udp 2130706431 ::1 54402 typ host",
            "a=candidate:8 1 udp 2130706431 foo.local 54403 typ host",
            "a=end-of-candidates",
            "a=ice-ufrag:abcd",
        ]
    )
    + "\r\n"
)


def test_filter_candidates_keeps_other_lines_and_drops_rejected() -> None:
    filtered = filter_candidates(SDP, lambda c: is_loopback(c.ip))
    assert filtered.endswith("\r\n")
    assert filtered.split("\r\n")[:-1] == [
        "v=0",
        "o=- 1 1 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "m=audio 54400 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 127.0.0.1",
        "a=mid:0",
        f"a=candidate:{HOST}",
        "a=candidate:9 1 udp 2130706431 ::1 54402 typ host",
        "a=end-of-candidates",
        "a=ice-ufrag:abcd",
    ]


def test_filter_candidates_keep_all_drops_only_invalid() -> None:
    filtered = filter_candidates(SDP, lambda c: True)
    expected = [line for line in SDP.split("\r\n") if line != "a=candidate:not a candidate"]
    assert filtered.split("\r\n") == expected


def test_filter_candidates_drop_all() -> None:
    filtered = filter_candidates(SDP, lambda c: False)
    assert "a=candidate:" not in filtered
    assert "a=end-of-candidates\r\n" in filtered
    assert filtered.startswith("v=0\r\n")


def test_filter_candidates_accepts_lf_line_endings() -> None:
    filtered = filter_candidates(SDP.replace("\r\n", "\n"), lambda c: c.ip == "192.0.2.1")
    assert "\n" not in filtered.replace("\r\n", "")
    assert [line for line in filtered.split("\r\n") if line.startswith("a=candidate:")] == [
        "a=candidate:7 1 udp 2130706431 192.0.2.1 54401 typ host"
    ]


def test_filter_candidates_passes_parsed_candidates() -> None:
    seen: list[tuple[str, int]] = []

    def keep(candidate: RTCIceCandidate) -> bool:
        seen.append((candidate.ip, candidate.port))
        return True

    filter_candidates(SDP, keep)
    assert seen == [
        ("127.0.0.1", 54400),
        ("192.0.2.1", 54401),
        ("::1", 54402),
        ("foo.local", 54403),
    ]


def test_sdp_candidates() -> None:
    valid = SDP.replace("a=candidate:not a candidate\r\n", "")
    assert [c.ip for c in sdp_candidates(valid)] == ["127.0.0.1", "192.0.2.1", "::1", "foo.local"]
    assert sdp_candidates("v=0\r\ns=-\r\n") == []
    with pytest.raises(ProtocolError):
        sdp_candidates(SDP)


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_parse_candidate_rejects_out_of_range_ports(port: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_candidate(f"candidate:1 1 udp 2130706431 127.0.0.1 {port} typ host")
    assert info.value.code == "invalid-candidate"
