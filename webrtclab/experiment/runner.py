"""Running a scenario headless into a result folder."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .._tasks import cancel_and_wait
from ..exceptions import WebrtcLabError
from ..lab import TURN_NODE, Lab
from ..netem.conditions import LinkConditions
from ..netem.natbox import NatBox
from ..netem.relay import Network
from ..quality import QualityMonitor
from ..session import PeerSession
from ..tables import EventRow, StatsRow
from .results import Result, ResultWriter, load
from .scenario import Scenario, load_scenario
from .summary import summarize

__all__ = ["IceFailedError", "run", "run_scenario"]

logger = logging.getLogger(__name__)

#: seconds to wait for every pair of peers to connect (plus, behind NATs, how long a
#: failing ICE check takes to give up)
CONNECT_TIMEOUT_S = 15.0
#: after a first ICE failure, how long to wait for the other sessions' ICE to end
SETTLE_S = 2.0


class IceFailedError(WebrtcLabError, ConnectionError):
    """A scenario's peers could not connect: ICE failed (no candidate pair worked)."""


def _check_failure_s(retransmissions: int | None) -> float:
    """How long one ICE check takes to fail: aioice's RTO 0.5 s, doubling, 6 retransmissions
    by default (63.5 s)."""
    count = 6 if retransmissions is None else retransmissions
    return 0.5 * (2 ** (count + 1) - 1)


async def _settled(session: PeerSession) -> None:
    """Until ``session``'s connection has either connected or failed."""
    waits = [
        asyncio.ensure_future(session.connected.wait()),
        asyncio.ensure_future(session.failed.wait()),
    ]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(*waits)


async def _connect(lab: Lab, scenario: Scenario, failures: asyncio.Future[EventRow]) -> None:
    """Wait until every pair of peers is connected; IceFailedError at the first ICE failure.

    ``failures`` gets the first ``ice-failed`` event: a call that cannot connect (peers
    behind NATs that filter each other's checks, with no TURN server) ends the run
    as soon as ICE gives up, with the events that show why, instead of a timeout.
    """
    timeout = CONNECT_TIMEOUT_S
    if any(p.nat is not None for p in scenario.peers):
        timeout += _check_failure_s(scenario.ice_check_retransmissions)
    connected = asyncio.ensure_future(lab.wait_connected(timeout=timeout))
    waiting: list[asyncio.Future[Any]] = [connected, failures]
    try:
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not connected.done():
            await cancel_and_wait(connected)
    if connected.done() and not connected.cancelled():
        connected.result()  # raises the timeout, if that is how it ended
        return
    row = failures.result()
    # The other sides give up within milliseconds: let the events table have them too.
    sessions = [s for peer in lab.peers.values() for s in peer.sessions.values()]
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(SETTLE_S):
            await asyncio.gather(*(_settled(s) for s in sessions))
    behind = [f"{p.name}: {p.nat.name}" for p in scenario.peers if p.nat is not None]
    hint = ""
    if behind and scenario.turn is None:
        hint = f"; the peers are behind NATs ({', '.join(behind)}) and have no TURN server ([turn])"
    raise IceFailedError(
        f"ICE failed between {row.peer} and {row.remote} after {row.detail}: no candidate "
        f"pair worked (the ice-checks events list each pair's outcome){hint}"
    )


def _network(scenario: Scenario) -> Network | None:
    """One relay for the scenario's links: [link] for every pair, a = earlier peer."""
    turn_link = scenario.turn.link if scenario.turn is not None else None
    if scenario.link is None and not scenario.schedules and turn_link is None:
        return None
    a_to_b, b_to_a = scenario.link or (LinkConditions(), LinkConditions())
    network = Network(a_to_b, seed=scenario.seed)
    names = scenario.peer_names
    if turn_link is not None:
        for name in names:
            network.set_conditions(name, TURN_NODE, turn_link[0])
            network.set_conditions(TURN_NODE, name, turn_link[1])
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            network.set_conditions(a, b, a_to_b)
            network.set_conditions(b, a, b_to_a)
            for key, (src, dst) in (("a_to_b", (a, b)), ("b_to_a", (b, a))):
                if key in scenario.schedules:
                    network.set_schedule(src, dst, scenario.schedules[key])
    return network


async def _every(interval: float, action: Callable[[int], Awaitable[None] | None]) -> None:
    loop = asyncio.get_running_loop()
    next_at, tick = loop.time(), 0
    while True:
        result = action(tick)
        if result is not None:
            await result
        tick += 1
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - loop.time()))


def _live_summary(rows: list[StatsRow]) -> str:
    """RTT, receive bitrate and video frame rate of one stats sample, for a progress bar."""
    rtts = [r.rtt_ms for r in rows if r.direction == "send"]
    recv = [r for r in rows if r.direction == "recv"]
    rates = [r.bitrate_kbps for r in recv]
    fps = [r.frames_per_s for r in recv if r.kind == "video"]

    def mean(values: list[float]) -> float:
        finite = [v for v in values if v is not None and math.isfinite(v)]
        return sum(finite) / len(finite) if finite else math.nan

    total = sum(v for v in rates if v is not None and math.isfinite(v))
    return f"RTT {mean(rtts):.0f} ms, in {total:.0f} kbit/s, {mean(fps):.1f} fps"


async def run_scenario(
    scenario: Scenario,
    out: str | Path,
    *,
    progress: bool = True,
    overwrite: bool = False,
) -> Result:
    """Run ``scenario`` and write its result folder; returns it loaded.

    Every sample is journaled as it is taken, so an exception, a cancellation
    (Ctrl-C) or even SIGKILL leaves a loadable folder; ``metadata.json`` says how
    the run ended.
    """
    writer = ResultWriter(out, scenario.data, seed=scenario.seed, overwrite=overwrite)
    turn = scenario.turn
    lab = Lab(
        stats_interval=scenario.stats_interval_s,
        network=_network(scenario),
        turn=turn is not None,
        relay_only=turn is not None and turn.relay_only,
        ice_check_retransmissions=scenario.ice_check_retransmissions,
        seed=scenario.seed,
    )
    quality = QualityMonitor(lab, psnr_every=scenario.psnr_every, freeze_ms=scenario.freeze_ms)
    sampler = lab.sampler
    for feed in (sampler.stats, sampler.rtt, sampler.links, lab.event_log):
        writer.follow(feed)
    writer.follow(quality.frames)
    writer.follow(quality.messages)
    latest: list[list[StatsRow]] = [[]]  # the last sample's rows, for the progress bar

    def on_stats(rows: list[StatsRow]) -> None:
        latest[0] = rows
        # Journal quality rows at every sample too, so a SIGKILL loses no more of them.
        quality.flush()

    sampler.stats.subscribe(on_stats)
    failures: asyncio.Future[EventRow] = asyncio.get_running_loop().create_future()

    def on_events(rows: list[EventRow]) -> None:
        for row in rows:
            if row.event == "ice-failed" and not failures.done():
                failures.set_result(row)

    lab.event_log.subscribe(on_events)
    followed: list[NatBox] = []  # the NAT boxes whose rows are journaled

    def follow_nat_boxes() -> None:
        # A peer's box comes with it: its rows so far (the box may be shared and
        # older), then every later one.
        for box in lab.nat_boxes:
            if box not in followed:
                followed.append(box)
                writer.append("nat_bindings", list(box.rows.rows))
                writer.follow(box.rows)

    status, error = "failed", None
    tasks: list[asyncio.Task[None]] = []
    try:
        async with lab:
            for spec in scenario.peers:
                await lab.add_peer(
                    spec.name,
                    media=spec.media,
                    congestion_control=spec.congestion_control,
                    nat=spec.nat,
                    access_link=spec.access_link,
                )
                follow_nat_boxes()
            await _connect(lab, scenario, failures)
            lab.event_log.add("", "", "call-start", scenario.name)
            start = lab.clock.now()
            for record in scenario.records:
                peer = lab.peers[record.peer]
                remotes = [record.remote] if record.remote else list(peer.sessions)
                for remote in remotes:
                    path = Path(out) / f"recording-{record.peer}-from-{remote}.{record.format}"
                    await peer.record(remote, path)
            names = scenario.peer_names
            if scenario.chat_interval_s:

                async def chat(tick: int) -> None:
                    for name in names:
                        peer = lab.peers[name]
                        for session in list(peer.sessions.values()):
                            if session.chat is not None and session.chat.readyState == "open":
                                await session.send_chat(f"{name} {tick}")

                tasks.append(asyncio.create_task(_every(scenario.chat_interval_s, chat)))
            if scenario.cursor_rate_hz:

                async def cursor(tick: int) -> None:
                    for name in names:
                        await lab.peers[name].send_cursor(tick % 640, (tick * 7) % 480)

                tasks.append(asyncio.create_task(_every(1 / scenario.cursor_rate_hz, cursor)))
            for switch in scenario.switches:

                async def do_switch(s: Any = switch) -> None:
                    await asyncio.sleep(max(0.0, start + s.at_s - lab.clock.now()))
                    await lab.peers[s.peer].switch_video(s.source)

                tasks.append(asyncio.create_task(do_switch()))
            with tqdm(
                total=scenario.duration_s,
                unit="s",
                # On a terminal only (None: tqdm's own isatty check): a log or a pipe
                # gets nothing extra.
                disable=None if progress else True,
                desc=scenario.name,
                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s {postfix}",
            ) as bar:
                while (elapsed := lab.clock.now() - start) < scenario.duration_s:
                    await asyncio.sleep(min(0.5, scenario.duration_s - elapsed))
                    bar.n = min(scenario.duration_s, lab.clock.now() - start)
                    bar.set_postfix_str(_live_summary(latest[0]), refresh=False)
                    bar.refresh()
                    for task in tasks:
                        if task.done() and task.exception() is not None:
                            raise task.exception()  # type: ignore[misc]
            await cancel_and_wait(*tasks)
            lab.event_log.add("", "", "call-end", scenario.name)
        status = "completed"
    except (asyncio.CancelledError, KeyboardInterrupt):
        status = "interrupted"
        raise
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        with contextlib.suppress(Exception):
            await cancel_and_wait(*tasks)
        quality.close()
        await lab.close()
        summary = {}
        try:
            summary = summarize(writer.result())
        except Exception:  # a summary must never cost the measurements
            logger.exception("cannot summarise the run")
        writer.finish(status, error=error, summary=summary)
    return load(out)


def run(
    scenario: Scenario | str | Path,
    out: str | Path,
    *,
    progress: bool = True,
    overwrite: bool = False,
) -> Result:
    """Run a scenario (object or TOML path) to completion from synchronous code."""
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    return asyncio.run(run_scenario(scenario, out, progress=progress, overwrite=overwrite))
