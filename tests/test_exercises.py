"""webrtclab.exercises: the notebooks' prediction checkers."""

from __future__ import annotations

import math

import pytest
from IPython.lib.pretty import pretty

from webrtclab.exceptions import ConfigurationError
from webrtclab.exercises import HIGHER_SAME_LOWER, Verdict, check_prediction, compare

CHOICES = ("alice", "bob", "both")


def test_a_matching_prediction() -> None:
    verdict = check_prediction("bob", "bob", choices=CHOICES)
    assert verdict == Verdict("bob", "bob", CHOICES)
    assert verdict.matches and verdict.predicted == "bob"
    assert verdict.message == "Measured outcome: 'bob'. It matches your prediction."


def test_case_and_spaces_do_not_matter() -> None:
    verdict = check_prediction("  About   THE same ", "about the same", choices=HIGHER_SAME_LOWER)
    assert verdict.matches and verdict.predicted == "about the same"


def test_a_wrong_prediction_points_to_the_solution() -> None:
    verdict = check_prediction("alice", "both", choices=CHOICES)
    assert not verdict.matches
    assert verdict.message == (
        "Measured outcome: 'both'. It does not match your prediction ('alice'): "
        "read the solution below."
    )


def test_no_prediction_yet() -> None:
    verdict = check_prediction(None, "both", choices=CHOICES)
    assert not verdict.matches and verdict.predicted is None
    assert verdict.message.startswith("Measured outcome: 'both'. No prediction yet")
    assert "'alice', 'bob', 'both'" in verdict.message


@pytest.mark.parametrize("prediction", ["carol", 3, ["bob"]])
def test_a_prediction_that_is_not_a_choice(prediction: object) -> None:
    verdict = check_prediction(prediction, "bob", choices=CHOICES)
    assert not verdict.matches and verdict.predicted is None
    assert f"PREDICTION = {prediction!r} is not one of" in verdict.message


def test_ipython_shows_the_message() -> None:
    verdict = check_prediction("bob", "bob", choices=CHOICES)
    assert pretty(verdict) == str(verdict) == verdict.message


@pytest.mark.parametrize(
    ("outcome", "choices"), [("carol", CHOICES), ("a", ("a",)), ("a", ("a", "a"))]
)
def test_an_outcome_outside_the_choices_is_a_bug(outcome: str, choices: tuple[str, ...]) -> None:
    with pytest.raises(ConfigurationError):
        check_prediction("a", outcome, choices=choices)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(120.0, "higher"), (110.0, "about the same"), (90.0, "about the same"), (89.9, "lower")],
)
def test_compare(value: float, expected: str) -> None:
    assert compare(value, 100.0, tolerance=10.0) == expected


@pytest.mark.parametrize(
    ("value", "reference", "tolerance"),
    [(math.nan, 1.0, 1.0), (1.0, math.inf, 1.0), (1.0, 1.0, -1.0)],
)
def test_compare_refuses_what_is_not_a_measurement(
    value: float, reference: float, tolerance: float
) -> None:
    with pytest.raises(ConfigurationError):
        compare(value, reference, tolerance=tolerance)
