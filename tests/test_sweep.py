"""Sweeps: grids, local process pools and a real local Dask cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from webrtclab import ConfigurationError
from webrtclab.experiment import Scenario, load
from webrtclab.experiment.summary import SUMMARY_METRICS
from webrtclab.experiment.sweep import grid_points, parse_grid, sweep

BASE = {
    "name": "tiny",
    "duration_s": 3,
    "stats_interval_s": 0.25,
    "peers": [
        {"name": "alice", "width": 160, "height": 120, "fps": 10},
        {"name": "bob", "width": 160, "height": 120, "fps": 10},
    ],
    "traffic": {"cursor_rate_hz": 0, "chat_interval_s": 0},
}


def test_parse_grid_and_points() -> None:
    grid = parse_grid(["link.loss=0,0.02", "link.delay_ms=20,80", "quality.psnr_every=true"])
    assert grid == {"link.loss": [0, 0.02], "link.delay_ms": [20, 80], "quality.psnr_every": [True]}
    points = grid_points({"a": [1, 2], "b": ["x", "y"]})
    assert points == [
        {"a": 1, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": 2, "b": "x"},
        {"a": 2, "b": "y"},
    ]


@pytest.mark.parametrize(
    ("items", "message"),
    [(["link.loss"], "key=v1,v2"), (["=1"], "key=v1,v2"), (["a=1", "a=2"], "given twice")],
)
def test_bad_grids_are_refused(items: list[str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_grid(items)


def test_bad_grid_values_are_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="loss"):
        sweep(Scenario.from_mapping(BASE), {"link.loss": [0, 3]}, tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()
    with pytest.raises(ConfigurationError, match="workers"):
        sweep(Scenario.from_mapping(BASE), {"link.loss": [0]}, tmp_path / "s", workers=0)


def check_summary(out: Path, summary: pd.DataFrame) -> None:
    assert list(summary.columns) == [
        "run",
        "path",
        "status",
        "error",
        "link.delay_ms",
        *SUMMARY_METRICS,
    ]
    assert list(summary["status"]) == ["completed", "completed"]
    assert list(summary["link.delay_ms"]) == [10, 60]
    # RTT follows the grid: twice the one-way delay, give or take the stack.
    rtt = list(summary["rtt_ms_median"])
    assert 15 <= rtt[0] <= 45 and 110 <= rtt[1] <= 150, rtt
    on_disk = pd.read_parquet(out / "summary.parquet")
    pd.testing.assert_frame_equal(on_disk, summary)
    assert (out / "summary.csv").exists()
    for path in summary["path"]:
        assert load(path).status == "completed"


def test_local_sweep_in_processes(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    summary = sweep(
        Scenario.from_mapping(BASE), {"link.delay_ms": [10, 60]}, out, workers=2, progress=False
    )
    check_summary(out, summary)
    # Started again, a sweep skips the runs that completed (resume after a crash).
    again = sweep(
        Scenario.from_mapping(BASE), {"link.delay_ms": [10, 60]}, out, workers=2, progress=False
    )
    pd.testing.assert_frame_equal(again, summary)


def test_sweep_on_a_local_dask_cluster(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    out = tmp_path / "sweep"
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        summary = sweep(
            Scenario.from_mapping(BASE),
            {"link.delay_ms": [10, 60]},
            out,
            scheduler=cluster.scheduler_address,
            progress=False,
        )
    check_summary(out, summary)


def test_cli_sweep(tmp_path: Path) -> None:
    toml = tmp_path / "s.toml"
    toml.write_text(
        'duration_s = 1.5\n[[peers]]\nname = "a"\nwidth = 160\nheight = 120\nfps = 10\n'
        '[[peers]]\nname = "b"\nwidth = 160\nheight = 120\nfps = 10\n'
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "webrtclab.cli",
            "sweep",
            str(toml),
            "--grid",
            "link.loss=0,0.05",
            "--out",
            str(tmp_path / "o"),
            "--workers",
            "2",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "link.loss" in proc.stdout and "completed" in proc.stdout
    summary = pd.read_csv(tmp_path / "o" / "summary.csv")
    assert list(summary["link.loss"]) == [0, 0.05]
