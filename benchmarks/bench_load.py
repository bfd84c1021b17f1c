"""Signaling load benchmark: 1000 WebSocket clients in rooms of 10, steady traffic.

Run it from the repository root::

    .venv/bin/python benchmarks/bench_load.py            # ~1 minute
    .venv/bin/python benchmarks/bench_load.py --quick    # ~20 seconds

Each client joins a room and sends ``--rate`` ice-candidate messages per second to the
next member of its room (an open loop: the generator does not wait for deliveries).  The
server runs in its own process with its production settings (rate limit, queue bounds,
heartbeat), webrtclab's SignalingServer first and the seed's Node relay as the baseline
in the same run.  The generator is ``loadgen.js`` of bench_signaling.py (Node, ``ws``),
in paced mode only.  Reported: delivered messages/s, send-to-delivery latency p50/p99,
errors (error replies, closed sockets, undelivered messages) and the server's RSS idle,
at its peak with every client joined, and once the clients are gone.

Everything listens and connects on 127.0.0.1 only; children exit with this script.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import bench_signaling as bs  # noqa: E402  (a sibling script, not a package)

SERVERS = ("webrtclab", "seed")
LABELS = {"seed": "node seed (ws)", "webrtclab": "webrtclab"}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class RssSampler(threading.Thread):
    """Samples a process's RSS every ``interval`` seconds until stopped."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[float] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.samples.append(rss_mb(self.pid))

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def start(kind: str, node: str, cpu: int | None) -> subprocess.Popen[str]:
    if kind == "seed":
        cmd = [node, str(bs.SEED_RELAY), str(bs.SERVER_LIFETIME_S)]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve"]
    return subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=bs._pin(cpu),
        cwd=HERE,
    )


def run_one(kind: str, args: argparse.Namespace, node: str) -> dict[str, Any]:
    if args.wait_idle > 0:
        bs.wait_for_quiet(args.wait_idle)
    pin = args.pin and (os.cpu_count() or 1) >= 2
    server = start(kind, node, 0 if pin else None)
    try:
        port = bs.read_port(server)
        time.sleep(0.5)
        idle = rss_mb(server.pid)
        config = {
            "url": f"ws://127.0.0.1:{port}/signal",
            "clients": args.clients,
            "roomSize": args.room_size,
            "inflight": 0,  # no saturation phase: paced (steady) traffic only
            "warmup": 0.0,
            "duration": 0.05,
            "pacedRate": args.rate * args.clients,
            "pacedDuration": args.duration,
            "serverPid": server.pid,
            "clkTck": os.sysconf("SC_CLK_TCK"),
            "timeout": 120 + args.duration,
        }
        sampler = RssSampler(server.pid)
        sampler.start()
        started, cpu0 = time.monotonic(), cpu_seconds(server.pid)
        try:
            gen = subprocess.run(
                [node, str(bs.LOADGEN), json.dumps(config)],
                capture_output=True,
                text=True,
                timeout=config["timeout"] + 15,
                preexec_fn=bs._pin(1 if pin else None),
                cwd=HERE,
            )
        finally:
            sampler.stop()
        wall = time.monotonic() - started
        result_cpu = (cpu_seconds(server.pid) - cpu0) / wall
        result = bs.loadgen_result(gen)
        time.sleep(1.0)  # the server notices the closed sockets
        if server.poll() is not None:
            raise RuntimeError(f"{kind} server exited during the run (code {server.returncode})")
        result["rss"] = {
            "idle": idle,
            "peak": max(sampler.samples, default=float("nan")),
            "after": rss_mb(server.pid),
        }
        result["wall"] = wall
        result["serverCpu"] = result_cpu  # cores, joins and traffic included
        return result
    finally:
        bs.stop_server(server)


def print_table(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    print()
    print(
        f"signaling load on 127.0.0.1: {args.clients} clients in rooms of {args.room_size}, "
        f"each sending {args.rate:g} msg/s to a roommate ({args.rate * args.clients:,.0f} "
        f"msg/s offered) for {args.duration:g} s; server with its default limits"
    )
    header = (
        f"{'server':<16}{'msgs/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
        f"{'RSS idle':>10}{'peak':>8}{'after':>8}{'KiB/client':>12}{'srv CPU':>9}"
    )
    print(header)
    print("-" * len(header))
    for kind in args.servers:
        r = results.get(kind)
        if r is None:
            continue
        paced, rss = r["paced"], r["rss"]
        per_client = (rss["peak"] - rss["idle"]) * 1024 / args.clients
        print(
            f"{LABELS[kind]:<16}{paced['rate']:>10,.0f}{bs._ms(paced['latencyMs']['p50']):>9}"
            f"{bs._ms(paced['latencyMs']['p99']):>9}{r['errorCount']:>8}"
            f"{rss['idle']:>9.1f}M{rss['peak']:>7.1f}M{rss['after']:>7.1f}M{per_client:>12.1f}"
            f"{r['serverCpu']:>9.2f}"
        )
    mine, seed = results.get("webrtclab"), results.get("seed")
    if mine and seed:
        lat = mine["paced"]["latencyMs"], seed["paced"]["latencyMs"]
        mem = (mine["rss"]["peak"] - mine["rss"]["idle"]) / max(
            seed["rss"]["peak"] - seed["rss"]["idle"], 1e-9
        )
        print(
            f"webrtclab / seed: p50 {lat[0]['p50'] / lat[1]['p50']:.2f}x, "
            f"p99 {lat[0]['p99'] / lat[1]['p99']:.2f}x, memory per client {mem:.2f}x"
        )
    print()
    print(
        "msgs/s: relayed messages delivered per second; p50/p99: send to delivery in the "
        "generator; errors: error replies, sockets closed and messages never delivered; RSS: "
        "the server process before the clients, at its peak, and after they left; srv CPU: "
        "cores the server used over the run (joins included)."
    )
    for kind, r in results.items():
        for error in r["errors"]:
            print(f"  {LABELS[kind]}: {error}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 5 s window (~20 s in all)")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--room-size", type=int, default=10)
    parser.add_argument("--rate", type=float, default=5.0, help="msg/s each client sends")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of traffic")
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    parser.add_argument("--wait-idle", type=float, default=30.0)
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        bs.serve_webrtclab()  # production defaults: limits stay on
        return
    if args.quick:
        args.duration = 5.0
    if args.clients % args.room_size or not 2 <= args.room_size <= 32:
        parser.error("--clients must be a multiple of --room-size (2-32)")
    if not 0 < args.rate * args.clients <= 100_000 or args.clients > 5000:
        parser.error("offered load must be 1-100000 msg/s and --clients at most 5000")
    try:  # a thousand sockets per side, and then some
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    except (ImportError, ValueError, OSError):
        pass
    node = bs.ensure_node_deps()
    started = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    for kind in args.servers:
        r = run_one(kind, args, node)
        results[kind] = r
        paced = r["paced"]
        print(
            f"  {LABELS[kind]:<16} {paced['rate']:>8,.0f} msg/s delivered, p50 "
            f"{paced['latencyMs']['p50']:.2f} ms, p99 {paced['latencyMs']['p99']:.2f} ms, "
            f"{r['errorCount']} errors, RSS {r['rss']['idle']:.1f} -> {r['rss']['peak']:.1f} "
            f"-> {r['rss']['after']:.1f} MB",
            flush=True,
        )
    print_table(results, args)
    print(f"total time {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
