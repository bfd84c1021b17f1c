"""An estimator that runs an ONNX policy on the MMSys 2024 challenge's observation.

The challenge's models (https://github.com/microsoft/RL4BandwidthEstimationChallenge)
take ``obs`` (float32, 1 x 1 x 150) and, when they are recurrent, ``hidden_states`` and
``cell_states`` (1 x H), and return the estimate in bit/s first (``output[..., 0]``; a
second value is a spread) and the next states.  A stateless model takes ``obs`` only.
The challenge steps every 60 ms: poll at that interval with
``CongestionControl(mode="estimator", estimator=..., estimator_interval_s=0.06)``.
Needs ``onnxruntime`` (``pip install 'webrtclab[bwe]'``).  No model ships with the lab.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import ConfigurationError
from .features import MmsysObservation
from .interface import PacketStats

__all__ = ["OnnxEstimator"]


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ConfigurationError(
            "the ONNX estimator needs onnxruntime: pip install 'webrtclab[bwe]'"
        ) from None
    return onnxruntime


class OnnxEstimator:
    """Runs an ONNX policy (the challenge's inputs and outputs) every poll."""

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        observation: MmsysObservation | None = None,
        min_bps: int = 50_000,
        max_bps: int = 10_000_000,
        start_bps: int = 300_000,
    ) -> None:
        self.check_model(model)
        ort = _onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # the challenge's budget: one thread, 5 ms
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(model), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ConfigurationError(f"cannot load ONNX model {str(model)!r}: {exc}") from exc
        names = {i.name: i for i in self.session.get_inputs()}
        if "obs" not in names:
            raise ConfigurationError(
                f"ONNX model {str(model)!r} has no 'obs' input (inputs: {sorted(names)})"
            )
        self.recurrent = "hidden_states" in names and "cell_states" in names
        self._state: dict[str, np.ndarray] = {}
        if self.recurrent:
            for name in ("hidden_states", "cell_states"):
                width = names[name].shape[-1]
                if not isinstance(width, int):
                    raise ConfigurationError(
                        f"ONNX model {str(model)!r}: {name} needs a fixed width, got {width!r}"
                    )
                self._state[name] = np.zeros((1, width), dtype=np.float32)
        self.observation = observation or MmsysObservation()
        self.min_bps, self.max_bps = min_bps, max_bps
        self.estimate = start_bps
        #: the last observation given to the model
        self.last_observation: np.ndarray | None = None

    @staticmethod
    def check_model(model: str | os.PathLike[str]) -> None:
        """Refuse a missing model file, or a missing onnxruntime, before any call."""
        if not Path(model).is_file():
            raise ConfigurationError(f"ONNX model {str(model)!r} does not exist")
        _onnxruntime()

    def report_states(self, stats: PacketStats) -> None:
        self.observation.report(stats)

    def get_estimated_bandwidth(self) -> int:
        if self.observation.last_arrival_ms is None:
            return self.estimate  # nothing received yet
        obs = self.observation.observe()
        self.last_observation = obs
        feed = {"obs": obs.reshape(1, 1, -1), **self._state}
        outputs = self.session.run(None, feed)
        value = float(np.asarray(outputs[0]).reshape(-1)[0])
        if self.recurrent and len(outputs) >= 3:
            self._state = {
                "hidden_states": np.asarray(outputs[1], dtype=np.float32),
                "cell_states": np.asarray(outputs[2], dtype=np.float32),
            }
        if np.isfinite(value):
            self.estimate = int(min(self.max_bps, max(self.min_bps, value)))
        return self.estimate
