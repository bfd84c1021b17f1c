"""Network emulator benchmark: fidelity and capacity of the UDP relay (webrtclab.netem.relay).

Run it from the repository root::

    .venv/bin/python benchmarks/bench_netem.py            # ~2.5 minutes
    .venv/bin/python benchmarks/bench_netem.py --quick    # ~1 minute

Probes go through the real relay: a ``Network`` runs in this process (its relay thread,
on uvloop) and two child processes play the peers "a" and "b", each with a UDP socket on
127.0.0.1 whose candidate is rewritten by ``Network.rewrite_candidate`` exactly as the
signaling hook does for lab peers.  "a" sends to the relay socket standing for b's
candidate; "b" receives.

* The sender is a tight, paced loop of ``sock.sendto``; every probe carries a sequence
  number and ``time.monotonic_ns()`` at send.
* The receiver reads with ``recvmmsg(2)`` (via ctypes, up to 256 datagrams per call)
  and takes the kernel's receive timestamp of every datagram (``SO_TIMESTAMPNS``), so
  its own scheduling delays do not count: one-way delay = kernel arrival at b - send
  time at a.  (The kernel stamps CLOCK_REALTIME; the receiver converts to the monotonic
  clock with an offset it measures, and reports how much that offset drifted.)
* On machines with two or more CPUs, this process (the relay) is pinned to CPU 0 and
  the two children to CPU 1.

Fidelity: for each condition, the measured delay, loss and rate against the configured
ones.  The reference per packet is a ``LinkModel`` replayed offline with the relay's
seed for that direction and the *send* times of the probes: the relay saw each probe a
little later than it was sent, and every release time of the model is non-decreasing
in the arrival times, so a probe that arrives before its replayed release time was
released early (with 0.05 ms of slack for the two clocks).  When queue drops make the
relay's drop set differ from the replay's, the early check falls back to the per-packet
bound ``delay + size / rate``.

Capacity: unimpaired forwarding at increasing offered rates of 100-byte packets, with
delivered packets/s, loss and latency (best and median of a few trials); the same
generator sending straight to the receiver (no relay) shows the generator is not the
bottleneck, and the kernel's per-socket drop counters tell where packets were lost.

Every table says how much CPU other processes took on the relay's core meanwhile: on a
shared machine that, not the relay, is what spoils a tail latency or a capacity step.

Only 127.0.0.1, only ephemeral ports; every child exits when this script does, and
every step has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import errno
import math
import multiprocessing as mp
import os
import socket
import statistics
import struct
import sys
import time
import zlib
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
HOST = "127.0.0.1"
SEED = 7
HEADER = struct.Struct("<QQ")  # sequence number, send time (monotonic ns)
SOCKET_BUFFER = 4 << 20
STEP_DEADLINE_S = 120.0  # no child command may take longer than this
EARLY_SLACK_MS = 0.05
CLOCK_CHECKS: list[dict[str, Any]] = []  # the receiver's clock-offset drift, per run

# --- recvmmsg via ctypes (Linux) -------------------------------------------------------------

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # SO_TIMESTAMPNS_OLD on Linux
MSG_WAITFORONE = 0x10000
VLEN = 256
SLOT = 2048  # bytes of payload buffer per message
CONTROL = 32  # CMSG_SPACE(sizeof(struct timespec))


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_Iovec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


def _pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError:
            pass


def _clock_offset_ns() -> int:
    """CLOCK_REALTIME - CLOCK_MONOTONIC, from the tightest of a few back-to-back reads."""
    best = None
    for _ in range(20):
        m0 = time.monotonic_ns()
        r = time.time_ns()
        m1 = time.monotonic_ns()
        if best is None or m1 - m0 < best[0]:
            best = (m1 - m0, r - (m0 + m1) // 2)
    assert best is not None
    return best[1]


# --- what else the machine is doing -----------------------------------------------------------


class CpuMonitor:
    """CPU used by this process (the relay) and by everything else on the relay's core.

    Other jobs on the relay's core delay it in ways no code change can fix; the tables
    show how busy that core was with other work while each row was measured.
    """

    def __init__(self, cpu: int = 0) -> None:
        self.cpu = cpu
        self.tick = os.sysconf("SC_CLK_TCK")
        self.relay_pct = math.nan
        self.others_pct = math.nan

    def _core_busy_s(self) -> float:
        try:
            with open("/proc/stat") as f:
                for line in f:
                    if line.startswith(f"cpu{self.cpu} "):
                        v = [int(x) for x in line.split()[1:]]
                        # busy = user nice system irq softirq steal (not idle, iowait)
                        return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / self.tick
        except OSError:
            pass
        return math.nan

    def __enter__(self) -> CpuMonitor:
        self.t0, self.c0, self.b0 = time.monotonic(), time.process_time(), self._core_busy_s()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.monotonic() - self.t0
        mine = time.process_time() - self.c0
        self.relay_pct = mine / wall * 100
        pinned = (os.cpu_count() or 1) >= 2
        core = self._core_busy_s() - self.b0
        self.others_pct = max(0.0, core - mine) / wall * 100 if pinned else math.nan


def socket_drops(port: int) -> int:
    """Datagrams the kernel dropped at the UDP socket bound to 127.0.0.1:``port``."""
    local = f"0100007F:{port:04X}"
    try:
        with open("/proc/net/udp") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[1] == local:
                    return int(fields[-1])
    except OSError:
        pass
    return 0


# --- child processes ---------------------------------------------------------------------------


def receiver_main(conn: Connection, cpu: int) -> None:
    """Child "b": receive batches until told to stop; send back (seq, sent, arrived, size)."""
    _pin(cpu)
    libc = ctypes.CDLL(None, use_errno=True)
    recvmmsg = libc.recvmmsg
    recvmmsg.argtypes = [
        ctypes.c_int,
        ctypes.POINTER(_Mmsghdr),
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_void_p,
    ]
    recvmmsg.restype = ctypes.c_int
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    # recvmmsg blocks for the first datagram at most this long, then we look at the pipe.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", 0, 50_000))
    sock.bind((HOST, 0))
    payload = ctypes.create_string_buffer(VLEN * SLOT)
    control = ctypes.create_string_buffer(VLEN * CONTROL)
    iovecs = (_Iovec * VLEN)()
    msgs = (_Mmsghdr * VLEN)()
    base_p, base_c = ctypes.addressof(payload), ctypes.addressof(control)
    for i in range(VLEN):
        iovecs[i].iov_base = base_p + i * SLOT
        iovecs[i].iov_len = SLOT
        hdr = msgs[i].msg_hdr
        hdr.msg_iov = ctypes.pointer(iovecs[i])
        hdr.msg_iovlen = 1
        hdr.msg_control = base_c + i * CONTROL
        hdr.msg_controllen = CONTROL
    words = np.frombuffer(msgs, dtype=np.uint64).reshape(VLEN, ctypes.sizeof(_Mmsghdr) // 8)
    lens = np.frombuffer(msgs, dtype=np.uint32).reshape(VLEN, ctypes.sizeof(_Mmsghdr) // 4)
    controllen_col = _Msghdr.msg_controllen.offset // 8
    msglen_col = _Mmsghdr.msg_len.offset // 4
    pwords = np.frombuffer(payload, dtype=np.uint64).reshape(VLEN, SLOT // 8)
    cwords = np.frombuffer(control, dtype=np.int64).reshape(VLEN, CONTROL // 8)
    fd = sock.fileno()
    conn.send(sock.getsockname()[:2])
    while True:
        command = conn.recv()
        if command == "exit":
            break
        # command == "start": receive until "stop"
        chunks: list[np.ndarray] = []
        no_timestamp = 0
        offset0 = _clock_offset_ns()
        conn.send("started")
        next_check = time.monotonic() + 0.05
        while True:
            words[:, controllen_col] = CONTROL
            n = recvmmsg(fd, msgs, VLEN, MSG_WAITFORONE, None)
            if n > 0:
                out = np.empty((n, 4), dtype=np.int64)
                out[:, 0] = pwords[:n, 0]
                out[:, 1] = pwords[:n, 1]
                has = words[:n, controllen_col] >= CONTROL
                no_timestamp += int(n - has.sum())
                out[:, 2] = cwords[:n, 2] * 1_000_000_000 + cwords[:n, 3]
                out[~has, 2] = time.time_ns()  # no kernel timestamp: now will do
                out[:, 3] = lens[:n, msglen_col]
                chunks.append(out)
            elif n < 0 and ctypes.get_errno() not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                raise OSError(ctypes.get_errno(), "recvmmsg failed")
            now = time.monotonic()
            if n <= 0 or now >= next_check:
                next_check = now + 0.05
                if conn.poll():
                    assert conn.recv() == "stop"
                    break
        offset1 = _clock_offset_ns()
        records = np.concatenate(chunks) if chunks else np.empty((0, 4), dtype=np.int64)
        # Kernel timestamps are CLOCK_REALTIME: convert to the senders' monotonic clock.
        records[:, 2] -= (offset0 + offset1) // 2
        conn.send_bytes(records.tobytes())
        conn.send({"drift_ns": offset1 - offset0, "no_timestamp": no_timestamp})
    sock.close()


def sender_main(conn: Connection, cpu: int) -> None:
    """Child "a": for each ("run", target, phases), send paced probes; report what was sent.

    ``phases`` is a list of (packets_per_s, duration_s, size_bytes); sequence numbers run
    on across phases.
    """
    _pin(cpu)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
    sock.bind((HOST, 0))
    conn.send(sock.getsockname()[:2])
    pack_into = HEADER.pack_into
    sendto = sock.sendto
    monotonic_ns = time.monotonic_ns
    while True:
        command = conn.recv()
        if command == "exit":
            break
        _, target, phases = command
        seq = 0
        errors = 0
        sent_per_phase = []
        t_start = monotonic_ns()
        for rate, duration, size in phases:
            buf = bytearray(size)
            view = memoryview(buf)
            total = int(rate * duration)
            t0 = monotonic_ns()
            period_ns = 1e9 / rate
            first = seq
            i = 0
            while i < total:
                now = monotonic_ns()
                due = min(total, int((now - t0) / period_ns) + 1)
                if due <= i:
                    wait = (t0 + i * period_ns - now) / 1e9
                    if wait > 20e-6:
                        time.sleep(wait)
                    continue
                while i < due:
                    pack_into(buf, 0, seq, monotonic_ns())
                    try:
                        sendto(view, target)
                    except OSError:
                        errors += 1
                    seq += 1
                    i += 1
            sent_per_phase.append((seq - first, (monotonic_ns() - t0) / 1e9))
        conn.send(
            {
                "sent": seq,
                "errors": errors,
                "phases": sent_per_phase,
                "t_start_ns": t_start,
                "t_end_ns": monotonic_ns(),
            }
        )
    sock.close()


@dataclass
class Peers:
    sender: Any
    receiver: Any
    send_conn: Connection
    recv_conn: Connection
    a_addr: tuple[str, int]
    b_addr: tuple[str, int]

    @classmethod
    def spawn(cls) -> Peers:
        ctx = mp.get_context("spawn")
        cpu = 1 if (os.cpu_count() or 1) >= 2 else 0
        send_parent, send_child = ctx.Pipe()
        recv_parent, recv_child = ctx.Pipe()
        receiver = ctx.Process(target=receiver_main, args=(recv_child, cpu), daemon=True)
        sender = ctx.Process(target=sender_main, args=(send_child, cpu), daemon=True)
        receiver.start()
        sender.start()
        b_addr = _recv(recv_parent)
        a_addr = _recv(send_parent)
        return cls(sender, receiver, send_parent, recv_parent, tuple(a_addr), tuple(b_addr))

    def run(
        self, target: tuple[str, int], phases: list[tuple[float, float, int]], drain_s: float
    ) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
        """Send ``phases`` to ``target``; records (seq, sent_ns, arrived_ns, size) at b."""
        self.recv_conn.send("start")
        assert _recv(self.recv_conn) == "started"
        self.send_conn.send(("run", target, phases))
        sent = _recv(self.send_conn)
        time.sleep(drain_s)
        self.recv_conn.send("stop")
        if not self.recv_conn.poll(STEP_DEADLINE_S):
            raise TimeoutError("receiver did not answer")
        records = np.frombuffer(self.recv_conn.recv_bytes(), dtype=np.int64).reshape(-1, 4)
        info = _recv(self.recv_conn)
        return records, sent, info

    def close(self) -> None:
        for conn in (self.send_conn, self.recv_conn):
            try:
                conn.send("exit")
            except OSError:
                pass
        for proc in (self.sender, self.receiver):
            proc.join(5)
            if proc.is_alive():
                proc.terminate()


def _recv(conn: Connection) -> Any:
    if not conn.poll(STEP_DEADLINE_S):
        raise TimeoutError("child process did not answer in time")
    return conn.recv()


# --- the relay side ------------------------------------------------------------------------------


def candidate(addr: tuple[str, int]) -> str:
    return f"candidate:1 1 udp 2130706431 {addr[0]} {addr[1]} typ host"


@dataclass
class Setup:
    network: Any
    target: tuple[str, int]  # where a sends: the relay socket standing for b
    link_start: float  # on network.clock, at or before the link models' start


def relay_setup(peers: Peers, conditions: Any) -> Setup:
    from webrtclab.events import LabClock
    from webrtclab.netem.relay import Network
    from webrtclab.sdp import parse_candidate

    network = Network(conditions, seed=SEED, clock=LabClock())
    network.start()
    link_start = network.clock.now()
    network.rewrite_candidate("a", "b", candidate(peers.a_addr))
    text = network.rewrite_candidate("b", "a", candidate(peers.b_addr))
    assert text is not None
    parsed = parse_candidate(text)
    time.sleep(0.05)  # the relay thread attaches the sockets to its loop
    return Setup(network, (parsed.ip, parsed.port), link_start)


def close_network(network: Any) -> None:
    asyncio.run(network.close())


def link_row(network: Any, src: str = "a", dst: str = "b") -> dict[str, Any]:
    from webrtclab.netem.relay import LINK_COLUMNS

    for row in network.link_rows():
        if row[1] == src and row[2] == dst:
            return dict(zip(LINK_COLUMNS, row, strict=True))
    raise LookupError(f"no link {src}->{dst}")


def replay(conditions: Any, link_start: float, send_s: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Release time (NaN if dropped) of every sent probe, per the relay's own link model."""
    from webrtclab.netem.link import LinkModel

    # The relay seeds each direction with crc32("<seed>:<src>-><dst>").
    seed = zlib.crc32(f"{SEED}:a->b".encode())
    model = LinkModel(conditions, seed=seed, start_time=link_start, name="replay")
    out = np.full(len(send_s), np.nan)
    for i, (t, size) in enumerate(zip(send_s.tolist(), sizes.tolist(), strict=True)):
        deliveries = model.submit(int(size), max(t, link_start))
        release = deliveries[0].release_time
        if release is not None:
            out[i] = release
    return out


# --- measurements --------------------------------------------------------------------------------


def pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else math.nan


@dataclass
class Probe:
    name: str
    sent: int
    send_s: np.ndarray  # per sequence number, on the network clock
    size: np.ndarray
    arrived: np.ndarray  # per sequence number, NaN if not received
    link: dict[str, Any]
    info: dict[str, Any]
    link_start: float
    offered_phases: list[tuple[int, float]]
    relay_cpu_pct: float
    others_cpu_pct: float
    relay_socket_drops: int  # at the relay socket a sends to (the relay fell behind)
    receiver_drops: int  # at b's socket (the receiver fell behind)

    @property
    def delay_ms(self) -> np.ndarray:
        got = ~np.isnan(self.arrived)
        return (self.arrived[got] - self.send_s[got]) * 1000


def probe(
    peers: Peers,
    name: str,
    conditions: Any,
    phases: list[tuple[float, float, int]],
    drain_s: float,
) -> Probe:
    setup = relay_setup(peers, conditions)
    network = setup.network
    try:
        relay0, recv0 = socket_drops(setup.target[1]), socket_drops(peers.b_addr[1])
        with CpuMonitor() as cpu:
            records, sent, info = peers.run(setup.target, phases, drain_s)
        relay_drops = socket_drops(setup.target[1]) - relay0
        recv_drops = socket_drops(peers.b_addr[1]) - recv0
        link = link_row(network)
    finally:
        close_network(network)
    t0 = network.clock.t0
    count = sent["sent"]
    send_s = np.full(count, np.nan)
    size = np.zeros(count, dtype=np.int64)
    arrived = np.full(count, np.nan)
    seq = records[:, 0]
    ok = seq < count
    if (~ok).any():
        raise RuntimeError(f"{name}: received {int((~ok).sum())} probes from another run")
    records = records[ok]
    seq = records[:, 0]
    send_s[seq] = records[:, 1] / 1e9 - t0
    size[seq] = records[:, 3]
    arrived[seq] = records[:, 2] / 1e9 - t0
    # Probes that never arrived: their send time and size are known from the schedule.
    missing = np.isnan(send_s)
    if missing.all():
        raise RuntimeError(f"{name}: no probe arrived")
    if missing.any():
        sizes = np.concatenate([np.full(int(r * d), s) for r, d, s in phases])
        size[missing] = sizes[missing]
        # Interpolate send times from the neighbours that did arrive (loss is rare).
        idx = np.arange(count)
        send_s[missing] = np.interp(idx[missing], idx[~missing], send_s[~missing])
    CLOCK_CHECKS.append(info)
    info = {**info, "sender": sent}
    return Probe(
        name,
        count,
        send_s,
        size,
        arrived,
        link,
        info,
        setup.link_start,
        [tuple(p) for p in sent["phases"]],
        cpu.relay_pct,
        cpu.others_pct,
        relay_drops,
        recv_drops,
    )


def early_count(p: Probe, conditions: Any) -> tuple[int, str, np.ndarray]:
    """Probes that arrived before their lower-bound release time; and which bound."""
    predicted = replay(conditions, p.link_start, p.send_s, p.size)
    got = ~np.isnan(p.arrived)
    same_drops = bool(np.array_equal(got, ~np.isnan(predicted)))
    if same_drops:
        bound = predicted
        label = "replay"
    else:
        rate = conditions.rate_kbps
        serialization = p.size * 8 / (rate * 1000) if rate else 0.0
        bound = p.send_s + serialization + conditions.delay_ms / 1000
        label = "delay+size/rate"
    slack = EARLY_SLACK_MS / 1000
    early = int(np.sum(p.arrived[got] < bound[got] - slack))
    return early, label, predicted


def per_second(p: Probe) -> list[tuple[int, float, float]]:
    """(second, offered kbps, delivered kbps) in the 1 s windows from the link start that
    the sender covered entirely."""
    got = ~np.isnan(p.arrived)
    t_send = p.send_s - p.link_start
    t_arr = p.arrived[got] - p.link_start
    bits_arr = p.size[got] * 8
    last = int(math.floor(np.nanmax(t_send)))
    rows = []
    for k in range(0, last):
        offered = float(np.sum(p.size[(t_send >= k) & (t_send < k + 1)] * 8)) / 1000
        delivered = float(np.sum(bits_arr[(t_arr >= k) & (t_arr < k + 1)])) / 1000
        rows.append((k, offered, delivered))
    return rows


def binomial_interval(n: int, p: float, z: float = 3.2905) -> tuple[float, float]:
    sd = math.sqrt(p * (1 - p) / n)
    return p - z * sd, p + z * sd


# --- the report --------------------------------------------------------------------------------


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n{title}")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    for cells in [header, *rows]:
        print(
            "  ".join(
                c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
            )
        )


def fmt(value: float, digits: int = 2) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def fidelity(peers: Peers, quick: bool) -> dict[str, Any]:
    from webrtclab.netem import LinkConditions
    from webrtclab.netem.traces import load_trace

    scale = 0.4 if quick else 1.0
    results: dict[str, Any] = {}
    delay_rows: list[list[str]] = []

    def delay_row(label: str, p: Probe, cond: Any, configured: tuple[float, float]) -> None:
        early, bound, predicted = early_count(p, cond)
        d = p.delay_ms
        err = d - configured[0] if not cond.jitter_ms else np.array([])
        lost = p.sent - int(np.sum(~np.isnan(p.arrived)))
        delay_rows.append(
            [
                label,
                f"{p.sent}",
                fmt(configured[0]),
                fmt(pct(d, 50)),
                fmt(configured[1]),
                fmt(pct(d, 99)),
                fmt(float(d.max()) if len(d) else math.nan),
                fmt(pct(err, 99)) if len(err) else "-",
                f"{lost}",
                f"{early} ({bound})",
                fmt(p.others_cpu_pct, 0),
            ]
        )
        results[label] = {
            "p50": pct(d, 50),
            "p99": pct(d, 99),
            "early": early,
            "lost": lost,
            "err_p99": pct(err, 99) if len(err) else None,
        }

    # 1. No impairment: the latency the relay adds, against the same probes sent directly.
    n_s = 5 * scale
    direct_records, _, _ = peers.run(peers.b_addr, [(1000, n_s, 100)], 0.2)
    direct = (direct_records[:, 2] - direct_records[:, 1]) / 1e6
    none = LinkConditions()
    p = probe(peers, "none", none, [(1000, n_s, 100)], 0.2)
    delay_row("none, 1k pkt/s", p, none, (0.0, 0.0))
    results["direct"] = {"p50": pct(direct, 50), "p99": pct(direct, 99)}
    added = p.delay_ms
    results["added"] = {"p50": pct(added, 50), "p99": pct(added, 99)}

    # 2. Constant delay at 1k and 10k packets/s.
    d20 = LinkConditions(delay_ms=20)
    for rate in (1000, 10000):
        p = probe(peers, f"d20@{rate}", d20, [(rate, 5 * scale, 100)], 0.3)
        delay_row(f"delay 20 ms, {rate // 1000}k pkt/s", p, d20, (20.0, 20.0))

    # 3. Delay with jitter, keeping order: the configured distribution is the model's.
    jit = LinkConditions(delay_ms=50, jitter_ms=10, keep_order=True)
    p = probe(peers, "jitter", jit, [(1000, 5 * scale, 100)], 0.5)
    predicted = replay(jit, p.link_start, p.send_s, p.size)
    model_delay = (predicted - p.send_s)[~np.isnan(predicted)] * 1000
    delay_row(
        "delay 50 ms + jitter 10 ms keep_order, 1k pkt/s",
        p,
        jit,
        (pct(model_delay, 50), pct(model_delay, 99)),
    )
    # How far each probe's delay is from what the model decided for it (same seed).
    per_packet = (p.arrived - predicted)[~np.isnan(p.arrived) & ~np.isnan(predicted)] * 1000
    results["jitter_per_packet_err"] = (pct(per_packet, 50), pct(per_packet, 99))

    print_table(
        "Delay fidelity (one-way ms: kernel arrival at b - send at a)",
        [
            "condition",
            "probes",
            "cfg p50",
            "p50",
            "cfg p99",
            "p99",
            "max",
            "err p99",
            "lost",
            "early (bound)",
            "other load %",
        ],
        delay_rows,
    )
    print(
        "other load %: CPU time other processes took on the relay's core while the row "
        "was measured (100 = a whole core)"
    )
    print(
        f"direct a->b without the relay: p50 {results['direct']['p50']:.3f} ms, "
        f"p99 {results['direct']['p99']:.3f} ms"
    )
    print(
        f"added latency, no impairment (through relay, send to arrival): "
        f"p50 {results['added']['p50']:.3f} ms (target <= 0.2), "
        f"p99 {results['added']['p99']:.3f} ms (target <= 1)"
    )
    e50, e99 = results["jitter_per_packet_err"]
    print(
        f"jitter: per-probe delay minus the model's decision for it: "
        f"p50 {e50:.3f} ms, p99 {e99:.3f} ms"
    )

    drift = max(abs(c["drift_ns"]) for c in CLOCK_CHECKS) / 1000
    untimed = sum(c["no_timestamp"] for c in CLOCK_CHECKS)
    print(
        f"clocks: the realtime-monotonic offset moved at most {drift:.1f} us during a run; "
        f"{untimed} datagrams came without a kernel timestamp"
    )

    # 4. Random loss.
    loss = LinkConditions(loss=0.05)
    n_loss = int(10000 * scale)
    p = probe(peers, "loss", loss, [(1000, n_loss / 1000, 100)], 0.2)
    got = ~np.isnan(p.arrived)
    measured = 1 - got.sum() / p.sent
    lo, hi = binomial_interval(p.sent, 0.05)
    early, bound, predicted = early_count(p, loss)
    same = bool(np.array_equal(got, ~np.isnan(predicted)))
    link_loss = p.link["dropped_loss"] / max(1, p.link["packets_in"])
    print_table(
        "Loss fidelity",
        ["condition", "probes", "cfg", "measured", "99.9% interval", "link log", "same", "early"],
        [
            [
                "loss 5 %, 1k pkt/s",
                f"{p.sent}",
                "0.0500",
                f"{measured:.4f}",
                f"[{lo:.4f}, {hi:.4f}]",
                f"{link_loss:.4f}",
                "yes" if same else "NO",
                f"{early}",
            ]
        ],
    )
    print("same: the dropped sequence numbers equal a replay of the link model with the same seed")
    results["loss"] = {"measured": measured, "in_interval": lo <= measured <= hi, "same": same}

    # 5. Constant rate, offered at 1.5x, and 6. the shipped 3g-like trace.
    size = 1200
    rate_cond = LinkConditions(rate_kbps=1000, queue_ms=200)
    rate_s = 10 * scale if not quick else 5
    offered_pps = 1.5 * 1000e3 / (size * 8)
    trace = load_trace("3g-like")
    trace_cond = LinkConditions(trace=trace, queue_ms=200)
    trace_s = 20 if not quick else 8
    trace_pps = 1.5 * trace.mean_rate_kbps * 1e3 / (size * 8)
    for label, cond, duration, pps in (
        ("rate 1000 kbps, queue 200 ms, offered 1.5x", rate_cond, rate_s, offered_pps),
        (
            f"3g-like trace (mean {trace.mean_rate_kbps:.0f} kbps), queue 200 ms, offered "
            f"{1.5 * trace.mean_rate_kbps:.0f} kbps",
            trace_cond,
            trace_s,
            trace_pps,
        ),
    ):
        p = probe(peers, label, cond, [(pps, duration, size)], 0.6)
        early, bound, predicted = early_count(p, cond)
        rows = []
        seconds = per_second(p)
        # What the model says each second should carry, for these very send times.
        got_pred = ~np.isnan(predicted)
        t_pred = predicted[got_pred] - p.link_start
        bits_pred = p.size[got_pred] * 8
        errs = []
        for k, offered, delivered in seconds:
            if cond.rate_kbps is not None:
                capacity = float(cond.rate_kbps)
            else:
                capacity = trace.rate_kbps_between(k * 1000, (k + 1) * 1000)
            expected = float(np.sum(bits_pred[(t_pred >= k) & (t_pred < k + 1)])) / 1000
            err = (delivered - expected) / expected * 100 if expected else math.nan
            if k > 0:  # the first second includes the queue filling up
                errs.append(abs(err))
            rows.append(
                [
                    f"{k}-{k + 1} s",
                    fmt(offered, 0),
                    fmt(capacity, 0),
                    fmt(expected, 0),
                    fmt(delivered, 0),
                    fmt(err, 1),
                ]
            )
        got = ~np.isnan(p.arrived)
        first = int(np.nanargmin(p.arrived))
        t_first = p.arrived[first] - p.link_start
        t_last = np.nanmax(p.arrived) - p.link_start
        # The bits that came out after the first probe, over the time they took.
        bits = float(np.sum(p.size[got] * 8)) - p.size[first] * 8
        overall = bits / 1000 / max(t_last - t_first, 1e-9)
        if cond.rate_kbps is not None:
            cfg_overall = float(cond.rate_kbps)
        else:
            cfg_overall = trace.rate_kbps_between(t_first * 1000, t_last * 1000)
        print_table(
            f"Rate fidelity: {label}, {size}-byte packets (kbit/s per second of the link)",
            ["second", "offered", "capacity", "model", "measured", "err %"],
            rows,
        )
        sock_lost = p.sent - int(got.sum()) - p.link["dropped_queue"]
        print(
            f"overall: configured {cfg_overall:.1f} kbps, measured {overall:.1f} kbps "
            f"({(overall - cfg_overall) / cfg_overall * 100:+.2f} %); "
            f"per-second |err| vs model: median {statistics.median(errs):.2f} %, "
            f"max {max(errs):.2f} %; queue drops {p.link['dropped_queue']} "
            f"of {p.sent}; lost elsewhere {sock_lost}; early {early} ({bound})"
        )
        results[label] = {
            "overall": overall,
            "configured": cfg_overall,
            "early": early,
            "queue_drops": p.link["dropped_queue"],
        }
    return results


def capacity(peers: Peers, quick: bool) -> dict[str, Any]:
    """Unimpaired forwarding at increasing offered rates, each step repeated."""
    from webrtclab.netem import LinkConditions

    rates = [20_000, 50_000, 100_000, 150_000, 200_000]
    if not quick:
        rates.append(300_000)
    duration = 1.0 if quick else 2.0
    trials = 2 if quick else 3
    size = 100
    rows: list[list[str]] = []
    steps: list[dict[str, Any]] = []

    def summarize(p: Probe) -> dict[str, Any]:
        got = ~np.isnan(p.arrived)
        n_got = int(got.sum())
        count, secs = p.offered_phases[0]
        span = max(float(np.nanmax(p.arrived) - np.nanmin(p.arrived)), secs)
        delay = p.delay_ms
        return {
            "offered": count / secs,
            "delivered": n_got / span,
            "loss": 1 - n_got / p.sent,
            "p50": pct(delay, 50),
            "p99": pct(delay, 99),
            "relay_cpu": p.relay_cpu_pct,
            "others": p.others_cpu_pct,
            "relay_drops": p.relay_socket_drops,
            "recv_drops": p.receiver_drops,
        }

    none = LinkConditions()
    # The generator and receiver alone, no relay: they must outrun the relay.
    records, sent, _ = peers.run(peers.b_addr, [(rates[-1], duration, size)], 0.2)
    lat = (records[:, 2] - records[:, 1]) / 1e6
    direct_loss = 1 - len(records) / sent["sent"]
    rows.append(
        [
            "direct (no relay)",
            f"{rates[-1]:,}",
            f"{sent['sent'] / sent['phases'][0][1]:,.0f}",
            f"{len(records) / sent['phases'][0][1]:,.0f}",
            "-",
            f"{direct_loss * 100:.2f}",
            fmt(pct(lat, 50), 3),
            fmt(pct(lat, 99), 3),
            "-",
            "-",
            "-",
        ]
    )
    for rate in rates:
        runs = [
            summarize(probe(peers, f"cap{rate}", none, [(rate, duration, size)], 0.3))
            for _ in range(trials)
        ]
        best = max(runs, key=lambda r: r["delivered"])
        median = statistics.median(r["delivered"] for r in runs)
        steps.append({"rate": rate, "best": best, "median": median, "runs": runs})
        rows.append(
            [
                "relay, no impairment",
                f"{rate:,}",
                f"{best['offered']:,.0f}",
                f"{best['delivered']:,.0f}",
                f"{median:,.0f}",
                f"{best['loss'] * 100:.2f}",
                fmt(best["p50"], 3),
                fmt(best["p99"], 3),
                fmt(best["relay_cpu"], 0),
                fmt(best["others"], 0),
                f"{best['relay_drops']}/{best['recv_drops']}",
            ]
        )
    print_table(
        f"Capacity: {size}-byte packets, {duration:.0f} s per trial, best of {trials} trials",
        [
            "path",
            "target/s",
            "offered/s",
            "delivered/s",
            "median/s",
            "loss %",
            "p50 ms",
            "p99 ms",
            "relay CPU %",
            "other load %",
            "drops relay/recv",
        ],
        rows,
    )
    print(
        "delivered/s, loss and latency are the best trial's; median/s is the median trial's "
        "delivered rate.  drops: datagrams the kernel dropped at the relay's socket (the "
        "relay fell behind) and at the receiver's."
    )
    clean = [s["best"]["offered"] for s in steps if s["best"]["loss"] < 0.001]
    best_rate = max(s["best"]["delivered"] for s in steps)
    print(
        f"max delivered through the relay: {best_rate:,.0f} packets/s (target >= 100,000); "
        f"highest offered rate with < 0.1 % loss: {max(clean, default=0.0):,.0f}/s"
    )
    return {"steps": steps, "best": best_rate}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (~1 minute)")
    parser.add_argument("--only", choices=("fidelity", "capacity"), help="run one part")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    _pin(0)
    peers = Peers.spawn()
    t0 = time.monotonic()
    try:
        if args.only in (None, "fidelity"):
            fidelity(peers, args.quick)
        if args.only in (None, "capacity"):
            capacity(peers, args.quick)
    finally:
        peers.close()
    load = os.getloadavg()[0]
    print(
        f"\n(total {time.monotonic() - t0:.0f} s, {os.cpu_count()} CPUs, load average {load:.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
