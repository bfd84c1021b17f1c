"""Who offers to whom, and what to do with each signaling message: a pure state machine.

A :class:`Negotiator` holds what a lab peer knows about its sessions (one per
remote member) and decides, for each input (a relayed message, a session's
connection state, a timer), what to do; it returns :class:`Action` values and does
no I/O, so every branch is unit-tested without sockets (like the signaling
server's :class:`~webrtclab.signaling.rooms.Dispatcher`).
:class:`~webrtclab.peer.Peer` feeds it and carries the actions out.

The rules, in the seed's protocol (join / offer / answer / ice-candidate / leave):

- **first contact**: the newcomer offers to every member it finds when it joins;
- **glare**: two offers cross (a re-establishment racing a re-join): the lower
  user id keeps its offer and the other side answers it;
- **stale answers**: an answer that arrives when no offer of ours is outstanding
  (it answers an offer we replaced) is dropped;
- **early candidates**: candidates trickled before their offer are kept (up to
  :data:`MAX_EARLY_CANDIDATES`) and given to the session the offer creates;
- **re-establishment** (aiortc has no ICE restart): a session that fails, or that
  the other side closes, is replaced by a new one after a short settle time (the
  remote may be leaving); of two peers that had a session the lower user id offers,
  again and with back-off until one connects; a remote that re-joins after such a
  loss is offered to (or waited for) by the same rule, a first contact by the seed's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MAX_EARLY_CANDIDATES",
    "Action",
    "AddCandidate",
    "Answer",
    "ApplyAnswer",
    "CancelOffer",
    "Log",
    "Negotiator",
    "Offer",
    "Retire",
    "ScheduleOffer",
    "SettleLoss",
]

# Candidates kept per remote while its offer has not arrived: a hostile remote must
# not grow memory without bound.
MAX_EARLY_CANDIDATES = 64


@dataclass(frozen=True)
class Action:
    """Something the peer must do; ``remote`` is the member it concerns."""

    remote: str


@dataclass(frozen=True)
class Log(Action):
    """Record an event in the lab's events table."""

    event: str
    detail: str = ""


@dataclass(frozen=True)
class Retire(Action):
    """Close the session with ``remote`` and forget it."""


@dataclass(frozen=True)
class Offer(Action):
    """Create session number ``generation`` with ``remote`` and send it an offer."""

    generation: int


@dataclass(frozen=True)
class Answer(Action):
    """Create session number ``generation``, give it ``candidates``, answer ``sdp``."""

    generation: int
    sdp: str
    candidates: tuple[Any, ...] = ()


@dataclass(frozen=True)
class ApplyAnswer(Action):
    """Set ``sdp`` as the remote answer of the current session."""

    sdp: str


@dataclass(frozen=True)
class AddCandidate(Action):
    """Give a trickled candidate to the current session."""

    candidate: Any


@dataclass(frozen=True)
class ScheduleOffer(Action):
    """Call :meth:`Negotiator.offer_due` for ``remote`` after ``delay_s`` (replacing a timer)."""

    delay_s: float


@dataclass(frozen=True)
class CancelOffer(Action):
    """Cancel the scheduled offer to ``remote``, if any."""


@dataclass(frozen=True)
class SettleLoss(Action):
    """Call :meth:`Negotiator.loss_settled` for session ``generation`` after the settle time."""

    generation: int


@dataclass
class _Session:
    generation: int
    offering: bool  # our offer is out, no answer applied yet
    described: bool = False  # the remote description is set
    state: str = "new"  # the connection state last reported

    @property
    def usable(self) -> bool:
        return self.described and self.state not in ("failed", "closed")


@dataclass
class Negotiator:
    """The negotiation state of the peer ``user_id``: inputs in, actions out.

    :param reestablish: replace sessions that are lost (see the module doc).
    :param retry_delay: seconds before re-offer attempt ``n`` (1, 2, ...): back-off.
    """

    user_id: str
    reestablish: bool = True
    retry_delay: Callable[[int], float] = lambda attempt: 0.0
    joined: bool = False
    roster: set[str] = field(default_factory=set)
    sessions: dict[str, _Session] = field(default_factory=dict)
    # Remotes we had a session with that is gone (failed, closed by them, or retired
    # on peer-left): their re-join, or ours, is not a first contact.
    lost: set[str] = field(default_factory=set)
    attempts: dict[str, int] = field(default_factory=dict)  # re-offers since connected
    timers: set[str] = field(default_factory=set)  # remotes with an offer scheduled
    early: dict[str, list[Any]] = field(default_factory=dict)
    _generation: int = 0

    # --- queries -------------------------------------------------------------------------

    def offers_to(self, remote: str) -> bool:
        """Whether a re-established session with ``remote`` is ours to offer.

        The lower user id: unlike "the side that offered first", both sides know
        this even when one has forgotten the session (it retired it on a peer-left,
        or its process restarted).
        """
        return self.user_id < remote

    def known(self, remote: str) -> bool:
        """Whether we had a session with ``remote`` (so its join is not a first contact)."""
        session = self.sessions.get(remote)
        return remote in self.lost or (session is not None and not session.usable)

    def usable(self, remote: str) -> bool:
        session = self.sessions.get(remote)
        return session is not None and session.usable

    # --- room membership -----------------------------------------------------------------

    def join(self, existing: list[str]) -> list[Action]:
        """We joined the room: offer to every member (the seed's newcomer offers)."""
        self.joined = True
        self.roster = set(existing)
        actions: list[Action] = []
        for remote in existing:
            actions += self._offer(remote)
        return actions

    def signaling_closed(self) -> list[Action]:
        """The signaling socket closed; sessions go on, offers wait for the re-join."""
        self.joined = False
        return []

    def rejoin(self, existing: list[str]) -> list[Action]:
        """We are back in the room after a reconnection: reconcile sessions with it."""
        self.joined = True
        self.roster = set(existing)
        actions: list[Action] = []
        for remote in existing:
            session = self.sessions.get(remote)
            if session is not None and session.usable:
                actions.append(Log(remote, "session-kept", session.state))
            elif self.known(remote) and not self.offers_to(remote):
                actions.append(Log(remote, "reestablish", "waiting for an offer"))
            else:
                # A first contact (the seed's newcomer offers), or ours to re-offer.
                self.lost.discard(remote)
                actions += self._cancel_timer(remote)
                actions.append(Log(remote, "reestablish", "offer after re-join"))
                actions += self._offer(remote)
        return actions

    def peer_joined(self, remote: str) -> list[Action]:
        actions: list[Action] = [Log(remote, "peer-joined")]
        self.roster.add(remote)
        kept = self.sessions.get(remote)
        if kept is not None and kept.usable:
            # Its signaling came back (a server restart); the media never left.
            actions.append(Log(remote, "session-kept", kept.state))
        elif self.known(remote) and self.offers_to(remote):
            actions += self._schedule(remote)
        return actions

    def peer_left(self, remote: str) -> list[Action]:
        actions: list[Action] = [Log(remote, "peer-left")]
        self.roster.discard(remote)
        self.attempts.pop(remote, None)
        actions += self._cancel_timer(remote)
        self.early.pop(remote, None)
        if self.sessions.pop(remote, None) is not None:
            if self.reestablish:
                self.lost.add(remote)
            actions.append(Retire(remote))
        return actions

    # --- relayed messages ----------------------------------------------------------------

    def offer_received(self, remote: str, sdp: str) -> list[Action]:
        actions: list[Action] = []
        old = self.sessions.get(remote)
        if old is not None and old.offering:
            # Both offered: the lower user id keeps its offer, the other answers it.
            if self.user_id < remote:
                return [Log(remote, "offer-collision", "kept ours")]
            actions.append(Log(remote, "offer-collision", "took theirs"))
        if old is not None:
            # A new offer from a known peer means it restarted: start over.
            actions.append(Retire(remote))
        self.lost.discard(remote)
        actions += self._cancel_timer(remote)
        session = self._new_session(remote, offering=False)
        session.described = True
        candidates = tuple(self.early.pop(remote, ()))
        actions.append(Answer(remote, session.generation, sdp, candidates))
        return actions

    def answer_received(self, remote: str, sdp: str) -> list[Action]:
        session = self.sessions.get(remote)
        if session is None:
            return []
        if not session.offering:
            # An answer to an offer we replaced (a collision, a re-offer): stale.
            return [Log(remote, "stale-answer")]
        session.offering = False
        session.described = True
        return [ApplyAnswer(remote, sdp)]

    def candidate_received(self, remote: str, candidate: Any) -> list[Action]:
        if remote in self.sessions:
            return [AddCandidate(remote, candidate)]
        # Trickled ahead of the offer it belongs to: keep it for that session.
        early = self.early.setdefault(remote, [])
        if len(early) < MAX_EARLY_CANDIDATES:
            early.append(candidate)
        return []

    # --- sessions and timers -------------------------------------------------------------

    def session_state(
        self, remote: str, generation: int, state: str, *, closed_by_us: bool = False
    ) -> list[Action]:
        """Session ``generation`` with ``remote`` reports a connection state."""
        session = self.sessions.get(remote)
        if session is None or session.generation != generation:
            return []  # a retired session's last words
        session.state = state
        if state == "connected":
            self.attempts.pop(remote, None)
            return []
        # aiortc reports an expired consent as "closed" as often as "failed"; a remote
        # that closed its side also makes ours "closed".  Either way the session is
        # dead unless we closed it.
        lost = state == "failed" or (state == "closed" and not closed_by_us)
        if not (lost and self.reestablish):
            return []
        # A remote that is leaving closes its connections right after its "leave":
        # give the peer-left a moment to arrive, so that we do not offer to it.
        return [Log(remote, "connection-lost", state), SettleLoss(remote, generation)]

    def loss_settled(self, remote: str, generation: int) -> list[Action]:
        """The settle time after a lost session is over: replace it."""
        session = self.sessions.get(remote)
        if session is None or session.generation != generation:
            return []  # replaced or retired meanwhile
        del self.sessions[remote]
        self.lost.add(remote)
        actions: list[Action] = [Retire(remote)]
        ours = self.offers_to(remote)
        if ours:
            actions += self._schedule(remote)
        actions.append(Log(remote, "reestablish", "will offer" if ours else "waiting for an offer"))
        return actions

    def offer_due(self, remote: str) -> list[Action]:
        """A scheduled re-offer's time has come."""
        self.timers.discard(remote)
        if not self.joined or remote not in self.roster or not self.known(remote):
            return []  # a re-join or peer-joined will try again
        attempt = self.attempts[remote] = self.attempts.get(remote, 0) + 1
        self.lost.discard(remote)
        return [Log(remote, "reestablish", f"offer (attempt {attempt})"), *self._offer(remote)]

    def offer_failed(self, remote: str) -> list[Action]:
        """Sending an offer failed (the socket went away meanwhile): the re-join offers."""
        self.sessions.pop(remote, None)
        self.lost.add(remote)
        return [Retire(remote)]

    # --- internals -----------------------------------------------------------------------

    def _new_session(self, remote: str, *, offering: bool) -> _Session:
        self._generation += 1
        session = self.sessions[remote] = _Session(self._generation, offering)
        return session

    def _offer(self, remote: str) -> list[Action]:
        actions: list[Action] = [Retire(remote)] if remote in self.sessions else []
        session = self._new_session(remote, offering=True)
        return [*actions, Offer(remote, session.generation)]

    def _schedule(self, remote: str) -> list[Action]:
        attempt = self.attempts.get(remote, 0)
        self.timers.add(remote)
        return [ScheduleOffer(remote, self.retry_delay(attempt) if attempt else 0.0)]

    def _cancel_timer(self, remote: str) -> list[Action]:
        if remote not in self.timers:
            return []
        self.timers.discard(remote)
        return [CancelOffer(remote)]
