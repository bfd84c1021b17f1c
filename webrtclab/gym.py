"""A gymnasium environment: a real lab call through the emulator, steered step by step.

``reset(seed=...)`` starts a call on a trace (a shipped name such as ``"step-down"``, a
Mahimahi file or an OpenNetLab JSON trace): ``alice`` sends video and audio to ``bob``
over an emulated link whose capacity follows the trace.  ``step(bandwidth_bps)`` makes
that the estimate of bob's receiver -- sent to alice as REMB, as a receiver-side
estimator's would be (see :mod:`webrtclab.bwe`) -- for ``step_s`` of real time, and
returns the MMSys 2024 challenge's 150-feature observation
(:class:`~webrtclab.bwe.MmsysObservation`) and a reward::

    reward = rate_weight * receive_rate_mbps
             - delay_weight * queuing_delay_s - loss_weight * loss_fraction

over the step (OpenNetLab's gym rewards the same three quantities).  ``close()`` ends
the call.  The call runs on its own asyncio loop in a background thread, since
gymnasium's API is synchronous; one environment per core is what a machine sustains
(each call encodes and decodes video in real time).  Needs ``gymnasium``
(``pip install 'webrtclab[gym]'``).  Real calls are not repeatable packet for packet:
the environment's spec says ``nondeterministic=True``.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.envs.registration import EnvSpec

from .bwe.builtin import FixedEstimator
from .bwe.features import OBSERVATION_SIZE, MmsysObservation
from .bwe.interface import PacketStats
from .cc.control import CongestionControl
from .exceptions import ConfigurationError, InvalidStateError
from .lab import Lab
from .media import MediaSpec
from .netem import LinkConditions

__all__ = ["ENV_ID", "ActionEstimator", "BandwidthEstimationEnv"]

ENV_ID = "webrtclab/BandwidthEstimation-v0"
_T = TypeVar("_T")


class ActionEstimator:
    """Bob's estimator in the environment: reports the action, observes every packet."""

    def __init__(self, start_bps: int) -> None:
        self.action_bps = start_bps
        self.observation = MmsysObservation()
        self.bytes = 0
        self.packets = 0
        self.lost = 0
        self.queuing_delay_sum_ms = 0.0
        self._last_seq: dict[int, int] = {}

    def report_states(self, stats: PacketStats) -> None:
        self.observation.report(stats)
        self.bytes += int(stats["payload_size"]) + int(stats["header_length"])
        self.packets += 1
        ssrc, seq = int(stats["ssrc"]), int(stats["sequence_number"])
        last = self._last_seq.get(ssrc)
        if last is not None:
            gap = (seq - last) % 65536
            if 1 < gap < 32768:
                self.lost += gap - 1
            if gap < 32768:
                self._last_seq[ssrc] = seq
        else:
            self._last_seq[ssrc] = seq
        delay = float(stats["arrival_time_ms"]) - float(stats["send_time_ms"])
        self.queuing_delay_sum_ms += delay - self.observation.min_seen_delay_ms

    def take(self) -> tuple[int, int, int, float]:
        """(bytes, packets, lost, summed queuing delay) since the last call."""
        out = (self.bytes, self.packets, self.lost, self.queuing_delay_sum_ms)
        self.bytes = self.packets = self.lost = 0
        self.queuing_delay_sum_ms = 0.0
        return out

    def get_estimated_bandwidth(self) -> int:
        return self.action_bps


class BandwidthEstimationEnv(gymnasium.Env[np.ndarray, np.ndarray]):
    """Bandwidth estimation on a real call (see the module doc).

    :param traces: the capacity traces; ``reset`` picks one with its seed.
    :param step_s: real time per step (OpenNetLab's gym: 200 ms).
    :param max_steps: steps before the episode is truncated.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        traces: Sequence[str | os.PathLike[str]] = ("step-down",),
        *,
        step_s: float = 0.2,
        max_steps: int = 150,
        delay_ms: float = 25.0,
        queue_ms: float = 300.0,
        media: MediaSpec | None = None,
        min_bps: int = 50_000,
        max_bps: int = 2_500_000,
        rate_weight: float = 1.0,
        delay_weight: float = 1.0,
        loss_weight: float = 1.0,
    ) -> None:
        if not traces:
            raise ConfigurationError("the environment needs at least one trace")
        if not 0.02 <= step_s <= 10.0:
            raise ConfigurationError(f"step_s must be in [0.02, 10] s, got {step_s}")
        if max_steps < 1:
            raise ConfigurationError(f"max_steps must be >= 1, got {max_steps}")
        if not 1000 <= min_bps < max_bps:
            raise ConfigurationError(f"need 1000 <= min_bps < max_bps, got {min_bps}, {max_bps}")
        self.traces = [str(t) for t in traces]
        for trace in self.traces:  # refuse a bad trace now, not at the first reset
            LinkConditions(trace=trace)
        self.step_s = step_s
        self.max_steps = max_steps
        self.delay_ms, self.queue_ms = delay_ms, queue_ms
        self.media = media or MediaSpec(width=320, height=240, fps=15)
        self.min_bps, self.max_bps = min_bps, max_bps
        self.weights = (rate_weight, delay_weight, loss_weight)
        self.action_space = spaces.Box(
            low=float(min_bps), high=float(max_bps), shape=(1,), dtype=np.float32
        )
        # Finite bounds (rates to 10 Gbit/s, delays to +-1000 s): the features are finite.
        self.observation_space = spaces.Box(
            low=-1e6, high=1e10, shape=(OBSERVATION_SIZE,), dtype=np.float32
        )
        self.spec = EnvSpec(
            id=ENV_ID, entry_point="webrtclab.gym:BandwidthEstimationEnv", nondeterministic=True
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lab: Lab | None = None
        self._estimator: ActionEstimator | None = None
        self._steps = 0
        self._closed = False
        #: the trace of the current episode
        self.trace: str | None = None

    # --- the loop thread -------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="webrtclab-gym", daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _start(self, trace: str, seed: int) -> None:
        await self._stop()
        link = LinkConditions(trace=trace, delay_ms=self.delay_ms, queue_ms=self.queue_ms)
        estimator = ActionEstimator(start_bps=min(self.max_bps, max(self.min_bps, 300_000)))
        lab = Lab(link=link, seed=seed)
        await lab.start()
        self._lab, self._estimator = lab, estimator
        # bob joins first, so alice's offer (the newcomer's) carries her video.
        await lab.add_peer(
            "bob",
            media=MediaSpec(video="none", audio="none"),
            congestion_control=CongestionControl(
                mode="estimator", estimator=estimator, estimator_interval_s=0.02
            ),
        )
        await lab.add_peer(
            "alice",
            media=self.media,
            congestion_control=CongestionControl(
                mode="estimator",
                estimator=FixedEstimator(1_000_000),  # what alice receives: nothing
                min_bps=self.min_bps,
                max_bps=self.max_bps,
            ),
        )
        await lab.wait_connected(timeout=20)
        estimator.take()

    async def _stop(self) -> None:
        lab, self._lab = self._lab, None
        if lab is not None:
            await lab.close()

    async def _drain(self) -> None:
        # What aiortc leaves behind (its media relays' readers) ends with the loop.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _step(self, bps: int) -> tuple[np.ndarray, float, dict[str, Any]]:
        estimator, lab = self._estimator, self._lab
        assert estimator is not None and lab is not None
        estimator.action_bps = bps
        await asyncio.sleep(self.step_s)
        nbytes, packets, lost, delay_sum = estimator.take()
        observation = estimator.observation
        last = observation.last_arrival_ms
        obs = observation.observe(last) if last is not None else observation.observe()
        rate_mbps = nbytes * 8 / self.step_s / 1e6
        queuing_s = delay_sum / packets / 1000 if packets else 0.0
        loss = lost / (lost + packets) if lost + packets else 0.0
        w_rate, w_delay, w_loss = self.weights
        reward = w_rate * rate_mbps - w_delay * queuing_s - w_loss * loss
        alice = lab.peers["alice"].sessions.get("bob")
        info = {
            "trace": self.trace,
            "receive_rate_bps": rate_mbps * 1e6,
            "queuing_delay_ms": queuing_s * 1000,
            "loss_fraction": loss,
            "sender_target_bps": alice.rate.target_bps if alice is not None else math.nan,
        }
        return obs, float(reward), info

    # --- gymnasium's API -----------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a new call (ending the last); the first observation is empty (zeros)."""
        if self._closed:
            raise InvalidStateError("the environment is closed")
        super().reset(seed=seed)
        index = int(self.np_random.integers(len(self.traces)))
        self.trace = self.traces[index]
        self._run(self._start(self.trace, int(self.np_random.integers(2**31))))
        self._steps = 0
        return np.zeros(OBSERVATION_SIZE, dtype=np.float32), {"trace": self.trace}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply ``action`` (bit/s; a number or a 1-element array) for ``step_s``."""
        if self._lab is None:
            raise InvalidStateError("call reset() before step()")
        value = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
        if not math.isfinite(value):
            raise ConfigurationError(f"the action must be a finite bit rate, got {action!r}")
        bps = int(min(self.max_bps, max(self.min_bps, value)))
        obs, reward, info = self._run(self._step(bps))
        self._steps += 1
        return obs, reward, False, self._steps >= self.max_steps, info

    def close(self) -> None:
        """End the call and the loop thread; safe to call twice."""
        self._closed = True
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            self._run(self._stop())
            self._run(self._drain())
        finally:
            self._loop = self._thread = None
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()
        super().close()


gymnasium.register(
    id=ENV_ID, entry_point="webrtclab.gym:BandwidthEstimationEnv", nondeterministic=True
)
