"""Receiver-side bandwidth estimators (webrtclab.bwe): specs, the packet plumbing, the
MMSys 2024 observation, ONNX policies, and estimators steering real lab calls."""

from __future__ import annotations

import asyncio
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket
from bwe_models import recurrent_model, stateless_model
from helpers import wait_until

from webrtclab import Lab, MediaSpec
from webrtclab.bwe import (
    OBSERVATION_SIZE,
    PACKET_STATS_KEYS,
    FixedEstimator,
    MmsysObservation,
    OnnxEstimator,
    ReceiveRateEstimator,
    estimator_factory,
    feature_index,
)
from webrtclab.cc import CongestionControl, RateControl, parse_congestion_control
from webrtclab.compat.aiortc import PacketReporter
from webrtclab.exceptions import ConfigurationError
from webrtclab.experiment.scenario import Scenario
from webrtclab.netem import LinkConditions

# The layout of OpenNetLab's challenge example (BandwidthEstimator.py, class Estimator),
# with a receive-rate estimate in place of its constant.
OPENNETLAB_ESTIMATOR = '''
class Estimator(object):
    def __init__(self):
        self.packets = []
        self.last_estimate = 300000

    def report_states(self, stats: dict):
        """
        stats is a dict with the following items
        {
            "send_time_ms": uint,
            "arrival_time_ms": uint,
            "payload_type": int,
            "sequence_number": uint,
            "ssrc": int,
            "padding_length": uint,
            "header_length": uint,
            "payload_size": uint
        }
        """
        self.packets.append(stats)

    def get_estimated_bandwidth(self) -> int:
        self.last_estimate = 450000
        return self.last_estimate
'''


class Recording:
    """An estimator defined in a test (from Python, as an instance)."""

    def __init__(self) -> None:
        self.stats: list[dict[str, Any]] = []

    def report_states(self, stats: dict[str, Any]) -> None:
        self.stats.append(stats)

    def get_estimated_bandwidth(self) -> int:
        return 600_000


class NeedsArguments:
    def __init__(self, rate: int) -> None:
        self.rate = rate

    def report_states(self, stats: dict[str, Any]) -> None:
        pass

    def get_estimated_bandwidth(self) -> int:
        return self.rate


class NoEstimate:
    def report_states(self, stats: dict[str, Any]) -> None:
        pass


NOT_A_CLASS = 42


def stats_of(
    arrival: float,
    *,
    seq: int,
    pt: int = 97,
    send: float | None = None,
    size: int = 1000,
    ssrc: int = 1,
) -> dict[str, Any]:
    return {
        "send_time_ms": arrival - 30 if send is None else send,
        "arrival_time_ms": arrival,
        "payload_type": pt,
        "sequence_number": seq,
        "ssrc": ssrc,
        "padding_length": 0,
        "header_length": 20,
        "payload_size": size,
    }


# --- specs ------------------------------------------------------------------------------


def test_specs_parse_into_the_estimator_mode(tmp_path: Path) -> None:
    control = parse_congestion_control("estimator:fixed:800000")
    assert control.mode == "estimator" and control.paced and control.adaptive
    assert not control.uses_twcc  # REMB carries the estimate, not transport-wide feedback
    assert str(control) == "estimator:fixed:800000"
    made = estimator_factory(control.estimator)()
    assert isinstance(made, FixedEstimator) and made.get_estimated_bandwidth() == 800_000
    assert estimator_factory("fixed:64k")().get_estimated_bandwidth() == 64_000
    spec = "estimator:webrtclab.bwe.builtin:ReceiveRateEstimator"
    assert isinstance(
        estimator_factory(parse_congestion_control(spec).estimator)(), ReceiveRateEstimator
    )
    # From Python: an instance (shared), a class (one per connection), a factory.
    instance = Recording()
    assert estimator_factory(parse_congestion_control(instance).estimator)() is instance
    by_class = parse_congestion_control(Recording)
    assert str(by_class) == f"estimator:{__name__}:Recording"
    first, second = (estimator_factory(by_class.estimator)() for _ in range(2))
    assert first is not second
    factory = CongestionControl(mode="estimator", estimator=lambda: NeedsArguments(5000))
    assert estimator_factory(factory.estimator)().get_estimated_bandwidth() == 5000
    # A scenario sets every peer's control at the top, each [[peers]] entry may differ.
    scenario = Scenario.from_mapping(
        {
            "congestion_control": "estimator:fixed:500k",
            "peers": [{"name": "a"}, {"name": "b", "congestion_control": "gcc"}],
        }
    )
    assert [str(p.congestion_control) for p in scenario.peers] == ["estimator:fixed:500k", "gcc"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("estimator:", "empty estimator spec"),
        ("estimator:fixed:abc", "fixed takes a rate"),
        ("estimator:fixed:10", "at least 1000"),
        ("estimator:onnx:", "onnx needs a model path"),
        ("estimator:onnx:/nonexistent/model.onnx", "does not exist"),
        ("estimator:nomodule", "expected"),
        ("estimator:webrtclab.bwe:", "expected"),
        ("estimator:webrtclab.bwe:not-a-name", "is not a class name"),
        ("estimator:no_such_module_xyz:Estimator", "no module 'no_such_module_xyz'"),
        ("estimator:bad..module:Estimator", "neither a module name"),
        ("estimator:webrtclab.bwe:Missing", "has no attribute 'Missing'"),
        ("estimator:test_bwe:NOT_A_CLASS", "is not a class"),
        ("estimator:test_bwe:NoEstimate", "has no get_estimated_bandwidth"),
        ("estimator:test_bwe:NeedsArguments", "cannot be made without arguments"),
        ("estimator:/nonexistent/BandwidthEstimator.py:Estimator", "no file"),
    ],
)
def test_bad_specs_are_refused(spec: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        parse_congestion_control(spec)
    assert repr(spec[len("estimator:") :]) in str(info.value) or "empty" in message


def test_a_failing_module_and_bad_objects_are_refused(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ConfigurationError, match="importing .* failed: RuntimeError: boom"):
        parse_congestion_control(f"estimator:{broken}:Estimator")
    with pytest.raises(ConfigurationError, match="must be a string, a CongestionControl"):
        parse_congestion_control(42)
    with pytest.raises(ConfigurationError, match="no report_states and no get_estimated"):
        CongestionControl(mode="estimator", estimator=object)
    with pytest.raises(ConfigurationError, match="an estimator goes"):
        CongestionControl(mode="gcc", estimator="fixed:800000")
    with pytest.raises(ConfigurationError, match="an estimator goes"):
        CongestionControl(mode="estimator")
    with pytest.raises(ConfigurationError, match="estimator_interval_s"):
        CongestionControl(mode="estimator", estimator="fixed:1000000", estimator_interval_s=0)
    made = estimator_factory(lambda: 42)
    with pytest.raises(ConfigurationError, match="is not an estimator"):
        made()
    with pytest.raises(ConfigurationError, match="FixedEstimator needs"):
        FixedEstimator(10)
    with pytest.raises(ConfigurationError, match="must be a string"):
        Scenario.from_mapping({"congestion_control": 5})


def test_the_sender_follows_remb_in_estimator_mode() -> None:
    control = RateControl(parse_congestion_control("estimator:fixed:800000"))
    assert control.target_bps == control.settings.start_bps
    targets: list[int] = []
    control.register_encoder("video", targets.append)
    control.on_remb(800_000)
    assert control.target_bps == 800_000
    assert targets[-1] + control.target_of("audio") == 800_000
    control.on_remb(10)  # clamped to the floor
    assert control.target_bps == control.settings.min_bps


# --- the per-packet plumbing ----------------------------------------------------------------


def extension_map() -> HeaderExtensionsMap:
    extensions = HeaderExtensionsMap()
    extensions.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
                RTCRtpHeaderExtensionParameters(
                    id=3, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
                ),
                RTCRtpHeaderExtensionParameters(
                    id=5,
                    uri="http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
                ),
            ]
        )
    )
    return extensions


def test_the_reporter_unwraps_abs_send_time_and_sizes_headers() -> None:
    recording = Recording()
    reporter = PacketReporter(recording)
    mapping = extension_map()
    period_ms = 64_000.0
    arrival = 10 * period_ms + 63_990  # just before the 24-bit wrap
    sends = [63_980.0, 63_999.0, 5.0, 63_998.0, 30.0]  # wraps, then one reordered from before
    for i, send_ms in enumerate(sends):
        packet = RtpPacket(payload_type=97, sequence_number=i, ssrc=7, payload=b"x" * 100)
        packet.extensions.mid = "0"
        packet.extensions.abs_send_time = round(send_ms * (1 << 18) / 1000) & 0xFFFFFF
        if i % 2:
            packet.extensions.transport_sequence_number = i
        parsed = RtpPacket.parse(packet.serialize(mapping), mapping)
        reporter.report(parsed, int(arrival + 20 * i))
        assert recording.stats[-1]["header_length"] == len(packet.serialize(mapping)) - 100
    times = [s["send_time_ms"] - 10 * period_ms for s in recording.stats]
    expected = [63_980, 63_999, period_ms + 5, 63_998, period_ms + 30]
    assert times == pytest.approx(expected, abs=0.01)
    assert list(recording.stats[0]) == list(PACKET_STATS_KEYS)
    assert reporter.packets == 5 and reporter.ssrcs == {7}
    no_stamp = RtpPacket(payload_type=97, sequence_number=9, ssrc=7)
    reporter.report(no_stamp, 0)
    assert reporter.packets == 5


# --- the MMSys 2024 observation -------------------------------------------------------------


def test_the_observation_follows_the_challenge_layout() -> None:
    observation = MmsysObservation()
    assert observation.observe().shape == (OBSERVATION_SIZE,) == (150,)
    # 3 s of video every 10 ms (1020 bytes each), one audio packet per 20 ms, 30 ms
    # delay, a 100 ms queue building in the last 60 ms, and 2 packets lost in there.
    seq = 0
    for t in range(0, 3000, 10):
        delay = 30 if t < 2940 else 130
        if t == 2950:
            seq += 2
        observation.report(stats_of(float(t), seq=seq, send=t - delay))
        seq += 1
        if t % 20 == 0:
            observation.report(stats_of(float(t), seq=t // 20, pt=96, size=100, ssrc=2))
    obs = observation.observe(2990.0)
    get = lambda name, mi, long=False: float(obs[feature_index(name, mi, long=long)])  # noqa: E731
    assert get("received_packets", 2) == 6 + 3
    assert get("receiving_rate", 2) == pytest.approx((6 * 1020 + 3 * 120) * 8 / 0.06)
    assert get("received_packets", 2, long=True) == 60 + 30
    assert get("min_seen_delay", 1) == 30
    assert get("queuing_delay", 2) == 0
    assert get("queuing_delay", 1) == pytest.approx(100 * 6 / 9)  # audio has its own delay
    assert get("delay", 2) == 30 - 200
    assert get("loss_ratio", 1) == pytest.approx(2 / (2 + 9))
    assert get("average_lost_packets", 1) == 2
    assert get("video_probability", 3) == pytest.approx(6 / 9)
    assert get("audio_probability", 3) == pytest.approx(3 / 9)
    assert get("interarrival", 3, long=True) == pytest.approx(600 / 89, rel=0.05)
    assert feature_index("probing_probability", 5, long=True) == 149


def test_onnx_policies_stateless_and_recurrent(tmp_path: Path) -> None:
    stateless = OnnxEstimator(stateless_model(tmp_path / "s.onnx"))
    assert not stateless.recurrent
    assert stateless.get_estimated_bandwidth() == 300_000  # nothing received yet
    for i in range(6):
        stateless.report_states(stats_of(10.0 * i, seq=i))
    rate = float(stateless.observation.observe()[0])
    assert stateless.get_estimated_bandwidth() == int(300_000 + 0.5 * rate)
    assert stateless.last_observation is not None and stateless.last_observation.dtype == np.float32
    recurrent = OnnxEstimator(recurrent_model(tmp_path / "r.onnx"))
    recurrent.report_states(stats_of(0.0, seq=0))
    assert recurrent.recurrent
    assert [recurrent.get_estimated_bandwidth() for _ in range(3)] == [100_000, 140_000, 180_000]
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ConfigurationError, match="cannot load ONNX model"):
        OnnxEstimator(tmp_path / "junk.onnx")


# --- real calls -------------------------------------------------------------------------------


def link_kbps(lab: Lab, src: str, t0: float, t1: float) -> float:
    links = lab.links()
    rows = links[(links["src"] == src) & (links["time_s"] >= t0) & (links["time_s"] <= t1)]
    first, last = rows.iloc[0], rows.iloc[-1]
    return (
        float(last["bytes_in"] - first["bytes_in"])
        * 8
        / float(last["time_s"] - first["time_s"])
        / 1000
    )


async def test_a_fixed_estimator_steers_the_sender_and_the_link() -> None:
    """``"estimator:fixed:800000"`` on the receiver: its REMB sets the remote sender's target."""
    media = MediaSpec(width=640, height=480, fps=15, seed=3)  # room for 800 kbit/s of video
    async with Lab(link=LinkConditions(delay_ms=10), seed=4, stats_interval=0.25) as lab:
        # bob first: the newcomer offers, so alice's offer carries her video.
        bob = await lab.add_peer(
            "bob", media=MediaSpec(video="none"), congestion_control="estimator:fixed:800000"
        )
        alice = await lab.add_peer(
            "alice", media=media, congestion_control="estimator:fixed:800000"
        )
        await lab.wait_connected(timeout=20)
        session = alice.sessions["bob"]
        hooks = bob.sessions["alice"].hooks
        await wait_until(lambda: hooks.reporter is not None and hooks.reporter.packets, 20)
        first_packet = lab.clock.now()
        await wait_until(lambda: abs(session.rate.target_bps - 800_000) <= 80_000, timeout=1.0)
        reached = lab.clock.now() - first_packet
        await asyncio.sleep(4.5)
        stats = lab.stats()
        incoming = link_kbps(lab, "alice", first_packet + 2.0, first_packet + 4.5)
    assert reached <= 1.0
    sent = stats[
        (stats["peer"] == "alice")
        & (stats["direction"] == "send")
        & (stats["time_s"] >= first_packet + 1.0)
    ]
    total_target = sent.groupby("time_s")["target_kbps"].sum()
    assert ((total_target - 800).abs() <= 80).all(), total_target
    # What enters the link follows within 2 s (the encoder holds a simple picture at
    # a little under its target; headers and RTCP add a little).
    assert 0.7 * 800 <= incoming <= 1.2 * 800, incoming
    received = stats[
        (stats["peer"] == "bob") & (stats["direction"] == "recv") & (stats["kind"] == "video")
    ]
    assert (received["estimate_kbps"].dropna().iloc[-3:] == 800).all()


async def test_an_opennetlab_estimator_and_an_onnx_policy_run_in_a_call(tmp_path: Path) -> None:
    """An estimator file in OpenNetLab's layout runs unchanged; an ONNX policy steers too."""
    (tmp_path / "BandwidthEstimator.py").write_text(textwrap.dedent(OPENNETLAB_ESTIMATOR))
    spec = f"estimator:{tmp_path / 'BandwidthEstimator.py'}:Estimator"
    model = stateless_model(tmp_path / "policy.onnx", scale=0.0, bias=350_000.0)
    media = MediaSpec(width=320, height=240, fps=15, seed=5)
    async with Lab(link=LinkConditions(delay_ms=15), seed=6) as lab:
        alice = await lab.add_peer("alice", media=media, congestion_control=spec)
        bob = await lab.add_peer("bob", media=media, congestion_control=f"estimator:onnx:{model}")
        await lab.wait_connected(timeout=20)
        to_bob, to_alice = alice.sessions["bob"], bob.sessions["alice"]
        # alice's receiver (OpenNetLab estimator: 450 kbit/s) steers bob's sender; bob's
        # receiver (the ONNX policy: 350 kbit/s) steers alice's.
        await wait_until(lambda: to_alice.rate.target_bps == 450_000, timeout=5)
        await wait_until(lambda: to_bob.rate.target_bps == 350_000, timeout=5)
        await asyncio.sleep(1.0)
        estimator: Any = to_bob.estimator
        received = (
            to_bob.counters[("recv", "audio")].packets + to_bob.counters[("recv", "video")].packets
        )
    assert type(estimator).__name__ == "Estimator" and estimator.last_estimate == 450_000
    # Every packet reported (its counters and the estimator's list grow together).
    assert abs(len(estimator.packets) - received) <= 2, (len(estimator.packets), received)
    first = estimator.packets[-1]
    assert set(first) == set(PACKET_STATS_KEYS)
    delays = [p["arrival_time_ms"] - p["send_time_ms"] for p in estimator.packets[-100:]]
    # One host, one clock: arrival - send is the one-way delay (15 ms here, plus the stack).
    assert 10 <= float(np.median(delays)) <= 60, np.median(delays)
    assert {p["payload_type"] for p in estimator.packets} >= {96, 97}


async def test_a_broken_estimator_does_not_stop_the_call(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def report_states(self, stats: dict[str, Any]) -> None:
            raise RuntimeError("bad estimator")

        def get_estimated_bandwidth(self) -> int:
            return -5

    async with Lab(link=LinkConditions(delay_ms=5), seed=8) as lab:
        await lab.add_peer("alice", media=MediaSpec(seed=1), congestion_control=Broken())
        bob = await lab.add_peer("bob", media=MediaSpec(seed=2))
        await lab.wait_connected(timeout=20)
        counter = bob.sessions["alice"].counters[("recv", "video")]
        start = time.monotonic()
        await wait_until(lambda: counter.frames > 20, timeout=10)
        assert time.monotonic() - start < 10
    failures = [r for r in caplog.records if "the estimator's" in r.getMessage()]
    assert {("report_states" in r.getMessage()) for r in failures} == {True, False}
    assert len(failures) == 2  # once each, not once per packet


def test_opennetlab_json_traces_are_read(tmp_path: Path) -> None:
    from webrtclab.netem.traces import load_trace

    path = tmp_path / "trace.json"
    path.write_text(
        '{"type": "video", "downlink": {}, "uplink": {"trace_pattern": ['
        '{"duration": 1500, "capacity": 1200, "loss": 0, "rtt": 40, "jitter": 0},'
        '{"duration": 1000, "capacity": 300, "loss": 0, "rtt": 40, "jitter": 0}]}}'
    )
    trace = load_trace(path)
    assert trace.period_ms == 2500
    assert trace.rate_kbps_between(0, 1500) == pytest.approx(1200, rel=0.02)
    assert trace.rate_kbps_between(1500, 2500) == pytest.approx(300, rel=0.05)
    assert LinkConditions(trace=str(path)).capacity_trace is not None
    path.write_text('{"uplink": {"trace_pattern": [{"duration": 0, "capacity": 5}]}}')
    with pytest.raises(ConfigurationError, match="segment 0 needs a duration"):
        load_trace(path)
    path.write_text("[]")
    with pytest.raises(ConfigurationError, match="no uplink or downlink"):
        load_trace(path)
