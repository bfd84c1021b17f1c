"""Mahimahi packet-delivery traces: parsing, opportunity arithmetic and the shipped traces.

A trace file holds one integer per line: a millisecond timestamp at which the link
may deliver one MTU-sized (1500-byte) packet.  Several equal timestamps mean several
opportunities in that millisecond.  The trace repeats with a period equal to its last
timestamp, as Mahimahi's ``mm-link`` replays it.

``python -m webrtclab.netem.traces [OUT_DIR]`` regenerates the shipped traces in
``webrtclab/data/traces/`` (the checkout's ``data/traces/``) byte for byte (every
generator is seeded).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .._shipped import DATA_DIR, resolve_shipped
from ..exceptions import ConfigurationError

__all__ = [
    "MTU_BYTES",
    "SHIPPED_TRACES",
    "TRACES_DIR",
    "Trace",
    "generate_3g_like",
    "generate_lte_like",
    "generate_step_down",
    "load_opennetlab_trace",
    "load_trace",
    "main",
    "trace_from_rates",
    "write_trace",
]

MTU_BYTES = 1500
"""Bytes one delivery opportunity carries (Mahimahi's fixed packet size)."""

_BITS_PER_OPPORTUNITY = MTU_BYTES * 8

TRACES_DIR = DATA_DIR / "traces"
"""Where the shipped traces live: package data, so installed wheels have them too."""


@dataclass(frozen=True)
class Trace:
    """Delivery opportunities (ms timestamps) that repeat every ``period_ms``."""

    timestamps_ms: tuple[int, ...] = field(repr=False)
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        stamps = self.timestamps_ms
        label = self.name or "trace"
        if not stamps:
            raise ConfigurationError(f"{label} has no delivery opportunities")
        previous = 0
        for index, stamp in enumerate(stamps):
            if not isinstance(stamp, int) or isinstance(stamp, bool) or stamp < 0:
                raise ConfigurationError(
                    f"{label}: timestamp {stamp!r} at index {index} is not an integer >= 0"
                )
            if stamp < previous:
                raise ConfigurationError(
                    f"{label}: timestamp {stamp} at index {index} is before the previous one "
                    f"({previous}); timestamps must not decrease"
                )
            previous = stamp
        if stamps[-1] == 0:
            raise ConfigurationError(f"{label}: the last timestamp is 0, so the period is empty")

    def __repr__(self) -> str:
        return (
            f"Trace(name={self.name!r}, opportunities={len(self.timestamps_ms)}, "
            f"period_ms={self.period_ms}, mean_rate_kbps={self.mean_rate_kbps:.1f})"
        )

    @property
    def opportunity_bytes(self) -> int:
        """Bytes one delivery opportunity carries (:data:`MTU_BYTES`)."""
        return MTU_BYTES

    @property
    def period_ms(self) -> int:
        """The trace repeats after this many milliseconds (its last timestamp)."""
        return self.timestamps_ms[-1]

    @property
    def mean_rate_kbps(self) -> float:
        """Capacity averaged over one period, in kbit/s (bits per ms)."""
        return len(self.timestamps_ms) * _BITS_PER_OPPORTUNITY / self.period_ms

    def index_at_or_after(self, t_ms: float) -> int:
        """Global index of the first opportunity at or after ``t_ms`` (the trace unrolled).

        Index ``g`` is opportunity ``g % n`` of repetition ``g // n``; see :meth:`time_ms`.
        """
        if t_ms <= 0:
            return 0
        stamps = self.timestamps_ms
        n, period = len(stamps), self.period_ms
        k_float, rest = divmod(t_ms, period)
        k = int(k_float)
        if rest == 0:
            # t is a period boundary: the previous repetition's last opportunities
            # (stamped == period) fall exactly on t and come first.
            return (k - 1) * n + bisect_left(stamps, period)
        return k * n + bisect_left(stamps, rest)

    def time_ms(self, index: int) -> int:
        """Time of the opportunity with global index ``index``, in ms from the trace start."""
        k, i = divmod(index, len(self.timestamps_ms))
        return self.timestamps_ms[i] + k * self.period_ms

    def opportunities_between(self, t0_ms: float, t1_ms: float) -> int:
        """Number of delivery opportunities in ``[t0_ms, t1_ms)``, the trace repeating."""
        if t1_ms < t0_ms:
            raise ConfigurationError(f"interval [{t0_ms}, {t1_ms}) ms ends before it starts")
        return self.index_at_or_after(t1_ms) - self.index_at_or_after(t0_ms)

    def rate_kbps_between(self, t0_ms: float, t1_ms: float) -> float:
        """Capacity over ``[t0_ms, t1_ms)`` in kbit/s."""
        if t1_ms <= t0_ms:
            raise ConfigurationError(f"interval [{t0_ms}, {t1_ms}) ms is empty")
        return self.opportunities_between(t0_ms, t1_ms) * _BITS_PER_OPPORTUNITY / (t1_ms - t0_ms)


def load_trace(path: str | os.PathLike[str]) -> Trace:
    """Parse a Mahimahi trace file, an OpenNetLab JSON trace (``.json``, see
    :func:`load_opennetlab_trace`), or a shipped trace by name (``"lte-like"``)."""
    resolved = resolve_shipped(path, TRACES_DIR, ".trace", "trace")
    if resolved.suffix.lower() == ".json":
        return load_opennetlab_trace(resolved)
    try:
        text = resolved.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read trace file {str(resolved)!r}: {exc}") from exc
    stamps: list[int] = []
    previous = 0
    for number, line in enumerate(text.splitlines(), start=1):
        value = line.strip()
        if not (value.isascii() and value.isdigit()):
            raise ConfigurationError(
                f"trace file {str(resolved)!r} line {number}: {value!r} is not an integer >= 0"
            )
        stamp = int(value)
        if stamp < previous:
            raise ConfigurationError(
                f"trace file {str(resolved)!r} line {number}: timestamp {stamp} is before "
                f"the previous line's {previous}; timestamps must not decrease"
            )
        stamps.append(stamp)
        previous = stamp
    if not stamps:
        raise ConfigurationError(f"trace file {str(resolved)!r} is empty")
    if stamps[-1] == 0:
        raise ConfigurationError(
            f"trace file {str(resolved)!r}: the last timestamp is 0, so the period is empty"
        )
    return Trace(tuple(stamps), name=resolved.stem)


def load_opennetlab_trace(path: str | os.PathLike[str]) -> Trace:
    """The capacity of an OpenNetLab (AlphaRTC gym) JSON trace as a Mahimahi trace.

    The format: ``{"uplink": {"trace_pattern": [{"duration": ms, "capacity": kbit/s,
    "loss": ..., "rtt": ..., "jitter": ...}, ...]}}``.  Only ``duration`` and
    ``capacity`` are read (set delay and loss with the link's other conditions); the
    ``uplink`` pattern is used, or ``downlink`` when it is the only one.
    """
    import json

    where = f"OpenNetLab trace {str(path)!r}"
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigurationError(f"cannot read {where}: {exc}") from exc
    pattern = None
    if isinstance(data, dict):
        for direction in ("uplink", "downlink"):
            table = data.get(direction)
            if isinstance(table, dict) and table.get("trace_pattern"):
                pattern = table["trace_pattern"]
                break
    if not isinstance(pattern, list):
        raise ConfigurationError(f"{where} has no uplink or downlink trace_pattern list")
    segments: list[tuple[int, float]] = []
    for index, segment in enumerate(pattern):
        duration = segment.get("duration") if isinstance(segment, dict) else None
        capacity = segment.get("capacity") if isinstance(segment, dict) else None
        if not isinstance(duration, int | float) or duration < 1:
            raise ConfigurationError(f"{where}: segment {index} needs a duration >= 1 ms")
        if not isinstance(capacity, int | float) or capacity < 0:
            raise ConfigurationError(f"{where}: segment {index} needs a capacity >= 0 kbit/s")
        segments.append((round(duration), float(capacity)))
    step = math.gcd(*(d for d, _ in segments))
    rates = [capacity for duration, capacity in segments for _ in range(duration // step)]
    return trace_from_rates(rates, step_ms=step, name=Path(path).stem)


def write_trace(trace: Trace, path: str | os.PathLike[str]) -> None:
    """Write ``trace`` in Mahimahi format (one timestamp per line, ``\\n`` endings)."""
    text = "".join(f"{stamp}\n" for stamp in trace.timestamps_ms)
    Path(path).write_text(text, encoding="ascii", newline="\n")


# --- generators ---------------------------------------------------------------------------


def trace_from_rates(rates_kbps: Sequence[float], step_ms: int, name: str = "") -> Trace:
    """Opportunities that deliver a piecewise-constant rate, ``step_ms`` per value.

    Each millisecond adds the current rate (rounded to whole kbit/s = bits per ms) to a
    bit credit; every 12000 bits of credit become one opportunity in that millisecond.
    A final opportunity at the end makes the period exactly ``len(rates) * step_ms``.
    """
    if step_ms < 1 or not rates_kbps:
        raise ConfigurationError(
            f"need rates and a step >= 1 ms, got {len(rates_kbps)} x {step_ms}"
        )
    stamps: list[int] = []
    credit = 0
    t = 0
    for rate in rates_kbps:
        bits_per_ms = max(0, round(rate))
        for _ in range(step_ms):
            t += 1
            credit += bits_per_ms
            while credit >= _BITS_PER_OPPORTUNITY:
                stamps.append(t)
                credit -= _BITS_PER_OPPORTUNITY
    if not stamps or stamps[-1] != t:
        stamps.append(t)
    return Trace(tuple(stamps), name=name)


def generate_step_down() -> Trace:
    """2 Mbit/s for 10 s, then 500 kbit/s for 10 s (no randomness)."""
    return trace_from_rates([2000.0] * 10 + [500.0] * 10, step_ms=1000, name="step-down")


def _log_ar1(
    rng: random.Random,
    steps: int,
    median_kbps: float,
    rho: float,
    sigma: float,
    low: float,
    high: float,
) -> list[float]:
    """A log-normal AR(1) rate process: slow fading around ``median_kbps``."""
    mu = math.log(median_kbps)
    # Start in the stationary distribution so the first seconds are not special.
    x = mu + rng.gauss(0.0, sigma / math.sqrt(1.0 - rho * rho))
    rates: list[float] = []
    for _ in range(steps):
        x = rho * x + (1.0 - rho) * mu + rng.gauss(0.0, sigma)
        rates.append(min(high, max(low, math.exp(x))))
    return rates


def generate_lte_like(seed: int = 2) -> Trace:
    """60 s fluctuating around 9-10 Mbit/s, with occasional handover-like dips (seeded).

    The median is set a little under 10 Mbit/s so the file stays under 300 KB.
    """
    rng = random.Random(seed)
    step_ms, steps = 50, 1200
    rates = _log_ar1(rng, steps, median_kbps=9300, rho=0.97, sigma=0.06, low=3000, high=20000)
    # About one dip every 10 s: 150-400 ms at 1-2 Mbit/s, as during a handover.
    _add_dips(rng, rates, chance=0.005, length=(3, 8), kbps=(1000, 2000))
    return trace_from_rates(rates, step_ms, name="lte-like")


def generate_3g_like(seed: int = 3) -> Trace:
    """60 s averaging about 1 Mbit/s, with variation and short dips to near zero (seeded)."""
    rng = random.Random(seed)
    step_ms, steps = 100, 600
    rates = _log_ar1(rng, steps, median_kbps=1100, rho=0.9, sigma=0.12, low=300, high=2500)
    # About one dip every 5 s: 200-600 ms at 0-100 kbit/s (fading, cell reselection).
    _add_dips(rng, rates, chance=0.02, length=(2, 6), kbps=(0, 100))
    return trace_from_rates(rates, step_ms, name="3g-like")


def _add_dips(
    rng: random.Random,
    rates: list[float],
    *,
    chance: float,
    length: tuple[int, int],
    kbps: tuple[float, float],
) -> None:
    """At each step, with ``chance``, hold a low rate for a random number of steps."""
    step, steps = 0, len(rates)
    while step < steps:
        if rng.random() < chance:
            span = rng.randint(*length)
            dip = rng.uniform(*kbps)
            for i in range(step, min(steps, step + span)):
                rates[i] = dip
            step += span
        else:
            step += 1


SHIPPED_TRACES: dict[str, Callable[[], Trace]] = {
    "3g-like": generate_3g_like,
    "lte-like": generate_lte_like,
    "step-down": generate_step_down,
}
"""Name -> generator of every trace in :data:`TRACES_DIR`."""


def main(argv: Sequence[str] | None = None) -> int:
    """Regenerate the shipped traces (into :data:`TRACES_DIR` unless told otherwise)."""
    parser = argparse.ArgumentParser(
        prog="python -m webrtclab.netem.traces",
        description="Regenerate the shipped Mahimahi traces deterministically.",
    )
    parser.add_argument("out", nargs="?", type=Path, default=TRACES_DIR, help="output directory")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for name, generate in SHIPPED_TRACES.items():
        trace = generate()
        path = out / f"{name}.trace"
        write_trace(trace, path)
        sys.stdout.write(
            f"{path}: {len(trace.timestamps_ms)} opportunities, period {trace.period_ms} ms, "
            f"mean {trace.mean_rate_kbps:.1f} kbit/s, {path.stat().st_size} bytes\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
