"""Unit and property tests of the signaling Dispatcher, with fake members (no sockets)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from webrtclab.exceptions import ProtocolError
from webrtclab.signaling import Dispatcher
from webrtclab.signaling import messages as m


@dataclass(eq=False)
class FakeMember:
    """A member that records what the dispatcher delivers to it."""

    name: str = "member"
    user_id: str | None = None
    room_id: str | None = None
    inbox: list[bytes] = field(default_factory=list)

    def deliver(self, data: bytes) -> None:
        assert isinstance(data, bytes)
        self.inbox.append(data)

    def take(self) -> list[dict[str, Any]]:
        """Decode and clear everything delivered so far."""
        out = [json.loads(data) for data in self.inbox]
        self.inbox.clear()
        return out

    def take_one(self) -> dict[str, Any]:
        got = self.take()
        assert len(got) == 1, got
        return got[0]


def send(d: Dispatcher, member: FakeMember, message: dict[str, Any]) -> None:
    d.handle(member, json.dumps(message))


def join(d: Dispatcher, member: FakeMember, room: str, user: str) -> dict[str, Any]:
    send(d, member, {"type": "join", "roomId": room, "userId": user})
    reply = member.take_one()
    assert reply["type"] == "room-joined", reply
    return reply


def offer(to: str, sdp: str = "v=0\r\n", **extra: Any) -> dict[str, Any]:
    return {"type": "offer", "to": to, "sdp": {"type": "offer", "sdp": sdp}, **extra}


Room = tuple[Dispatcher, FakeMember, FakeMember, FakeMember, FakeMember]


@pytest.fixture
def room() -> Room:
    """alice and bob in room "r", carol in room "s", and a member that has not joined."""
    d = Dispatcher()
    alice, bob, carol, stranger = (FakeMember(n) for n in ("alice", "bob", "carol", "x"))
    join(d, alice, "r", "alice")
    join(d, bob, "r", "bob")
    join(d, carol, "s", "carol")
    for member in (alice, bob, carol):
        member.inbox.clear()
    return d, alice, bob, carol, stranger


def assert_refused(
    d: Dispatcher, offender: FakeMember, raw: bytes | str, code: str, bystanders: list[FakeMember]
) -> None:
    """``raw`` from ``offender`` gets exactly one error ``code``; nothing else changes."""
    rooms_before = d.rooms()
    users_before = d.user_count
    ids_before = (offender.user_id, offender.room_id)
    d.handle(offender, raw)
    reply = offender.take_one()
    assert reply["type"] == "error"
    assert reply["code"] == code, reply
    assert isinstance(reply["message"], str) and reply["message"]
    assert set(reply) == {"type", "code", "message"}
    assert d.rooms() == rooms_before
    assert d.user_count == users_before
    assert (offender.user_id, offender.room_id) == ids_before
    for member in bystanders:
        assert member.inbox == [], f"{member.name} got {member.inbox!r}"


# --- construction and joins ------------------------------------------------------------


@pytest.mark.parametrize("size", [0, -1])
def test_max_room_size_must_be_positive(size: int) -> None:
    with pytest.raises(ValueError, match="max_room_size"):
        Dispatcher(max_room_size=size)


def test_empty_dispatcher() -> None:
    d = Dispatcher()
    assert d.rooms() == {}
    assert d.roster("r") == []
    assert d.user_count == 0


def test_join_flow_and_rosters_in_join_order() -> None:
    d = Dispatcher()
    alice, bob, carol = FakeMember("alice"), FakeMember("bob"), FakeMember("carol")

    send(d, alice, {"type": "join", "roomId": "r", "userId": "alice"})
    assert alice.take() == [{"type": "room-joined", "peers": [], "roomId": "r", "userId": "alice"}]
    assert (alice.user_id, alice.room_id) == ("alice", "r")

    send(d, bob, {"type": "join", "roomId": "r", "userId": "bob"})
    assert bob.take() == [
        {"type": "room-joined", "peers": ["alice"], "roomId": "r", "userId": "bob"}
    ]
    assert alice.take() == [{"type": "peer-joined", "peerId": "bob"}]

    send(d, carol, {"type": "join", "roomId": "r", "userId": "carol"})
    assert carol.take_one()["peers"] == ["alice", "bob"]
    assert alice.take() == [{"type": "peer-joined", "peerId": "carol"}]
    assert bob.take() == [{"type": "peer-joined", "peerId": "carol"}]

    assert d.rooms() == {"r": ["alice", "bob", "carol"]}
    assert d.roster("r") == ["alice", "bob", "carol"]
    assert d.user_count == 3


def test_rooms_snapshot_is_a_copy(room: Room) -> None:
    d = room[0]
    snapshot = d.rooms()
    snapshot["r"].append("mallory")
    snapshot["zzz"] = []
    d.roster("r").append("mallory")
    assert d.rooms() == {"r": ["alice", "bob"], "s": ["carol"]}


def test_join_accepts_boundary_and_unicode_ids() -> None:
    d = Dispatcher()
    longest = "x" * m.MAX_ID_LENGTH
    member = FakeMember()
    assert join(d, member, longest, "é中😀 user")["roomId"] == longest
    assert d.rooms() == {longest: ["é中😀 user"]}


def test_join_is_not_visible_in_other_rooms(room: Room) -> None:
    d, alice, bob, carol, stranger = room
    join(d, stranger, "s", "dave")
    assert carol.take() == [{"type": "peer-joined", "peerId": "dave"}]
    assert alice.inbox == [] and bob.inbox == []


# --- relaying -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "payload_key"),
    [
        (offer("bob", "v=0 offer"), "sdp"),
        ({"type": "answer", "to": "bob", "sdp": {"type": "answer", "sdp": "v=0"}}, "sdp"),
        ({"type": "answer", "to": "bob", "sdp": {"type": "pranswer", "sdp": "v=0"}}, "sdp"),
        ({"type": "offer", "to": "bob", "sdp": {"type": "rollback", "sdp": ""}}, "sdp"),
        (
            {
                "type": "ice-candidate",
                "to": "bob",
                "candidate": {
                    "candidate": "candidate:1 1 udp 2122260223 127.0.0.1 5000 typ host",
                    "sdpMid": "0",
                    "sdpMLineIndex": 0,
                    "usernameFragment": "abcd",
                },
            },
            "candidate",
        ),
        ({"type": "ice-candidate", "to": "bob", "candidate": None}, "candidate"),
    ],
)
def test_relay_sets_from_and_keeps_payload(
    room: Room, message: dict[str, Any], payload_key: str
) -> None:
    d, alice, bob, carol, _ = room
    send(d, alice, message)
    relayed = bob.take_one()
    assert relayed == {
        "type": message["type"],
        "from": "alice",
        "to": "bob",
        payload_key: message[payload_key],
    }
    assert alice.inbox == [] and carol.inbox == []
    assert d.rooms() == {"r": ["alice", "bob"], "s": ["carol"]}


def test_relay_ignores_forged_from_and_extra_fields(room: Room) -> None:
    d, alice, bob, carol, _ = room
    send(d, alice, offer("bob", "v=0", **{"from": "carol", "admin": True, "peerId": "x"}))
    assert bob.take() == [
        {"type": "offer", "from": "alice", "to": "bob", "sdp": {"type": "offer", "sdp": "v=0"}}
    ]
    assert carol.inbox == [] and alice.inbox == []


def test_relay_in_both_directions(room: Room) -> None:
    d, alice, bob, _, _ = room
    send(d, alice, offer("bob"))
    send(d, bob, {"type": "answer", "to": "alice", "sdp": {"type": "answer", "sdp": "a"}})
    assert bob.take_one()["from"] == "alice"
    reply = alice.take_one()
    assert (reply["type"], reply["from"], reply["to"]) == ("answer", "bob", "alice")


# --- leave and disconnect -----------------------------------------------------------------


def test_leave_notifies_the_room_and_frees_the_user_id(room: Room) -> None:
    d, alice, bob, carol, _ = room
    send(d, alice, {"type": "leave", "roomId": "r"})
    assert alice.inbox == []  # no acknowledgement, as in the seed
    assert bob.take() == [{"type": "peer-left", "peerId": "alice"}]
    assert carol.inbox == []
    assert (alice.user_id, alice.room_id) == (None, None)
    assert d.rooms() == {"r": ["bob"], "s": ["carol"]}
    assert d.user_count == 2

    # The same socket can join again, anywhere, even under its old id.
    assert join(d, alice, "s", "alice")["peers"] == ["carol"]
    assert carol.take() == [{"type": "peer-joined", "peerId": "alice"}]
    assert d.rooms() == {"r": ["bob"], "s": ["carol", "alice"]}


def test_last_member_leaving_deletes_the_room(room: Room) -> None:
    d, alice, bob, carol, _ = room
    send(d, carol, {"type": "leave", "roomId": "s"})
    assert d.rooms() == {"r": ["alice", "bob"]}
    assert alice.inbox == [] and bob.inbox == [] and carol.inbox == []


def test_a_held_member_is_resumed_by_the_same_user_unnoticed(room: Room) -> None:
    d, alice, bob, carol, _ = room
    assert d.disconnect(bob, hold=True)
    assert alice.inbox == [] and d.rooms() == {"r": ["alice", "bob"], "s": ["carol"]}
    assert d.away() == ["bob"]
    # The same id from another socket: in its own room it resumes.
    back = FakeMember("back")
    assert join(d, back, "r", "bob")["peers"] == ["alice"]
    assert alice.inbox == []  # no peer-left, no peer-joined: the calls go on
    assert (bob.user_id, back.user_id) == (None, "bob") and d.away() == []
    d.expire(bob)  # the hold's timer firing late changes nothing
    assert alice.inbox == [] and d.rooms()["r"] == ["alice", "bob"]
    send(d, alice, offer("bob"))
    assert back.take_one()["from"] == "alice"  # relayed to the new socket


def test_a_held_member_back_in_another_room_has_left_the_old_one(room: Room) -> None:
    d, alice, bob, carol, _ = room
    assert d.disconnect(bob, hold=True)
    elsewhere = FakeMember("elsewhere")
    assert join(d, elsewhere, "s", "bob")["peers"] == ["carol"]
    assert alice.take() == [{"type": "peer-left", "peerId": "bob"}]
    assert carol.take() == [{"type": "peer-joined", "peerId": "bob"}]
    assert d.rooms() == {"r": ["alice"], "s": ["carol", "bob"]} and d.away() == []
    d.expire(bob)  # the old hold's timer: nothing left to do
    assert alice.inbox == [] and carol.inbox == []


def test_a_held_member_that_does_not_come_back_leaves_when_the_hold_expires(room: Room) -> None:
    d, alice, bob, _, _ = room
    assert d.disconnect(bob, hold=True)
    d.expire(bob)
    assert alice.take() == [{"type": "peer-left", "peerId": "bob"}]
    assert d.rooms()["r"] == ["alice"] and d.away() == []
    assert not d.disconnect(FakeMember("never-joined"), hold=True)


def test_disconnect_notifies_the_room(room: Room) -> None:
    d, alice, bob, carol, stranger = room
    d.disconnect(bob)
    assert alice.take() == [{"type": "peer-left", "peerId": "bob"}]
    assert carol.inbox == [] and bob.inbox == []
    assert d.rooms() == {"r": ["alice"], "s": ["carol"]}
    # A second disconnect, or one of a member that never joined, is a no-op.
    d.disconnect(bob)
    d.disconnect(stranger)
    assert alice.inbox == [] and carol.inbox == []
    assert d.rooms() == {"r": ["alice"], "s": ["carol"]}
    assert d.user_count == 2
    # bob's id is free again.
    join(d, stranger, "r", "bob")
    assert alice.take() == [{"type": "peer-joined", "peerId": "bob"}]


def test_messages_to_a_peer_that_left_are_refused(room: Room) -> None:
    d, alice, bob, carol, _ = room
    d.disconnect(bob)
    alice.inbox.clear()
    assert_refused(d, alice, json.dumps(offer("bob")), "unknown-peer", [bob, carol])


# --- refusals --------------------------------------------------------------------------------

OVERSIZED_ID = "x" * (m.MAX_ID_LENGTH + 1)


def _join(room_id: Any = "r", user_id: Any = "newbie") -> dict[str, Any]:
    return {"type": "join", "roomId": room_id, "userId": user_id}


INVALID_JSON: list[bytes | str] = [
    "",
    "not json",
    "{",
    '{"type": "join", "roomId": "r", "userId": "a"',
    # Typed decoding stops at the first wrong type; these are still not JSON.
    "[",
    "[1, ",
    "5x",
    '{"type": 5',
    '{"type": "nope", ',
    '{"type": "join", "roomId": "r", "userId": "\n" ',
    b"\xff\xfe\x00",
    '{"type": "join", "roomId": "r", "userId": "\ud800"}',  # lone surrogate in a str
    b'{"type": "join", "roomId": "r", "userId": "\\udc00x"}',  # lone surrogate escape
]

UNKNOWN_TYPE: list[dict[str, Any]] = [
    {"type": "hello"},
    {"type": "peer-joined", "peerId": "bob"},  # a server message, not a client one
    {"type": "room-joined", "peers": []},
    {"type": "error", "message": "x", "code": "y"},
    {"type": "JOIN", "roomId": "r", "userId": "a"},
    {"type": ""},
]

INVALID_MESSAGE: list[Any] = [
    [],
    "a string",
    42,
    None,
    {},
    {"type": 5},
    {"type": None},
    {"roomId": "r", "userId": "newbie"},
    {"type": "join", "roomId": "r"},
    {"type": "join", "userId": "newbie"},
    _join(room_id=5),
    _join(user_id=["a"]),
    _join(user_id=None),
    _join(user_id=""),
    _join(room_id=""),
    _join(user_id=OVERSIZED_ID),
    _join(room_id=OVERSIZED_ID),
    _join(user_id="new\nbie"),
    _join(user_id="newbie\n"),  # `$` would have matched before this newline
    _join(user_id="\tnewbie"),
    _join(user_id="new\x00bie"),
    _join(user_id="new\x7fbie"),
    _join(user_id="new\x85bie"),  # C1 control
    _join(room_id="r\r\n"),
    {"type": "leave"},
    {"type": "leave", "roomId": 1},
    {"type": "offer", "to": "bob"},
    {"type": "offer", "sdp": {"type": "offer", "sdp": ""}},
    {"type": "offer", "to": "bob", "sdp": "v=0"},
    {"type": "offer", "to": "bob", "sdp": {"type": "bogus", "sdp": ""}},
    {"type": "offer", "to": "bob", "sdp": {"sdp": "v=0"}},
    {"type": "offer", "to": "bob", "sdp": {"type": "offer", "sdp": 1}},
    {"type": "offer", "to": "bob", "sdp": {"type": "offer", "sdp": "x" * (m.MAX_SDP_LENGTH + 1)}},
    {"type": "offer", "to": "", "sdp": {"type": "offer", "sdp": ""}},
    {"type": "offer", "to": "bob\n", "sdp": {"type": "offer", "sdp": ""}},
    {"type": "offer", "to": OVERSIZED_ID, "sdp": {"type": "offer", "sdp": ""}},
    {"type": "answer", "to": None, "sdp": {"type": "answer", "sdp": ""}},
    {"type": "ice-candidate", "to": "bob"},
    {"type": "ice-candidate", "to": "bob", "candidate": "candidate:1"},
    {"type": "ice-candidate", "to": "bob", "candidate": {"candidate": 1}},
    {"type": "ice-candidate", "to": "bob", "candidate": {"sdpMLineIndex": -1}},
    {"type": "ice-candidate", "to": "bob", "candidate": {"sdpMLineIndex": 65536}},
    {"type": "ice-candidate", "to": "bob", "candidate": {"sdpMLineIndex": "0"}},
    {
        "type": "ice-candidate",
        "to": "bob",
        "candidate": {"candidate": "x" * (m.MAX_CANDIDATE_LENGTH + 1)},
    },
]


@pytest.mark.parametrize("raw", INVALID_JSON)
@pytest.mark.parametrize("joined", [True, False], ids=["joined", "not-joined"])
def test_invalid_json_is_refused(room: Room, raw: bytes | str, joined: bool) -> None:
    d, alice, bob, carol, stranger = room
    offender = alice if joined else stranger
    assert_refused(d, offender, raw, "invalid-json", [alice, bob, carol, stranger])


@pytest.mark.parametrize("message", UNKNOWN_TYPE)
@pytest.mark.parametrize("joined", [True, False], ids=["joined", "not-joined"])
def test_unknown_type_is_refused(room: Room, message: dict[str, Any], joined: bool) -> None:
    d, alice, bob, carol, stranger = room
    offender = alice if joined else stranger
    assert_refused(d, offender, json.dumps(message), "unknown-type", [bob, carol, stranger])


@pytest.mark.parametrize("message", INVALID_MESSAGE)
@pytest.mark.parametrize("joined", [True, False], ids=["joined", "not-joined"])
def test_invalid_message_is_refused(room: Room, message: Any, joined: bool) -> None:
    d, alice, bob, carol, stranger = room
    offender = alice if joined else stranger
    raw = json.dumps(message)
    assert_refused(d, offender, raw, "invalid-message", [bob, carol, stranger])
    # Bytes are accepted as well as text.
    assert_refused(d, offender, raw.encode(), "invalid-message", [bob, carol, stranger])


@pytest.mark.parametrize(
    "message",
    [
        offer("alice"),
        {"type": "answer", "to": "alice", "sdp": {"type": "answer", "sdp": ""}},
        {"type": "ice-candidate", "to": "alice", "candidate": None},
        {"type": "leave", "roomId": "r"},
    ],
    ids=lambda msg: msg["type"],
)
def test_messages_before_join_are_refused(room: Room, message: dict[str, Any]) -> None:
    d, alice, bob, carol, stranger = room
    assert_refused(d, stranger, json.dumps(message), "not-joined", [alice, bob, carol])


def test_messages_after_leave_are_refused(room: Room) -> None:
    d, alice, bob, carol, _ = room
    send(d, alice, {"type": "leave", "roomId": "r"})
    bob.inbox.clear()
    assert_refused(d, alice, json.dumps(offer("bob")), "not-joined", [bob, carol])
    assert_refused(d, alice, '{"type":"leave","roomId":"r"}', "not-joined", [bob, carol])


@pytest.mark.parametrize(
    ("room_id", "user_id"),
    [("r", "alice"), ("r", "alice2"), ("s", "alice"), ("new-room", "zed")],
)
def test_second_join_on_a_member_is_refused(room: Room, room_id: str, user_id: str) -> None:
    d, alice, bob, carol, _ = room
    assert_refused(d, alice, json.dumps(_join(room_id, user_id)), "already-joined", [bob, carol])


@pytest.mark.parametrize("room_id", ["r", "s", "elsewhere"])
def test_connected_user_id_cannot_be_taken(room: Room, room_id: str) -> None:
    d, alice, bob, carol, stranger = room
    raw = json.dumps(_join(room_id, "alice"))
    assert_refused(d, stranger, raw, "user-id-taken", [alice, bob, carol])
    # The original keeps working, both ways.
    send(d, bob, offer("alice"))
    assert alice.take_one()["from"] == "bob"
    send(d, alice, offer("bob"))
    assert bob.take_one()["from"] == "alice"
    assert stranger.inbox == []


def test_leave_of_another_room_is_refused(room: Room) -> None:
    d, alice, bob, carol, _ = room
    for room_id in ("s", "nowhere"):
        assert_refused(
            d, alice, json.dumps({"type": "leave", "roomId": room_id}), "not-in-room", [bob, carol]
        )


def test_full_room_is_refused() -> None:
    d = Dispatcher(max_room_size=2)
    alice, bob, carol = FakeMember("alice"), FakeMember("bob"), FakeMember("carol")
    join(d, alice, "r", "alice")
    join(d, bob, "r", "bob")
    alice.inbox.clear()
    assert_refused(d, carol, json.dumps(_join("r", "carol")), "room-full", [alice, bob])
    # Other rooms are not affected by a full one; a freed seat can be taken.
    join(d, carol, "s", "carol")
    send(d, carol, {"type": "leave", "roomId": "s"})
    d.disconnect(bob)
    assert alice.take() == [{"type": "peer-left", "peerId": "bob"}]
    assert join(d, carol, "r", "carol")["peers"] == ["alice"]
    assert d.rooms() == {"r": ["alice", "carol"]}


def test_room_of_one() -> None:
    d = Dispatcher(max_room_size=1)
    alice, bob = FakeMember("alice"), FakeMember("bob")
    join(d, alice, "r", "alice")
    assert_refused(d, bob, json.dumps(_join("r", "bob")), "room-full", [alice])


@pytest.mark.parametrize("kind", ["offer", "answer", "ice-candidate"])
@pytest.mark.parametrize("to", ["carol", "nobody", "x" * m.MAX_ID_LENGTH])
def test_relay_outside_the_room_is_refused(room: Room, kind: str, to: str) -> None:
    d, alice, bob, carol, stranger = room
    if kind == "ice-candidate":
        message: dict[str, Any] = {"type": kind, "to": to, "candidate": None}
    else:
        message = {"type": kind, "to": to, "sdp": {"type": "offer", "sdp": "v=0"}}
    assert_refused(d, alice, json.dumps(message), "unknown-peer", [bob, carol, stranger])


@pytest.mark.parametrize("kind", ["offer", "answer", "ice-candidate"])
def test_relay_to_oneself_is_refused(room: Room, kind: str) -> None:
    d, alice, bob, carol, _ = room
    if kind == "ice-candidate":
        message: dict[str, Any] = {"type": kind, "to": "alice", "candidate": None}
    else:
        message = {"type": kind, "to": "alice", "sdp": {"type": "answer", "sdp": ""}}
    assert_refused(d, alice, json.dumps(message), "invalid-target", [bob, carol])


def test_reject_sends_an_error_and_changes_nothing(room: Room) -> None:
    d, alice, bob, carol, _ = room
    before = d.rooms()
    d.reject(alice, ProtocolError("rate-limited", "slow down"))
    assert alice.take() == [{"type": "error", "message": "slow down", "code": "rate-limited"}]
    assert d.rooms() == before
    assert bob.inbox == [] and carol.inbox == []


def test_decode_client_message_error_codes() -> None:
    with pytest.raises(ProtocolError) as info:
        m.decode_client_message('{"type": "nope"}')
    assert info.value.code == "unknown-type"
    assert "join" in info.value.message  # names the valid types
    with pytest.raises(ProtocolError) as info:
        m.decode_client_message("[")
    assert info.value.code == "invalid-json"
    with pytest.raises(ProtocolError) as info:
        m.decode_client_message('{"type": "join"}')
    assert info.value.code == "invalid-message"


def test_server_messages_round_trip() -> None:
    for message in [
        m.RoomJoined(peers=["a"], roomId="r", userId="b"),
        m.PeerJoined(peerId="a"),
        m.PeerLeft(peerId="a"),
        m.RelayedOffer(from_="a", to="b", sdp=m.SessionDescription(type="offer", sdp="v")),
        m.RelayedAnswer(from_="a", to="b", sdp=m.SessionDescription(type="answer")),
        m.RelayedIceCandidate(from_="a", to="b", candidate=m.IceCandidateInit(candidate="c")),
        m.Error(message="m", code="c"),
    ]:
        assert m.decode_server_message(m.encode(message)) == message
    with pytest.raises(ProtocolError):
        m.decode_server_message('{"type": "join", "roomId": "r", "userId": "u"}')


# --- property tests ----------------------------------------------------------------------

ROOMS = ["r1", "r2"]
USERS = ["u0", "u1", "u2", "u3"]
N_MEMBERS = 4
MAX_ROOM = 3

user_ids = st.sampled_from(USERS)
bad_ids = st.sampled_from(["", "a\n", "\x00", "b\x85", OVERSIZED_ID])
sdp = st.fixed_dictionaries(
    {"type": st.sampled_from(["offer", "answer", "pranswer", "rollback"]), "sdp": st.text()}
)
candidate = st.none() | st.fixed_dictionaries(
    {"candidate": st.text(min_size=1, max_size=40)},
    optional={
        "sdpMid": st.text(min_size=1, max_size=8),
        "sdpMLineIndex": st.integers(0, 65535),
        "usernameFragment": st.text(min_size=1, max_size=8),
    },
)
forged: st.SearchStrategy[dict[str, str]] = st.just({}) | st.builds(
    lambda f: {"from": f}, st.sampled_from(USERS + ["admin"])
)

FIELDS = ["roomId", "userId", "to", "sdp", "candidate", "from"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)

joins = st.builds(_join, st.sampled_from(ROOMS), user_ids)
leaves = st.builds(lambda r: {"type": "leave", "roomId": r}, st.sampled_from(ROOMS))
descriptions = st.builds(
    lambda kind, to, s, f: {"type": kind, "to": to, "sdp": s, **f},
    st.sampled_from(["offer", "answer"]),
    user_ids,
    sdp,
    forged,
)
candidates = st.builds(
    lambda to, c, f: {"type": "ice-candidate", "to": to, "candidate": c, **f},
    user_ids,
    candidate,
    forged,
)
# Garbage: arbitrary JSON (sometimes with a valid type, or bad ids), text and bytes.
garbage_messages = st.one_of(
    st.builds(_join, st.sampled_from(ROOMS) | bad_ids, user_ids | bad_ids),
    st.builds(
        lambda t, extra: {"type": t, **extra},
        st.sampled_from(["join", "leave", "offer", "answer", "ice-candidate", "x"]),
        st.dictionaries(st.sampled_from(FIELDS), json_values),
    ),
    json_values,
)
messages = st.one_of(joins, leaves, descriptions, candidates, garbage_messages)


def as_raw(messages: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes | str]:
    return messages.map(json.dumps) | messages.map(lambda msg: json.dumps(msg).encode())


raw_inputs = st.one_of(as_raw(messages), st.text(max_size=30), st.binary(max_size=30))

# A step: (member index, raw input) or (member index, None) for "the socket closed".
# Valid messages are drawn far more often than garbage so that rooms fill up and
# relays actually happen.
step_input = st.one_of(
    as_raw(joins),
    as_raw(joins),
    as_raw(descriptions),
    as_raw(descriptions),
    as_raw(candidates),
    as_raw(candidates),
    as_raw(leaves),
    raw_inputs,
    st.none(),
)
# Scripts start with (usually) every member joining a room, so that relays happen.
opening = st.lists(st.sampled_from(ROOMS), min_size=N_MEMBERS, max_size=N_MEMBERS).map(
    lambda rooms: [(i, json.dumps(_join(r, USERS[i]))) for i, r in enumerate(rooms)]
)
steps = st.builds(
    lambda first, rest: first + rest,
    st.just([]) | opening | opening | opening,
    st.lists(st.tuples(st.integers(0, N_MEMBERS - 1), step_input), max_size=50),
)

RELAYED = {"offer", "answer", "ice-candidate"}
# IceCandidateInit is encoded with omit_defaults.
CANDIDATE_DEFAULTS = {
    "candidate": "",
    "sdpMid": None,
    "sdpMLineIndex": None,
    "usernameFragment": None,
}


class Model:
    """A reference model of the protocol: the expected rosters and deliveries."""

    def __init__(self) -> None:
        self.rooms: dict[str, list[str]] = {}
        self.where: dict[int, tuple[str, str]] = {}  # member index -> (user id, room id)

    def _index_of(self, user_id: str) -> int:
        return next(i for i, (uid, _) in self.where.items() if uid == user_id)

    def remove(self, i: int) -> dict[int, list[dict[str, Any]]]:
        user_id, room_id = self.where.pop(i)
        room = self.rooms[room_id]
        room.remove(user_id)
        if not room:
            del self.rooms[room_id]
            return {}
        return {self._index_of(u): [{"type": "peer-left", "peerId": user_id}] for u in room}

    def handle(self, i: int, raw: bytes | str) -> dict[int, list[dict[str, Any]]]:
        def error(code: str) -> dict[int, list[dict[str, Any]]]:
            return {i: [{"type": "error", "code": code}]}

        try:
            message = m.decode_client_message(raw)
        except ProtocolError as exc:
            return error(exc.code)
        parsed = json.loads(raw)
        if isinstance(message, m.Join):
            if i in self.where:
                return error("already-joined")
            if any(uid == message.userId for uid, _ in self.where.values()):
                return error("user-id-taken")
            room = self.rooms.get(message.roomId, [])
            if len(room) >= MAX_ROOM:
                return error("room-full")
            out = {
                i: [
                    {
                        "type": "room-joined",
                        "peers": list(room),
                        "roomId": message.roomId,
                        "userId": message.userId,
                    }
                ]
            }
            for uid in room:
                out[self._index_of(uid)] = [{"type": "peer-joined", "peerId": message.userId}]
            self.rooms[message.roomId] = [*room, message.userId]
            self.where[i] = (message.userId, message.roomId)
            return out
        if i not in self.where:
            return error("not-joined")
        user_id, room_id = self.where[i]
        if isinstance(message, m.Leave):
            if message.roomId != room_id:
                return error("not-in-room")
            return self.remove(i)
        if message.to == user_id:
            return error("invalid-target")
        if message.to not in self.rooms[room_id]:
            return error("unknown-peer")
        # What the server re-encodes: known fields only, defaults filled or omitted.
        relayed: dict[str, Any] = {"type": parsed["type"], "from": user_id, "to": message.to}
        if isinstance(message, m.IceCandidate):
            c = parsed["candidate"]
            relayed["candidate"] = (
                None
                if c is None
                else {
                    k: c[k]
                    for k, default in CANDIDATE_DEFAULTS.items()
                    if c.get(k, default) != default
                }
            )
        else:
            relayed["sdp"] = {"type": parsed["sdp"]["type"], "sdp": parsed["sdp"].get("sdp", "")}
        return {self._index_of(message.to): [relayed]}


def check_invariants(d: Dispatcher, members: list[FakeMember]) -> None:
    rooms = d.rooms()
    seen: set[str] = set()
    for room_id, roster in rooms.items():
        assert roster, f"empty room {room_id!r} kept"
        assert len(roster) <= MAX_ROOM
        assert len(set(roster)) == len(roster)
        assert not seen & set(roster), "a user id in two rooms"
        seen |= set(roster)
        for user_id in roster:
            owners = [mb for mb in members if mb.user_id == user_id]
            assert len(owners) == 1
            assert owners[0].room_id == room_id
    joined = {mb.user_id for mb in members if mb.user_id is not None}
    assert joined == seen
    for mb in members:
        assert (mb.user_id is None) == (mb.room_id is None)
    assert d.user_count == len(seen)


@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(steps)
def test_dispatcher_matches_model_and_keeps_invariants(
    script: list[tuple[int, bytes | str | None]],
) -> None:
    d = Dispatcher(max_room_size=MAX_ROOM)
    members = [FakeMember(f"m{i}") for i in range(N_MEMBERS)]
    model = Model()
    for i, raw in script:
        sender = members[i]
        sender_before = (sender.user_id, sender.room_id)
        rooms_of = {j: mb.room_id for j, mb in enumerate(members)}
        if raw is None:
            expected = model.remove(i) if i in model.where else {}
            d.disconnect(sender)
            members[i] = FakeMember(f"m{i}")  # the socket is gone; a new one takes its place
        else:
            expected = model.handle(i, raw)
            d.handle(sender, raw)  # must never raise
        actual = {j: mb.take() for j, mb in enumerate(members)}
        if raw is None:
            actual[i] = sender.take()
        for j in range(N_MEMBERS):
            got, want = actual.get(j, []), expected.get(j, [])
            for message in got:
                event(f"delivered {message['type']} {message.get('code', '')}".strip())
                if message["type"] == "error":
                    assert j == i, "an error went to someone else than the sender"
                    assert isinstance(message.pop("message"), str)
                elif j != i:
                    # Nothing crosses rooms: the recipient shares the sender's room
                    # (the one it was in, or for a join the one it is in now).
                    sender_room = sender_before[1] or sender.room_id
                    assert rooms_of[j] is not None and rooms_of[j] == sender_room
                if message["type"] in RELAYED and "from" in message:
                    assert message["from"] == sender_before[0]
            assert got == want, f"member {j} after {raw!r}"
        check_invariants(d, members)
        assert d.rooms() == model.rooms


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.lists(raw_inputs, max_size=10))
def test_refused_input_never_changes_state(inputs: list[bytes | str]) -> None:
    d = Dispatcher()
    alice, bob, intruder = FakeMember("alice"), FakeMember("bob"), FakeMember("intruder")
    join(d, alice, "r1", "u0")
    join(d, bob, "r1", "u1")
    alice.inbox.clear()
    for raw in inputs:
        before = d.rooms()
        try:
            message = m.decode_client_message(raw)
        except ProtocolError as exc:
            # Garbage from anyone: one error back, nothing relayed, no state change.
            for sender in (alice, intruder):
                assert_refused(d, sender, raw, exc.code, [alice, bob, intruder])
            continue
        if not isinstance(message, m.Join):
            # A valid non-join message from a member that never joined.
            assert_refused(d, intruder, raw, "not-joined", [alice, bob])
        assert d.rooms() == before


def test_relayed_messages_reencode_with_schema() -> None:
    """The relayed bytes decode as the matching server message, with from set."""
    d = Dispatcher()
    alice, bob = FakeMember("alice"), FakeMember("bob")
    join(d, alice, "r", "alice")
    join(d, bob, "r", "bob")
    send(d, bob, {"type": "ice-candidate", "to": "alice", "candidate": {"candidate": "c"}})
    decoded = [m.decode_server_message(data) for data in alice.inbox]
    assert decoded == [
        m.PeerJoined(peerId="bob"),
        m.RelayedIceCandidate(from_="bob", to="alice", candidate=m.IceCandidateInit(candidate="c")),
    ]
    assert msgspec.json.decode(alice.inbox[-1])["from"] == "bob"


def test_rewrites_run_in_order_then_the_users_hook_and_can_be_removed() -> None:
    d = Dispatcher()
    a, b = FakeMember(), FakeMember()
    join(d, a, "r", "a")
    join(d, b, "r", "b")
    a.take(), b.take()
    seen: list[str] = []

    def tag(name: str) -> Any:
        def rewrite(sender: str, to: str, relayed: Any) -> Any:
            seen.append(name)
            sdp = msgspec.structs.replace(relayed.sdp, sdp=relayed.sdp.sdp + name)
            return msgspec.structs.replace(relayed, sdp=sdp)

        return rewrite

    remove_first = d.add_rewrite(tag("1"))
    d.add_rewrite(tag("2"))
    d.rewrite = tag("u")
    send(d, a, offer("b", sdp="v=0"))
    assert b.take_one()["sdp"]["sdp"] == "v=012u"
    remove_first()
    remove_first()  # idempotent
    d.add_rewrite(lambda sender, to, relayed: None)  # None drops the message
    send(d, a, offer("b"))
    assert b.take() == []
    assert seen == ["1", "2", "u", "2"]
