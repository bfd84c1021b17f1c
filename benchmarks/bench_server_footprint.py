"""Footprint of the standalone server: ``webrtclab --help`` time, ``webrtclab serve`` memory.

Run it from the repository root::

    .venv/bin/python benchmarks/bench_server_footprint.py            # ~20 seconds
    .venv/bin/python benchmarks/bench_server_footprint.py --quick    # ~10 seconds

Two measurements, each against a baseline measured in the same run:

* **startup**: the median wall time of ``python -m webrtclab --help`` over ``--runs``
  runs, against ``python -c pass`` (the interpreter alone).  Target: under 0.3 s.
* **memory**: the resident memory (VmRSS) of ``python -m webrtclab serve`` once
  ``--clients`` WebSocket clients are connected and joined (rooms of two) and idle,
  against a bare aiohttp process that accepts the same WebSockets and does nothing
  else.  Target: at most 80 MB.

Everything runs on 127.0.0.1 on free ports; every child process is killed when the
script ends.  Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

HELP_TARGET_S = 0.3
RSS_TARGET_MB = 80.0
SETTLE_S = 1.0

# The baseline server: aiohttp alone, holding WebSockets open and reading them.
BARE_AIOHTTP = """
import asyncio, sys
from aiohttp import web

async def handle(request):
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for _ in ws:
        pass
    return ws

async def main():
    app = web.Application()
    app.router.add_get("/signal", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(f"listening on ws://127.0.0.1:{port}/signal", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def wall_time(argv: list[str], runs: int) -> float:
    """Median seconds for ``argv`` to run to its end."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, check=True, timeout=60)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None, "no VmRSS in /proc (Linux only)"
    return int(match.group(1)) / 1024


async def idle_rss(argv: list[str], clients: int) -> float:
    """RSS (MB) of the server ``argv`` starts, with ``clients`` joined, idle WebSockets."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        assert process.stdout is not None
        url = None
        async with asyncio.timeout(30):
            while url is None:
                line = (await process.stdout.readline()).decode()
                if not line:
                    raise RuntimeError(f"{argv[:4]} exited before listening")
                found = re.search(r"ws://\S+/signal", line)
                url = found.group(0) if found else None
        async with aiohttp.ClientSession() as session:
            sockets = []
            for i in range(clients):
                ws = await session.ws_connect(url)
                join = {"type": "join", "roomId": f"room{i // 2}", "userId": f"user{i}"}
                await ws.send_str(json.dumps(join))
                sockets.append(ws)
            await asyncio.sleep(SETTLE_S)
            rss = rss_mb(process.pid)
            for ws in sockets:
                await ws.close()
        return rss
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer startup runs")
    parser.add_argument("--runs", type=int, default=None, help="startup runs (median)")
    parser.add_argument("--clients", type=int, default=100)
    args = parser.parse_args()
    runs = args.runs or (5 if args.quick else 15)
    python = sys.executable

    baseline_s = wall_time([python, "-c", "pass"], runs)
    help_s = wall_time([python, "-m", "webrtclab", "--help"], runs)
    serve = [python, "-m", "webrtclab", "serve", "--port", "0"]
    bare = [python, "-c", BARE_AIOHTTP]
    baseline_mb = asyncio.run(idle_rss(bare, args.clients))
    serve_mb = asyncio.run(idle_rss(serve, args.clients))

    rows = [
        ("webrtclab --help (s)", help_s, "python -c pass", baseline_s, HELP_TARGET_S),
        (
            f"webrtclab serve, {args.clients} clients (MB RSS)",
            serve_mb,
            "bare aiohttp",
            baseline_mb,
            RSS_TARGET_MB,
        ),
    ]
    print(f"{'measure':<38} {'value':>8} {'baseline':>16} {'':>8} {'ratio':>6} {'target':>7}")
    ok = True
    for name, value, base_name, base, target in rows:
        met = value <= target
        ok &= met
        print(
            f"{name:<38} {value:>8.3f} {base_name:>16} {base:>8.3f} {value / base:>5.2f}x "
            f"{'<=' if met else '> '}{target:<5} {'ok' if met else 'MISSED'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
