"""The callback's mixing, driven block by block without a device (the JACK tests play it)."""

import sys
import weakref

import numpy as np
import pytest

from latentloop_daemon.playback.mixer import Launch, Mixer, Voice
from latentloop_daemon.playback.transport import start_grid

RATE = 48000


def noise(frames, seed=0, level=0.3):
    rng = np.random.default_rng(seed)
    return (level * rng.uniform(-1, 1, (frames, 2))).astype(np.float32)


def run(mixer, frames, block=256):
    out = np.zeros((frames, mixer.channels), np.float32)
    for start in range(0, frames, block):
        mixer.render(out[start : start + block], 0.0, 0.0)
    return out


def new_mixer(fade_frames=96):
    return Mixer(slots=4, channels=2, sample_rate=RATE, max_frames=256, fade_frames=fade_frames)


def test_a_loop_repeats_bit_exactly_from_its_boundary():
    mixer = new_mixer()
    grid = start_grid(120, 4, RATE, 1000)  # 96,000 frames per bar
    mixer.grid = grid
    clip = noise(96000)
    mixer.slots[0].mailbox = Launch(Voice(clip, 4, 0), 1000, 0, 1000)
    out = run(mixer, 1000 + 3 * 96000 + 500)
    assert not out[:1000].any()
    for rep in range(3):
        start = 1000 + rep * 96000
        np.testing.assert_array_equal(out[start : start + 96000], clip)


def test_a_swap_lands_on_the_boundary_and_the_old_clip_fades_after_it():
    mixer = new_mixer(fade_frames=96)
    mixer.grid = start_grid(120, 4, RATE, 0)
    a, b = noise(96000, 1), noise(96000, 2)
    mixer.slots[1].mailbox = Launch(Voice(a, 4, 0), 0, 0, 0)
    out = run(mixer, 1000)
    at = 96000
    mixer.slots[1].mailbox = Launch(Voice(b, 4, 4), at, 0, at)
    out = np.concatenate([out, run(mixer, 2 * 96000 - 1000)])
    np.testing.assert_array_equal(out[:at], a)
    fade = 1 - np.arange(96) / 96
    expected_tail = b[:96] + (a[:96] * fade[:, None]).astype(np.float32)
    np.testing.assert_allclose(out[at : at + 96], expected_tail, atol=1e-6)
    np.testing.assert_array_equal(out[at + 96 : at + 96000], b[96:])


def test_stop_fades_out_from_its_boundary():
    mixer = new_mixer(fade_frames=48)
    mixer.grid = start_grid(120, 4, RATE, 0)
    a = noise(96000, 3)
    mixer.slots[0].mailbox = Launch(Voice(a, 4, 0), 0, 0, 0)
    out = run(mixer, 512)
    mixer.slots[0].mailbox = Launch(None, 24000)
    out = np.concatenate([out, run(mixer, 48000 - 512)])
    np.testing.assert_array_equal(out[:24000], a[:24000])
    assert np.abs(out[24000]).max() > 0 and not out[24000 + 48 :].any()


def test_repeats_are_reanchored_to_the_exact_bar_positions():
    """127 BPM at 44.1 kHz: 83,338.58 frames a bar; 100 repeats stay within a sample."""
    rate = 44100
    mixer = Mixer(1, 1, rate, 1024, 16)
    grid = start_grid(127, 4, rate, 0)
    mixer.grid = grid
    clip = np.zeros((83339, 1), np.float32)
    clip[0] = 0.5  # a click on each downbeat
    mixer.slots[0].mailbox = Launch(Voice(clip, 4, 0), 0, 0, 0)
    out = run(mixer, round(100.2 * float(grid.frames_per_bar)), 1024)
    clicks = np.flatnonzero(out[:, 0] == 0.5)
    exact = np.arange(len(clicks)) * float(grid.frames_per_bar)
    assert len(clicks) == 101 and np.abs(clicks - exact).max() <= 1.0


def test_gain_ramps_over_one_block_then_holds():
    mixer = new_mixer()
    mixer.grid = start_grid(120, 4, RATE, 0)
    a = noise(96000, 4)
    mixer.slots[0].mailbox = Launch(Voice(a, 4, 0), 0, 0, 0)
    run(mixer, 256)
    mixer.slots[0].gain = 0.5
    out = run(mixer, 512)
    np.testing.assert_array_equal(out[256:], a[512:768] * np.float32(0.5))
    assert np.abs(out[:256]).max() <= np.abs(a[256:512]).max()


def test_limiter_is_transparent_below_threshold_and_holds_the_peak_above():
    mixer = new_mixer()
    mixer.grid = start_grid(120, 4, RATE, 0)
    quiet = np.full((96000, 2), 0.9, np.float32)
    mixer.slots[0].mailbox = Launch(Voice(quiet, 4, 0), 0, 0, 0)
    out = run(mixer, 1024)
    np.testing.assert_array_equal(out, quiet[:1024])  # 0.9 < -0.3 dBFS (0.966)
    mixer.slots[1].mailbox = Launch(Voice(quiet, 4, 0), 1024, 0, 1024)
    out = run(mixer, 2048)
    assert out.max() <= mixer.limiter_threshold + 1e-7
    assert out.max() == pytest.approx(mixer.limiter_threshold, rel=1e-6)


def dc(frames, level):
    return np.full((frames, 2), level, np.float32)


@pytest.mark.parametrize("which", ["master", "slot"])
def test_a_gain_ramp_over_a_short_block_ends_on_its_target(which):
    """Blocks shorter than max_frames (256): the ramp spans the block and lands on the gain."""
    mixer = new_mixer()
    mixer.slots[0].mailbox = Launch(Voice(dc(96000, 0.5), None, 0), 0, 0, 0)
    run(mixer, 300, block=100)
    if which == "master":
        mixer.master_gain = 0.25
    else:
        mixer.slots[0].gain = 0.25
    out = run(mixer, 300, block=100)[:, 0]
    assert out[99] == np.float32(0.125)  # the target on the block's last sample...
    np.testing.assert_array_equal(out[100:], np.float32(0.125))  # ...then held: no jump
    ramp = 0.5 * (1 + (0.25 - 1) * np.arange(1, 101) / 100)
    np.testing.assert_allclose(out[:100], ramp, atol=1e-6)  # evenly, over its 100 samples


def test_the_limiters_release_is_continuous_across_short_blocks():
    mixer = new_mixer()
    clip = dc(96000, 0.5)
    clip[:200] = 1.8  # over the threshold: the limiter holds it, then releases
    mixer.slots[0].mailbox = Launch(Voice(clip, None, 0), 0, 0, 0)
    out = run(mixer, 1200, block=100)[:, 0]
    assert out[:200].max() <= mixer.limiter_threshold + 1e-7
    step = 0.5 * mixer.release_per_block / 100  # one block's release over its 100 samples
    assert np.abs(np.diff(out[200:])).max() <= 1.01 * step


def scene(mixer):
    """Two slots, a swap inside the span, a gain and a master change and the limiter busy."""
    mixer.grid = start_grid(120, 4, RATE, 0)
    mixer.slots[0].mailbox = Launch(Voice(noise(96000, 1, 0.6), 4, 0), 0, 0, 0)
    mixer.slots[1].mailbox = Launch(Voice(noise(96000, 2, 0.6), 4, 0), 0, 0, 0)
    run(mixer, 512)
    mixer.slots[0].mailbox = Launch(Voice(noise(96000, 3, 0.6), 4, 0), 812, 0, 812)
    mixer.slots[1].gain = 0.5
    mixer.master_gain = 0.8


def test_a_block_longer_than_max_frames_renders_like_max_frames_blocks():
    whole, blocks = new_mixer(), new_mixer()
    scene(whole)
    scene(blocks)
    n = 640  # 2.5 x max_frames (256): PortAudio may deliver more than asked with block_size 0
    got = run(whole, n, block=n)
    expected = run(blocks, n, block=256)
    np.testing.assert_array_equal(got, expected)
    assert whole.frame == blocks.frame == 512 + n and whole.limited_blocks > 0
    np.testing.assert_array_equal(run(whole, 512), run(blocks, 512))  # and it goes on alike


def test_the_callback_never_frees_a_clip_the_control_thread_releases_it():
    """Whatever render() swaps out stays alive until the control thread's collect()."""
    mixer = new_mixer(fade_frames=96)
    mixer.grid = start_grid(120, 4, RATE, 0)
    slot = mixer.slots[0]
    a, b = noise(96000, 1), noise(96000, 2)
    a_alive, b_alive = weakref.ref(a), weakref.ref(b)
    slot.publish(Launch(Voice(a, 4, 0), 0, 0, 0))
    run(mixer, 1024)
    slot.publish(Launch(Voice(b, 4, 4), 2048, 0, 2048))  # a swap: A fades out after it
    del a, b
    run(mixer, 2048)  # past the swap and A's fade
    assert a_alive() is not None  # swapped out by the callback, but not freed there
    mixer.collect()  # the control thread (Player._tick) releases it
    assert a_alive() is None and b_alive() is not None
    slot.publish(Launch(None, 4096))  # a stop
    run(mixer, 2048)  # past the stop and B's fade
    assert b_alive() is not None
    mixer.collect()
    assert b_alive() is None


def test_a_replaced_grid_outlives_the_render_that_may_still_read_it():
    mixer = new_mixer()
    old = start_grid(120, 4, RATE, 0)
    mixer.set_grid(old)
    run(mixer, 256)
    mixer.set_grid(old.with_tempo(130, 4, 1))
    refs = sys.getrefcount(old)
    run(mixer, 256)  # a render that began before set_grid may still hold the old grid
    mixer.collect()
    assert sys.getrefcount(old) == refs  # kept
    run(mixer, 256)  # two renders since: none can hold it
    mixer.collect()
    assert sys.getrefcount(old) == refs - 1  # released, on the control thread


def test_a_launch_replaced_before_it_was_taken_is_released_once_passed():
    mixer = new_mixer()
    slot = mixer.slots[0]
    a, b = noise(4800, 1), noise(4800, 2)
    a_alive = weakref.ref(a)
    slot.publish(Launch(Voice(a, None, 0), 4096, 0, 4096))
    slot.publish(Launch(Voice(b, None, 0), 2048, 0, 2048))  # earlier: replaces it
    del a, b
    run(mixer, 1024)
    mixer.collect()
    assert a_alive() is not None  # a render may still have read it from the mailbox
    run(mixer, 1280)  # B taken: A can never be
    assert a_alive() is not None
    mixer.collect()
    assert a_alive() is None


def test_collect_keeps_what_the_callback_still_plays_or_fades():
    mixer = new_mixer(fade_frames=96)
    slot = mixer.slots[0]
    a, b = noise(4800, 1), noise(4800, 2)
    a_alive, b_alive = weakref.ref(a), weakref.ref(b)
    slot.publish(Launch(Voice(a, None, 0), 0, 0, 0))
    slot.publish(Launch(Voice(b, None, 0), 1000, 0, 1000))  # chained behind A
    del a, b
    run(mixer, 1024)  # B started at 1000: A has faded over 24 of its 96 frames
    mixer.collect()
    assert a_alive() is not None and b_alive() is not None
    run(mixer, 256)
    mixer.collect()
    assert a_alive() is None and b_alive() is not None
