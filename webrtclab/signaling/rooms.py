"""The signaling dispatcher: rooms, rosters and relaying, independent of sockets.

The dispatcher is synchronous and never blocks: it hands encoded messages to
:meth:`Member.deliver`, which must only enqueue them.  The aiohttp server (and
the property-based tests) drive it with raw messages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from ..exceptions import ProtocolError
from . import messages as m

__all__ = ["Dispatcher", "Member"]

logger = logging.getLogger(__name__)


Relayed = m.RelayedOffer | m.RelayedAnswer | m.RelayedIceCandidate
# (sender, receiver, message) -> the message to deliver, or None to drop it.
Rewrite = Callable[[str, str, Relayed], Relayed | None]
# (member, room id, user id) -> None, or raises ProtocolError to refuse the join.
Admit = Callable[["Member", str, str], None]


class Member(Protocol):
    """One connected socket as the dispatcher sees it."""

    user_id: str | None
    room_id: str | None

    def deliver(self, data: bytes) -> None:
        """Queue an encoded message for this member; must not block."""


class Dispatcher:
    """Rooms of members, keyed by user id, with the seed's message flow.

    Invariants: a user id belongs to at most one member; a member is in at most
    one room; messages are only relayed between members of the same room.
    """

    def __init__(self, *, max_room_size: int = 32) -> None:
        if max_room_size < 1:
            raise ValueError(f"max_room_size must be at least 1, got {max_room_size}")
        self.max_room_size = max_room_size
        #: a hook of the user's own (a notebook's tap), run after the added ones
        self.rewrite: Rewrite | None = None
        self._rewrites: list[Rewrite] = []
        # Members whose socket closed without a leave, held in their room (see disconnect).
        self._away: dict[str, Member] = {}
        # The server's access check (join tokens): runs before any state changes.
        self.admit: Admit | None = None
        self._users: dict[str, Member] = {}
        self._rooms: dict[str, dict[str, Member]] = {}

    # --- introspection ---------------------------------------------------------

    def rooms(self) -> dict[str, list[str]]:
        """A snapshot of every room's roster, in join order."""
        return {room_id: list(members) for room_id, members in self._rooms.items()}

    def roster(self, room_id: str) -> list[str]:
        return list(self._rooms.get(room_id, ()))

    @property
    def user_count(self) -> int:
        return len(self._users)

    # --- input -----------------------------------------------------------------

    def handle(self, member: Member, data: bytes | str) -> None:
        """Handle one raw message from ``member``; protocol errors go back to it."""
        try:
            message = m.decode_client_message(data)
            self._dispatch(member, message)
        except ProtocolError as exc:
            self.reject(member, exc)

    def reject(self, member: Member, exc: ProtocolError) -> None:
        """Tell ``member`` that its message was refused; no state changes."""
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("refused message from %r: %s %s", member.user_id, exc.code, exc.message)
        member.deliver(m.encode(m.Error(message=exc.message, code=exc.code)))

    def disconnect(self, member: Member, *, hold: bool = False) -> bool:
        """A member's socket closed without a leave: forget it (peer-left to its room).

        With ``hold``, it stays in its room, away, so its calls go on: the same user id
        joining the same room again takes its place without peer-left or peer-joined
        (:meth:`_join`); joining another room, or :meth:`expire`, ends the hold.
        Returns whether it is held.
        """
        if member.user_id is None or member.room_id is None:
            return False
        if hold:
            self._away[member.user_id] = member
            return True
        self._remove(member)
        return False

    def expire(self, member: Member) -> None:
        """End the hold of an away member (peer-left to its room) unless it came back."""
        user_id = member.user_id
        if user_id is not None and self._away.get(user_id) is member:
            del self._away[user_id]
            self._remove(member)

    def away(self) -> list[str]:
        """User ids held in their rooms after their socket closed."""
        return list(self._away)

    # --- protocol ---------------------------------------------------------------

    def _dispatch(self, member: Member, message: m.ClientMessage) -> None:
        if isinstance(message, m.Join):
            self._join(member, message)
            return
        user_id = member.user_id
        if user_id is None or member.room_id is None:
            raise ProtocolError(
                "not-joined", f'cannot handle "{_type_of(message)}": join a room first'
            )
        if isinstance(message, m.Leave):
            if message.roomId != member.room_id:
                raise ProtocolError(
                    "not-in-room",
                    f'cannot leave room "{message.roomId}" as "{user_id}": '
                    f'the user is in room "{member.room_id}"',
                )
            self._remove(member)
            return

        # The relay: the hot path.  The message is re-encoded from the validated
        # struct, with ``from`` set here: nothing else a client sent goes through.
        to = message.to
        room = self._rooms.get(member.room_id)
        target = room.get(to) if room is not None else None
        if target is None or to == user_id:
            raise self._bad_target(member, user_id, to, _type_of(message))
        relayed: Relayed
        if isinstance(message, m.IceCandidate):
            relayed = m.RelayedIceCandidate(from_=user_id, to=to, candidate=message.candidate)
        elif isinstance(message, m.Offer):
            relayed = m.RelayedOffer(from_=user_id, to=to, sdp=message.sdp)
        else:
            relayed = m.RelayedAnswer(from_=user_id, to=to, sdp=message.sdp)
        for rewrite in (*self._rewrites, self.rewrite):
            if rewrite is None:
                continue
            # The network emulator's hook: candidates become relay addresses.
            rewritten = rewrite(user_id, message.to, relayed)
            if rewritten is None:
                return
            relayed = rewritten
        target.deliver(m.encode(relayed))

    @property
    def rewrites(self) -> tuple[Rewrite, ...]:
        """The hooks added with :meth:`add_rewrite`, in order."""
        return tuple(self._rewrites)

    def add_rewrite(self, rewrite: Rewrite) -> Callable[[], None]:
        """Pass every relayed offer, answer and candidate through ``rewrite`` (in the
        order added; ``None`` drops the message).  Returns the function that removes it.
        """
        self._rewrites.append(rewrite)

        def remove() -> None:
            if rewrite in self._rewrites:
                self._rewrites.remove(rewrite)

        return remove

    def _bad_target(self, member: Member, user_id: str, to: str, kind: str) -> ProtocolError:
        if to == user_id:
            return ProtocolError("invalid-target", f'cannot send "{kind}" to oneself ("{to}")')
        return ProtocolError(
            "unknown-peer",
            f'cannot send "{kind}" to "{to}": no such user in room "{member.room_id}"',
        )

    def _join(self, member: Member, message: m.Join) -> None:
        room_id, user_id = message.roomId, message.userId
        if member.user_id is not None:
            raise ProtocolError(
                "already-joined",
                f'cannot join room "{room_id}" as "{user_id}": this connection is already '
                f'in room "{member.room_id}" as "{member.user_id}"',
            )
        if self.admit is not None:
            self.admit(member, room_id, user_id)
        away = self._away.get(user_id)
        if away is not None:
            if away.room_id == room_id:
                self._resume(away, member)
                return
            # Back in another room: it has left the old one for good.
            self.expire(away)
        if user_id in self._users:
            raise ProtocolError(
                "user-id-taken",
                f'cannot join room "{room_id}" as "{user_id}": that user id is connected',
            )
        room = self._rooms.get(room_id)
        if room is not None and len(room) >= self.max_room_size:
            raise ProtocolError(
                "room-full",
                f'cannot join room "{room_id}" as "{user_id}": '
                f"the room is full ({self.max_room_size} members)",
            )
        if room is None:
            room = self._rooms[room_id] = {}
        existing = list(room)
        member.user_id, member.room_id = user_id, room_id
        self._users[user_id] = member
        member.deliver(m.encode(m.RoomJoined(peers=existing, roomId=room_id, userId=user_id)))
        if existing:
            data = m.encode(m.PeerJoined(peerId=user_id))
            for other in room.values():
                other.deliver(data)
        room[user_id] = member
        logger.debug('"%s" joined room "%s" (%d members)', user_id, room_id, len(room))

    def _resume(self, away: Member, member: Member) -> None:
        """``member`` takes the place of the held ``away`` one: to the others, nothing
        happened (no peer-left, no peer-joined), so their sessions with it go on."""
        user_id, room_id = away.user_id, away.room_id
        assert user_id is not None and room_id is not None
        del self._away[user_id]
        away.user_id = away.room_id = None
        member.user_id, member.room_id = user_id, room_id
        self._users[user_id] = member
        room = self._rooms[room_id]
        room[user_id] = member
        existing = [other for other in room if other != user_id]
        member.deliver(m.encode(m.RoomJoined(peers=existing, roomId=room_id, userId=user_id)))
        logger.debug('"%s" resumed in room "%s"', user_id, room_id)

    def _remove(self, member: Member) -> None:
        user_id, room_id = member.user_id, member.room_id
        assert user_id is not None and room_id is not None
        member.user_id = member.room_id = None
        if self._users.get(user_id) is member:
            del self._users[user_id]
        room = self._rooms.get(room_id)
        if room is None:
            return
        room.pop(user_id, None)
        if not room:
            del self._rooms[room_id]
            return
        data = m.encode(m.PeerLeft(peerId=user_id))
        for other in room.values():
            other.deliver(data)
        logger.debug('"%s" left room "%s"', user_id, room_id)


def _type_of(message: m.ClientMessage) -> str:
    return type(message).__struct_config__.tag  # type: ignore[return-value]
