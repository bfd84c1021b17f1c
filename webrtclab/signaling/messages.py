"""Signaling protocol messages (the seed app's protocol), as msgspec schemas.

Field names are the seed's camelCase ones because they travel as-is to browser
clients written for the seed.  Decoding validates every message; the server
re-encodes what it relays, so a client can never smuggle fields (``from``) through.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from ..exceptions import ProtocolError

__all__ = [
    "Answer",
    "ClientMessage",
    "Error",
    "IceCandidate",
    "IceCandidateInit",
    "Join",
    "Leave",
    "MAX_ID_LENGTH",
    "Offer",
    "PeerJoined",
    "PeerLeft",
    "RelayedAnswer",
    "RelayedIceCandidate",
    "RelayedOffer",
    "RoomJoined",
    "ServerMessage",
    "SessionDescription",
    "decode_client_message",
    "decode_server_message",
    "encode",
]

MAX_ID_LENGTH = 64
MAX_SDP_LENGTH = 128 * 1024
MAX_CANDIDATE_LENGTH = 1024

# Ids are printable: no control characters (C0, DEL, C1), which would garble logs
# and UIs.  ``\Z``, not ``$``: ``$`` also matches before a trailing newline.
Id = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[^\x00-\x1f\x7f-\x9f]+\Z"),
]


class SessionDescription(msgspec.Struct, frozen=True):
    """RTCSessionDescriptionInit."""

    type: Literal["offer", "answer", "pranswer", "rollback"]
    sdp: Annotated[str, msgspec.Meta(max_length=MAX_SDP_LENGTH)] = ""


class IceCandidateInit(msgspec.Struct, frozen=True, omit_defaults=True):
    """RTCIceCandidateInit as produced by ``RTCIceCandidate.toJSON()``."""

    candidate: Annotated[str, msgspec.Meta(max_length=MAX_CANDIDATE_LENGTH)] = ""
    sdpMid: Annotated[str, msgspec.Meta(max_length=MAX_ID_LENGTH)] | None = None
    sdpMLineIndex: Annotated[int, msgspec.Meta(ge=0, le=65535)] | None = None
    usernameFragment: Annotated[str, msgspec.Meta(max_length=256)] | None = None


# --- client to server -------------------------------------------------------


class Join(msgspec.Struct, tag="join", tag_field="type", frozen=True):
    roomId: Id
    userId: Id


class Offer(msgspec.Struct, tag="offer", tag_field="type", frozen=True):
    to: Id
    sdp: SessionDescription


class Answer(msgspec.Struct, tag="answer", tag_field="type", frozen=True):
    to: Id
    sdp: SessionDescription


class IceCandidate(msgspec.Struct, tag="ice-candidate", tag_field="type", frozen=True):
    to: Id
    candidate: IceCandidateInit | None


class Leave(msgspec.Struct, tag="leave", tag_field="type", frozen=True):
    roomId: Id


ClientMessage = Join | Offer | Answer | IceCandidate | Leave

# --- server to client -------------------------------------------------------


class RoomJoined(msgspec.Struct, tag="room-joined", tag_field="type", frozen=True):
    peers: list[str]
    roomId: str = ""
    userId: str = ""


class PeerJoined(msgspec.Struct, tag="peer-joined", tag_field="type", frozen=True):
    peerId: str


class PeerLeft(msgspec.Struct, tag="peer-left", tag_field="type", frozen=True):
    peerId: str


class RelayedOffer(msgspec.Struct, tag="offer", tag_field="type", frozen=True):
    from_: str = msgspec.field(name="from")
    to: str = ""
    sdp: SessionDescription | None = None


class RelayedAnswer(msgspec.Struct, tag="answer", tag_field="type", frozen=True):
    from_: str = msgspec.field(name="from")
    to: str = ""
    sdp: SessionDescription | None = None


class RelayedIceCandidate(msgspec.Struct, tag="ice-candidate", tag_field="type", frozen=True):
    from_: str = msgspec.field(name="from")
    to: str = ""
    candidate: IceCandidateInit | None = None


class Error(msgspec.Struct, tag="error", tag_field="type", frozen=True):
    message: str
    code: str


ServerMessage = (
    RoomJoined | PeerJoined | PeerLeft | RelayedOffer | RelayedAnswer | RelayedIceCandidate | Error
)

_encoder = msgspec.json.Encoder()
_client_decoder = msgspec.json.Decoder(ClientMessage)
_server_decoder = msgspec.json.Decoder(ServerMessage)
_TYPES = ", ".join(sorted(["join", "offer", "answer", "ice-candidate", "leave"]))


def encode(message: msgspec.Struct) -> bytes:
    """Encode a message as JSON bytes."""
    return _encoder.encode(message)


def decode_client_message(data: bytes | str) -> ClientMessage:
    """Decode and validate one client message.

    :raises ProtocolError: with code ``invalid-json``, ``unknown-type`` or ``invalid-message``.
    """
    try:
        return _client_decoder.decode(data)
    except msgspec.ValidationError as exc:
        text = str(exc)
        try:  # typed decoding stops at the first wrong type: is the rest JSON at all?
            msgspec.json.decode(data)
        except msgspec.DecodeError as json_exc:
            raise ProtocolError("invalid-json", f"message is not valid JSON: {json_exc}") from None
        except RecursionError:
            raise _too_deep() from None
        if text.startswith("Invalid value") and text.endswith("`$.type`"):
            raise ProtocolError(
                "unknown-type", f"{text}: the message type must be one of {_TYPES}"
            ) from None
        raise ProtocolError("invalid-message", text) from None
    except msgspec.DecodeError as exc:
        raise ProtocolError("invalid-json", f"message is not valid JSON: {exc}") from None
    except UnicodeEncodeError as exc:  # a str with lone surrogates is not UTF-8 text
        raise ProtocolError("invalid-json", f"message is not valid UTF-8: {exc}") from None
    except RecursionError:
        # msgspec recurses per nesting level (also to skip unknown fields): a message
        # like [[[[...]]]] would otherwise escape as a RecursionError and kill the socket.
        raise _too_deep() from None


def _too_deep() -> ProtocolError:
    return ProtocolError("invalid-message", "message is nested too deeply")


def decode_server_message(data: bytes | str) -> ServerMessage:
    """Decode one server message (used by the Python client)."""
    try:
        return _server_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ProtocolError("invalid-message", f"unexpected server message: {exc}") from None
    except RecursionError:
        raise _too_deep() from None
