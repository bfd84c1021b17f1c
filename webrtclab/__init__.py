"""webrtclab: a whole WebRTC lab in one Python process.

Signaling server, aiortc peers with synthetic media and data channels, and
stats sampled into pandas, all on loopback by default.
"""

import logging

from .demo import DemoResult, run_demo
from .events import EventLog, LabClock
from .exceptions import (
    ConfigurationError,
    LabTimeoutError,
    ProtocolError,
    SignalingError,
    WebrtcLabError,
)
from .lab import Lab
from .media import MediaSpec, ScreenLikeVideoTrack, Stamp, SyntheticVideoTrack, ToneAudioTrack
from .peer import Peer, PeerSession
from .plot import plot_timeline
from .quality import QualityMonitor
from .recording import Recorder
from .signaling import Backoff, Dispatcher, SignalingClient, SignalingServer
from .stats import RTT_COLUMNS, STATS_COLUMNS, RttJournal, StatsSampler
from .widgets import LabPanel

__all__ = [
    "RTT_COLUMNS",
    "STATS_COLUMNS",
    "Backoff",
    "ConfigurationError",
    "DemoResult",
    "Dispatcher",
    "EventLog",
    "Lab",
    "LabClock",
    "LabPanel",
    "LabTimeoutError",
    "MediaSpec",
    "Peer",
    "PeerSession",
    "ProtocolError",
    "QualityMonitor",
    "Recorder",
    "RttJournal",
    "ScreenLikeVideoTrack",
    "SignalingClient",
    "SignalingError",
    "SignalingServer",
    "Stamp",
    "StatsSampler",
    "SyntheticVideoTrack",
    "ToneAudioTrack",
    "WebrtcLabError",
    "plot_timeline",
    "run_demo",
]
__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
