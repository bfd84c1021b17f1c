"""webrtclab: a whole WebRTC lab in one Python process.

Signaling server, aiortc peers with synthetic media and data channels, and
stats sampled into pandas, all on loopback by default.

The public names load on first use (PEP 562): ``import webrtclab`` stays cheap, so
``webrtclab serve`` and ``webrtclab --help`` import neither aiortc nor pandas.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ._display import register as _register_display
from ._lazy import lazy_names
from .exceptions import (
    ConfigurationError,
    InvalidStateError,
    LabTimeoutError,
    ProtocolError,
    SignalingError,
    WebrtcLabError,
)

# Cheap (imports neither IPython nor matplotlib): in a Jupyter kernel, a Figure that
# a cell returns shows as a picture even if webrtclab.plot is never imported.
_register_display()

if TYPE_CHECKING:
    from .demo import DemoResult, run_demo
    from .events import EventLog, LabClock
    from .experiment.results import load
    from .fielddata import FieldData, export_webrtc_internals, load_webrtc_internals
    from .lab import Lab
    from .media import MediaSpec, ScreenLikeVideoTrack, Stamp, SyntheticVideoTrack, ToneAudioTrack
    from .member import Member
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
    "FieldData",
    "InvalidStateError",
    "Lab",
    "LabClock",
    "LabPanel",
    "LabTimeoutError",
    "MediaSpec",
    "Member",
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
    "export_webrtc_internals",
    "load",
    "load_webrtc_internals",
    "plot_timeline",
    "run_demo",
]
__version__ = "0.1.0"

# Where each lazily loaded public name lives.
_LAZY = {
    "DemoResult": "demo",
    "run_demo": "demo",
    "EventLog": "events",
    "LabClock": "events",
    "load": "experiment.results",
    "FieldData": "fielddata",
    "export_webrtc_internals": "fielddata",
    "load_webrtc_internals": "fielddata",
    "Lab": "lab",
    "MediaSpec": "media",
    "Member": "member",
    "ScreenLikeVideoTrack": "media",
    "Stamp": "media",
    "SyntheticVideoTrack": "media",
    "ToneAudioTrack": "media",
    "Peer": "peer",
    "PeerSession": "peer",
    "plot_timeline": "plot",
    "QualityMonitor": "quality",
    "Recorder": "recording",
    "Backoff": "signaling",
    "Dispatcher": "signaling",
    "SignalingClient": "signaling",
    "SignalingServer": "signaling",
    "RTT_COLUMNS": "stats",
    "RttJournal": "stats",
    "STATS_COLUMNS": "stats",
    "StatsSampler": "stats",
    "LabPanel": "widgets",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY, __all__)


logging.getLogger(__name__).addHandler(logging.NullHandler())
