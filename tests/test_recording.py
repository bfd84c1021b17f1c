"""Recording received media: playable files however the call ends, no frames stolen."""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
import pytest
from helpers import wait_until as wait_for

from webrtclab import ConfigurationError, Lab, MediaSpec, Peer, Recorder

SMALL = MediaSpec(width=160, height=120, fps=10)


async def start_call(lab: Lab, *names: str) -> list[Peer]:
    peers = [await lab.add_peer(name, media=SMALL) for name in names]
    await lab.wait_connected()
    # Tracks exist from the offer on; wait for decoded video so recordings start at once.
    for peer in peers:
        for session in peer.sessions.values():
            counter = session.counters[("recv", "video")]
            await wait_for(lambda c=counter: c.frames >= 1)  # type: ignore[misc]
    return peers


def probe(path: Path) -> tuple[list[tuple[str, str | None]], float, int]:
    """(kind, title) per stream, duration in seconds, decoded video frames."""
    with av.open(str(path)) as container:
        streams: list[tuple[str, str | None]]
        streams = [(s.type, s.metadata.get("title")) for s in container.streams]
        duration = (container.duration or 0) / av.time_base
        frames = sum(1 for _ in container.decode(video=0))
    return streams, duration, frames


async def test_recording_a_call_without_stealing_frames(tmp_path: Path) -> None:
    async with Lab() as lab:
        _, bob = await start_call(lab, "alice", "bob")
        session = bob.sessions["alice"]
        counted: list[int] = []  # the consumer's view: frames its listeners saw
        bob.frame_listeners.append(
            lambda s, kind, frame: counted.append(1) if kind == "video" else None
        )
        # Two recorders of the same track, in two containers, at once.
        mkv = await bob.record("alice", tmp_path / "call.mkv")
        webm = await bob.record("alice", tmp_path / "call.webm", kinds=["video"])
        assert bob.recorders == {mkv, webm} and mkv.recording
        before = session.counters[("recv", "video")].frames
        await asyncio.sleep(2)
        await mkv.stop()
        await webm.stop()
        during = session.counters[("recv", "video")].frames - before
        await mkv.stop()  # idempotent
        assert bob.recorders == set() and not mkv.recording
    # Each subscriber got every frame: the recorders as many as the consumer
    # (give or take the frame in flight at start and stop).
    assert during >= 15
    assert abs(mkv.frames["alice/video"] - during) <= 2
    assert abs(webm.frames["alice/video"] - during) <= 2
    assert len(counted) >= during
    assert mkv.errors == [] and webm.errors == []

    streams, duration, frames = probe(tmp_path / "call.mkv")
    assert sorted(streams) == [("audio", "alice/audio"), ("video", "alice/video")]
    assert 1.5 < duration < 3.5
    assert frames == mkv.frames["alice/video"]
    streams, duration, frames = probe(tmp_path / "call.webm")
    assert streams == [("video", "alice/video")] and duration > 1.5 and frames >= 15


async def test_recording_every_remote_into_one_mp4(tmp_path: Path) -> None:
    async with Lab() as lab:
        alice, _, _ = await start_call(lab, "alice", "bob", "carol")
        recorder = await alice.record(None, tmp_path / "all.mp4")
        await asyncio.sleep(1.5)
        # alice closing stops (and finalises) her recordings.
        await alice.close()
        assert not recorder.recording and alice.recorders == set()
    streams, duration, frames = probe(tmp_path / "all.mp4")
    assert sorted(kind for kind, _ in streams) == ["audio", "audio", "video", "video"]
    assert duration > 1 and frames >= 10
    assert set(recorder.frames) == {"bob/audio", "bob/video", "carol/audio", "carol/video"}


async def test_recording_is_finalised_when_the_call_task_is_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "cancelled.mkv"
    recording = asyncio.Event()

    async def call() -> None:
        async with Lab() as lab:
            _, bob = await start_call(lab, "alice", "bob")
            await bob.record("alice", path)
            recording.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(call())
    async with asyncio.timeout(15):
        await recording.wait()
    await asyncio.sleep(2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    streams, duration, frames = probe(path)
    assert len(streams) == 2 and duration > 1.5 and frames >= 15


async def test_recording_is_finalised_when_the_call_fails(tmp_path: Path) -> None:
    path = tmp_path / "failed.mkv"
    with pytest.raises(RuntimeError, match="experiment failed"):
        async with Lab() as lab:
            _, bob = await start_call(lab, "alice", "bob")
            await bob.record("alice", path, kinds=["video"])
            await asyncio.sleep(1.0)
            raise RuntimeError("experiment failed")
    streams, duration, frames = probe(path)
    assert streams == [("video", "alice/video")] and duration > 0.5 and frames >= 8


async def test_record_refusals(tmp_path: Path) -> None:
    async with Lab() as lab:
        alice = await lab.add_peer("alice", media=MediaSpec(video="none", audio="none"))
        bob = await lab.add_peer("bob", media=SMALL)
        await lab.wait_connected()
        with pytest.raises(ConfigurationError, match="no audio or video"):
            await bob.record("alice", tmp_path / "x.mkv")  # alice sends nothing
        with pytest.raises(ConfigurationError, match="no session"):
            await bob.record("nobody", tmp_path / "x.mkv")
        with pytest.raises(ConfigurationError, match=r"\.mkv"):
            await alice.record("bob", tmp_path / "x.avi")
        with pytest.raises(ConfigurationError, match="encoder"):
            await alice.record("bob", tmp_path / "x.mkv", video_codec="no-such-codec")
        with pytest.raises(ConfigurationError, match="cannot write"):
            await alice.record("bob", tmp_path / "missing" / "x.mkv")
        assert alice.recorders == set() and bob.recorders == set()
    with pytest.raises(ConfigurationError, match="no tracks"):
        Recorder(tmp_path / "x.mkv", [])
