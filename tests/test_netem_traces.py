"""Mahimahi traces: parsing, opportunity arithmetic, the shipped traces and their generator."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from webrtclab.exceptions import ConfigurationError
from webrtclab.netem import LinkConditions
from webrtclab.netem.traces import (
    MTU_BYTES,
    SHIPPED_TRACES,
    TRACES_DIR,
    Trace,
    load_trace,
    trace_from_rates,
    write_trace,
)

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str, name: str = "t.trace") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="ascii")
    return path


# --- arithmetic ----------------------------------------------------------------------------


def test_opportunities_repeat_with_the_last_timestamp_as_period() -> None:
    trace = Trace((1, 1, 3, 5))
    assert trace.period_ms == 5
    assert trace.mean_rate_kbps == pytest.approx(4 * MTU_BYTES * 8 / 5)
    # Half-open intervals; the second repetition is shifted by the period (6, 6, 8, 10).
    assert trace.opportunities_between(0, 5) == 3
    assert trace.opportunities_between(0, 5.0001) == 4
    assert trace.opportunities_between(5, 10) == 4
    assert trace.opportunities_between(0, 10) == 7
    assert trace.opportunities_between(6, 7) == 2
    assert trace.opportunities_between(0, 5000) == 4000 - 1
    assert [trace.time_ms(i) for i in range(9)] == [1, 1, 3, 5, 6, 6, 8, 10, 11]


def test_index_at_or_after_agrees_with_time_ms() -> None:
    trace = Trace((0, 2, 2, 7, 9, 9))
    rng = random.Random(1)
    points = [rng.uniform(0, 100) for _ in range(2000)] + [float(t) for t in range(100)]
    for t in points:
        index = trace.index_at_or_after(t)
        assert trace.time_ms(index) >= t
        if index > 0:
            assert trace.time_ms(index - 1) < t, t


def test_rate_between_and_interval_errors() -> None:
    trace = trace_from_rates([1200.0], step_ms=1000)
    # 1200 bits per ms is one 12000-bit opportunity every 10 ms.
    assert len(trace.timestamps_ms) == 100
    assert trace.period_ms == 1000
    assert trace.mean_rate_kbps == pytest.approx(1200.0)
    assert trace.rate_kbps_between(0, 1000) == pytest.approx(1188.0)  # 1000 ms is excluded
    assert trace.rate_kbps_between(1, 1001) == pytest.approx(1200.0)
    with pytest.raises(ConfigurationError, match=r"\[10, 5\)"):
        trace.opportunities_between(10, 5)
    with pytest.raises(ConfigurationError, match="empty"):
        trace.rate_kbps_between(5, 5)


def test_trace_repr_is_short() -> None:
    trace = load_trace("lte-like")
    assert len(repr(trace)) < 150
    assert "lte-like" in repr(trace)


# --- files ---------------------------------------------------------------------------------


def test_write_and_load_round_trip(tmp_path: Path) -> None:
    trace = Trace((3, 3, 10, 12, 40), name="x")
    path = tmp_path / "x.trace"
    write_trace(trace, path)
    assert path.read_text() == "3\n3\n10\n12\n40\n"
    assert load_trace(path) == trace
    assert load_trace(str(path)).name == "x"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("1\n2\nabc\n", r"line 3: 'abc' is not an integer"),
        ("1\n2.5\n", r"line 2: '2.5' is not an integer"),
        ("1\n-4\n", r"line 2: '-4' is not an integer >= 0"),
        ("1\n\n3\n", r"line 2: '' is not an integer"),
        ("5\n7\n6\n", r"line 3: timestamp 6 is before the previous line's 7"),
        ("0\n0\n", "the last timestamp is 0"),
    ],
)
def test_bad_trace_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigurationError, match=message):
        load_trace(path)
    with pytest.raises(ConfigurationError, match=message):
        LinkConditions(trace=str(path))


def test_missing_trace_lists_the_shipped_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist.*3g-like, lte-like, step-down"):
        load_trace(tmp_path / "nope.trace")
    with pytest.raises(ConfigurationError, match="'5g-like' does not exist"):
        load_trace("5g-like")


def test_shipped_traces_load_by_name_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lte-like").mkdir()  # a folder of that name is not a trace file
    assert load_trace("lte-like") == load_trace(TRACES_DIR / "lte-like.trace")
    # A file wins over the shipped name.
    (tmp_path / "step-down").write_text("5\n10\n", encoding="ascii")
    assert load_trace("step-down").period_ms == 10


def test_trace_objects_are_validated() -> None:
    with pytest.raises(ConfigurationError, match="no delivery opportunities"):
        Trace(())
    with pytest.raises(ConfigurationError, match="timestamp 2 at index 1 is before"):
        Trace((3, 2, 4))
    with pytest.raises(ConfigurationError, match="timestamp -1 at index 0"):
        Trace((-1, 4))
    with pytest.raises(ConfigurationError, match="period is empty"):
        Trace((0,))


# --- the shipped traces --------------------------------------------------------------------

# Mean rates (kbit/s) stated in the shipped traces' README.md.
DOCUMENTED_MEAN_KBPS = {"step-down": 1250.4, "lte-like": 9235.8, "3g-like": 968.2}


@pytest.mark.parametrize("name", sorted(SHIPPED_TRACES))
def test_shipped_traces_are_small_and_match_their_documentation(name: str) -> None:
    path = TRACES_DIR / f"{name}.trace"
    assert path.stat().st_size < 300_000
    trace = load_trace(name)
    assert trace == load_trace(path)
    assert trace.mean_rate_kbps == pytest.approx(DOCUMENTED_MEAN_KBPS[name], abs=0.05)
    readme = (TRACES_DIR / "README.md").read_text()
    assert f"`{name}.trace`" in readme
    assert f"{DOCUMENTED_MEAN_KBPS[name]:.1f} kbit/s" in readme


def test_step_down_steps_from_2_mbps_to_500_kbps() -> None:
    trace = load_trace("step-down")
    assert trace.period_ms == 20_000
    assert trace.rate_kbps_between(0, 10_000) == pytest.approx(2000, rel=0.001)
    assert trace.rate_kbps_between(10_000, 20_000) == pytest.approx(500, rel=0.005)


def test_lte_and_3g_traces_vary() -> None:
    lte = load_trace("lte-like")
    per_second = [lte.rate_kbps_between(s * 1000, (s + 1) * 1000) for s in range(60)]
    assert lte.period_ms == 60_000
    assert 8_500 < lte.mean_rate_kbps < 10_500
    assert min(per_second) < 0.6 * lte.mean_rate_kbps < lte.mean_rate_kbps * 1.3 < max(per_second)

    umts = load_trace("3g-like")
    assert umts.period_ms == 60_000
    assert 900 < umts.mean_rate_kbps < 1_100
    windows = [umts.opportunities_between(t, t + 100) for t in range(0, 60_000, 100)]
    # Short dips: some 100 ms windows carry nothing at all.
    assert windows.count(0) > 5


def test_generator_module_regenerates_the_shipped_files(tmp_path: Path) -> None:
    # Run as documented, with warnings as errors (runpy warns if the package had
    # imported the module first).
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-m", "webrtclab.netem.traces", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    for name in SHIPPED_TRACES:
        generated = (tmp_path / f"{name}.trace").read_bytes()
        assert generated == (TRACES_DIR / f"{name}.trace").read_bytes(), name
        assert f"{name}.trace" in proc.stdout
