"""The ``webrtclab`` command, run as a real subprocess: demo, serve and the peer bot."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers import wait_until

from webrtclab import STATS_COLUMNS, MediaSpec, Peer, SignalingClient, SignalingServer
from webrtclab.cli import main
from webrtclab.events import EVENT_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
SUMMARY_KEYS = {
    "connect_s",
    "rtt_ms_median",
    "video_recv_kbps_median",
    "audio_recv_kbps_median",
    "video_fps_median",
    "loss_fraction_mean",
    "frame_latency_ms_p50",
    "psnr_db_mean",
    "chat_delivered",
}


def _env() -> dict[str, str]:
    """The test's environment, with this checkout first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webrtclab.cli", *args],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextlib.asynccontextmanager
async def spawn(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """A ``webrtclab`` subprocess, killed (and reaped) on the way out if still running."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "webrtclab.cli",
        *args,
        cwd=ROOT,
        env=_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()


async def read_line(proc: asyncio.subprocess.Process, timeout: float = 20) -> str:
    assert proc.stdout is not None
    async with asyncio.timeout(timeout):
        line = await proc.stdout.readline()
    if not line:
        _, err = await proc.communicate()
        pytest.fail(f"process exited ({proc.returncode}) without output: {err.decode()}")
    return line.decode().strip()


async def stop(proc: asyncio.subprocess.Process, timeout: float = 15) -> tuple[int, str, str]:
    """SIGTERM the process and wait for it; return (exit code, stdout rest, stderr)."""
    proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(timeout):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# --- demo ---------------------------------------------------------------------------------------


def test_demo_writes_results_and_prints_a_summary(tmp_path: Path) -> None:
    out = tmp_path / "result"
    proc = run_cli("demo", "--out", str(out), "--duration", "2", "--no-progress")
    assert proc.returncode == 0, proc.stderr

    summary, end = json.JSONDecoder().raw_decode(proc.stdout.lstrip())
    assert set(summary) == SUMMARY_KEYS
    assert 0 < summary["connect_s"] < 10
    assert summary["chat_delivered"] >= 1
    assert summary["frame_latency_ms_p50"] > 40  # the demo link's one-way delay, and more
    assert 60 <= summary["rtt_ms_median"] <= 130
    assert summary["video_fps_median"] > 0
    assert summary["video_recv_kbps_median"] > 0
    assert summary["audio_recv_kbps_median"] > 0
    assert 0 <= summary["loss_fraction_mean"] <= 1
    assert "results in" in proc.stdout.lstrip()[end:]

    for name in ("stats.parquet", "stats.csv", "events.csv", "timeline.png", "metadata.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    stats = pd.read_parquet(out / "stats.parquet")
    assert list(stats.columns) == STATS_COLUMNS
    assert set(stats["peer"]) == {"alice", "bob"}
    assert set(stats["direction"]) == {"send", "recv"}
    assert set(stats["kind"]) == {"audio", "video"}
    csv = pd.read_csv(out / "stats.csv")
    assert list(csv.columns) == STATS_COLUMNS
    assert len(csv) == len(stats)
    events = pd.read_csv(out / "events.csv")
    assert list(events.columns) == EVENT_COLUMNS
    assert ((events["event"] == "connection-state") & (events["detail"] == "connected")).any()


@pytest.mark.parametrize("duration", ["0", "0.5", "-3", "nan"])
def test_demo_bad_duration_exits_2_and_writes_nothing(tmp_path: Path, duration: str) -> None:
    out = tmp_path / "result"
    proc = run_cli("demo", "--out", str(out), "--duration", duration, "--no-progress")
    assert proc.returncode == 2
    assert "webrtclab demo: error:" in proc.stderr
    assert "duration" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert not out.exists()


def test_demo_out_is_a_file_exits_2(tmp_path: Path) -> None:
    out = tmp_path / "taken"
    out.write_text("x")
    proc = run_cli("demo", "--out", str(out), "--duration", "1", "--no-progress")
    assert proc.returncode == 2
    assert "not a directory" in proc.stderr
    assert out.read_text() == "x"


# --- argument errors ----------------------------------------------------------------------------

PEER_ARGS = ["peer", "--signal", "ws://127.0.0.1:9/signal", "--room", "r", "--user", "u"]


@pytest.mark.parametrize("size", ["abc", "320", "320x", "x240", "1x2x3", "320x240.5"])
def test_peer_size_must_look_like_wxh(size: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([*PEER_ARGS, "--size", size])
    assert info.value.code == 2
    assert "size must look like 320x240" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["nope"], ["demo"], ["peer", "--room", "r"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage: webrtclab" in capsys.readouterr().err


def test_run_refuses_an_unknown_scenario_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o"
    assert main(["run", "no-such-scenario", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "webrtclab run: error: scenario file 'no-such-scenario' does not exist" in err
    assert "usable by name: 3g-step, demo, turn-relay" in err
    assert not out.exists()


def test_peer_bad_size_value_exits_2_with_a_clear_message() -> None:
    # Parses as WxH but no video can have it: refused before any connection is tried.
    proc = run_cli(*PEER_ARGS, "--size", "15x15")
    assert proc.returncode == 2
    assert "webrtclab peer: error:" in proc.stderr
    assert "video size must be even and at least 16x16, got 15x15" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_argparse_size_error_as_subprocess() -> None:
    proc = run_cli(*PEER_ARGS, "--size", "big")
    assert proc.returncode == 2
    assert "argument --size: size must look like 320x240, got 'big'" in proc.stderr


# --- serve --------------------------------------------------------------------------------------


async def test_serve_prints_its_url_and_stops_on_sigterm() -> None:
    async with spawn("serve", "--port", "0") as proc:
        line = await read_line(proc)
        match = re.fullmatch(
            r"webrtclab signaling server on (ws://127\.0\.0\.1:(\d+)/signal)", line
        )
        assert match, line
        url, port = match.group(1), int(match.group(2))
        assert port > 0
        async with SignalingClient(url) as client:
            assert await client.join("room", "alice") == []
        async with SignalingClient(url) as client:
            assert await client.join("room", "bob") == []  # alice left when she closed
        code, _, err = await stop(proc)
        assert code == 0, err


# --- the peer bot -------------------------------------------------------------------------------


async def test_peer_bot_echoes_chat_and_sends_video() -> None:
    async with SignalingServer() as server:
        async with spawn(
            "peer",
            "--signal",
            server.url,
            "--room",
            "r",
            "--user",
            "bot",
            "--loopback-only",
            "--size",
            "160x120",
            "--duration",
            "30",
        ) as bot:
            assert await read_line(bot) == "bot joined room 'r' with nobody"
            assert server.dispatcher.rooms() == {"r": ["bot"]}

            me = Peer("me", media=MediaSpec(width=160, height=120))
            echoes: asyncio.Queue[Any] = asyncio.Queue()
            me.on(
                "message",
                lambda remote, label, payload: (
                    echoes.put_nowait((remote, payload)) if label == "chat" else None
                ),
            )
            async with me:
                assert await me.join(server.url, "r") == ["bot"]
                [session] = await me.wait_connected(1, timeout=15)
                assert session.remote == "bot" and session.initiator
                chat = session.chat
                await wait_until(lambda: chat is not None and chat.readyState == "open")
                assert await me.send_chat("hi") == 1
                async with asyncio.timeout(10):
                    remote, payload = await echoes.get()
                assert remote == "bot"
                assert payload["echo"] is True
                assert payload["text"] == "hi"
                assert payload["from"] == "bot"
                await wait_until(lambda: session.counters[("recv", "video")].frames > 0)
                await wait_until(lambda: session.counters[("recv", "audio")].frames > 0)
                frame = session.last_video_frame
                assert frame is not None and (frame.width, frame.height) == (160, 120)

            code, _, err = await stop(bot)
            assert code == 0, err
        await wait_until(lambda: server.dispatcher.rooms() == {})


# --- known bugs in the demo summary ----------------------------------------------------------


def _short_call_result(tmp_path: Path) -> Any:
    """The DemoResult of a 1 s call sampled every 0.5 s (rows at 0.5 s and 1.0 s only)."""
    from webrtclab.demo import DemoResult
    from webrtclab.tables import STATS

    rows = [
        (t, peer, remote, direction, kind, 100.0, rtt, 0.0, 1.0, fps, "host", 10, 0, 1000, 10)
        + (float("nan"),) * 4  # target, rtx, wire, estimate
        for t in (0.5, 1.0)
        for peer, remote in (("alice", "bob"), ("bob", "alice"))
        for direction, rtt in (("send", 1.0), ("recv", float("nan")))
        for kind, fps in (("audio", 50.0), ("video", 15.0))
    ]
    events = pd.DataFrame(columns=EVENT_COLUMNS)
    return DemoResult(tmp_path, STATS.frame(rows), events, 1, 0.05)


def test_demo_summary_of_a_short_call_is_not_all_nan(tmp_path: Path) -> None:
    summary = _short_call_result(tmp_path).summary()
    assert summary["video_fps_median"] == 15.0
    assert summary["rtt_ms_median"] == 1.0


async def test_demo_prints_strict_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    import webrtclab.demo
    from webrtclab import cli

    result = _short_call_result(tmp_path)
    result.stats = result.stats.iloc[0:0]  # nothing measured at all: no number to report

    async def fake_run_demo(*args: Any, **kwargs: Any) -> Any:
        return result

    monkeypatch.setattr(webrtclab.demo, "run_demo", fake_run_demo)
    await cli._demo(argparse.Namespace(out=str(tmp_path), duration=1.0, no_progress=True))
    out = capsys.readouterr().out

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    summary, _ = json.JSONDecoder(parse_constant=refuse).raw_decode(out.lstrip())
    assert set(summary) == SUMMARY_KEYS


# --- progress -----------------------------------------------------------------------------------


def test_demo_shows_a_live_progress_bar_on_a_terminal_only(tmp_path: Path) -> None:
    # On a terminal (a pseudo-terminal here): the bar with the call's live RTT, receive
    # bitrate and frame rate.  Piped: nothing but the summary.
    import fcntl
    import pty
    import struct
    import termios

    main, child = pty.openpty()
    # A terminal 120 columns wide (a fresh pseudo-terminal has none: tqdm draws nothing).
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "webrtclab.cli", "demo", "--out", str(tmp_path / "tty")]
            + ["--duration", "3"],
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=child,
            timeout=90,
            check=False,
        )
        os.close(child)
        child = -1
        shown = b""
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the pseudo-terminal's other side is closed: all read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if child >= 0:
            os.close(child)
        os.close(main)
    assert proc.returncode == 0, shown.decode(errors="replace")
    text = shown.decode(errors="replace")
    assert re.search(r"RTT \d+ ms, in \d+ kbit/s, [\d.]+ fps", text), text
    assert "3/3 s" in text, text

    piped = run_cli("demo", "--out", str(tmp_path / "piped"), "--duration", "2", timeout=90)
    assert piped.returncode == 0, piped.stderr
    assert "kbit/s" not in piped.stderr and "RTT" not in piped.stderr, piped.stderr


def test_live_summary_of_one_sample() -> None:
    from webrtclab.experiment.runner import _live_summary
    from webrtclab.tables import StatsRow

    def row(direction: str, kind: str, rtt: float, kbps: float, fps: float) -> StatsRow:
        # NaN in every column, strings and counts included: a row of any shape will do.
        values: dict[str, Any] = dict.fromkeys(STATS_COLUMNS, math.nan)
        values.update(direction=direction, kind=kind, rtt_ms=rtt, bitrate_kbps=kbps)
        values["frames_per_s"] = fps
        return StatsRow(**values)

    rows = [
        row("send", "video", 50.0, 500.0, 15.0),
        row("send", "audio", 70.0, 30.0, math.nan),
        row("recv", "video", math.nan, 480.0, 14.0),
        row("recv", "audio", math.nan, 32.0, math.nan),
    ]
    assert _live_summary(rows) == "RTT 60 ms, in 512 kbit/s, 14.0 fps"
    assert _live_summary([]) == "RTT nan ms, in 0 kbit/s, nan fps"
