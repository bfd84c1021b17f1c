"""Evaluation in one call: 3 estimators x 3 traces, interrupted and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from webrtclab.bwe import EVALUATION_METRICS, evaluate

ESTIMATORS = [
    "gcc",
    "estimator:fixed:400000",
    "estimator:webrtclab.bwe.builtin:ReceiveRateEstimator",
]
TRACES = ["step-down", "lte-like", "3g-like"]
OPTIONS = {"duration_s": 3.0, "workers": 2, "progress": False}


def completed(out: Path) -> dict[str, float]:
    """Finished cells: run folder -> the mtime of its metadata.json."""
    found = {}
    for meta in out.glob("run-*/metadata.json"):
        if json.loads(meta.read_text()).get("status") == "completed":
            found[meta.parent.name] = meta.stat().st_mtime
    return found


def test_evaluation_resumes_after_an_interruption(tmp_path: Path) -> None:
    out = tmp_path / "evaluation"
    code = (
        "from webrtclab.bwe import evaluate\n"
        f"evaluate({ESTIMATORS!r}, {TRACES!r}, {str(out)!r}, **{OPTIONS!r})\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while len(completed(out)) < 2 and time.monotonic() < deadline:
            assert process.poll() is None, "the evaluation ended before it was interrupted"
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the sweep's worker processes too
        process.wait()
    before = completed(out)
    assert 2 <= len(before) < 9, before
    table = evaluate(ESTIMATORS, TRACES, out, **OPTIONS)  # type: ignore[arg-type]
    after = completed(out)
    # The cells finished before the interruption were read back, not run again.
    assert {name: after[name] for name in before} == before
    assert len(after) == 9
    assert list(table.columns) == ["estimator", "trace", "status", "run", *EVALUATION_METRICS]
    assert len(table) == 9 and set(table["status"]) == {"completed"}
    assert set(table["estimator"]) == set(ESTIMATORS) and set(table["trace"]) == set(TRACES)
    assert table["goodput_kbps"].gt(0).all() and table["capacity_kbps"].gt(0).all()
    pd.testing.assert_frame_equal(pd.read_parquet(out / "evaluation.parquet"), table)
    assert (out / "evaluation.png").stat().st_size > 10_000
