"""A real browser runs the seed's client code and calls the ``webrtclab peer`` bot.

Headless Debian Chromium (driven by Playwright's Python API) loads
``tests/assets/seed_client.html`` from a static server on 127.0.0.1, joins room
``r`` through an in-process :class:`SignalingServer` where the bot (a
``webrtclab peer`` subprocess) is waiting, and offers to it as the seed's
newcomer does.  Everything is on loopback: the page gets no ICE servers,
Chromium is allowed loopback candidates, and the bot gathers and accepts
loopback candidates only.

The module is skipped when /usr/bin/chromium is missing, except in CI (``CI``
set), where a missing browser is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest_asyncio
from aiohttp import web
from helpers import require_system

from webrtclab import SignalingServer
from webrtclab.browser import CHROMIUM_PATH, Chromium
from webrtclab.netem import LinkConditions
from webrtclab.netem.relay import Network
from webrtclab.sdp import is_loopback

CHROMIUM = CHROMIUM_PATH
require_system(CHROMIUM, "chromium", "the browser test")

from playwright.async_api import Browser, Page  # noqa: E402

ASSETS = Path(__file__).parent / "assets"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
ROOM, BOT, USER = "r", "bot", "browser"
BOT_SIZE = (320, 240)  # the bot's default --size
WAIT_MS = 15_000  # upper bound for one browser-side condition


# --- fixtures -----------------------------------------------------------------------------


@pytest_asyncio.fixture
async def signaling() -> AsyncIterator[SignalingServer]:
    async with SignalingServer("127.0.0.1", 0) as server:
        yield server


@pytest_asyncio.fixture
async def page_url() -> AsyncIterator[str]:
    """Base URL of a static server for tests/assets on loopback.

    A page from a loopback origin may open a WebSocket to 127.0.0.1 under
    Chromium's Local Network Access checks.
    """
    app = web.Application()
    app.router.add_static("/", ASSETS)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


class Bot:
    """A ``webrtclab peer`` subprocess; stderr (its log) goes to a file."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log

    def stderr(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def wait_joined(self, timeout: float = 20.0) -> str:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.proc.stdout.readline()).decode(errors="replace")
                if not line:
                    code = await self.proc.wait()
                    raise AssertionError(
                        f"the bot exited ({code}) before joining:\n{self.stderr()}"
                    )
                if f"{BOT} joined room" in line:
                    return line.strip()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()  # SIGTERM: the bot leaves the room and closes its peer
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@pytest_asyncio.fixture
async def bot(signaling: SignalingServer, tmp_path: Path) -> AsyncIterator[Bot]:
    async with start_bot(signaling.url, tmp_path) as handle:
        yield handle


@contextlib.asynccontextmanager
async def start_bot(url: str, tmp_path: Path) -> AsyncIterator[Bot]:
    log = tmp_path / "bot.log"
    with log.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "webrtclab.cli",
            "-v",  # INFO log (connection states, ICE checks) into bot.log for diagnostics
            "peer",
            "--signal",
            url,
            "--room",
            ROOM,
            "--user",
            BOT,
            "--loopback-only",  # the suite's rule: loopback addresses only
            "--duration",
            "60",
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    handle = Bot(proc, log)
    try:
        yield handle
    finally:
        await handle.stop()


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[Browser]:
    # The library's launcher: the same flags as lab browser peers (webrtclab.browser).
    async with Chromium() as chromium:
        assert chromium.browser is not None
        yield chromium.browser


# --- helpers -------------------------------------------------------------------------------


async def wait_js(page: Page, predicate: str, what: str, timeout_ms: int = WAIT_MS) -> None:
    """Wait until the JS ``predicate`` is true; on timeout, fail with the page's state."""
    try:
        await page.wait_for_function(predicate, timeout=timeout_ms)
    except Exception as exc:
        state = await page.evaluate("JSON.stringify(window.state)")
        raise AssertionError(f"{what}: not reached ({exc}); window.state = {state}") from None


async def stats(page: Page) -> dict[str, Any]:
    summary = await page.evaluate("peer => window.statsSummary(peer)", BOT)
    assert summary is not None, "the page has no connection with the bot"
    return dict(summary)


async def wait_stats(
    page: Page, predicate: Any, what: str, timeout: float = 10.0
) -> dict[str, Any]:
    """Poll getStats until ``predicate(summary)`` holds (getStats has no change event)."""
    summary: dict[str, Any] = {}
    try:
        async with asyncio.timeout(timeout):
            while True:
                summary = await stats(page)
                if predicate(summary):
                    return summary
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"{what}: not reached in {timeout} s; last stats: {summary}") from None


# aioice's INFO line when a check comes from an address it has no candidate for.
PRFLX_LOG = re.compile(r"Discovered peer reflexive candidate Candidate\(\S+ \d+ \w+ \d+ (\S+) \d+")


def candidate_address(candidate: str) -> str:
    """The connection address of a ``candidate:...`` string."""
    return candidate.split()[4]


# --- the test -------------------------------------------------------------------------------


async def test_seed_browser_client_calls_the_bot(
    signaling: SignalingServer, page_url: str, bot: Bot, browser: Browser
) -> None:
    joined = await bot.wait_joined()
    assert "nobody" in joined, joined  # the room was empty: the browser is the newcomer

    page = await browser.new_page(viewport={"width": 700, "height": 320})
    console: list[str] = []
    page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
    page.on("pageerror", lambda err: console.append(f"pageerror: {err}"))
    query = urlencode({"ws": signaling.url, "room": ROOM, "user": USER})
    try:
        async with asyncio.timeout(45):
            await page.goto(f"{page_url}/seed_client.html?{query}")

            # The newcomer offers to the bot; ICE + DTLS complete.
            await wait_js(page, "window.state.joined", "browser joined the room")
            assert await page.evaluate("window.state.roomPeers") == [BOT]
            await wait_js(
                page,
                f"window.state.connectionStates[{json.dumps(BOT)}]?.includes('connected')",
                "connection with the bot is connected",
            )

            # The bot's video decodes in the page's <video>, at the bot's size.
            await wait_js(
                page,
                "window.state.remoteVideo.frames >= 10 && window.state.remoteVideo.currentTime > 0",
                "remote video frames presented",
            )
            video = await page.evaluate("window.state.remoteVideo")
            assert (video["width"], video["height"]) == BOT_SIZE, video
            assert video["playError"] is None, video
            size = await page.evaluate(
                "(() => { const v = document.querySelector('video[data-peer]');"
                " return [v.videoWidth, v.videoHeight]; })()"
            )
            assert tuple(size) == BOT_SIZE
            await wait_js(
                page,
                f"window.state.remoteVideo.currentTime > {video['currentTime']}",
                "remote video playback advances",
            )

            # Chat over the browser-created `chat` channel is echoed by the bot.
            await wait_js(
                page,
                "window.state.channels.chat === 'open' && window.state.channels.cursors === 'open'",
                "data channels open",
            )
            text = "hello bot, this is chromium"
            assert await page.evaluate("t => window.sendChat(t)", text) == 1
            await wait_js(page, "window.state.chat.length >= 1", "chat echo received")
            echo = (await page.evaluate("window.state.chat"))[0]
            assert echo == {"type": "chat", "text": text, "echo": True, "from": BOT}

            # Media flows both ways and keeps flowing.
            first = await wait_stats(
                page,
                lambda s: s["outboundVideo"] and s["inboundVideo"] and s["remoteInboundVideo"],
                "video stats in both directions",
            )
            assert first["outboundVideo"]["framesEncoded"] > 0
            assert first["inboundVideo"]["framesDecoded"] > 0
            assert (
                first["inboundVideo"]["frameWidth"],
                first["inboundVideo"]["frameHeight"],
            ) == BOT_SIZE
            # The bot's RTCP receiver reports about our video (with a round-trip time once
            # they echo one of our sender reports) show the bot receives it; RTCP comes
            # every 0.5-1.5 s from aiortc, so wait for it like for the byte counters.
            later = await wait_stats(
                page,
                lambda s: (
                    s["outboundVideo"]["bytesSent"] > first["outboundVideo"]["bytesSent"]
                    and s["inboundVideo"]["bytesReceived"] > first["inboundVideo"]["bytesReceived"]
                    and s["remoteInboundVideo"]["roundTripTime"] is not None
                ),
                "video bytes keep flowing both ways and the bot reports on ours",
            )
            assert later["remoteInboundVideo"]["roundTripTime"] < 1.0, later

            # Loopback only: the pair in use, and everything the bot offered, is 127.0.0.1.
            pair = later["selectedPair"]
            assert pair is not None and pair["state"] == "succeeded", later
            assert pair["local"]["address"] == "127.0.0.1", pair
            assert pair["remote"]["address"] == "127.0.0.1", pair
            remote_addresses = {c["address"] for c in later["remoteCandidates"]}
            assert remote_addresses == {"127.0.0.1"}, later["remoteCandidates"]
            trickled = await page.evaluate("window.state.trickled")
            assert any(candidate_address(c) == "127.0.0.1" for c in trickled), trickled
            # Chromium also trickles (and checks from) its eth0/IPv6 addresses; the bot
            # drops those candidates and ignores their checks, so it never learns them
            # as peer-reflexive and never sends to them.  (A loopback check that beats
            # its trickled candidate to the bot is legitimately learned as prflx.)
            learned = PRFLX_LOG.findall(bot.stderr())
            assert all(is_loopback(host) for host in learned), learned

            assert await page.evaluate("window.state.errors") == []
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "browser-call.png"))
    except BaseException:
        print("browser console:", *console, sep="\n  ")  # noqa: T201
        print("bot log:\n" + bot.stderr())  # noqa: T201
        raise
    finally:
        with contextlib.suppress(Exception):
            await page.close()


async def test_browser_call_through_the_network_emulator(
    page_url: str, browser: Browser, tmp_path: Path
) -> None:
    """The browser's trickled candidates are rewritten like aiortc's: the call crosses
    the relay and the browser's own ICE round-trip time shows the configured delay."""
    delay_ms = 40
    network = Network(LinkConditions(delay_ms=delay_ms), seed=3)
    async with SignalingServer("127.0.0.1", 0) as server, network:
        server.dispatcher.rewrite = network.rewrite
        async with start_bot(server.url, tmp_path) as handle:
            await handle.wait_joined()
            page = await browser.new_page()
            query = urlencode({"ws": server.url, "room": ROOM, "user": USER})
            try:
                async with asyncio.timeout(45):
                    await page.goto(f"{page_url}/seed_client.html?{query}")
                    await wait_js(
                        page,
                        f"window.state.connectionStates[{json.dumps(BOT)}]?.includes('connected')",
                        "connection through the relay",
                    )
                    relay_ports = {relay[1] for _, _, _, relay in network.proxies()}
                    # A consent check answered late by a busy bot process reads high
                    # once: wait for a sample within 40 ms of the emulated round trip.
                    summary = await wait_stats(
                        page,
                        lambda s: (
                            s["selectedPair"] is not None
                            and s["selectedPair"]["currentRoundTripTime"] is not None
                            and s["selectedPair"]["currentRoundTripTime"] * 1000
                            <= 2 * delay_ms + 40
                        ),
                        "a selected pair with a round-trip time near the emulated one",
                    )
                    pair = summary["selectedPair"]
                    # The browser talks to a relay socket standing for the bot.
                    assert pair["remote"]["address"] == "127.0.0.1", pair
                    assert pair["remote"]["port"] in relay_ports, (pair, relay_ports)
                    assert pair["currentRoundTripTime"] * 1000 >= 2 * delay_ms - 5, pair
                    await wait_js(page, "window.state.channels.chat === 'open'", "chat open")
                    assert await page.evaluate("t => window.sendChat(t)", "via relay") == 1
                    await wait_js(page, "window.state.chat.length >= 1", "echo via relay")
                    rows = network.link_rows()
                    assert {(r[1], r[2]) for r in rows} == {(BOT, USER), (USER, BOT)}
                    assert all(r[4] > 0 for r in rows), rows  # packets delivered both ways
            finally:
                with contextlib.suppress(Exception):
                    await page.close()
