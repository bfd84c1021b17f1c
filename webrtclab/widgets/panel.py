"""LabPanel: start, steer and watch a two-peer call of a :class:`~webrtclab.lab.Lab` in JupyterLab.

Everything runs on the kernel's event loop, next to the peers: button handlers only
start tasks, the periodic refresh reads the rows the sampler and the quality monitor
have appended since the last tick and sends the numbers to a chart the browser draws,
and frame previews are encoded by one worker thread of the panel's, so a click is
handled at once while a call runs.
"""

from __future__ import annotations

import asyncio
import html
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import av
import ipywidgets as w

from .._tasks import CloseOnce, cancel_and_wait
from ..browser import BrowserPeer
from ..exceptions import ConfigurationError, InvalidStateError, LabTimeoutError, WebrtcLabError
from ..lab import Lab
from ..media import MediaSpec
from ..netem.conditions import LinkConditions
from ..peer import Peer, PeerSession
from ..quality import QualityMonitor
from ..signaling import messages as m
from .chart import LiveChart
from .cursor_pad import CursorPad
from .link_controls import LinkControls
from .live import LiveStats, Readout, frame_jpeg

__all__ = ["CALL_STATES", "LabPanel"]

logger = logging.getLogger(__name__)

CALL_STATES = ("idle", "connecting", "connected", "stopping", "failed", "closed")
"""Values of :attr:`LabPanel.state`."""
CHAT_LINES = 50  # chat log lines kept on screen
PREVIEW_WIDTH = 240


class LabPanel:
    """Widgets for a call between two lab peers: start/stop, link controls, live stats.

    Shows per-direction delay/jitter/loss/rate controls and presets (applied live with
    ``lab.set_link``: no renegotiation), a plot of bitrate, RTT, loss and frame latency
    refreshed every ``interval`` seconds, connection states and candidate types, what
    each peer receives (a frame preview), a chat over the ``chat`` data channel and a
    cursor pad whose positions travel over the unreliable ``cursors`` channel.

    Create it in a notebook cell (it needs the running event loop) and display it::

        lab = Lab(link=LinkConditions(delay_ms=20))
        panel = LabPanel(lab)
        panel                      # the widgets
        await panel.start_call()   # or click "Start call"
        ...
        await panel.close()        # stops its call and every periodic task

    Every control has a method doing the same from code (:meth:`start_call`,
    :meth:`stop_call`, :meth:`set_link`, :meth:`send_chat`, :meth:`move_cursor`);
    the panel works the same without a front end (scripts, nbval).

    :param peers: the user ids of the two peers the panel adds to the lab (the
        second joins last, so it offers, as in the seed).
    :param media: what both peers send (320x240 at 15 fps by default).
    :param interval: seconds between refreshes of the numbers, plot and previews.
    :param window_s: how many seconds the plot shows.
    :param monitor: a quality monitor of the lab to read frame latency from (the panel
        makes its own, without PSNR, when not given).
    """

    def __init__(
        self,
        lab: Lab,
        *,
        peers: Sequence[str] = ("alice", "bob"),
        media: MediaSpec | None = None,
        interval: float = 1.0,
        window_s: float = 60.0,
        monitor: QualityMonitor | None = None,
        connect_timeout: float = 15.0,
    ) -> None:
        if not isinstance(lab, Lab):
            raise ConfigurationError(f"LabPanel needs a Lab, got {type(lab).__name__}")
        names = tuple(peers) if not isinstance(peers, str) else (peers,)
        if (
            len(names) != 2
            or names[0] == names[1]
            or not all(isinstance(n, str) and 0 < len(n) <= m.MAX_ID_LENGTH for n in names)
        ):
            raise ConfigurationError(
                f"peers must be two different user ids of 1-{m.MAX_ID_LENGTH} characters, "
                f"got {peers!r}"
            )
        if not (isinstance(interval, int | float) and 0.05 <= interval <= 60):
            raise ConfigurationError(f"interval must be in [0.05, 60] s, got {interval!r}")
        if not (isinstance(window_s, int | float) and 1 <= window_s <= 3600):
            raise ConfigurationError(f"window_s must be in [1, 3600] s, got {window_s!r}")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise ConfigurationError(
                "LabPanel needs a running event loop: create it in a notebook cell or in async code"
            ) from None
        self.lab = lab
        self.peer_names: tuple[str, str] = (names[0], names[1])
        self.media = media or MediaSpec(width=320, height=240, fps=15)
        self.interval = float(interval)
        self.connect_timeout = connect_timeout
        self.state = "idle"
        self.error = ""
        self.peers: list[Peer] = []  # the call's peers, while it runs
        self.chat_log: list[tuple[float, str, str, str]] = []  # (time_s, from, to, text)
        self.cursors: dict[str, list[float]] = {}  # "sender→receiver" -> last [x, y]
        self.connection_states: dict[tuple[str, str], str] = {}
        self.candidate_types: dict[tuple[str, str], tuple[str, str]] = {}
        self.chart_updates = 0
        self._own_monitor = monitor is None
        self.monitor = monitor if monitor is not None else QualityMonitor(lab, psnr_every=0)
        a, b = self.peer_names
        self.live = LiveStats([(a, b), (b, a)], window_s=window_s)
        # The live chart follows the stats and frame feeds (its readout as rows come).
        self._unfollow = [
            lab.sampler.stats.subscribe(self.live.add_stats),
            self.monitor.frames.subscribe(self.live.add_frames),
        ]
        self._drawn = -1
        self._previewed: dict[tuple[str, str], av.VideoFrame | None] = {}
        self._listeners: list[tuple[Peer, Callable[..., None], Callable[..., None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._starting = False
        self._closed = False
        self._closing = CloseOnce()
        self._build()
        self._unwatch = lab.on_member_added(self._on_member_added)
        # One worker for JPEG previews: they never pile up; the panel's own, so close() ends it.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="webrtclab-panel")
        self._refresh_task = loop.create_task(self._refresh_loop())

    def __repr__(self) -> str:
        return f"LabPanel({self.peer_names[0]!r} ⇄ {self.peer_names[1]!r}, {self.state})"

    # --- widgets ----------------------------------------------------------------------------

    def _build(self) -> None:
        a, b = self.peer_names
        network = self.lab.network
        self.start_button = w.Button(description="Start call", icon="play", button_style="success")
        self.stop_button = w.Button(description="Stop", icon="stop", disabled=True)
        self.status = w.HTML()
        self.connection = w.HTML("no call")
        self.links: dict[tuple[str, str], LinkControls] = {}
        for src, dst in ((a, b), (b, a)):
            initial = network.conditions(src, dst) if network is not None else LinkConditions()
            self.links[(src, dst)] = LinkControls(
                src,
                dst,
                initial,
                self._link_setter(src, dst),
                enabled=network is not None,
            )
        self.readout_html = w.HTML()
        self.plot = LiveChart(window_s=self.live.window_s)
        self.previews = {
            (a, b): w.Image(format="jpeg", layout=w.Layout(width=f"{PREVIEW_WIDTH}px")),
            (b, a): w.Image(format="jpeg", layout=w.Layout(width=f"{PREVIEW_WIDTH}px")),
        }
        self.sender = w.ToggleButtons(
            options=[a, b], description="as", style={"button_width": "70px"}
        )
        self.chat_text = w.Text(placeholder="a chat message", layout=w.Layout(width="200px"))
        self.send_button = w.Button(
            description="Send", icon="paper-plane", layout=w.Layout(width="80px")
        )
        self.chat_view = w.HTML(layout=w.Layout(height="120px", overflow="auto", width="300px"))
        self.pad = CursorPad(label=a)

        self.start_button.on_click(lambda _: self._click(self.start_call, self.start_button))
        self.stop_button.on_click(lambda _: self._click(self.stop_call, self.stop_button))
        self.send_button.on_click(lambda _: self._click(self._send_typed))
        self.sender.observe(self._on_sender, names="value")
        self.pad.observe(self._on_pad, names="position")
        for widget, name in (
            (self.status, "status"),
            (self.connection, "connection"),
            (self.readout_html, "readout"),
            (self.plot, "plot"),
            (self.chat_view, "chat-log"),
        ):
            widget.add_class(f"webrtclab-{name}")

        def preview(key: tuple[str, str]) -> w.VBox:
            receiver, sender = key
            return w.VBox([w.HTML(f"<b>{receiver}</b> receives {sender}"), self.previews[key]])

        self.widget = w.VBox(
            [
                w.HBox(
                    [
                        w.HTML(
                            f"<b>webrtclab</b> · room <code>{html.escape(self.lab.room)}</code>"
                        ),
                        self.start_button,
                        self.stop_button,
                        self.status,
                    ]
                ),
                self.connection,
                w.HBox(
                    [
                        w.VBox([c.widget for c in self.links.values()]),
                        w.VBox([self.readout_html, self.plot]),
                    ]
                ),
                w.HBox(
                    [
                        preview((a, b)),
                        preview((b, a)),
                        w.VBox(
                            [
                                w.HTML("<b>chat</b> (reliable channel)"),
                                self.sender,
                                w.HBox([self.chat_text, self.send_button]),
                                self.chat_view,
                            ]
                        ),
                        w.VBox([w.HTML("<b>cursors</b> (unreliable channel)"), self.pad]),
                    ]
                ),
            ]
        )
        self.widget.add_class("webrtclab-panel")
        self._show_state()
        self._show_readout()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        # Displaying the panel displays its widgets (the panel itself is no widget:
        # its close() is a coroutine, a widget's close() is not).
        return self.widget._repr_mimebundle_(**kwargs)

    # --- the call -----------------------------------------------------------------------------

    async def start_call(self) -> None:
        """Add the two peers to the lab and wait until they are connected."""
        self._check_open()
        if self.peers or self._starting:
            raise InvalidStateError(f"{self!r}: a call is already {self.state}")
        self._starting = True
        self.error = ""
        self.live.clear()
        self._drawn = -1
        self._set_state("connecting")
        try:
            for name in self.peer_names:
                self.peers.append(await self.lab.add_peer(name, media=self.media))
            # Wait for the pair only: other lab peers are not the panel's business.
            a, b = self.peers
            await self._wait_ready(a, b)
        except BaseException as exc:
            await self._remove_peers()
            self._set_state("failed", _reason(exc))
            raise
        finally:
            self._starting = False
        self._set_state("connected")
        self._show_connection()

    async def _wait_ready(self, a: Peer, b: Peer) -> None:
        try:
            async with asyncio.timeout(self.connect_timeout):
                await asyncio.gather(
                    a.wait_connected(1, timeout=self.connect_timeout),
                    b.wait_connected(1, timeout=self.connect_timeout),
                )
                # "connected" is ICE and DTLS; SCTP opens the data channels a moment
                # later, and chat or cursors sent before that would be refused.
                while not all(
                    _channels_open(x.sessions.get(y.user_id)) for x, y in ((a, b), (b, a))
                ):
                    await asyncio.sleep(0.02)
        except TimeoutError as exc:
            if isinstance(exc, LabTimeoutError):
                raise
            raise LabTimeoutError(
                f"{self!r}: the data channels did not open within {self.connect_timeout} s"
            ) from None

    async def stop_call(self) -> None:
        """Remove the call's peers from the lab."""
        self._check_open()
        if not self.peers:
            raise ConfigurationError(f"{self!r}: there is no call to stop")
        self._set_state("stopping")
        await self._remove_peers()
        self._set_state("idle")

    async def _remove_peers(self) -> None:
        peers, self.peers = self.peers, []
        for peer, on_message, on_state in self._listeners:
            peer.remove_listener("message", on_message)
            peer.remove_listener("connectionstatechange", on_state)
        self._listeners.clear()
        errors = []
        for peer in peers:
            try:
                if self.lab.peers.get(peer.user_id) is peer:
                    await self.lab.remove_peer(peer.user_id)
                else:
                    await peer.close()  # the lab let it go already (closed?)
            except Exception as exc:  # gathered: remove the other one before reporting
                errors.append(exc)
        self.cursors.clear()
        self.pad.remote = {}
        self._show_connection()
        if errors:
            raise errors[0]

    # --- link conditions ----------------------------------------------------------------------

    def _link_setter(self, src: str, dst: str) -> Callable[[LinkConditions], None]:
        def apply(conditions: LinkConditions) -> None:
            self.lab.set_link(src, dst, conditions)

        return apply

    def set_link(self, src: str, dst: str, **changes: Any) -> LinkConditions:
        """Change one direction as its controls would: ``set_link("alice", "bob", delay_ms=80)``.

        Keys: ``preset`` (a name of :mod:`webrtclab.netem.presets`, or ``"lab default"``),
        ``delay_ms``, ``jitter_ms``, ``loss`` (0-0.5), ``rate_kbps`` (``None``: unlimited).
        Returns the conditions now in force.
        """
        self._check_open()
        if self.lab.network is None:
            raise ConfigurationError("this lab has no network emulator: create it with link=")
        controls = self.links.get((src, dst))
        if controls is None:
            raise ConfigurationError(
                f"no link {src!r}→{dst!r} in this panel (links: "
                + ", ".join(f"{s}→{d}" for s, d in self.links)
                + ")"
            )
        return controls.set(**changes)

    # --- chat and cursors ---------------------------------------------------------------------

    async def send_chat(self, text: str, sender: str | None = None) -> None:
        """Send ``text`` on the chat channel from ``sender`` (the selected peer) to the other."""
        self._check_open()
        if not isinstance(text, str) or not text.strip():
            raise ConfigurationError(f"chat text must be a non-empty string, got {text!r}")
        peer, remote = self._pair(sender)
        if await peer.send_chat(text, to=remote) == 0:
            raise ConfigurationError(
                f'cannot send chat from "{peer.user_id}": the chat channel is not open'
            )
        # Logged when the other peer receives it: the log shows what was delivered.

    async def _send_typed(self) -> None:
        await self.send_chat(self.chat_text.value)
        self.chat_text.value = ""

    def move_cursor(self, x: float, y: float) -> None:
        """Put the pad's pointer at (x, y) (0-1 of the pad): the selected peer sends it."""
        self._check_open()
        self._pair(None)  # refuses when there is no call
        self.pad.position = [x, y]  # validated by the pad; _on_pad sends it

    def _pair(self, sender: str | None) -> tuple[Peer, str]:
        if self.state != "connected" or len(self.peers) != 2:
            raise ConfigurationError(f"{self!r}: no call is connected (press Start call)")
        name = self.sender.value if sender is None else sender
        if name not in self.peer_names:
            raise ConfigurationError(
                f"sender must be one of {', '.join(self.peer_names)}, got {name!r}"
            )
        index = self.peer_names.index(name)
        return self.peers[index], self.peer_names[1 - index]

    def _on_sender(self, change: dict[str, Any]) -> None:
        self.pad.label = change["new"]

    def _on_pad(self, change: dict[str, Any]) -> None:
        position = change["new"]
        if position is None or self.state != "connected":
            return  # pointer moves without a call go nowhere
        try:
            peer, remote = self._pair(None)
            session = peer.sessions.get(remote)
            if session is not None:  # the session's send never waits: fine in an observer
                session.send_cursor(position[0], position[1])
        except WebrtcLabError as exc:
            logger.debug("%r: cursor not sent: %s", self, exc)

    def _on_member_added(self, peer: Peer | BrowserPeer) -> None:
        # Runs before the peer joins: no state change or message is missed.
        if not isinstance(peer, Peer) or not self._starting or peer.user_id not in self.peer_names:
            return

        def on_message(remote: str, label: str, payload: Any) -> None:
            try:
                self._on_message(peer, remote, label, payload)
            except Exception:
                # Never into the peer's emitter: pyee would re-raise it in the data channel.
                logger.exception("%r: message handler failed", self)

        def on_state(remote: str, state: str) -> None:
            try:
                self._show_connection()
            except Exception:
                logger.exception("%r: state handler failed", self)

        peer.on("message", on_message)
        peer.on("connectionstatechange", on_state)
        self._listeners.append((peer, on_message, on_state))

    def _on_message(self, peer: Peer, remote: str, label: str, payload: Any) -> None:
        if not isinstance(payload, dict):
            return
        if label == "chat" and payload.get("type") == "chat":
            text = payload.get("text")
            if isinstance(text, str):
                self._log_chat(remote, peer.user_id, text)
        elif label == "cursors":
            x, y = payload.get("x"), payload.get("y")
            if isinstance(x, int | float) and isinstance(y, int | float) and _unit(x) and _unit(y):
                key = f"{remote}→{peer.user_id}"
                self.cursors[key] = [float(x), float(y)]
                self.pad.remote = dict(self.cursors)

    def _log_chat(self, sender: str, receiver: str, text: str) -> None:
        now = self.lab.clock.now()
        self.chat_log.append((now, sender, receiver, text))
        lines = [
            f"<div><code>{t:6.1f}</code> {html.escape(f'{s} → {r}: {x}')}</div>"
            for t, s, r, x in self.chat_log[-CHAT_LINES:]
        ]
        self.chat_view.value = "".join(lines)

    # --- refresh ------------------------------------------------------------------------------

    async def _refresh_loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:
                # One failed refresh (a frame that will not convert...) must not end the panel.
                logger.exception("%r: refresh failed", self)
            await asyncio.sleep(self.interval)

    async def refresh(self) -> None:
        """Take the new rows and update the numbers, the plot and the previews now."""
        self.monitor.flush()  # the frame rows batched so far
        self._show_readout()
        self._show_connection()
        if self.live.version != self._drawn:
            self._drawn = self.live.version
            with self.plot.hold_sync():  # one comm message for both traits
                self.plot.series = self.live.chart_series()
                self.plot.now_s = self.live.now_s
            self.chart_updates += 1
        loop = asyncio.get_running_loop()
        for (receiver, sender), image in self.previews.items():
            session = self._session(receiver, sender)
            frame = session.last_video_frame if session is not None else None
            if frame is not None and frame is not self._previewed.get((receiver, sender)):
                self._previewed[(receiver, sender)] = frame
                image.value = await loop.run_in_executor(
                    self._executor, frame_jpeg, frame, PREVIEW_WIDTH
                )

    def _session(self, receiver: str, sender: str) -> Any:
        for peer in self.peers:
            if peer.user_id == receiver:
                return peer.sessions.get(sender)
        return None

    @property
    def readout(self) -> dict[tuple[str, str], Readout]:
        """The latest numbers per direction ``(src, dst)``, as shown."""
        return dict(self.live.readouts)

    def _show_readout(self) -> None:
        head = "".join(
            f"<th>{h}</th>"
            for h in ("", "video kbit/s", "RTT ms", "loss %", "fps", "latency ms", "packets")
        )
        body = []
        for readout in self.live.readouts.values():
            cells = [
                ("bitrate_kbps", _fmt(readout.bitrate_kbps, ".0f")),
                ("rtt_ms", _fmt(readout.rtt_ms, ".1f")),
                ("loss_percent", _fmt(readout.loss_fraction * 100, ".1f")),
                ("frames_per_s", _fmt(readout.frames_per_s, ".1f")),
                ("frame_latency_ms", _fmt(readout.frame_latency_ms, ".0f")),
                ("packets", str(readout.packets)),
            ]
            tds = "".join(f'<td data-metric="{k}">{v}</td>' for k, v in cells)
            body.append(
                f'<tr data-direction="{html.escape(readout.direction)}">'
                f"<td>{html.escape(readout.direction)}</td>{tds}</tr>"
            )
        self.readout_html.value = (
            f"<table class='webrtclab-readout-table'><tr>{head}</tr>{''.join(body)}</table>"
        )

    def _show_connection(self) -> None:
        lines = []
        for peer in self.peers:
            for remote, session in list(peer.sessions.items()):
                state = session.state
                self.connection_states[(peer.user_id, remote)] = state
                path = session.selected_path()
                route = ""
                if path is not None:
                    self.candidate_types[(peer.user_id, remote)] = (path[0], path[2])
                    route = f" · {path[0]} {path[1]} → {path[2]} {path[3]}"
                lines.append(
                    f"<div>{html.escape(peer.user_id)} → {html.escape(remote)}: "
                    f"<b data-state='{state}'>{state}</b>{html.escape(route)}</div>"
                )
        self.connection.value = "".join(lines) or "no call"

    def _set_state(self, state: str, error: str = "") -> None:
        self.state = state
        self.error = error
        self._show_state()

    def _show_state(self) -> None:
        running = self.state in ("connecting", "connected", "stopping")
        self.start_button.disabled = self._closed or running
        self.stop_button.disabled = self._closed or self.state != "connected"
        error = f" <span style='color:#c00'>{html.escape(self.error)}</span>" if self.error else ""
        self.status.value = f"call: <b data-state='{self.state}'>{self.state}</b>{error}"

    # --- tasks and teardown -------------------------------------------------------------------

    def _click(self, action: Callable[[], Awaitable[None]], button: w.Button | None = None) -> None:
        """A front-end action: run it in a task the panel owns; show a refusal, never raise."""
        if self._closed:
            return
        if button is not None:
            # At once, not when the task runs: a double click must not start two calls.
            button.disabled = True
        task = asyncio.ensure_future(self._report(action))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _report(self, action: Callable[[], Awaitable[None]]) -> None:
        try:
            await action()
        except Exception as exc:
            logger.info("%r: %s", self, exc)
            self.error = _reason(exc)
            self._show_state()

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidStateError(f"{self!r} is closed")

    async def close(self) -> None:
        """Stop the refresh and every task, stop the panel's call, close the widgets; idempotent."""
        await self._closing.run(self._close)

    async def _close(self) -> None:
        self._closed = True
        self._unwatch()
        for unfollow in self._unfollow:
            unfollow()
        await cancel_and_wait(self._refresh_task, *self._tasks)
        errors: list[BaseException] = []
        try:
            await self._remove_peers()
        except Exception as exc:  # gathered: the widgets still close
            errors.append(exc)
        if self._own_monitor:
            self.monitor.close()
        # A preview being encoded finishes in the worker, which then ends; nothing waits for it.
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.state = "closed"
        _close_tree(self.widget, set())
        for error in errors:
            logger.warning("%r: error while closing: %r", self, error)
        if errors:
            raise errors[0]

    async def __aenter__(self) -> LabPanel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _close_tree(widget: w.Widget, seen: set[int]) -> None:
    if id(widget) in seen:
        return
    seen.add(id(widget))
    for child in getattr(widget, "children", ()):
        _close_tree(child, seen)
    if isinstance(widget, w.DOMWidget):
        for part in (widget.layout, getattr(widget, "style", None)):
            if isinstance(part, w.Widget):
                _close_tree(part, seen)
    widget.close()


def _channels_open(session: PeerSession | None) -> bool:
    return session is not None and all(
        channel is not None and channel.readyState == "open"
        for channel in (session.chat, session.cursors)
    )


def _unit(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= 1
    )


def _fmt(value: float, spec: str) -> str:
    return "–" if math.isnan(value) else format(value, spec)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return str(exc) or type(exc).__name__
