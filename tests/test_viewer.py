"""The viewer's screen: what is on screen at each source frame time, and its score.

Unit tests drive :class:`webrtclab.viewer.Screen` with frames whose send and
arrival times the test chooses (pictures are random noise, one per frame index,
so any wrong picture scores low); the call test measures real calls.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from webrtclab.viewer import MAX_SCORED, PSNR_CAP_DB, RENDER_DELAY_S, Scores, Screen, psnr, ssim

SHAPE = (48, 64)
PERIOD = 0.1  # 10 fps


def picture_of(index: int) -> np.ndarray:
    return np.random.default_rng(index).integers(0, 256, SHAPE, dtype=np.uint8)


class Viewer:
    """A screen fed with exact pictures; every reference render is counted."""

    def __init__(self, every: int = 1) -> None:
        self.renders: list[int] = []
        self.screen = Screen(self.reference, every=every)

    def reference(self, index: int) -> np.ndarray:
        self.renders.append(index)
        return picture_of(index)

    def arrive(self, index: int, latency_s: float = 0.05, *, broken: bool = False) -> Scores:
        sent = 1.0 + index * PERIOD
        image = np.zeros(SHAPE, np.uint8) if broken else picture_of(index)
        return self.screen.arrive(
            None if broken else index, sent, sent + latency_s, lambda shape: image
        )


def test_psnr_and_ssim_of_equal_and_different_pictures() -> None:
    a, b = picture_of(1), picture_of(2)
    assert psnr(a, a) == math.inf and ssim(a, a) == pytest.approx(1.0)
    assert psnr(a, b) < 10 and ssim(a, b) < 0.1
    noisy = np.clip(a.astype(int) + np.random.default_rng(0).integers(-3, 4, SHAPE), 0, 255)
    assert 35 < psnr(noisy.astype(np.uint8), a) < 50
    assert 0.9 < ssim(noisy.astype(np.uint8), a) < 1.0
    assert math.isnan(ssim(a[:4, :4], a[:4, :4]))  # smaller than one window


def test_frames_on_time_score_one_source_time_each() -> None:
    viewer = Viewer()
    scores = [viewer.arrive(i) for i in range(10)]
    assert scores[0] == Scores()  # nothing on screen before the first frame
    # Each arrival scores the time of the frame before it: the right picture.
    assert [s.frames for s in scores[1:]] == [1] * 9
    assert all(s.psnr_db == PSNR_CAP_DB and s.ssim == pytest.approx(1.0) for s in scores[1:])
    assert viewer.screen.delay_s == pytest.approx(0.05 + RENDER_DELAY_S)


def test_a_freeze_scores_the_frozen_picture_against_the_frames_it_stands_for() -> None:
    viewer = Viewer()
    for i in range(10):
        viewer.arrive(i)
    # Frames 10-14 never arrive; 15 comes 0.5 s after its time.
    late = viewer.arrive(15, latency_s=0.55)
    # Times 9-14 were due before it: 9 showed frame 9, 10-14 still frame 9 (frozen);
    # 15's own time passed before it arrived too.
    assert late.frames == 7
    frozen = [psnr(picture_of(9), picture_of(i)) for i in range(10, 16)]
    assert late.psnr_db == pytest.approx((PSNR_CAP_DB + sum(frozen)) / 7)
    assert late.ssim < 0.3
    # The playout delay grew with the late frame: the next frames are on time again.
    after = [viewer.arrive(i, latency_s=0.05) for i in range(16, 20)]
    assert sum(s.frames for s in after) <= 4
    assert all(s.frames == 0 or s.psnr_db == PSNR_CAP_DB for s in after)


def test_a_frame_later_than_the_playout_delay_misses_its_time() -> None:
    viewer = Viewer()
    for i in range(5):
        viewer.arrive(i, latency_s=0.05)
    # 0.05 + 10 ms render delay is the playout delay: 0.07 s late is too late.
    late = viewer.arrive(5, latency_s=0.07)
    assert late.frames == 2  # time 4 (frame 4) and time 5 (still frame 4)
    assert late.psnr_db == pytest.approx((PSNR_CAP_DB + psnr(picture_of(4), picture_of(5))) / 2)
    # 0.055 s is within the delay: on time.
    viewer.arrive(6, latency_s=0.055)
    assert viewer.arrive(7, latency_s=0.055).psnr_db == PSNR_CAP_DB


def test_a_broken_picture_is_shown_and_scored() -> None:
    viewer = Viewer()
    for i in range(5):
        viewer.arrive(i)
    # A picture whose stamp is unreadable arrives at frame 5's time; 6 comes late.
    assert viewer.arrive(5, broken=True) == Scores(PSNR_CAP_DB, 1.0, 1)  # time 4: frame 4
    scores = viewer.arrive(6, latency_s=0.2)
    black = np.zeros(SHAPE, np.uint8)
    assert scores.frames == 2  # times 5 and 6 showed the broken picture
    expected = (psnr(black, picture_of(5)) + psnr(black, picture_of(6))) / 2
    assert scores.psnr_db == pytest.approx(expected)


def test_a_sender_that_starts_over_starts_a_new_playout() -> None:
    viewer = Viewer()
    for i in range(5):
        viewer.arrive(i)
    assert viewer.arrive(0) == Scores()  # a new session numbers from 0 again
    assert viewer.arrive(1).frames == 1


def test_every_nth_time_is_scored_and_references_are_reused() -> None:
    viewer = Viewer(every=2)
    scores = [viewer.arrive(i) for i in range(9)]
    assert [s.frames for s in scores[1:]] == [1, 0, 1, 0, 1, 0, 1, 0]
    assert viewer.renders == [0, 2, 4, 6]
    # A reference the caller already rendered is not rendered again.
    plain = Viewer()
    own = picture_of(0)
    plain.screen.arrive(0, 1.0, 1.05, lambda shape: own, reference=own, psnr_db=math.inf)
    plain.arrive(1)
    assert plain.renders == []


def test_a_long_outage_scores_a_bounded_sample_weighted_as_all() -> None:
    viewer = Viewer()
    viewer.arrive(0)
    viewer.arrive(1)
    viewer.renders.clear()
    back = viewer.arrive(200, latency_s=0.05)  # 20 s later
    assert back.frames == 199  # times 1-199 were due
    assert len(viewer.renders) == MAX_SCORED
    assert back.psnr_db < 20
