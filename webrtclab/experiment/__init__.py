"""Experiments: scenarios, crash-safe result folders, summaries (and sweeps over them)."""

from .results import Result, ResultWriter, load
from .runner import run, run_scenario
from .scenario import PeerSpec, Scenario, load_scenario
from .summary import SUMMARY_METRICS, summarize

__all__ = [
    "SUMMARY_METRICS",
    "PeerSpec",
    "Result",
    "ResultWriter",
    "Scenario",
    "load",
    "load_scenario",
    "run",
    "run_scenario",
    "summarize",
]
