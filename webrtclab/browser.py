"""A real browser in the lab: headless Chromium running the lab's web client as a peer.

:class:`Chromium` launches Debian's Chromium through Playwright's async API in the
running event loop (``playwright install`` cannot download browsers here, so the
system binary is used) with the flags the lab needs: fake camera, microphone and
screen, no permission prompts, and loopback ICE candidates.

:class:`BrowserPeer` opens the lab server's own page (``GET /``, see
:mod:`webrtclab.web`) in a fresh browser context and joins a room through
``window.webrtclab.join()``; it then behaves like any member: the newcomer offers,
chat and cursors interoperate with aiortc peers.  Its getStats reports become rows
with :data:`webrtclab.stats.STATS_COLUMNS` (see :func:`browser_rows`) and a raw
long-format table of every numeric libwebrtc metric (:data:`RAW_COLUMNS`).

Chrome rows differ from aiortc rows where libwebrtc measures more:

* ``rtt_ms``: send rows use remote-inbound-rtp ``roundTripTime`` (RTCP, as aiortc
  rows do) and fall back to the selected candidate pair's ``currentRoundTripTime``
  (STUN consent checks); recv rows carry the candidate-pair RTT (aiortc has none).
* ``bitrate_kbps``: ``bytesSent``/``bytesReceived`` deltas over the reports'
  own timestamps; NaN on a stream's first row (no interval yet).
* ``frames_per_s``: libwebrtc's ``framesPerSecond`` (encoded, or decoded); NaN for audio.
* ``jitter_ms``: libwebrtc reports seconds.  ``loss_fraction`` on send rows is the
  remote's ``fractionLost`` (already 0-1).
* ``target_kbps``: outbound-rtp ``targetBitrate`` (the encoder target Chrome's
  congestion control set); ``rtx_kbps``: ``retransmittedBytesSent`` deltas;
  ``wire_kbps``: ``bytesSent`` + ``headerBytesSent`` deltas (payload, headers and
  padding; libwebrtc does not count the SRTP tag that aiortc rows include);
  ``estimate_kbps`` (recv): the candidate pair's ``availableIncomingBitrate`` where
  Chrome still reports it.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

import numpy as np

from ._tasks import CloseOnce
from .events import EventLog, LabClock
from .exceptions import (
    ConfigurationError,
    InvalidStateError,
    LabTimeoutError,
    SignalingError,
    WebrtcLabError,
)
from .media import Stamp, SyntheticVideoTrack, synthetic_video_assets
from .tables import BROWSER_STATS, BrowserStatsRow, StatsRow

if TYPE_CHECKING:
    from playwright.async_api import (
        Browser,
        BrowserContext,
        ConsoleMessage,
        Page,
        Playwright,
        Route,
    )

__all__ = [
    "CHROMIUM_ARGS",
    "CHROMIUM_PATH",
    "RAW_COLUMNS",
    "WEBRTC_INTERNALS_URL",
    "BrowserPeer",
    "Chromium",
    "WebrtcInternals",
    "browser_rows",
    "raw_rows",
]

logger = logging.getLogger(__name__)

CHROMIUM_PATH = Path("/usr/bin/chromium")
# Flags tried with Debian's Chromium on the lab's machines: the fake-device flags are
# Chromium's own (media/base/media_switches.cc), loopback candidates need
# --allow-loopback-in-peer-connection (Chromium's content_switches.cc).
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--use-fake-device-for-media-stream",  # a synthetic camera, microphone and screen
    "--use-fake-ui-for-media-stream",  # grant getUserMedia/getDisplayMedia without a prompt
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--allow-loopback-in-peer-connection",  # gather 127.0.0.1 candidates (a loopback lab)
    "--disable-quic",
    "--autoplay-policy=no-user-gesture-required",  # remote <video> plays without a click
)
# Raw table: one row per numeric metric of a stat object.
RAW_COLUMNS = BROWSER_STATS.columns
# Stat types kept in the raw table (codecs, certificates and candidates are static or
# many; the selected candidate pair is kept, the others are not).
_RAW_TYPES = frozenset(
    {
        "candidate-pair",
        "data-channel",
        "inbound-rtp",
        "media-playout",
        "media-source",
        "outbound-rtp",
        "peer-connection",
        "remote-inbound-rtp",
        "remote-outbound-rtp",
        "transport",
    }
)
_CONSOLE_LINES = 200
# Chromium's own page of every peer connection's API calls and stats (once a second).
WEBRTC_INTERNALS_URL = "chrome://webrtc-internals"
# Served by the peer itself (Playwright routing), not by the lab server: see app.js.
SYNTHETIC_ASSETS_PATH = "/__webrtclab/synthetic-video"
# Chrome turns a canvas's RGB into I420 with BT.709 full-range luma weights (Rec. ITU-R
# BT.709 table 3; not the BT.601 limited range swscale uses for lab peers): a least-squares
# fit of received luma on the drawn RGB gave 0.210, 0.708, 0.072 and an offset of 1.2.
_CANVAS_LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)

NAN = math.nan


class Chromium:
    """A headless Chromium driven by Playwright in the running event loop.

    Example::

        async with Chromium() as chromium:
            page = await chromium.new_page()

    :param executable: the browser binary (Debian's Chromium by default).
    :param headless: False opens windows (needs a display).
    :param args: extra command-line flags, after :data:`CHROMIUM_ARGS`.
    """

    def __init__(
        self,
        *,
        executable: str | os.PathLike[str] = CHROMIUM_PATH,
        headless: bool = True,
        args: Iterable[str] = (),
    ) -> None:
        self.executable = Path(executable)
        self.headless = headless
        self.args = [*CHROMIUM_ARGS, *args]
        self._playwright: Playwright | None = None
        self.browser: Browser | None = None
        self._contexts: set[BrowserContext] = set()
        self._closed = False
        self._closing = CloseOnce()

    def __repr__(self) -> str:
        return f"Chromium({str(self.executable)!r}, headless={self.headless})"

    async def start(self) -> None:
        """Launch the browser (idempotent)."""
        if self._closed:
            raise InvalidStateError(f"{self!r} was closed")
        if self.browser is not None:
            return
        if not self.executable.is_file():
            raise ConfigurationError(
                f"cannot launch Chromium: {self.executable} does not exist "
                "(Debian package `chromium`)"
            )
        try:
            from playwright.async_api import async_playwright
        except ImportError as exc:  # a dev extra: the library runs without it
            raise ConfigurationError(
                "a browser peer needs Playwright's Python package: pip install playwright"
            ) from exc
        playwright = await async_playwright().start()
        try:
            self.browser = await playwright.chromium.launch(
                executable_path=str(self.executable), headless=self.headless, args=self.args
            )
        except BaseException:
            await playwright.stop()
            raise
        self._playwright = playwright

    async def new_page(self, *, viewport: tuple[int, int] = (960, 720)) -> Page:
        """A page in a fresh context (its own cookies, storage and permissions)."""
        await self.start()
        assert self.browser is not None
        context = await self.browser.new_context(
            viewport={"width": viewport[0], "height": viewport[1]}
        )
        self._contexts.add(context)
        context.on("close", lambda _: self._contexts.discard(context))
        return await context.new_page()

    async def close(self) -> None:
        """Close every context, the browser and Playwright's driver; safe to call twice.

        A second caller waits for the first close to end.
        """
        await self._closing.run(self._close)

    async def _close(self) -> None:
        self._closed = True
        browser, self.browser = self.browser, None
        playwright, self._playwright = self._playwright, None
        try:
            if browser is not None:
                await browser.close()
        finally:
            if playwright is not None:
                await playwright.stop()

    async def __aenter__(self) -> Chromium:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


@dataclass
class _Previous:
    ids: frozenset[str]
    timestamp_ms: float
    bytes: int
    packets: int
    lost: int
    rtx_bytes: int = 0
    wire_bytes: int = 0


class BrowserPeer:
    """A lab member that is a real Chromium page running the lab's web client.

    Usually created by :meth:`webrtclab.Lab.add_browser_peer`.

    :param user_id: the id the page joins with.
    :param base_url: the lab server's HTTP URL (``http://127.0.0.1:PORT``).
    :param room: the room to join.
    :param token: a join token or the server's static token (also sent for TURN).
    :param relay: ``iceTransportPolicy: "relay"`` (TURN only).
    :param ice_servers: RTCIceServer dictionaries for the page; by default it asks the
        server's ``/api/turn-credentials`` when it has a token (none otherwise).
    :param width, height, fps: the video's size and frame rate (the fake camera's
        capture settings, or the synthetic video's).
    :param video: ``"camera"`` (Chromium's fake camera) or ``"synthetic"``: the page
        draws the lab's :class:`~webrtclab.media.SyntheticVideoTrack` pictures, stamps
        included, so lab receivers measure frame latency, freezes and PSNR of
        Chrome-sent video as they do for lab peers (same content, same metrics).
    :param seed: the synthetic video's seed (as ``SyntheticVideoTrack(seed=...)``).
    :param chromium: a running :class:`Chromium` to open the page in; by default
        the peer launches (and closes) its own.
    :param clock: the lab clock: stats rows, events and the page's ``sent_ms``
        share it.
    :param raw_stats: keep every numeric metric in :attr:`raw_rows`.
    """

    def __init__(
        self,
        user_id: str,
        base_url: str,
        *,
        room: str = "lab",
        token: str | None = None,
        relay: bool = False,
        ice_servers: list[dict[str, Any]] | None = None,
        width: int = 320,
        height: int = 240,
        fps: float = 15.0,
        video: str = "camera",
        seed: int = 0,
        viewport: tuple[int, int] = (960, 720),
        chromium: Chromium | None = None,
        clock: LabClock | None = None,
        events: EventLog | None = None,
        raw_stats: bool = True,
        join_timeout: float = 20.0,
    ) -> None:
        if not isinstance(user_id, str) or not 1 <= len(user_id) <= 64:
            raise ConfigurationError(f"user id must have 1-64 characters, got {user_id!r}")
        if not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(f'base_url must be "http://host:port", got {base_url!r}')
        for name, value, top in (("width", width, 4096), ("height", height, 4096)):
            if isinstance(value, bool) or not isinstance(value, int) or not 16 <= value <= top:
                raise ConfigurationError(f"{name} must be an integer in 16-{top}, got {value!r}")
        if not 1 <= fps <= 60:
            raise ConfigurationError(f"fps must be in 1-60, got {fps!r}")
        if not join_timeout > 0:
            raise ConfigurationError(f"join_timeout must be positive, got {join_timeout!r}")
        if video not in ("camera", "synthetic"):
            raise ConfigurationError(f'video must be "camera" or "synthetic", got {video!r}')
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise ConfigurationError(f"seed must be an integer in 0-2**32-1, got {seed!r}")
        if video == "synthetic" and (width % 2 or height % 2):
            raise ConfigurationError(f"synthetic video needs an even size, got {width}x{height}")
        self.user_id = user_id
        self.base_url = base_url.rstrip("/")
        self.room = room
        self.token = token
        self.relay = relay
        self.ice_servers = ice_servers
        self.width, self.height, self.fps = width, height, fps
        self.video, self.seed = video, seed
        # The lab's renderer of the page's synthetic frames (reference pictures for PSNR).
        self._synthetic = (
            SyntheticVideoTrack(width, height, fps, seed) if video == "synthetic" else None
        )
        self._synthetic_started: float | None = None
        # Called with (receiver, remote, time_s, stamp or None) for each frame the page
        # presents, in batches (see app.js: StampReader); QualityMonitor listens here.
        self.frame_listeners: list[Callable[[str, str, float, Stamp | None], None]] = []
        self.viewport = viewport
        self.events = events or EventLog(clock)
        self.clock = clock or self.events.clock
        self.raw_stats = raw_stats
        self.join_timeout = join_timeout
        self._chromium = chromium
        self._own_chromium = chromium is None
        self.page: Page | None = None
        self.console: collections.deque[str] = collections.deque(maxlen=_CONSOLE_LINES)
        self.raw_rows: list[BrowserStatsRow] = []
        self._previous: dict[tuple[str, str, str], _Previous] = {}
        self._joined = False
        self._closed = False
        self._closing = CloseOnce()

    def __repr__(self) -> str:
        return f"BrowserPeer({self.user_id!r})"

    @property
    def url(self) -> str:
        """The page's address (the token is not in it: join() passes it)."""
        query = {"room": self.room, "user": self.user_id, "autojoin": "0"}
        if self.relay:
            query["relay"] = "1"
        query.update(width=str(self.width), height=str(self.height), fps=f"{self.fps:g}")
        if self.video == "synthetic":
            query.update(video="synthetic", seed=str(self.seed))
        return f"{self.base_url}/?{urlencode(query)}"

    # --- lifecycle -------------------------------------------------------------------------

    async def join(self) -> list[str]:
        """Open the page and join the room; returns the members already there."""
        if self._closed:
            raise InvalidStateError(f"{self!r} is closed")
        if self._joined or self.page is not None:
            raise InvalidStateError(f'{self!r} already joined room "{self.room}"')
        if self._chromium is None:
            self._chromium = Chromium()
        page = await self._chromium.new_page(viewport=self.viewport)
        self.page = page
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.console.append(f"pageerror: {error}"))
        # Page events (connection states, tracks...) on the lab's clock and event log.
        await page.expose_function("webrtclabEvent", self._on_page_event)
        await page.expose_function("webrtclabFrames", self._on_page_frames)
        if self._synthetic is not None:
            await page.route(f"**{SYNTHETIC_ASSETS_PATH}?*", self._serve_synthetic_assets)
        epoch_ms = (time.time() - self.clock.now()) * 1000
        options: dict[str, Any] = {"token": self.token or "", "epochMs": epoch_ms}
        if self.ice_servers is not None:
            options["iceServers"] = self.ice_servers
        try:
            async with asyncio.timeout(self.join_timeout):
                await page.goto(self.url)
                await page.wait_for_function("() => window.webrtclab !== undefined")
                peers = await page.evaluate("o => window.webrtclab.join(o)", options)
        except TimeoutError:
            raise LabTimeoutError(
                f'{self!r}: joining room "{self.room}" took over {self.join_timeout} s; '
                f"console: {list(self.console)[-5:]}"
            ) from None
        except Exception as exc:
            if _is_playwright_error(exc):
                raise SignalingError(
                    f'{self!r} cannot join room "{self.room}": {_page_message(exc)}'
                ) from None
            raise
        self._joined = True
        return list(peers)

    async def leave(self) -> None:
        """Leave the room (the page stays open; others see peer-left)."""
        if self.page is not None and self._joined:
            self._joined = False
            await self.page.evaluate("window.webrtclab.leave()")

    async def close(self) -> None:
        """Leave, close the page and, if this peer launched it, the browser; safe twice.

        A second caller waits for the first close to end.
        """
        await self._closing.run(self._close)

    async def _close(self) -> None:
        self._closed = True
        page, self.page = self.page, None
        errors: list[BaseException] = []
        if page is not None:
            try:
                if self._joined:
                    # Bounded: a wedged page must not hold up the lab's teardown.
                    async with asyncio.timeout(5):
                        await page.evaluate("window.webrtclab.leave()")
            except Exception as exc:  # gathered: close the page regardless
                errors.append(exc)
            self._joined = False
            try:
                await page.context.close()
            except Exception as exc:
                errors.append(exc)
        if self._own_chromium and self._chromium is not None:
            await self._chromium.close()
        for error in errors:
            logger.debug("%r: error while closing: %r", self, error)

    async def __aenter__(self) -> BrowserPeer:
        await self.join()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- synthetic video -------------------------------------------------------------------

    async def _serve_synthetic_assets(self, route: Route) -> None:
        query = parse_qs(urlsplit(route.request.url).query)
        asked = tuple(query.get(name, [""])[0] for name in ("width", "height", "seed"))
        if self._synthetic is None or asked != (str(self.width), str(self.height), str(self.seed)):
            await route.fulfill(status=404, body=f"no synthetic video {asked}")
            return
        body = synthetic_video_assets(self.width, self.height, self.seed)
        self._synthetic_started = self.clock.now()
        await route.fulfill(status=200, body=body, content_type="application/octet-stream")

    def sent_frame_index(self, number: int) -> int | None:
        """Index of the synthetic frame the page sent with number ``number`` (mod 65536).

        The page numbers frames from 0 at its start, at ``fps``; the index is the
        latest one with that number that can have been sent by now.  None when the
        page sends its camera.
        """
        if self._synthetic_started is None:
            return None
        last = int((self.clock.now() - self._synthetic_started + 1.0) * self.fps)
        index = last - ((last - number) & 0xFFFF)
        return index if index >= 0 else None

    def reference_frame(self, index: int, *, luma: bool = False) -> np.ndarray | None:
        """The picture of synthetic frame ``index`` (without its stamp), as the page drew it.

        RGB, or with ``luma`` its luma plane as Chrome's encoder sees it; None when the
        page sends its camera.
        """
        if self._synthetic is None or index < 0:
            return None
        image = self._synthetic.render(index)
        return (image @ _CANVAS_LUMA + np.float32(0.5)).astype(np.uint8) if luma else image

    # --- use -------------------------------------------------------------------------------

    def _page(self) -> Page:
        if self.page is None or self._closed:
            raise InvalidStateError(f"{self!r} has no open page: join() first")
        return self.page

    async def _call(self, expression: str, arg: Any = None) -> Any:
        try:
            return await self._page().evaluate(expression, arg)
        except Exception as exc:
            if _is_playwright_error(exc):
                raise WebrtcLabError(f"{self!r}: {_page_message(exc)}") from None
            raise

    async def state(self) -> dict[str, Any]:
        """The page's view: joined, sharing, and per remote its connection state,
        candidate type, RTT, channels, received video size and frame count."""
        return dict(await self._call("window.webrtclab.state()"))

    async def wait_for(self, predicate: str, what: str, timeout: float = 15.0) -> None:
        """Wait until the JS ``predicate`` (a function of ``state()``) is true."""
        expression = f"() => {{ const s = window.webrtclab.state(); return ({predicate})(s); }}"
        try:
            await self._page().wait_for_function(expression, timeout=timeout * 1000)
        except Exception as exc:
            if not _is_playwright_error(exc):
                raise
            state = await self.state()
            raise LabTimeoutError(
                f"{self!r}: {what} not reached in {timeout} s; state: {state}"
            ) from None

    async def wait_connected(self, count: int = 1, timeout: float = 15.0) -> None:
        """Wait until at least ``count`` remotes are connected."""
        await self.wait_for(
            f"s => Object.values(s.remotes).filter(r => r.connectionState === 'connected')"
            f".length >= {int(count)}",
            f"{count} connected remote(s)",
            timeout,
        )

    async def wait_video(self, remote: str, frames: int = 10, timeout: float = 15.0) -> None:
        """Wait until the page has presented ``frames`` video frames from ``remote``."""
        await self.wait_for(
            f"s => (s.remotes[{_js(remote)}]?.video.frames ?? 0) >= {int(frames)}",
            f'{frames} video frames from "{remote}"',
            timeout,
        )

    async def wait_channel(self, remote: str, label: str = "chat", timeout: float = 15.0) -> None:
        """Wait until the ``label`` data channel with ``remote`` is open (it opens
        shortly after the connection: SCTP runs over the DTLS transport)."""
        await self.wait_for(
            f"s => s.remotes[{_js(remote)}]?.channels[{_js(label)}] === 'open'",
            f'the "{label}" channel with "{remote}" open',
            timeout,
        )

    async def send_chat(self, text: str, to: str | None = None) -> int:
        """Send chat text (the bots' format); returns how many remotes got it."""
        return int(await self._call("([t, to]) => window.webrtclab.sendChat(t, to)", [text, to]))

    async def send_cursor(self, x: float, y: float, to: str | None = None) -> int:
        """Send a cursor position; returns how many remotes took it."""
        return int(
            await self._call("([x, y, to]) => window.webrtclab.sendCursor(x, y, to)", [x, y, to])
        )

    async def messages(self) -> list[dict[str, Any]]:
        """Data-channel messages sent and received: time_ms (lab clock), direction,
        peer, channel, payload."""
        return list(await self._call("window.webrtclab.messages()"))

    async def share_screen(self) -> dict[str, Any]:
        """Send the (fake) screen instead of the camera; returns the track's settings."""
        return dict(await self._call("window.webrtclab.shareScreen()"))

    async def stop_screen_share(self) -> bool:
        """Go back to the camera."""
        return bool(await self._call("window.webrtclab.stopScreenShare()"))

    async def restart(self, remote: str) -> int:
        """Run the ICE-failure recovery now (an ICE restart, or a new connection for an
        aiortc remote); returns the remote's recovery count."""
        return int(await self._call("p => window.webrtclab.restart(p)", remote))

    async def start_recording(self, remote: str | None = None) -> None:
        """Record what the page receives from ``remote`` with MediaRecorder (WebM)."""
        await self._call("p => window.webrtclab.startRecording(p)", remote)

    async def stop_recording(self, path: str | os.PathLike[str], remote: str | None = None) -> Path:
        """Stop recording and save the WebM file the page offers for download at ``path``."""
        info = await self._call("p => window.webrtclab.stopRecording(p)", remote)
        encoded = await self._call(
            """async url => {
                const bytes = new Uint8Array(await (await fetch(url)).arrayBuffer());
                let text = "";
                for (let i = 0; i < bytes.length; i += 0x8000) {
                    text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
                }
                return btoa(text);
            }""",
            info["url"],
        )
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(base64.b64decode(encoded))
        return target

    async def open_webrtc_internals(self) -> WebrtcInternals:
        """Open chrome://webrtc-internals in a second page of this peer's browser.

        Chromium records the connections' stats only while that page is open: open it
        before the part of the call to keep, then :meth:`WebrtcInternals.dump`.
        """
        page = await self._page().context.new_page()
        try:
            await page.goto(WEBRTC_INTERNALS_URL)
            # Its module script sets these up (Chromium's dump_creator.js).
            await page.wait_for_function("() => window.peerConnectionDataStore !== undefined")
        except Exception as exc:
            await page.close()
            if _is_playwright_error(exc):
                raise WebrtcLabError(
                    f"{self!r}: cannot open {WEBRTC_INTERNALS_URL}: {_page_message(exc)}"
                ) from None
            raise
        return WebrtcInternals(page)

    async def screenshot(self, path: str | os.PathLike[str]) -> Path:
        """Save a PNG of the page (tiles, stats panels, chat)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        await self._page().screenshot(path=str(target))
        return target

    # --- stats (the StatsSampler's source protocol) ----------------------------------------

    async def collect_stats(self) -> dict[str, list[dict[str, Any]]]:
        """The raw getStats reports per remote, as plain JSON."""
        if self.page is None or not self._joined or self._closed:
            return {}
        return dict(await self._call("window.webrtclab.stats()"))

    def stats_rows(self, raw: Mapping[str, list[dict[str, Any]]], now: float) -> list[StatsRow]:
        """Rows with :data:`~webrtclab.stats.STATS_COLUMNS` from ``collect_stats()``."""
        if self.raw_stats:
            self.raw_rows.extend(raw_rows(self.user_id, raw, now))
        return browser_rows(self.user_id, raw, now, self._previous)

    # --- page plumbing ---------------------------------------------------------------------

    def _on_console(self, message: ConsoleMessage) -> None:
        line = f"{message.type}: {message.text}"
        self.console.append(line)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%r console %s", self, line)

    def _on_page_frames(self, rows: list[list[Any]]) -> None:
        for remote, time_ms, frame, sent_ms in rows:
            stamp = Stamp(int(frame), int(sent_ms)) if frame >= 0 else None
            for listener in list(self.frame_listeners):
                listener(self.user_id, str(remote), float(time_ms) / 1000, stamp)

    def _on_page_event(self, remote: str, event: str, detail: str) -> None:
        self.events.add(self.user_id, remote, event, detail)


class WebrtcInternals:
    """chrome://webrtc-internals open in a browser peer's context (see
    :meth:`BrowserPeer.open_webrtc_internals`); it lists every connection of the
    browser and samples their stats once a second while open.
    """

    def __init__(self, page: Page) -> None:
        self.page = page

    def __repr__(self) -> str:
        return f"WebrtcInternals({WEBRTC_INTERNALS_URL!r})"

    async def _download(self, button: str, path: str | os.PathLike[str]) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            async with self.page.expect_download() as info:
                await self.page.evaluate(f"() => document.getElementById({_js(button)}).click()")
            await (await info.value).save_as(target)
        except Exception as exc:
            if _is_playwright_error(exc):
                raise WebrtcLabError(f"{self!r}: no dump: {_page_message(exc)}") from None
            raise
        return target

    async def dump(self, path: str | os.PathLike[str], *, compress: bool = False) -> Path:
        """Save what the page's "Download the webrtc-internals dump" button saves (JSON;
        gzip with ``compress``, the page's default); :func:`webrtclab.load_webrtc_internals`
        reads it."""
        await self.page.evaluate(
            "c => { document.getElementById('dump-checkbox').checked = c; }", compress
        )
        return await self._download("dump-click-target", path)

    async def rtcstats_dump(self, path: str | os.PathLike[str]) -> Path:
        """Save the page's "rtcstats dump" (gzip: one JSON event per line, getStats
        reports included)."""
        return await self._download("dump-click-target-rtcstats", path)

    async def close(self) -> None:
        """Close the page (stats recording stops); closing the peer closes it too."""
        if not self.page.is_closed():
            await self.page.close()


# --- getStats -> rows ----------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _total(stats: list[dict[str, Any]], name: str) -> int:
    return int(sum(_number(s.get(name)) or 0.0 for s in stats))


def _selected_pair(report: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, str | None]:
    """The selected candidate pair and its local candidate type (None before one is)."""
    by_id = {stat.get("id"): stat for stat in report}
    pair = None
    for stat in report:
        if stat.get("type") == "transport" and stat.get("selectedCandidatePairId"):
            pair = by_id.get(stat["selectedCandidatePairId"])
            break
    if pair is None:
        pair = next(
            (
                s
                for s in report
                if s.get("type") == "candidate-pair"
                and s.get("nominated")
                and s.get("state") == "succeeded"
            ),
            None,
        )
    if pair is None:
        return None, None
    local = by_id.get(pair.get("localCandidateId"), {})
    kind = local.get("candidateType")
    return pair, str(kind) if kind else None


def browser_rows(
    peer: str,
    reports: Mapping[str, list[dict[str, Any]]],
    now: float,
    previous: dict[tuple[str, str, str], _Previous],
) -> list[StatsRow]:
    """Chrome getStats reports (per remote) as stats rows; ``previous`` keeps the deltas.

    See the module docstring for how each column is derived.
    """
    rows: list[Any] = []
    for remote, report in sorted(reports.items()):
        pair, candidate_type = _selected_pair(report)
        pair_rtt = _number(pair.get("currentRoundTripTime")) if pair is not None else None
        remote_in: dict[str, dict[str, Any]] = {}
        streams: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for stat in report:
            kind = str(stat.get("kind", ""))
            if stat.get("type") == "outbound-rtp":
                streams.setdefault(("send", kind), []).append(stat)
            elif stat.get("type") == "inbound-rtp":
                streams.setdefault(("recv", kind), []).append(stat)
            elif stat.get("type") == "remote-inbound-rtp":
                remote_in[kind] = stat
        for (direction, kind), stats in sorted(streams.items()):
            sending = direction == "send"
            nbytes = _total(stats, "bytesSent" if sending else "bytesReceived")
            packets = _total(stats, "packetsSent" if sending else "packetsReceived")
            frames = _total(stats, "framesEncoded" if sending else "framesDecoded")
            timestamp = max(_number(s.get("timestamp")) or 0.0 for s in stats)
            fps = NAN
            if kind == "video":
                rates = [_number(s.get("framesPerSecond")) for s in stats]
                known = [r for r in rates if r is not None]
                fps = sum(known) if known else NAN
            if sending:
                remote_stat = remote_in.get(kind, {})
                rtt = _number(remote_stat.get("roundTripTime"))
                if rtt is None:
                    rtt = pair_rtt  # no RTCP report yet: the STUN round trip
                rtt_ms = rtt * 1000 if rtt is not None else NAN
                fraction = _number(remote_stat.get("fractionLost"))
                loss = fraction if fraction is not None else NAN
                jitter = _number(remote_stat.get("jitter"))
                lost = int(_number(remote_stat.get("packetsLost")) or 0)
            else:
                rtt_ms = pair_rtt * 1000 if pair_rtt is not None else NAN
                lost = _total(stats, "packetsLost")
                jitters = [j for j in (_number(s.get("jitter")) for s in stats) if j is not None]
                jitter = max(jitters) if jitters else None
                loss = NAN
            key = (remote, direction, kind)
            ids = frozenset(str(s.get("id")) for s in stats)
            prev = previous.get(key)
            if prev is not None and (prev.ids != ids or nbytes < prev.bytes):
                prev = None  # a new connection (a recovery): its counters start over
            rtx_bytes = _total(stats, "retransmittedBytesSent") if sending else 0
            wire_bytes = nbytes + _total(stats, "headerBytesSent") if sending else 0
            bitrate = rtx_kbps = wire_kbps = NAN
            if prev is not None and timestamp > prev.timestamp_ms:
                elapsed_ms = timestamp - prev.timestamp_ms
                bitrate = (nbytes - prev.bytes) * 8 / elapsed_ms  # kbit/s
                if sending:
                    rtx_kbps = (rtx_bytes - prev.rtx_bytes) * 8 / elapsed_ms
                    wire_kbps = (wire_bytes - prev.wire_bytes) * 8 / elapsed_ms
            target = estimate = NAN
            if sending:
                targets = [t for t in (_number(s.get("targetBitrate")) for s in stats) if t]
                target = sum(targets) / 1000 if targets else NAN
            elif pair is not None:
                incoming = _number(pair.get("availableIncomingBitrate"))
                estimate = incoming / 1000 if incoming is not None else NAN
            if not sending:
                # Loss over the interval, as on aiortc recv rows.
                base_packets, base_lost = (prev.packets, prev.lost) if prev else (0, 0)
                expected = (packets - base_packets) + (lost - base_lost)
                loss = max(0.0, (lost - base_lost) / expected) if expected > 0 else NAN
            previous[key] = _Previous(ids, timestamp, nbytes, packets, lost, rtx_bytes, wire_bytes)
            rows.append(
                StatsRow(
                    now,
                    peer,
                    remote,
                    direction,
                    kind,
                    bitrate,
                    rtt_ms,
                    loss,
                    jitter * 1000 if jitter is not None else NAN,
                    fps,
                    candidate_type,
                    packets,
                    lost,
                    nbytes,
                    frames,
                    target,
                    rtx_kbps,
                    wire_kbps,
                    estimate,
                )
            )
    return rows


def raw_rows(
    peer: str, reports: Mapping[str, list[dict[str, Any]]], now: float
) -> list[BrowserStatsRow]:
    """Every numeric metric of the reports in long format (:data:`RAW_COLUMNS`).

    Only the selected candidate pair is kept, and no codecs, certificates or
    candidates: about 250 values per sample and remote.
    """
    rows: list[Any] = []
    for remote, report in sorted(reports.items()):
        pair, _ = _selected_pair(report)
        pair_id = pair.get("id") if pair is not None else None
        for stat in report:
            kind_of = stat.get("type")
            if kind_of not in _RAW_TYPES or (
                kind_of == "candidate-pair" and stat.get("id") != pair_id
            ):
                continue
            stat_id, kind = str(stat.get("id", "")), str(stat.get("kind", ""))
            for metric, value in stat.items():
                number = _number(value)
                if number is not None and metric != "timestamp":
                    rows.append(
                        BrowserStatsRow(now, peer, remote, kind_of, stat_id, kind, metric, number)
                    )
    return rows


def _js(value: str) -> str:
    """``value`` as a JavaScript string literal."""
    return json.dumps(value)


def _is_playwright_error(exc: BaseException) -> bool:
    # Playwright is imported lazily (an optional dependency): match its error type by name.
    return any(c.__module__.startswith("playwright") for c in type(exc).__mro__)


def _page_message(exc: BaseException) -> str:
    """The page's own error message out of a Playwright error."""
    text = str(getattr(exc, "message", "") or exc)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first.removeprefix("Error: ")
