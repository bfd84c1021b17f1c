"""Bandwidth estimation research: pluggable receiver-side estimators in a real call.

- :mod:`~webrtclab.bwe.interface` -- the estimator shape (OpenNetLab's
  ``report_states`` / ``get_estimated_bandwidth``);
- :mod:`~webrtclab.bwe.loader` -- ``"estimator:package.module:Class"`` specs;
- :mod:`~webrtclab.bwe.builtin` -- :class:`FixedEstimator`, :class:`ReceiveRateEstimator`;
- :mod:`~webrtclab.bwe.features` -- the MMSys 2024 challenge's 150-feature observation;
- :mod:`~webrtclab.bwe.onnx` -- :class:`OnnxEstimator` (optional ``onnxruntime``);
- :mod:`~webrtclab.bwe.evaluate` -- estimators x traces on the sweep machinery.

Select one per peer: ``lab.add_peer("bob", congestion_control="estimator:fixed:800000")``
or ``congestion_control=MyEstimator()``.  The wiring into aiortc is in
:mod:`webrtclab.compat.aiortc` (:class:`~webrtclab.compat.aiortc.PacketReporter`).
"""

from .builtin import FixedEstimator, ReceiveRateEstimator
from .evaluate import EVALUATION_METRICS, evaluate, plot_evaluation
from .features import FEATURES, OBSERVATION_SIZE, MmsysObservation, feature_index
from .interface import PACKET_STATS_KEYS, Estimator, PacketStats
from .loader import check_estimator, estimator_factory
from .onnx import OnnxEstimator

__all__ = [
    "EVALUATION_METRICS",
    "Estimator",
    "FEATURES",
    "FixedEstimator",
    "MmsysObservation",
    "OBSERVATION_SIZE",
    "OnnxEstimator",
    "PACKET_STATS_KEYS",
    "PacketStats",
    "ReceiveRateEstimator",
    "check_estimator",
    "estimator_factory",
    "evaluate",
    "feature_index",
    "plot_evaluation",
]
