"""Signaling relay benchmark: webrtclab's SignalingServer against the seed's Node relay.

Run it from the repository root::

    .venv/bin/python benchmarks/bench_signaling.py               # ~1 minute
    .venv/bin/python benchmarks/bench_signaling.py --quick       # ~20 seconds
    .venv/bin/python benchmarks/bench_signaling.py --repeat 3    # median of 3, interleaved

It needs Node.js; the ``ws`` package is installed into benchmarks/node_modules with
``npm ci`` when missing.  For each client count (200 and 1000 by default) and each
server it starts

* the server in its own process: webrtclab's ``SignalingServer`` on uvloop with rate
  limiting off (``rate=0``) and a large ``max_queue``, or ``seed_relay.js``, the seed's
  Node ``ws`` relay (the baseline);
* the load generator ``loadgen.js`` (Node, ``ws`` package) in another process: clients in
  rooms of 2, each sending ice-candidate messages to its peer with a send timestamp
  embedded in the candidate string.

On machines with two or more CPUs the server is pinned to CPU 0 and the generator to
CPU 1, so each has a core of its own.  Throughput is delivered messages/s over a fixed
window after a warm-up, with about 1000 messages in flight in total (closed loop);
latency is send to delivery, measured in the generator's process.  A second, paced
phase sends a fixed rate (10k msg/s by default) to measure latency when the server is
not saturated.  The table shows how busy the server, the generator and the rest of the
machine were, so a saturated generator or a busy machine is visible (and warned
about); before each run the script waits (up to ``--wait-idle`` seconds) for other
load to stop.

Everything listens and connects on 127.0.0.1 only, on free ports; every child process
exits when this script does, and every step has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOADGEN = HERE / "loadgen.js"
SEED_RELAY = HERE / "seed_relay.js"
SERVER_LIFETIME_S = 600  # a server child never outlives this, whatever happens
SERVERS = ("seed", "webrtclab")
LABELS = {"seed": "node seed (ws)", "webrtclab": "webrtclab"}


# --- the webrtclab server process ---------------------------------------------------------


def serve_webrtclab(**options: Any) -> None:
    """Child process: run SignalingServer (with ``options``) on uvloop until stdin closes."""
    sys.path.insert(0, str(ROOT))
    import uvloop

    from webrtclab.signaling import SignalingServer

    async def main() -> None:
        server = SignalingServer("127.0.0.1", 0, **options)
        await server.start()
        print(json.dumps({"port": server.port}), flush=True)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        fd = sys.stdin.fileno()

        def on_stdin() -> None:
            if not os.read(fd, 4096):  # EOF: the parent went away
                loop.remove_reader(fd)
                stop.set()

        loop.add_reader(fd, on_stdin)
        try:
            await asyncio.wait_for(stop.wait(), SERVER_LIFETIME_S)
        except TimeoutError:
            pass
        finally:
            await server.close()

    uvloop.run(main())


def loadgen_result(gen: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON summary the load generator printed last; raises if it failed."""
    lines = gen.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"load generator failed: {gen.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    if "error" in result:
        raise RuntimeError(f"load generator: {result['error']}")
    return result


# --- orchestration --------------------------------------------------------------------------


def ensure_node_deps() -> str:
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node is None:
        sys.exit("bench_signaling: Node.js (node) is required for the load generator")
    if not (HERE / "node_modules" / "ws" / "package.json").exists():
        if npm is None:
            sys.exit("bench_signaling: npm is required to install the `ws` package")
        print("installing the `ws` npm package into benchmarks/node_modules ...", flush=True)
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=HERE,
            check=True,
            timeout=300,
        )
    return node


def _pin(cpu: int | None) -> Any:
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def start_server(kind: str, node: str, cpu: int | None, room_size: int) -> subprocess.Popen[str]:
    if kind == "seed":
        cmd = [node, str(SEED_RELAY), str(SERVER_LIFETIME_S)]
    else:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", str(room_size)]
    return subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=_pin(cpu),
        cwd=HERE,
    )


def read_port(proc: subprocess.Popen[str], timeout: float = 20.0) -> int:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise RuntimeError("the server did not report its port in time")
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"the server exited before listening (code {proc.wait()})")
    return int(json.loads(line)["port"])


def stop_server(proc: subprocess.Popen[str]) -> None:
    try:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _busy_seconds() -> float:
    """Busy CPU time of the whole machine so far (all cores), from /proc/stat."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return float("nan")
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(max_wait: float, threshold: float = 0.25) -> None:
    """Wait (at most max_wait s) until the machine is nearly idle before a run."""
    deadline = time.monotonic() + max_wait
    told = False
    while True:
        before = _busy_seconds()
        time.sleep(0.5)
        busy = (_busy_seconds() - before) / 0.5
        if not busy > threshold or time.monotonic() >= deadline:
            return
        if not told:
            print(f"  (other work is using {busy:.2f} cores: waiting for it)", flush=True)
            told = True


def run_one(kind: str, clients: int, args: argparse.Namespace, node: str) -> dict[str, Any]:
    if args.wait_idle > 0:
        wait_for_quiet(args.wait_idle)
    pin = args.pin and (os.cpu_count() or 1) >= 2
    server = start_server(kind, node, 0 if pin else None, args.room_size)
    try:
        port = read_port(server)
        inflight = max(1, round(args.inflight / clients))
        config = {
            "url": f"ws://127.0.0.1:{port}/signal",
            "clients": clients,
            "roomSize": args.room_size,
            "inflight": inflight,
            "warmup": args.warmup,
            "duration": args.duration,
            "pacedRate": args.paced_rate,
            "pacedDuration": args.paced_duration,
            "mix": args.mix,
            "serverPid": server.pid,
            "clkTck": os.sysconf("SC_CLK_TCK"),
            "timeout": 60 + args.warmup + args.duration + args.paced_duration,
        }
        gen = subprocess.run(
            [node, str(LOADGEN), json.dumps(config)],
            capture_output=True,
            text=True,
            timeout=config["timeout"] + 15,
            preexec_fn=_pin(1 if pin else None),
            cwd=HERE,
        )
        result = loadgen_result(gen)
        if result["errorCount"]:
            raise RuntimeError(f"{kind}: {result['errorCount']} errors: {result['errors']}")
        if server.poll() is not None:
            raise RuntimeError(f"{kind} server exited during the run (code {server.returncode})")
        return result
    finally:
        stop_server(server)


def _ms(value: float) -> str:
    return f"{value:.2f}" if value == value else "-"


def print_table(results: dict[tuple[str, int], dict[str, Any]], args: argparse.Namespace) -> None:
    header = (
        f"{'server':<16}{'clients':>8}{'msgs/s':>10}{'vs seed':>9}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'paced p50':>11}{'paced p99':>11}"
        f"{'srv CPU':>9}{'gen CPU':>9}{'other':>7}{'msgs/CPU-s':>12}"
    )
    print()
    print(
        f"signaling relay on 127.0.0.1, rooms of {args.room_size}, mix={args.mix}, "
        f"~{args.inflight} msgs in flight; {args.duration:g} s window after {args.warmup:g} s "
        f"warm-up; paced phase at {args.paced_rate:g} msg/s; median of {args.repeat} run(s)"
    )
    print(header)
    print("-" * len(header))
    warnings = []
    for clients in args.clients:
        for kind in args.servers:
            r = results.get((kind, clients))
            if r is None:
                continue
            sat, paced = r["saturated"], r["paced"]
            seed = results.get(("seed", clients))
            ratio = (
                f"{sat['rate'] / seed['saturated']['rate']:.2f}x"
                if seed is not None and kind != "seed"
                else ""
            )
            lat = sat["latencyMs"]
            plat = paced["latencyMs"] if paced else {"p50": float("nan"), "p99": float("nan")}
            efficiency = sat["rate"] / sat["serverCpu"] if sat["serverCpu"] > 0 else float("nan")
            print(
                f"{LABELS[kind]:<16}{clients:>8}{sat['rate']:>10,.0f}{ratio:>9}"
                f"{_ms(lat['p50']):>9}{_ms(lat['p99']):>9}"
                f"{_ms(plat['p50']):>11}{_ms(plat['p99']):>11}"
                f"{sat['serverCpu']:>9.2f}{sat['generatorCpu']:>9.2f}{sat['otherCpu']:>7.2f}"
                f"{efficiency:>12,.0f}"
            )
            if sat["generatorCpu"] > 0.9:
                warnings.append(
                    f"{LABELS[kind]}, {clients} clients: the load generator was busy "
                    f"{sat['generatorCpu']:.0%} of a core, so it may have been the limit"
                )
            if sat["otherCpu"] > 0.25:
                warnings.append(
                    f"{LABELS[kind]}, {clients} clients: other work used {sat['otherCpu']:.2f} "
                    "cores meanwhile; the figures are lower than on an idle machine"
                )
    print()
    print(
        "msgs/s: relayed messages delivered per second (saturated, closed loop); p50/p99: send "
        "to delivery; paced: latency at the fixed rate; CPU in cores over the window (srv: "
        "server process, gen: load generator, other: everything else on the machine); "
        "msgs/CPU-s: messages per second of server CPU."
    )
    for warning in warnings:
        print(f"warning: {warning}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows (~20 s in all)")
    parser.add_argument("--clients", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    parser.add_argument("--room-size", type=int, default=2)
    parser.add_argument("--inflight", type=int, default=1000, help="messages in flight, total")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds")
    parser.add_argument("--duration", type=float, default=5.0, help="measured window, seconds")
    parser.add_argument("--paced-rate", type=float, default=10000.0, help="msg/s, 0 to skip")
    parser.add_argument("--paced-duration", type=float, default=3.0, help="seconds")
    parser.add_argument("--mix", choices=("ice", "offer", "mixed"), default="ice")
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell; median kept")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=30.0,
        help="before each run, wait up to this many seconds for other load to stop",
    )
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin CPUs")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--serve", type=int, metavar="ROOM_SIZE", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve is not None:
        serve_webrtclab(
            rate=0,  # no rate limit: the benchmark floods on purpose
            max_queue=1 << 16,
            max_room_size=max(args.serve, 2),
            heartbeat_s=30.0,
        )
        return
    if args.quick:
        args.warmup, args.duration, args.paced_duration = 0.5, 1.5, 1.0
    if any(c < args.room_size or c % args.room_size for c in args.clients):
        parser.error("every --clients value must be a multiple of --room-size")
    if not 1 <= args.repeat <= 10 or max(args.clients) > 5000:
        parser.error("--repeat must be 1-10 and --clients at most 5000")
    node = ensure_node_deps()

    started = time.monotonic()
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    # Interleaved (every cell once, then again) so that a burst of other load on the
    # machine does not land on one server only.
    for _ in range(args.repeat):
        for clients in args.clients:
            for kind in args.servers:
                r = run_one(kind, clients, args, node)
                sat = r["saturated"]
                print(
                    f"  {LABELS[kind]:<16} {clients:>5} clients: {sat['rate']:>9,.0f} msg/s, "
                    f"p50 {sat['latencyMs']['p50']:.2f} ms, p99 {sat['latencyMs']['p99']:.2f} ms, "
                    f"server CPU {sat['serverCpu']:.2f}, generator CPU "
                    f"{sat['generatorCpu']:.2f}, other {sat['otherCpu']:.2f}",
                    flush=True,
                )
                runs.setdefault((kind, clients), []).append(r)
    results: dict[tuple[str, int], dict[str, Any]] = {}
    for key, cell in runs.items():
        rates = [r["saturated"]["rate"] for r in cell]
        results[key] = cell[rates.index(statistics.median_low(rates))]
    print_table(results, args)
    print(f"total time {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps({f"{k}/{c}": r for (k, c), r in results.items()}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
