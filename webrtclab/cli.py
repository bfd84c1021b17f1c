"""The webrtclab command: serve, peer, demo, run, sweep, import-stats, export-stats."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

# Subcommands import what they need when they run: ``serve`` and ``--help`` must not
# load aiortc, pandas or matplotlib (see tests/test_architecture.py).
from . import _gcpause
from ._shipped import DATA_DIR, shipped_names
from .exceptions import ConfigurationError, WebrtcLabError

if TYPE_CHECKING:
    from aiortc import RTCIceServer

    from .peer import Peer

__all__ = ["main"]

logger = logging.getLogger("webrtclab")


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 320x240, got {text!r}") from None
    return width, height


def _parser() -> argparse.ArgumentParser:
    scenario_help = "scenario file (TOML), or a shipped scenario's name: " + ", ".join(
        shipped_names(DATA_DIR / "scenarios", ".toml")
    )
    parser = argparse.ArgumentParser(prog="webrtclab", description=__doc__)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the signaling server standalone")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    serve.add_argument("--port", type=int, default=8080, help="port (0 picks a free one)")
    serve.add_argument("--token", default=None, help="require this token from clients")
    serve.add_argument("--max-room-size", type=int, default=32)
    serve.add_argument(
        "--disconnect-grace",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds a member whose socket dropped stays in its room (0: none)",
    )
    serve.add_argument(
        "--turn",
        action="store_true",
        help="start coturn on 127.0.0.1 and hand its credentials to token holders",
    )
    serve.add_argument(
        "--origin",
        action="append",
        default=None,
        help="allow pages from this origin (repeatable; default: any)",
    )
    serve.add_argument(
        "--invite",
        action="append",
        default=[],
        metavar="USER",
        help="print a web client URL with a join token for USER (repeatable)",
    )
    serve.add_argument("--room", default="lab", help="room of the --invite URLs")

    peer = sub.add_parser(
        "peer",
        help="run a headless bot peer that echoes chat",
        description=(
            "A headless bot: joins a room, answers offers, sends synthetic audio and video"
            " and echoes chat back.  ICE candidates: by default, host candidates on 127.0.0.1"
            " and on every address of the machine's real interfaces (IPv4, and IPv6 except"
            " link-local), so a WebRTC stack that gathers on a real interface (a browser,"
            " another implementation, on this machine or on one that reaches it) can call the"
            " bot, which then accepts remote candidates from any address.  --loopback-only:"
            " 127.0.0.1 only, and loopback remote candidates only (as in-process labs do)."
            "  No STUN server is contacted (no server-reflexive candidates); a TURN server"
            " only when the signaling server hands TURN credentials to --token."
        ),
    )
    peer.add_argument("--signal", required=True, help="signaling URL, ws://host:port/signal")
    peer.add_argument("--room", required=True)
    peer.add_argument("--user", required=True)
    peer.add_argument("--token", default=None)
    peer.add_argument("--relay-only", action="store_true", help="use TURN relay candidates only")
    peer.add_argument("--size", type=_size, default=(320, 240), help="video size, e.g. 640x480")
    peer.add_argument("--fps", type=float, default=15.0)
    peer.add_argument("--media", default=None, help="a media file to send instead of synthetic")
    peer.add_argument(
        "--loopback-only",
        action="store_true",
        help="gather on 127.0.0.1 only (not on the real interfaces too); accept loopback"
        " candidates only",
    )
    peer.add_argument("--duration", type=float, default=None, help="leave after S seconds")

    run = sub.add_parser("run", help="run a scenario TOML file into a result folder")
    run.add_argument("scenario", help=scenario_help)
    run.add_argument("--out", required=True, help="result folder")
    run.add_argument("--overwrite", action="store_true", help="replace a result in --out")
    run.add_argument("--no-progress", action="store_true")

    sweep = sub.add_parser("sweep", help="run every combination of a grid of scenario values")
    sweep.add_argument("scenario", help=scenario_help)
    sweep.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a scenario key and its values, e.g. link.loss=0,0.02 (repeatable)",
    )
    sweep.add_argument("--out", required=True, help="sweep folder (one result folder per run)")
    sweep.add_argument("--workers", type=int, default=None, help="concurrent runs (default: cores)")
    sweep.add_argument(
        "--scheduler", default=None, help="Dask scheduler address, e.g. tcp://h:8786"
    )
    sweep.add_argument("--no-progress", action="store_true")

    demo = sub.add_parser(
        "demo", help="run the demo experiment (two peers, 40 ms + 1 %% loss) into a folder"
    )
    demo.add_argument("--out", required=True, help="result folder")
    demo.add_argument("--duration", type=float, default=10.0, help="call length in seconds")
    demo.add_argument("--no-progress", action="store_true")

    imported = sub.add_parser(
        "import-stats",
        help="load a chrome://webrtc-internals dump or a getStats log into a result folder",
    )
    imported.add_argument("file", help="the dump (JSON or gzip), rtcstats dump or JSON-lines log")
    imported.add_argument("--out", required=True, help="result folder")
    imported.add_argument("--overwrite", action="store_true", help="replace a result in --out")
    imported.add_argument(
        "--peer", default=None, help="the local peer's name (default: from the URL)"
    )

    exported = sub.add_parser(
        "export-stats", help="write a result folder as a chrome://webrtc-internals dump"
    )
    exported.add_argument("result", help="result folder")
    exported.add_argument("--out", required=True, help="dump file (.json, or .gz to compress)")
    return parser


async def _serve(args: argparse.Namespace) -> None:
    from .auth import TurnConfig
    from .signaling.server import SignalingServer
    from .turn import TurnServer

    # Secrets come from the environment, never from the command line (ps shows it).
    join_secret = os.environ.get("WEBRTCLAB_JOIN_SECRET") or None
    if args.invite and join_secret is None:
        raise ConfigurationError("--invite needs WEBRTCLAB_JOIN_SECRET in the environment")
    turn_server = TurnServer() if args.turn else None
    turn: TurnConfig | Callable[[], TurnConfig] | None = TurnConfig.from_env()
    if turn_server is not None:
        turn = lambda: turn_server.config  # noqa: E731 (coturn's port is known once it runs)
    server = SignalingServer(
        args.host,
        args.port,
        token=args.token,
        max_room_size=args.max_room_size,
        disconnect_grace_s=args.disconnect_grace,
        join_secret=join_secret,
        allowed_origins=args.origin,
        turn=turn,
    )
    with _stop_on_signals() as stop:
        try:
            if turn_server is not None:
                await turn_server.start()
            async with server:
                print(f"webrtclab signaling server on {server.url}", flush=True)  # noqa: T201
                print(f"web client on {server.http_url}/", flush=True)  # noqa: T201
                if server.turn is not None:
                    print(f"TURN on {', '.join(server.turn.uris)}", flush=True)  # noqa: T201
                for user in args.invite:
                    token = server.issue_token(user, room=args.room)
                    query = urlencode({"room": args.room, "user": user, "token": token})
                    print(f"invite {user}: {server.http_url}/?{query}", flush=True)  # noqa: T201
                await _wait(stop)
        finally:
            if turn_server is not None:
                await turn_server.close()


async def _ice_servers(signal_url: str, token: str | None) -> list[RTCIceServer]:
    """TURN credentials from the server's endpoint when it hands them to this token."""
    import aiohttp
    from aiortc import RTCIceServer

    if token is None:
        return []
    http_url = signal_url.replace("ws", "http", 1).rsplit("/", 1)[0]
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{http_url}/api/turn-credentials", headers={"Authorization": f"Bearer {token}"}
        ) as response:
            if response.status != 200:  # no TURN there, or not for this token
                logger.info("no TURN credentials from %s (HTTP %d)", http_url, response.status)
                return []
            body = await response.json()
    return [RTCIceServer(**server) for server in body["iceServers"]]


async def _bot(args: argparse.Namespace) -> Peer:
    """The ``peer`` command's bot, not yet joined."""
    from .loopback import LOOPBACK, LOOPBACK_AND_REAL
    from .media import MediaSpec
    from .peer import Peer

    width, height = args.size
    spec = MediaSpec(width=width, height=height, fps=args.fps)
    if args.media:
        spec = MediaSpec(video=args.media, audio=args.media)
    return Peer(
        args.user,
        media=spec,
        echo_chat=True,
        host_addresses=LOOPBACK if args.loopback_only else LOOPBACK_AND_REAL,
        # An explicit list, empty unless the server hands out TURN: aiortc's own
        # default (no iceServers) is Google's STUN server.
        ice_servers=await _ice_servers(args.signal, args.token),
        relay_only=args.relay_only,
    )


async def _peer(args: argparse.Namespace) -> None:
    peer = await _bot(args)
    peer.on(
        "connectionstatechange",
        lambda remote, state: logger.info("%s: connection with %s is %s", args.user, remote, state),
    )
    _gcpause.hold()  # a bot runs until stopped: its process exits, nothing to release
    with _stop_on_signals() as stop:
        async with peer:
            existing = await peer.join(args.signal, args.room, token=args.token)
            print(  # noqa: T201
                f"{args.user} joined room {args.room!r} with {existing or 'nobody'}", flush=True
            )
            await _wait(stop, args.duration)


def _print_json(summary: dict[str, float]) -> None:
    """A summary as strict JSON (NaN, where nothing was measured, becomes null)."""
    clean = {k: (None if math.isnan(v) else v) for k, v in summary.items()}
    print(json.dumps(clean, indent=2, allow_nan=False))  # noqa: T201


async def _run_scenario(args: argparse.Namespace) -> None:
    from .experiment import load_scenario, run_scenario

    scenario = load_scenario(args.scenario)
    with _stop_on_signals() as stop:
        # SIGINT/SIGTERM cancel the run: it finalises its folder as "interrupted".
        task = asyncio.create_task(
            run_scenario(
                scenario, args.out, progress=not args.no_progress, overwrite=args.overwrite
            )
        )
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            print(f"interrupted: partial results in {args.out}/", file=sys.stderr)  # noqa: T201
            raise SystemExit(130)
        result = task.result()
    _print_json(result.summary())
    print(f"results in {result.path}/", file=sys.stderr)  # noqa: T201


def _import_stats(args: argparse.Namespace) -> None:
    from .fielddata import load_webrtc_internals

    field = load_webrtc_internals(args.file, peer=args.peer)  # refused before --out is made
    out = field.write(args.out, overwrite=args.overwrite)
    _print_json(field.summary())
    print(f"results in {out}/", file=sys.stderr)  # noqa: T201


def _export_stats(args: argparse.Namespace) -> None:
    from .fielddata import export_webrtc_internals

    path = export_webrtc_internals(args.result, args.out)
    print(f"webrtc-internals dump in {path}", file=sys.stderr)  # noqa: T201


def _sweep(args: argparse.Namespace) -> None:
    from .experiment.sweep import parse_grid, sweep

    summary = sweep(
        args.scenario,
        parse_grid(args.grid),
        args.out,
        workers=args.workers,
        scheduler=args.scheduler,
        progress=not args.no_progress,
    )
    print(summary.drop(columns=["path"]).to_string(index=False))  # noqa: T201
    print(f"summary in {args.out}/summary.parquet and summary.csv", file=sys.stderr)  # noqa: T201


async def _demo(args: argparse.Namespace) -> None:
    from .demo import run_demo
    from .experiment.results import TABLES

    result = await run_demo(args.out, args.duration, progress=not args.no_progress)
    _print_json(result.summary())
    print(  # noqa: T201
        f"results in {result.out}/: metadata.json, {'/'.join(TABLES)} .parquet,"
        " stats.csv, events.csv, timeline.png"
    )


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[asyncio.Event]:
    """An event set by SIGINT/SIGTERM; installed first, so a signal during startup cleans up."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _wait(stop: asyncio.Event, duration: float | None = None) -> None:
    """Until ``stop`` is set or ``duration`` seconds have passed."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), duration)


def _run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = logging.WARNING - 10 * args.verbose
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.verbose == 0:
        # aiortc warns on every undecodable frame, which lossy links produce by design.
        logging.getLogger("aiortc").setLevel(logging.ERROR)
    handlers = {"serve": _serve, "peer": _peer, "demo": _demo, "run": _run_scenario}
    try:
        if args.command == "sweep":
            _sweep(args)  # synchronous: the runs happen in worker processes
        elif args.command == "import-stats":
            _import_stats(args)
        elif args.command == "export-stats":
            _export_stats(args)
        else:
            _run(handlers[args.command](args))
    except WebrtcLabError as exc:
        print(f"webrtclab {args.command}: error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
