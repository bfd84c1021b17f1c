"""Running scenarios into result folders: completion, interruption, SIGKILL, refusals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from webrtclab import ConfigurationError
from webrtclab.experiment import Scenario, load, run_scenario
from webrtclab.experiment.results import ResultWriter
from webrtclab.stats import RTT_COLUMNS, STATS_COLUMNS

SMALL_PEERS = [
    {"name": "alice", "width": 160, "height": 120, "fps": 10},
    {"name": "bob", "width": 160, "height": 120, "fps": 10},
]


def scenario(**extra: object) -> Scenario:
    data: dict[str, object] = {
        "name": "t",
        "duration_s": 2,
        "seed": 3,
        "stats_interval_s": 0.25,
        "peers": SMALL_PEERS,
    }
    data.update(extra)
    return Scenario.from_mapping(data)


async def test_run_writes_a_complete_result(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = await run_scenario(scenario(link={"delay_ms": 20}), out, progress=False)
    assert result.status == "completed"
    assert sorted(p.name for p in out.iterdir()) == [
        "browser_stats.parquet",
        "events.parquet",
        "frames.parquet",
        "links.parquet",
        "messages.parquet",
        "metadata.json",
        "nat_bindings.parquet",
        "rtt.parquet",
        "stats.parquet",
    ]  # journals are removed once the Parquet files are final
    meta = result.metadata
    assert meta["seed"] == 3 and meta["scenario"]["link"] == {"delay_ms": 20}
    assert meta["versions"]["aiortc"].startswith("1.16")
    assert meta["ended"] is not None and meta["error"] is None
    assert list(result.stats.columns) == STATS_COLUMNS
    assert {"call-start", "call-end", "connection-state"} <= set(result.events["event"])
    assert not result.links.empty and set(result.links["delay_ms"]) == {20}
    assert not result.frames.empty and not result.messages.empty
    assert result.frames["displayed_frames"].sum() > 0
    summary = result.summary()
    assert summary["displayed_psnr_db_mean"] > 25 and summary["displayed_ssim_mean"] > 0.8
    assert 35 <= summary["rtt_ms_median"] <= 80, summary
    # Connection set-up, from the events: host candidates on loopback, directly.
    assert 0 < summary["connect_s"] < 5 and summary["selected_host"] == 1.0, summary
    assert summary["relayed_fraction"] == 0.0
    assert meta["summary"]["rtt_ms_median"] == pytest.approx(summary["rtt_ms_median"])
    # Every RTCP report's own RTT: 2 x 20 ms plus processing, and no smoothing lag.
    # (In 2 s each sender gets one or two reports: audio's may not have come yet.)
    assert not result.rtt.empty and set(result.rtt["kind"]) <= {"audio", "video"}
    assert 38 <= result.rtt["rtt_ms"].median() <= 60, result.rtt.describe()
    # load() gives the same tables back
    again = load(out)
    pd.testing.assert_frame_equal(again.stats, result.stats)
    pd.testing.assert_frame_equal(again.rtt, result.rtt)


async def test_cancelled_run_is_marked_interrupted_and_keeps_its_samples(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    task = asyncio.create_task(run_scenario(scenario(duration_s=30), out, progress=False))
    # Wait until samples exist, then cancel as Ctrl-C would.
    async with asyncio.timeout(20):
        while not (out / "stats.jsonl").exists() or (out / "stats.jsonl").stat().st_size < 2000:
            await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    result = load(out)
    assert result.status == "interrupted"
    assert len(result.stats) > 0
    assert result.metadata["ended"] is not None


async def test_failed_run_records_the_error(tmp_path: Path) -> None:
    bad = scenario(peers=[{"name": "alice", "video": "/nonexistent.mp4"}, {"name": "bob"}])
    with pytest.raises(ConfigurationError, match="cannot open media file"):
        await run_scenario(bad, tmp_path / "run", progress=False)
    result = load(tmp_path / "run")
    assert result.status == "failed"
    assert "cannot open media file" in result.metadata["error"]


def test_sigkill_mid_run_leaves_every_sample_readable(tmp_path: Path) -> None:
    toml = tmp_path / "long.toml"
    toml.write_text(
        'name = "long"\nduration_s = 60\nstats_interval_s = 0.2\n'
        "[[peers]]\nname = 'alice'\nwidth = 160\nheight = 120\nfps = 10\n"
        "[[peers]]\nname = 'bob'\nwidth = 160\nheight = 120\nfps = 10\n"
    )
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "webrtclab.cli",
            "run",
            str(toml),
            "--out",
            str(out),
            "--no-progress",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        journal = out / "stats.jsonl"
        deadline = time.monotonic() + 30
        # Kill after several sampling rounds (and after a Parquet compaction at 5 s).
        while time.monotonic() < deadline:
            if journal.exists() and journal.read_bytes().count(b"\n") >= 8 * 26:
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        else:
            pytest.fail("the run wrote no samples in 30 s")
        lines_before = journal.read_bytes().count(b"\n")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    lines_after = journal.read_bytes().count(b"\n")
    result = load(out)
    assert result.status == "running"  # it never got to say otherwise
    # Every complete journal line is a row: nothing flushed before the kill is lost.
    assert len(result.stats) == lines_after >= lines_before
    assert list(result.stats.columns) == STATS_COLUMNS
    assert result.stats["time_s"].is_monotonic_increasing
    assert not result.events.empty
    assert not result.frames.empty  # quality rows are journaled at every stats sample


async def test_sigint_to_the_cli_finalises_the_folder(tmp_path: Path) -> None:
    toml = tmp_path / "s.toml"
    toml.write_text("duration_s = 60\n")
    out = tmp_path / "run"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "webrtclab.cli",
        "run",
        str(toml),
        "--out",
        str(out),
        "--no-progress",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        while not (out / "stats.jsonl").exists():
            await asyncio.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    async with asyncio.timeout(30):
        code = await proc.wait()
    assert code == 130
    assert load(out).status == "interrupted"


def test_result_folder_refusals(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not a webrtclab result folder"):
        load(tmp_path)
    (tmp_path / "metadata.json").write_text("{not json")
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        load(tmp_path)
    taken = tmp_path / "taken"
    ResultWriter(taken, {}, seed=0).finish("completed")
    with pytest.raises(ConfigurationError, match="already holds a result"):
        ResultWriter(taken, {}, seed=0)
    assert json.loads((taken / "metadata.json").read_text())["status"] == "completed"
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(ConfigurationError, match="not a directory"):
        ResultWriter(file, {}, seed=0)
    writer = ResultWriter(tmp_path / "w", {}, seed=0)
    with pytest.raises(ConfigurationError, match="unknown result table"):
        writer.append("nope", [(1,)])
    writer.finish("completed")


def test_torn_journal_line_is_ignored(tmp_path: Path) -> None:
    writer = ResultWriter(tmp_path / "r", {}, seed=0, compact_every_s=3600)
    nan = float("nan")
    row: tuple[object, ...]
    row = (0.5, "a", "b", "recv", "video", 100.0, nan, 0.0, 1.0, 15.0, "host", 1, 0, 10, 2)
    row += (nan, nan, nan, nan)  # target, rtx, wire, estimate
    writer.append("stats", [row, row])
    writer.finish("interrupted")  # journals stay: the status is not "completed"
    with (tmp_path / "r" / "stats.jsonl").open("ab") as f:
        f.write(b'[0.7, "a", "b", "re')  # the process died mid-write
    result = load(tmp_path / "r")
    assert len(result.stats) == 2
    assert pd.isna(result.stats["rtt_ms"]).all()


def test_cli_run_refuses_bad_scenarios(tmp_path: Path) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text("duration_s = -1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "webrtclab.cli", "run", str(toml), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "duration_s" in proc.stderr
    assert not (tmp_path / "o").exists()


async def test_run_with_switch_and_recording(tmp_path: Path) -> None:
    import av

    out = tmp_path / "run"
    result = await run_scenario(
        scenario(
            duration_s=2.5,
            switch=[{"at_s": 1.0, "peer": "alice", "source": "screen"}],
            record=[{"peer": "bob", "remote": "alice"}],
        ),
        out,
        progress=False,
    )
    assert result.status == "completed"
    switches = result.events[result.events["event"] == "source-switch"]
    assert list(switches["peer"]) == ["alice"] and "screen" in switches["detail"].iloc[0]
    # frames from alice keep arriving (and their stamps decode) after the switch
    switched_at = float(switches["time_s"].iloc[0])
    after = result.frames[
        (result.frames["remote"] == "alice") & (result.frames["time_s"] > switched_at + 0.3)
    ]
    assert len(after) >= 5 and after["latency_ms"].notna().all()
    assert [p.name for p in result.recordings] == ["recording-bob-from-alice.mkv"]
    with av.open(str(result.recordings[0])) as container:
        assert len(container.streams.video) == 1
        assert sum(1 for _ in container.decode(video=0)) >= 10


async def test_folders_from_before_the_rtt_table_still_load(tmp_path: Path) -> None:
    out = tmp_path / "run"
    await run_scenario(scenario(duration_s=1.0), out, progress=False)
    (out / "rtt.parquet").unlink()  # as written by webrtclab before the table existed
    assert not (out / "rtt.jsonl").exists()
    result = load(out)
    assert result.rtt.empty and list(result.rtt.columns) == RTT_COLUMNS
    assert not result.stats.empty
