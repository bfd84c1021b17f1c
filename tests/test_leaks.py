"""Resource leaks: many calls set up and torn down (one in four through the network
emulator), many signaling restarts survived.

Open file descriptors (``/proc/self/fd``), threads and asyncio tasks must come back to
their baseline.  The baseline is taken after warm-up calls, which load codecs and start
what lives for the whole process (asyncio's default executor threads, aioice's and
aiortc's module-level state).  Slack: none for descriptors and tasks; threads of the
default executor (``asyncio_N``, at most ``min(32, cores + 4)``) are not counted, since
the executor keeps them for the process's lifetime once started.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from dataclasses import dataclass

import pytest

from webrtclab import Backoff, Lab, MediaSpec, PeerSession
from webrtclab.netem import LinkConditions

TINY = MediaSpec(width=64, height=48, fps=30, seed=1)
CALLS = 100
RESTARTS = 20


@dataclass(frozen=True)
class Usage:
    fds: int
    threads: int
    tasks: int

    def __str__(self) -> str:
        return f"{self.fds} fds, {self.threads} threads, {self.tasks} tasks"


def usage() -> Usage:
    gc.collect()  # closes sockets and files only garbage still holds
    threads = [t for t in threading.enumerate() if not t.name.startswith("asyncio_")]
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    return Usage(len(os.listdir("/proc/self/fd")), len(threads), len(tasks))


async def back_to(baseline: Usage, timeout: float = 10.0) -> Usage:
    """The usage once it is back at ``baseline`` (aiortc ends some tasks a moment after
    close); fails the test with what is left if it does not get there in time."""
    deadline = time.monotonic() + timeout
    while True:
        now = usage()
        if now.fds <= baseline.fds and now.threads <= baseline.threads and now.tasks == 0:
            return now
        if time.monotonic() > deadline:
            left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            pytest.fail(f"baseline {baseline}, after: {now}; tasks left: {left[:10]}")
        await asyncio.sleep(0.1)


def frames(session: PeerSession) -> int:
    return session.counters[("recv", "video")].frames


async def one_call(link: bool = False) -> None:
    """A short call: two peers connect and each decodes a video frame from the other;
    with ``link``, through the network emulator (its relay thread and sockets)."""
    async with Lab(stats_interval=0.1, link=LinkConditions() if link else None) as lab:
        alice = await lab.add_peer("alice", media=TINY)
        bob = await lab.add_peer("bob", media=TINY, echo_chat=True)
        await lab.wait_connected()
        a, b = alice.sessions["bob"], bob.sessions["alice"]
        async with asyncio.timeout(10):
            while frames(a) < 1 or frames(b) < 1:
                await asyncio.sleep(0.01)


async def test_hundred_calls_leave_no_descriptors_threads_or_tasks() -> None:
    for i in range(3):
        await one_call(link=i == 2)
    baseline = await back_to(Usage(fds=1 << 20, threads=1 << 20, tasks=0))  # tasks ended
    started = time.monotonic()
    peak = baseline
    for i in range(CALLS):
        await one_call(link=i % 4 == 3)
        if i % 25 == 24:
            peak = max(peak, usage(), key=lambda u: u.fds)
    elapsed = time.monotonic() - started
    after = await back_to(baseline)
    print(f"{CALLS} calls in {elapsed:.1f} s; baseline {baseline}; peak {peak}; after {after}")  # noqa: T201


async def test_signaling_restarts_leave_no_descriptors_threads_or_tasks() -> None:
    fast = Backoff(initial_s=0.02, max_s=0.1, jitter=0.5)
    async with Lab(reconnect=fast) as lab:
        alice = await lab.add_peer("alice", media=TINY)
        bob = await lab.add_peer("bob", media=TINY)
        await lab.wait_connected()
        await lab.restart_server()  # warm-up: the first restart starts what stays
        async with asyncio.timeout(10):
            while alice.reconnects < 1 or bob.reconnects < 1:
                await asyncio.sleep(0.01)
        session = alice.sessions["bob"]
        baseline = usage()
        for n in range(2, RESTARTS + 2):
            server = await lab.restart_server()
            async with asyncio.timeout(10):
                while alice.reconnects < n or bob.reconnects < n:
                    await asyncio.sleep(0.01)
            assert sorted(server.dispatcher.roster("lab")) == ["alice", "bob"]
        assert alice.sessions["bob"] is session and session.state == "connected"
        # The call is still up: compare with the same call before the restarts (its
        # transient tasks, a getStats round for one, may need a moment to end).
        deadline = time.monotonic() + 5
        while True:
            now = usage()
            if (
                now.fds <= baseline.fds
                and now.threads <= baseline.threads
                and now.tasks <= baseline.tasks
            ):
                break
            assert time.monotonic() < deadline, f"before {baseline}, after {now}"
            await asyncio.sleep(0.05)
        print(f"{RESTARTS} restarts; before {baseline}; after {now}")  # noqa: T201
