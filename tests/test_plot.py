"""Plots: each returns a Figure with the expected panels, and refuses what it cannot draw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from webrtclab import STATS_COLUMNS, ConfigurationError, plot_timeline
from webrtclab.plot import plot_cdf


def _stats() -> pd.DataFrame:
    rows = []
    for t in np.arange(0.5, 5.0, 0.5):
        for direction in ("send", "recv"):
            rows.append(
                (
                    t,
                    "alice",
                    "bob",
                    direction,
                    "video",
                    400.0,
                    40.0 if direction == "send" else np.nan,
                    0.0,
                    1.0,
                    15.0,
                    "host",
                    int(t * 100),
                    0,
                    int(t * 5e4),
                    int(t * 15),
                )
            )
    return pd.DataFrame(rows, columns=STATS_COLUMNS)


def test_timeline_has_three_panels_and_saves_a_png(tmp_path: Path) -> None:
    path = tmp_path / "timeline.png"
    fig = plot_timeline(_stats(), path, title="t")
    assert len(fig.axes) == 3
    assert path.read_bytes().startswith(b"\x89PNG")


def test_cdf_takes_dataframes_and_reaches_one() -> None:
    fast = pd.DataFrame({"latency_ms": [10.0, 20.0, 30.0, np.nan]})
    slow = pd.DataFrame({"latency_ms": [50.0, 60.0]})
    fig = plot_cdf({"fast": fast, "slow": slow})
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.lines] == ["fast", "slow"]
    for line in ax.lines:
        assert line.get_ydata()[-1] == 1.0  # NaN dropped, the CDF ends at 1
    assert list(ax.lines[0].get_xdata()) == [10.0, 20.0, 30.0]


def test_cdf_refuses_a_missing_column() -> None:
    with pytest.raises(ConfigurationError, match="latency_ms"):
        plot_cdf({"x": pd.DataFrame({"other": [1.0]})})
