"""The stream clock: a late callback or a preempted pair of reads never moves the mapping."""

import time

import numpy as np
import pytest

from latentloop_daemon.playback.clock import WINDOW_S, StreamClock, paired

RATE, BLOCK = 44100, 1024
TRUE_OFFSET = 0.0464  # frame 0 is heard 46.4 ms into the stream's clock


def feed(clock, blocks, lateness_s, offset=TRUE_OFFSET, first=0):
    """Blocks whose DAC time is reported ``lateness_s[k]`` late (callbacks woken late)."""
    for k in range(blocks):
        frame0 = (first + k) * BLOCK
        dac = frame0 / RATE + offset + lateness_s[k]
        clock.observe(frame0, dac, dac - 0.046, 0.0)


def test_late_callbacks_do_not_move_the_offset():
    rng = np.random.default_rng(1)
    lateness = rng.uniform(0, 0.020, 200)  # up to a period late: JACK's dummy driver, loaded
    lateness[::17] = 0.0  # some callbacks run on time, as on any machine
    clock = StreamClock(RATE)
    feed(clock, 200, lateness)
    assert clock.offset == pytest.approx(TRUE_OFFSET, abs=1e-9)
    # what a single reading would have said: up to 20 ms off
    assert TRUE_OFFSET + lateness.max() - clock.offset > 0.015
    frame = 150 * BLOCK + 17
    assert clock.frame_heard_at(clock.heard_at(frame)) == frame


def test_a_real_step_is_followed_within_the_window():
    """An xrun drops samples: the same frame is heard later from then on."""
    clock = StreamClock(RATE)
    feed(clock, 100, np.zeros(100))
    step = 0.010
    blocks_in_window = int(WINDOW_S * RATE / BLOCK) + 2
    feed(clock, blocks_in_window, np.zeros(blocks_in_window), TRUE_OFFSET + step, first=100)
    assert clock.offset == pytest.approx(TRUE_OFFSET + step, abs=1e-9)


def test_a_host_without_dac_times_uses_the_latency():
    clock = StreamClock(RATE)
    clock.observe(0, 0.0, 1.5, 0.030)  # dac <= now: not reported
    assert clock.offset == pytest.approx(1.530)
    clock.observe(0, 9.0, 1.0, 0.030)  # the same block again: ignored
    assert clock.offset == pytest.approx(1.530)


def test_paired_reads_skip_a_preempted_pair():
    calls = []

    def slow_then_fast():
        calls.append(1)
        if len(calls) <= 2:
            time.sleep(0.005)  # the thread lost the core between the two reads
        return time.perf_counter()

    a, b = paired(time.perf_counter, slow_then_fast)
    assert len(calls) >= 3
    assert 0 <= b - a < 0.004  # not the 5 ms of the preempted pairs


def test_a_guess_before_the_first_dac_time_is_forgotten():
    """The first block without a DAC time (JACK's first callback) must not pin the minimum."""
    clock = StreamClock(RATE)
    clock.observe(0, 0.0, 0.010, 0.023)  # a guess: heard 23 ms after the callback
    assert clock.offset == pytest.approx(0.033)
    feed(clock, 5, np.zeros(5), first=1)  # real reports: 46.4 ms
    assert clock.offset == pytest.approx(TRUE_OFFSET, abs=1e-9)
    clock.observe(6 * BLOCK, 0.0, 1.0, 0.0)  # a later block without one is ignored
    assert clock.offset == pytest.approx(TRUE_OFFSET, abs=1e-9)
