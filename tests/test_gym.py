"""The gymnasium environment: a real call through the emulator, steered step by step."""

from __future__ import annotations

import math

import numpy as np
import pytest

gymnasium = pytest.importorskip("gymnasium")

from gymnasium.utils.env_checker import check_env  # noqa: E402

from webrtclab.exceptions import ConfigurationError, InvalidStateError  # noqa: E402
from webrtclab.gym import ENV_ID, BandwidthEstimationEnv  # noqa: E402


# gymnasium recommends a normalized action space; ours is the estimate in bit/s, as
# OpenNetLab's gym takes it.
@pytest.mark.filterwarnings("ignore:.*symmetric and normalized space:UserWarning")
def test_the_environment_passes_gymnasiums_checker() -> None:
    env = BandwidthEstimationEnv(step_s=0.1, max_steps=5)
    try:
        check_env(env)
    finally:
        env.close()
    env.close()  # twice is fine


def test_an_episode_steers_the_sender_and_observes_the_link() -> None:
    env = gymnasium.make(ENV_ID, step_s=0.2, max_steps=8, delay_ms=20)
    try:
        with pytest.raises(InvalidStateError, match="reset"):
            env.unwrapped.step(np.array([500_000.0], dtype=np.float32))
        obs, info = env.reset(seed=3)
        assert info["trace"] == "step-down" and not obs.any()
        rewards = []
        for step in range(8):
            obs, reward, terminated, truncated, info = env.step(np.array([400_000.0]))
            rewards.append(reward)
            assert obs.shape == (150,) and obs.dtype == np.float32
            assert not terminated and truncated == (step == 7)
        # The action is bob's estimate, sent as REMB: alice's target follows it.
        assert info["sender_target_bps"] == 400_000
        assert 200_000 <= info["receive_rate_bps"] <= 700_000, info
        assert all(math.isfinite(r) for r in rewards) and rewards[-1] > 0
        assert obs[0] > 0  # the latest short MI's receive rate
    finally:
        env.close()
    with pytest.raises(InvalidStateError, match="closed"):
        env.unwrapped.reset()


def test_bad_environment_settings_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="step_s"):
        BandwidthEstimationEnv(step_s=0)
    with pytest.raises(ConfigurationError, match="does not exist"):
        BandwidthEstimationEnv(traces=["no-such-trace"])
    with pytest.raises(ConfigurationError, match="at least one trace"):
        BandwidthEstimationEnv(traces=[])
