"""Plots: each returns a Figure with the expected panels, and refuses what it cannot draw."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from jupyter_client.manager import start_new_kernel

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
                    *[np.nan] * 4,  # target, rtx, wire, estimate
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
        ydata = line.get_ydata()
        assert isinstance(ydata, np.ndarray)  # plot_cdf draws arrays
        assert ydata[-1] == 1.0  # NaN dropped, the CDF ends at 1
    xdata = ax.lines[0].get_xdata()
    assert isinstance(xdata, np.ndarray)
    assert list(xdata) == [10.0, 20.0, 30.0]


def test_cdf_refuses_a_missing_column() -> None:
    with pytest.raises(ConfigurationError, match="latency_ms"):
        plot_cdf({"x": pd.DataFrame({"other": [1.0]})})


# --- display in a Jupyter kernel --------------------------------------------------------


@contextmanager
def _kernel() -> Iterator[Any]:
    """A fresh IPython kernel, as JupyterLab starts it (no MPLBACKEND of ours)."""
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    manager, client = start_new_kernel(kernel_name="python3", startup_timeout=60, env=env)
    try:
        yield client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def _run(client: Any, code: str) -> list[dict[str, Any]]:
    """Execute ``code``; its display_data and execute_result messages' contents."""
    msg_id = client.execute(code)
    outputs: list[dict[str, Any]] = []
    while True:
        msg = client.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "error":
            pytest.fail(f"{code!r} raised:\n" + "\n".join(content["traceback"]))
        if kind in ("display_data", "execute_result"):
            outputs.append(content)
        if kind == "status" and content["execution_state"] == "idle":
            return outputs


def _images(outputs: list[dict[str, Any]]) -> list[str]:
    """The picture MIME types shown, one entry per output that has a picture."""
    return [
        mime for out in outputs for mime in ("image/png", "image/svg+xml") if mime in out["data"]
    ]


LINE_FIGURE = """\
from matplotlib.figure import Figure
fig = Figure(figsize=(3, 2))
fig.subplots().plot([0, 1], [1, 0])
fig"""


def test_a_bare_figure_is_a_picture_in_a_fresh_kernel() -> None:
    with _kernel() as kernel:
        _run(kernel, "import webrtclab.plot")
        (pyplot,) = _run(kernel, "import sys; 'matplotlib.pyplot' in sys.modules")
        assert pyplot["data"]["text/plain"] == "False"  # nothing activated the inline backend
        (result,) = _run(kernel, LINE_FIGURE)
        assert set(result["data"]) == {"text/plain", "image/png"}
        assert base64.b64decode(result["data"]["image/png"]).startswith(b"\x89PNG")
        # plot functions too, and an empty figure stays text (as with IPython's own printer)
        cdf = "webrtclab.plot.plot_cdf({'x': pd.DataFrame({'latency_ms': [1.0, 2.0]})})"
        _run(kernel, "import pandas as pd")
        assert _images(_run(kernel, cdf)) == ["image/png"]
        (empty,) = _run(kernel, "Figure()")
        assert set(empty["data"]) == {"text/plain"}

        # pyplot afterwards (ipykernel's default backend, inline): one picture, not two
        pyplot_cell = "import matplotlib.pyplot as plt\nplt.plot([0, 1]);"
        assert _images(_run(kernel, pyplot_cell)) == ["image/png"]
        assert _images(_run(kernel, "plt.figure(); plt.plot([1, 0]);")) == ["image/png"]
        assert _images(_run(kernel, LINE_FIGURE)) == ["image/png"]


def test_pyplot_first_keeps_its_own_formats() -> None:
    with _kernel() as kernel:
        _run(kernel, "import matplotlib.pyplot as plt\n%matplotlib inline")
        _run(kernel, "import webrtclab.plot")
        assert _images(_run(kernel, "plt.plot([0, 1]);")) == ["image/png"]
        assert _images(_run(kernel, LINE_FIGURE)) == ["image/png"]
        # the user's choice of format wins: SVG only, even with our PNG printer registered
        _run(kernel, "%config InlineBackend.figure_formats = ['svg']")
        (again,) = _run(kernel, "webrtclab._display.register()")  # as after a reload
        assert again["data"]["text/plain"] == "True"
        assert _images(_run(kernel, "plt.plot([0, 1]);")) == ["image/svg+xml"]
        assert _images(_run(kernel, LINE_FIGURE)) == ["image/svg+xml"]
