"""The negotiation state machine: each branch, with no sockets (webrtclab.negotiation).

Two peers' machines are also wired back to back (a fake room that delivers the
offers, answers and connection states they decide) to check the rules end to end:
whatever happens, exactly one of them offers.
"""

from __future__ import annotations

import pytest

from webrtclab.negotiation import (
    MAX_EARLY_CANDIDATES,
    Action,
    AddCandidate,
    Answer,
    ApplyAnswer,
    CancelOffer,
    Log,
    Negotiator,
    Offer,
    Retire,
    ScheduleOffer,
    SettleLoss,
)


def kinds(actions: list[Action]) -> list[str]:
    return [type(a).__name__ for a in actions]


def logs(actions: list[Action]) -> list[tuple[str, str]]:
    return [(a.event, a.detail) for a in actions if isinstance(a, Log)]


def connected(n: Negotiator, remote: str) -> None:
    """Bring the current session with ``remote`` to connected (offered or answered)."""
    session = n.sessions[remote]
    if session.offering:
        n.answer_received(remote, "answer")
    assert n.session_state(remote, session.generation, "connected") == []


# --- first contact --------------------------------------------------------------------------


def test_the_newcomer_offers_to_every_member() -> None:
    n = Negotiator("carol")
    actions = n.join(["alice", "bob"])
    assert [(type(a).__name__, a.remote) for a in actions] == [
        ("Offer", "alice"),
        ("Offer", "bob"),
    ]
    offers = [a for a in actions if isinstance(a, Offer)]
    assert offers[0].generation != offers[1].generation
    assert n.roster == {"alice", "bob"} and n.joined


def test_a_member_waits_for_the_newcomers_offer_and_answers_it() -> None:
    n = Negotiator("alice")
    n.join([])
    assert n.peer_joined("bob") == [Log("bob", "peer-joined")]  # first contact: bob offers
    actions = n.offer_received("bob", "offer-sdp")
    assert kinds(actions) == ["Answer"]
    answer = actions[0]
    assert isinstance(answer, Answer) and answer.sdp == "offer-sdp" and answer.candidates == ()
    assert n.usable("bob") is True  # described; "new" is not failed


def test_an_answer_applies_to_our_outstanding_offer() -> None:
    n = Negotiator("bob")
    n.join(["alice"])
    assert n.answer_received("alice", "answer-sdp") == [ApplyAnswer("alice", "answer-sdp")]
    # A second answer has no offer to answer: stale.
    assert n.answer_received("alice", "again") == [Log("alice", "stale-answer")]
    # An answer from someone we never offered to is ignored.
    assert n.answer_received("mallory", "x") == []


# --- glare ----------------------------------------------------------------------------------


def test_glare_the_lower_id_keeps_its_offer() -> None:
    low = Negotiator("alice")
    low.join(["bob"])  # alice's offer is out
    assert low.offer_received("bob", "bob-offer") == [Log("bob", "offer-collision", "kept ours")]
    assert low.sessions["bob"].offering  # still waiting for bob's answer


def test_glare_the_higher_id_takes_theirs() -> None:
    high = Negotiator("bob")
    high.join(["alice"])
    ours = high.sessions["alice"].generation
    actions = high.offer_received("alice", "alice-offer")
    assert logs(actions) == [("offer-collision", "took theirs")]
    assert kinds(actions) == ["Log", "Retire", "Answer"]
    assert high.sessions["alice"].generation != ours
    # The answer to our withdrawn offer, if alice sends one, is stale.
    assert high.answer_received("alice", "late") == [Log("alice", "stale-answer")]


def test_a_new_offer_from_a_connected_remote_replaces_the_session() -> None:
    n = Negotiator("bob")
    n.join([])
    n.offer_received("alice", "first")
    connected(n, "alice")
    actions = n.offer_received("alice", "restarted")
    assert kinds(actions) == ["Retire", "Answer"]


# --- early candidates -----------------------------------------------------------------------


def test_candidates_before_the_offer_go_to_the_session_it_creates() -> None:
    n = Negotiator("alice")
    n.join([])
    assert n.candidate_received("bob", "c1") == []
    assert n.candidate_received("bob", "c2") == []
    answer = n.offer_received("bob", "offer")[-1]
    assert isinstance(answer, Answer) and answer.candidates == ("c1", "c2")
    # After the offer, candidates go straight to the session.
    assert n.candidate_received("bob", "c3") == [AddCandidate("bob", "c3")]
    assert "bob" not in n.early


def test_early_candidates_are_bounded_and_dropped_when_the_remote_leaves() -> None:
    n = Negotiator("alice")
    n.join(["bob"])
    for i in range(MAX_EARLY_CANDIDATES + 10):
        n.candidate_received("mallory", i)
    assert len(n.early["mallory"]) == MAX_EARLY_CANDIDATES
    n.peer_left("mallory")
    assert "mallory" not in n.early


# --- re-establishment -----------------------------------------------------------------------


def test_a_lost_session_settles_then_the_lower_id_re_offers() -> None:
    n = Negotiator("alice", retry_delay=lambda attempt: 0.5 * attempt)
    n.join(["bob"])
    connected(n, "bob")
    generation = n.sessions["bob"].generation
    lost = n.session_state("bob", generation, "failed")
    assert lost == [Log("bob", "connection-lost", "failed"), SettleLoss("bob", generation)]
    settled = n.loss_settled("bob", generation)
    assert kinds(settled) == ["Retire", "ScheduleOffer", "Log"]
    assert ScheduleOffer("bob", 0.0) in settled  # the first attempt at once
    assert logs(settled) == [("reestablish", "will offer")]
    assert n.known("bob") and "bob" not in n.sessions
    first = n.offer_due("bob")
    assert logs(first) == [("reestablish", "offer (attempt 1)")] and kinds(first)[-1] == "Offer"
    # That one fails too: the next offer backs off.
    retry = n.sessions["bob"].generation
    n.session_state("bob", retry, "failed")
    assert ScheduleOffer("bob", 0.5) in n.loss_settled("bob", retry)
    second = n.offer_due("bob")
    assert logs(second) == [("reestablish", "offer (attempt 2)")]
    # Connected again: the attempts start over.
    connected(n, "bob")
    assert n.attempts == {}


def test_the_higher_id_waits_for_the_offer_after_a_loss() -> None:
    n = Negotiator("bob")
    n.join([])
    n.offer_received("alice", "offer")
    generation = n.sessions["alice"].generation
    n.session_state("alice", generation, "connected")
    n.session_state("alice", generation, "closed")  # alice closed her side
    settled = n.loss_settled("alice", generation)
    assert kinds(settled) == ["Retire", "Log"]
    assert logs(settled) == [("reestablish", "waiting for an offer")]
    assert kinds(n.offer_received("alice", "new offer")) == ["Answer"]


def test_sessions_we_close_or_replace_are_not_lost() -> None:
    n = Negotiator("alice")
    n.join(["bob"])
    old = n.sessions["bob"].generation
    assert n.session_state("bob", old, "closed", closed_by_us=True) == []
    n.peer_left("bob")
    # The retired session's last state is ignored.
    assert n.session_state("bob", old, "failed") == []


def test_a_loss_settled_after_the_remote_left_does_nothing() -> None:
    n = Negotiator("alice")
    n.join(["bob"])
    connected(n, "bob")
    generation = n.sessions["bob"].generation
    n.session_state("bob", generation, "failed")
    assert kinds(n.peer_left("bob")) == ["Log", "Retire"]
    assert n.loss_settled("bob", generation) == []


def test_no_reestablishment_when_turned_off() -> None:
    n = Negotiator("alice", reestablish=False)
    n.join(["bob"])
    connected(n, "bob")
    assert n.session_state("bob", n.sessions["bob"].generation, "failed") == []
    n.peer_left("bob")
    assert not n.known("bob")


def test_a_scheduled_offer_waits_for_the_room() -> None:
    n = Negotiator("alice")
    n.join(["bob"])
    connected(n, "bob")
    generation = n.sessions["bob"].generation
    n.session_state("bob", generation, "failed")
    n.loss_settled("bob", generation)
    n.signaling_closed()
    assert n.offer_due("bob") == []  # not in the room: the re-join offers
    n.rejoin(["carol"])
    assert n.offer_due("bob") == []  # bob is not there
    assert n.known("bob")


def test_a_known_remote_that_rejoins_is_offered_to_by_the_lower_id() -> None:
    n = Negotiator("alice")
    n.join(["bob"])
    connected(n, "bob")
    generation = n.sessions["bob"].generation
    assert kinds(n.peer_left("bob")) == ["Log", "Retire"]
    # bob comes back (say, after a restart of his process): ours to offer.
    assert n.peer_joined("bob") == [Log("bob", "peer-joined"), ScheduleOffer("bob", 0.0)]
    assert kinds(n.offer_due("bob"))[-1] == "Offer"
    assert n.sessions["bob"].generation != generation
    # The other way round, the higher id waits.
    m = Negotiator("zed")
    m.join(["bob"])
    connected(m, "bob")
    m.peer_left("bob")
    assert m.peer_joined("bob") == [Log("bob", "peer-joined")]


def test_an_offer_cancels_the_scheduled_one() -> None:
    n = Negotiator("alice")
    n.join(["bob"])
    connected(n, "bob")
    n.peer_left("bob")
    n.peer_joined("bob")  # an offer is scheduled
    actions = n.offer_received("bob", "bob was faster")
    assert CancelOffer("bob") in actions and "bob" not in n.timers


def test_a_connected_remote_whose_signaling_returns_keeps_its_session() -> None:
    n = Negotiator("alice")
    n.join(["bob"])
    connected(n, "bob")
    assert n.peer_joined("bob") == [
        Log("bob", "peer-joined"),
        Log("bob", "session-kept", "connected"),
    ]


def test_rejoin_keeps_usable_sessions_and_reoffers_or_waits_for_the_others() -> None:
    n = Negotiator("bob")
    n.join(["alice", "carol", "dave"])
    for remote in ("alice", "carol", "dave"):
        connected(n, remote)
    for remote in ("alice", "carol"):
        generation = n.sessions[remote].generation
        n.session_state(remote, generation, "failed")
        n.loss_settled(remote, generation)
    n.signaling_closed()
    actions = n.rejoin(["alice", "carol", "dave", "erin"])
    by_remote = {r: [a for a in actions if a.remote == r] for r in ("alice", "carol", "dave")}
    # alice < bob: alice re-offers; bob waits.
    assert logs(by_remote["alice"]) == [("reestablish", "waiting for an offer")]
    # bob < carol: ours; the scheduled offer is replaced by one now.
    assert kinds(by_remote["carol"]) == ["CancelOffer", "Log", "Offer"]
    assert logs(by_remote["dave"]) == [("session-kept", "connected")]
    # erin joined while we were away: a first contact, the newcomer (us) offers.
    assert kinds([a for a in actions if a.remote == "erin"]) == ["Log", "Offer"]


def test_an_offer_that_cannot_be_sent_is_retried_at_the_rejoin() -> None:
    n = Negotiator("alice")
    n.join(["bob"])
    assert n.offer_failed("bob") == [Retire("bob")]
    assert n.known("bob")
    assert kinds(n.rejoin(["bob"])) == ["Log", "Offer"]


# --- two machines back to back ----------------------------------------------------------------


class Room:
    """Delivers what two negotiators decide to each other, like signaling and ICE would."""

    def __init__(self, a: str, b: str) -> None:
        self.peers = {a: Negotiator(a), b: Negotiator(b)}
        self.offers: list[str] = []  # who sent each offer

    def run(self, who: str, actions: list[Action]) -> None:
        (other,) = set(self.peers) - {who}
        for action in actions:
            if isinstance(action, Offer):
                self.offers.append(who)
                self.run(other, self.peers[other].offer_received(who, f"offer {who}"))
            elif isinstance(action, Answer):
                self.run(other, self.peers[other].answer_received(who, f"answer {who}"))
                for side, remote in ((who, other), (other, who)):
                    session = self.peers[side].sessions.get(remote)
                    if session is not None:
                        self.peers[side].session_state(remote, session.generation, "connected")
            elif isinstance(action, ScheduleOffer):
                self.run(who, self.peers[who].offer_due(action.remote))
            elif isinstance(action, SettleLoss):
                self.run(who, self.peers[who].loss_settled(action.remote, action.generation))

    def fail(self) -> None:
        """Both ends see the connection fail (before either settles)."""
        decided = []
        for who, n in self.peers.items():
            (remote,) = n.sessions
            decided.append((who, n.session_state(remote, n.sessions[remote].generation, "failed")))
        for who, actions in decided:
            self.run(who, actions)


@pytest.mark.parametrize("newcomer", ["alice", "bob"])
def test_two_machines_connect_and_reestablish_with_one_offer_each_time(newcomer: str) -> None:
    room = Room("alice", "bob")
    other = "bob" if newcomer == "alice" else "alice"
    room.run(other, room.peers[other].join([]))
    room.run(other, room.peers[other].peer_joined(newcomer))
    room.run(newcomer, room.peers[newcomer].join([other]))
    assert room.offers == [newcomer]  # the seed: the newcomer offers
    assert all(n.usable(r) for n, r in ((room.peers["alice"], "bob"), (room.peers["bob"], "alice")))
    room.fail()
    assert room.offers == [newcomer, "alice"]  # re-established by the lower id, once
    assert room.peers["alice"].usable("bob") and room.peers["bob"].usable("alice")
