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
from ..lab import TURN_NODE, Lab
from ..netem.conditions import LinkConditions
from ..netem.relay import Network
from ..quality import QualityMonitor
from ..tables import StatsRow
from .results import Result, ResultWriter, load
from .scenario import Scenario, load_scenario
from .summary import summarize

__all__ = ["run", "run_scenario"]

logger = logging.getLogger(__name__)


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
    status, error = "failed", None
    tasks: list[asyncio.Task[None]] = []
    try:
        async with lab:
            for spec in scenario.peers:
                await lab.add_peer(
                    spec.name, media=spec.media, congestion_control=spec.congestion_control
                )
            await lab.wait_connected()
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
