"""The lab's web client (``GET /``) in headless Chromium, as a lab peer.

Each test runs a :class:`Lab` on loopback whose server serves the page; Chromium
pages join through ``Lab.add_browser_peer`` (Playwright, in the test's event loop)
and call aiortc peers or each other.  What is checked is what a user and a
researcher see: decoded video both ways, chat and cursors in the bots' format,
stats rows for Chrome and aiortc side by side, screen sharing, recording,
recovery, TURN and token errors.

The module is skipped when /usr/bin/chromium is missing, except in CI (``CI``
set), where a missing browser is a failure.
"""

from __future__ import annotations

import asyncio
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers import require_system

from webrtclab import Lab, MediaSpec, SignalingError
from webrtclab.auth import TurnConfig
from webrtclab.browser import CHROMIUM_PATH, BrowserPeer, Chromium
from webrtclab.netem import LinkConditions
from webrtclab.quality import QualityMonitor

require_system(CHROMIUM_PATH, "chromium", "the web client tests")

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
MEDIA = MediaSpec(width=320, height=240, fps=15)
SIZE = (320, 240)  # the browser peers' camera size too (BrowserPeer's default)
DELAY_MS = 40
SECRET = "s" * 32  # join tokens (HS256 wants >= 32 bytes)
TURN_SECRET = "t" * 32

pytestmark = pytest.mark.timeout(60)


async def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """Poll a Python-side condition (aiortc counters, stats rows) until it holds."""
    try:
        async with asyncio.timeout(timeout):
            while not (result := predicate()):
                await asyncio.sleep(0.05)
            return result
    except TimeoutError:
        raise AssertionError(f"{what}: not reached in {timeout} s") from None


async def wait_messages(
    peer: BrowserPeer, predicate: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """The first data-channel message of the page that satisfies ``predicate``."""
    found: list[dict[str, Any]] = []

    async def check() -> bool:
        found[:] = [m for m in await peer.messages() if predicate(m)]
        return bool(found)

    async with asyncio.timeout(10):
        while not await check():
            await asyncio.sleep(0.05)
    assert found, what
    return found[0]


def rows(stats: pd.DataFrame, peer: str, direction: str, kind: str = "video") -> pd.DataFrame:
    return stats[
        (stats["peer"] == peer) & (stats["direction"] == direction) & (stats["kind"] == kind)
    ]


# --- (a) a browser calls an aiortc peer through the emulator --------------------------------


async def test_browser_and_aiortc_call_through_the_emulator() -> None:
    async with Lab(link=LinkConditions(delay_ms=DELAY_MS), stats_interval=0.5, seed=1) as lab:
        bot = await lab.add_peer("bot", media=MEDIA, echo_chat=True)
        chrome = await lab.add_browser_peer("chrome")
        try:
            await lab.wait_connected(timeout=20)
            state = await chrome.state()
            assert state["remotes"]["bot"]["peerType"] == "aiortc", state
            assert state["remotes"]["bot"]["initiator"] is True  # the newcomer offered

            # Media both ways: Chrome presents the bot's frames, aiortc decodes Chrome's.
            await chrome.wait_video("bot", frames=10)
            video = (await chrome.state())["remotes"]["bot"]["video"]
            assert (video["width"], video["height"]) == SIZE, video
            session = bot.sessions["chrome"]
            await wait_until(
                lambda: session.counters[("recv", "video")].frames >= 10, "bot decodes Chrome"
            )
            frame = session.last_video_frame
            assert frame is not None and (frame.width, frame.height) == SIZE

            # Chat both ways in the bots' format; the page's sent_ms is on the lab clock.
            assert await chrome.send_chat("hello bot") == 1
            received = await wait_until(
                lambda: [p for _, d, p in session.chat_log if d == "recv"], "chat at the bot"
            )
            payload = received[0]
            assert set(payload) == {"type", "text", "seq", "sent_ms"}, payload
            assert (payload["type"], payload["text"], payload["seq"]) == ("chat", "hello bot", 0)
            at_ms = next(t for t, d, _ in session.chat_log if d == "recv") * 1000
            latency_ms = at_ms - payload["sent_ms"]
            assert DELAY_MS - 5 <= latency_ms <= DELAY_MS + 150, latency_ms  # one way
            echo = await wait_messages(
                chrome, lambda m: m["direction"] == "recv" and m["channel"] == "chat", "echo"
            )
            assert echo["peer"] == "bot"
            assert echo["payload"] == {**payload, "echo": True, "from": "bot"}
            await bot.send_chat("hello chrome")
            from_bot = await wait_messages(
                chrome,
                lambda m: m["direction"] == "recv" and not m["payload"].get("echo"),
                "chat from the bot",
            )
            assert from_bot["payload"]["text"] == "hello chrome"
            assert from_bot["payload"]["seq"] == 0

            # A cursor on the unreliable channel (no loss configured: it arrives).
            cursors: list[Any] = []
            bot.on("message", lambda r, label, p: cursors.append(p) if label == "cursors" else 0)
            assert await chrome.send_cursor(12, 34) == 1
            await wait_until(lambda: cursors, "cursor at the bot")
            assert {k: cursors[0][k] for k in ("type", "x", "y", "seq")} == {
                "type": "cursor",
                "x": 12,
                "y": 34,
                "seq": 0,
            }

            # Stats rows of both stacks, side by side, with RTT near twice the delay.
            def enough() -> bool:
                s = lab.stats()
                return all(
                    rows(s, p, "send")["rtt_ms"].notna().sum() >= 4 for p in ("chrome", "bot")
                )

            await wait_until(enough, "RTT samples from Chrome and aiortc", timeout=15)
            stats = lab.stats()
            samples = lab.rtt()
            for peer in ("chrome", "bot"):
                send = rows(stats, peer, "send")
                # Chrome's roundTripTime is each report's; aiortc's rtt_ms is smoothed (its
                # first reports linger), so take aiortc's per-report samples instead.
                values = send["rtt_ms"] if peer == "chrome" else samples["rtt_ms"]
                # The first RTCP may be early; a busy machine only ever adds to an RTT (a
                # report handled late), so the lower quartile measures the link.
                rtt = values.dropna().iloc[1:].quantile(0.25)
                assert 2 * DELAY_MS - 3 <= rtt <= 2 * DELAY_MS * 1.15 + 5, (peer, values.tolist())
                assert rows(stats, peer, "recv")["bitrate_kbps"].max() > 50, peer
            # Through the relay Chrome learns its own address as the relay sees it, like
            # behind a NAT: its local candidate may be peer-reflexive.  aiortc's is host.
            # ("" before a pair is selected: an early sample under load.)
            assert set(stats[stats["peer"] == "bot"]["candidate_type"].dropna()) == {"host"}
            chrome_types = set(stats[stats["peer"] == "chrome"]["candidate_type"].dropna())
            assert chrome_types and chrome_types <= {"host", "prflx"}, chrome_types
            # Chrome measures what aiortc cannot: RTT on recv rows and decoder frame rate.
            recv = rows(stats, "chrome", "recv")
            assert recv["rtt_ms"].notna().any()
            assert recv["frames_per_s"].max() >= 10
            raw = lab.browser_stats()
            outgoing = raw[raw["metric"] == "availableOutgoingBitrate"]["value"]
            assert not outgoing.empty and outgoing.iloc[-1] > 0

            # MediaRecorder: a WebM of what the page receives, saved from its download link.
            await chrome.start_recording("bot")
            frames = (await chrome.state())["remotes"]["bot"]["video"]["frames"]
            await chrome.wait_video("bot", frames=frames + 15)
            webm = await chrome.stop_recording(ARTIFACTS / "webclient-recording.webm", "bot")
            assert webm.read_bytes()[:4] == bytes.fromhex("1a45dfa3")  # EBML header

            ARTIFACTS.mkdir(exist_ok=True)
            await chrome.wait_for("s => s.remotes.bot.candidateType !== ''", "stats panel")
            shot = await chrome.screenshot(ARTIFACTS / "webclient-aiortc.png")
            assert shot.stat().st_size > 10_000

            # Recovery for an aiortc remote: a new connection and a new offer.
            assert await chrome.restart("bot") == 1
            await wait_until(
                lambda: bot.sessions.get("chrome") not in (None, session), "bot's new session"
            )
            await lab.wait_connected(timeout=20)
            await chrome.wait_channel("bot")
            assert await chrome.send_chat("after recovery") == 1
            await wait_messages(
                chrome,
                lambda m: m["payload"].get("text") == "after recovery" and m["direction"] == "recv",
                "echo after recovery",
            )
            events = lab.events()
            mine = events[events["peer"] == "chrome"]
            assert ("recovery", "new-connection") in set(zip(mine["event"], mine["detail"]))
            assert (
                (mine["event"] == "connection-state") & (mine["detail"] == "connected")
            ).sum() == 2
            assert (await chrome.state())["errors"] == []
        except BaseException:
            print("chrome console:", *chrome.console, sep="\n  ")  # noqa: T201
            raise
    assert chrome.page is None  # the lab closed its browser peers


# --- (b) two browsers through the web client ------------------------------------------------


async def test_two_browsers_call_each_other() -> None:
    async with Lab(stats_interval=0.5) as lab:
        alice = await lab.add_browser_peer("alice")
        bob = await lab.add_browser_peer("bob")  # the newcomer offers to alice
        await lab.wait_connected(timeout=20)
        await asyncio.gather(alice.wait_video("bob"), bob.wait_video("alice"))
        for page, other in ((alice, "bob"), (bob, "alice")):
            remote = (await page.state())["remotes"][other]
            assert remote["peerType"] == "browser", remote
            assert (remote["video"]["width"], remote["video"]["height"]) == SIZE

        assert await alice.send_chat("hi bob") == 1
        assert await bob.send_chat("hi alice") == 1
        got = await wait_messages(bob, lambda m: m["direction"] == "recv", "chat at bob")
        assert got["peer"] == "alice" and got["payload"]["text"] == "hi bob"
        got = await wait_messages(alice, lambda m: m["direction"] == "recv", "chat at alice")
        assert got["peer"] == "bob" and got["payload"]["text"] == "hi alice"

        await wait_until(
            lambda: {"alice", "bob"} <= set(lab.stats()["peer"]), "stats rows of both pages"
        )
        stats = lab.stats()
        assert set(stats["candidate_type"].dropna()) == {"host"}

        # ICE restart (the browser-to-browser recovery) keeps the call: new ufrags both sides.
        before = [
            (await p.state())["remotes"][o]["iceUfrag"] for p, o in ((alice, "bob"), (bob, "alice"))
        ]
        assert await alice.restart("bob") == 1
        await alice.wait_for(
            f"s => s.remotes.bob.iceUfrag !== {before[0]!r}"
            " && s.remotes.bob.signalingState === 'stable'",
            "a restarted ICE session",
        )
        await bob.wait_for(f"s => s.remotes.alice.iceUfrag !== {before[1]!r}", "bob's new ufrag")
        await lab.wait_connected(timeout=20)
        assert await alice.send_chat("after restart") == 1
        await wait_messages(
            bob, lambda m: m["payload"].get("text") == "after restart", "chat after restart"
        )

        # peer-left removes the tile.
        await lab.remove_peer("bob")
        await alice.wait_for("s => !('bob' in s.remotes)", "bob gone")
        assert alice.page is not None
        assert await alice.page.locator("figure[data-peer]").count() == 0


async def test_synthetic_video_both_ways_measured_from_the_stamps() -> None:
    # Chrome draws SyntheticVideoTrack's pictures and stamps in a canvas: the lab peer
    # reads the stamps (frame latency) and re-renders each frame for PSNR, as it does
    # for a lab sender.  The page reads the stamps of the lab peer's frames it shows.
    async with Lab() as lab:
        monitor = QualityMonitor(lab)  # before the members: attaches to each as it comes
        await lab.add_peer("lab", media=MEDIA)
        chrome = await lab.add_browser_peer("chrome", video="synthetic", seed=3)
        assert "video=synthetic" in chrome.url and "seed=3" in chrome.url
        await lab.wait_connected(timeout=20)

        def frames(receiver: str) -> pd.DataFrame:
            table = monitor.frames.dataframe()
            return table[table["peer"] == receiver]

        for receiver in ("lab", "chrome"):

            def enough_frames(r: str = receiver) -> bool:
                return len(frames(r)) >= 30

            await wait_until(enough_frames, f"30 frames at {receiver}", timeout=20)
        for receiver in ("lab", "chrome"):
            got = frames(receiver).tail(20)
            # Every stamp reads and frame numbers count up at the sender's rate.
            assert got["frame"].notna().all(), got
            assert got["frame"].is_monotonic_increasing, got
            assert got["interval_ms"].median() == pytest.approx(1000 / 15, rel=0.3), got
            # Capture to decoded (lab) or presented (Chrome), on one machine: tens of ms.
            # The page's clock is the lab's through the wall clock, so a frame may read a
            # few ms early there; one odd frame in twenty is tolerated (a stamp that
            # passes its 8-bit checksum misread, a frame held back on a loaded machine).
            low = -20 if receiver == "chrome" else 0
            assert got["latency_ms"].between(low, 1000).sum() >= 19, got
            assert 5 <= got["latency_ms"].median() <= 500, got
        # Chrome-sent frames compared with the re-rendered picture in Chrome's colour
        # weights (BT.601 weights give about 24 dB on the same frames); the page keeps
        # the pixels of what it shows, so no PSNR there.
        assert frames("lab").tail(20)["psnr_db"].median() > 28
        assert frames("chrome")["psnr_db"].isna().all()
        assert chrome.reference_frame(-1) is None
        rgb = chrome.reference_frame(0)
        assert rgb is not None and rgb.shape == (SIZE[1], SIZE[0], 3)
        monitor.close()
        assert chrome.frame_listeners == []


# --- (c) screen share and back to the camera ------------------------------------------------


async def test_screen_share_and_return_to_the_camera() -> None:
    async with Lab(stats_interval=0.5) as lab:
        bot = await lab.add_peer("bot", media=MEDIA)
        # Chromium's fake screen (picked by --use-fake-ui-for-media-stream) is the size of
        # the window: make it 16:9, unlike the 4:3 camera.
        chrome = await lab.add_browser_peer("chrome", viewport=(1280, 720))
        await lab.wait_connected(timeout=20)
        session = bot.sessions["chrome"]

        def aspect() -> float:
            frame = session.last_video_frame
            return frame.width / frame.height if frame is not None else math.nan

        await wait_until(lambda: abs(aspect() - 4 / 3) < 0.01, "the camera at the bot (4:3)")
        settings = await chrome.share_screen()
        assert settings["displaySurface"] == "monitor", settings
        assert (settings["width"], settings["height"]) == (1280, 720)
        # replaceTrack, no renegotiation: the same aiortc session now decodes 16:9.
        await wait_until(lambda: abs(aspect() - 16 / 9) < 0.01, "the screen at the bot (16:9)")
        assert bot.sessions["chrome"] is session
        assert (await chrome.state())["sending"] == "screen"

        # The browser's "Stop sharing" ends the track (`ended`): back to the camera.  No
        # headless UI can end the capture, so the page's hook stops the track and fires
        # the same event Chromium fires.
        assert chrome.page is not None
        assert await chrome.page.evaluate("window.webrtclab.endScreenShare()") is True
        await wait_until(lambda: abs(aspect() - 4 / 3) < 0.01, "the camera again at the bot")
        assert (await chrome.state())["sending"] == "camera"

        # The page's own Stop button path (stop() fires no `ended`).
        await chrome.share_screen()
        await wait_until(lambda: abs(aspect() - 16 / 9) < 0.01, "the screen again")
        assert await chrome.stop_screen_share() is True
        await wait_until(lambda: abs(aspect() - 4 / 3) < 0.01, "the camera a third time")
        assert await chrome.stop_screen_share() is False  # nothing shared: a no-op
        events = lab.events()
        switches = events[(events["peer"] == "chrome") & (events["event"] == "source-switch")]
        assert list(switches["detail"]) == ["screen", "camera", "screen", "camera"]


# --- (d) tokens and TURN ----------------------------------------------------------------------


async def test_bad_token_shows_the_401_and_a_good_one_gets_turn_servers() -> None:
    turn = TurnConfig(secrets=(TURN_SECRET,), uris=("turn:127.0.0.1:3478?transport=udp",))
    options = {"join_secret": SECRET, "turn": turn}
    async with Lab(server_options=options) as lab, Chromium() as chromium:
        bad = BrowserPeer(
            "mallory", lab.server.http_url, room=lab.room, token="forged", chromium=chromium
        )
        try:
            with pytest.raises(SignalingError, match="HTTP 401"):
                await bad.join()
            assert bad.page is not None
            shown = await bad.page.text_content("#error")
            assert shown is not None and "HTTP 401 (invalid-token)" in shown, shown
            assert await bad.page.is_visible("#error")
            assert await bad.page.is_visible("#join-form")  # to fix the token and retry
        finally:
            await bad.close()

        # A valid join token: the page fetches TURN credentials and uses them.
        good = await lab.add_browser_peer("alice", relay=True)
        state = await good.state()
        assert state["joined"] and state["relay"] and state["error"] is None
        assert state["iceServers"] == [{"urls": list(turn.uris)}]


@pytest.mark.skipif(shutil.which("turnserver") is None, reason="coturn is not installed")
async def test_browser_relays_through_coturn() -> None:
    """relay=1 with credentials from /api/turn-credentials: the call goes through coturn."""
    async with Lab(turn=True, relay_only=True, server_options={"join_secret": SECRET}) as lab:
        bot = await lab.add_peer("bot", media=MEDIA, echo_chat=True)
        # ice_servers=None: the page asks the server, with its join token, as a user's would.
        chrome = await lab.add_browser_peer("chrome", ice_servers=None)
        await lab.wait_connected(timeout=25)
        await chrome.wait_video("bot")
        assert await chrome.send_chat("via turn") == 1
        await wait_messages(chrome, lambda m: m["direction"] == "recv", "echo via TURN")
        await wait_until(
            lambda: (lab.stats()["peer"] == "chrome").any(), "Chrome stats rows", timeout=5
        )
        await chrome.wait_for("s => s.remotes.bot.candidateType !== ''", "selected pair")
        state = await chrome.state()
        assert state["remotes"]["bot"]["candidateType"] == "relay", state
        assert state["iceServers"] and state["relay"]
        types = set(lab.stats().query("peer == 'chrome'")["candidate_type"].dropna())
        assert types == {"relay"}, types
        assert bot.sessions["chrome"].selected_path() is not None
