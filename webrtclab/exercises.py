"""Checkers for the notebooks' exercises: a student's prediction against a measured outcome.

Every exercise in ``notebooks/`` follows the same steps: predict, change one setting, run,
check.  The student writes ``PREDICTION = "..."`` (one of a few named outcomes, or
``None`` before deciding), the exercise measures what really happened and names the
outcome (:func:`compare` helps with "higher / about the same / lower"), and
:func:`check_prediction` says whether the two agree::

    verdict = check_prediction(PREDICTION, outcome, choices=("higher", "about the same", "lower"))
    verdict  # shown by the notebook: "Measured outcome: 'higher'. It matches your prediction."

The regression assertions stay in the notebook, next to the measurement they check.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .exceptions import ConfigurationError

__all__ = ["HIGHER_SAME_LOWER", "Verdict", "check_prediction", "compare"]

#: the three outcomes :func:`compare` names
HIGHER_SAME_LOWER = ("higher", "about the same", "lower")


def _normalise(text: str) -> str:
    return " ".join(text.strip().lower().split())


@dataclass(frozen=True)
class Verdict:
    """A prediction, the measured outcome and the possible outcomes."""

    prediction: object
    outcome: str
    choices: tuple[str, ...]

    @property
    def predicted(self) -> str | None:
        """The prediction as one of :attr:`choices` (None if missing or not one of them)."""
        if not isinstance(self.prediction, str):
            return None
        wanted = _normalise(self.prediction)
        return next((c for c in self.choices if _normalise(c) == wanted), None)

    @property
    def matches(self) -> bool:
        """Whether the prediction names the measured outcome."""
        return self.predicted == self.outcome

    @property
    def message(self) -> str:
        """What the notebook shows: the outcome, and whether it matches the prediction."""
        measured = f"Measured outcome: {self.outcome!r}."
        options = ", ".join(repr(c) for c in self.choices)
        if self.prediction is None:
            return (
                f"{measured} No prediction yet: set PREDICTION to one of {options} "
                "before you run the exercise, then compare."
            )
        if self.predicted is None:
            return f"{measured} PREDICTION = {self.prediction!r} is not one of {options}."
        if self.matches:
            return f"{measured} It matches your prediction."
        return (
            f"{measured} It does not match your prediction ({self.predicted!r}): "
            "read the solution below."
        )

    def __str__(self) -> str:
        return self.message

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython's plain-text display: the message."""
        printer.text(self.message)


def check_prediction(prediction: object, outcome: str, *, choices: Sequence[str]) -> Verdict:
    """Compare ``prediction`` with the measured ``outcome`` (one of ``choices``).

    ``prediction`` may be ``None`` (not written yet) or any string; case and extra
    spaces do not matter.  ``outcome`` must be one of ``choices``: it is computed by
    the exercise from a measurement, so anything else is a bug in the exercise.
    """
    options = tuple(choices)
    if len(options) < 2 or len(set(options)) != len(options):
        raise ConfigurationError(f"an exercise needs two or more distinct choices, got {options}")
    if outcome not in options:
        raise ConfigurationError(f"outcome {outcome!r} is not one of the choices {options}")
    return Verdict(prediction=prediction, outcome=outcome, choices=options)


def compare(value: float, reference: float, *, tolerance: float) -> str:
    """``"higher"``, ``"about the same"`` or ``"lower"``: ``value`` against ``reference``.

    Within ``tolerance`` (an absolute difference, in the values' unit) they are about
    the same.  A NaN on either side is an error: an exercise must measure something.
    """
    if not all(math.isfinite(x) for x in (value, reference, tolerance)) or tolerance < 0:
        raise ConfigurationError(
            f"compare needs finite numbers and tolerance >= 0, got value={value!r}, "
            f"reference={reference!r}, tolerance={tolerance!r}"
        )
    if value > reference + tolerance:
        return HIGHER_SAME_LOWER[0]
    if value < reference - tolerance:
        return HIGHER_SAME_LOWER[2]
    return HIGHER_SAME_LOWER[1]
