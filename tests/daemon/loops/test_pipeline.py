"""The loop pipeline (``make_loops``) around stand-in engines that return known audio:
tempo re-rolls, all-or-nothing writes, a cancel after the last step, the final prompt, and
the request's checks. The real tiny model runs through it in test_cli_render and the e2e tests."""

import dataclasses

import numpy as np
import pytest
import soundfile as sf
from fake_engines import RATE, ClickEngine

from latentloop_daemon.config import RenderConfig
from latentloop_daemon.errors import OutputError, RenderCancelled, RenderError
from latentloop_daemon.files import writer
from latentloop_daemon.files.atomic import TEMP_PREFIX
from latentloop_daemon.loops.pipeline import LoopCallbacks, LoopRequest, make_loops
from latentloop_daemon.loops.plan import final_prompt


def _settings(**changes):
    return dataclasses.replace(RenderConfig(format="float"), **changes)


def _make(engine, tmp_path, request, hooks=None, **settings):
    return make_loops(engine, request, _settings(**settings), tmp_path, lambda i: {}, hooks)


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


# --- tempo re-rolls -----------------------------------------------------------------------------


def test_rerolls_with_new_seeds_until_the_tempo_is_within_tolerance(tmp_path):
    engine = ClickEngine([137, 104, 120, 90])  # 14 % and 13 % off, then on tempo
    retries = []
    hooks = LoopCallbacks(on_retry=lambda attempt, bpm: retries.append((attempt, bpm)))
    made = _make(engine, tmp_path, LoopRequest("drums", bpm=120, bars=4, seed=50), hooks,
                 max_rerolls=3, tempo_tolerance_pct=4.0)  # fmt: skip
    assert [r.seed for r in engine.requests] == [50, 51, 52]  # stopped at the first good one
    assert [a for a, _ in retries] == [1, 2]
    # the measured tempo each /retry announces is the wrong one that caused it
    assert retries[0][1] == pytest.approx(137, rel=0.01)
    assert retries[1][1] == pytest.approx(104, rel=0.01)
    (clip,) = made.clips
    assert clip.seed == 52 and made.result.seed == 52
    assert abs(clip.tempo_deviation_pct) < 1.0
    assert len(made.wavs) == 1 and "seed52" in made.wavs[0].name


def test_keeps_the_best_attempt_when_every_one_is_off(tmp_path):
    engine = ClickEngine([140, 131, 160])  # 16.7 %, 9.2 %, 33 % off: the second is best
    retries = []
    hooks = LoopCallbacks(on_retry=lambda attempt, bpm: retries.append(attempt))
    made = _make(engine, tmp_path, LoopRequest("drums", bpm=120, bars=4, seed=10), hooks,
                 max_rerolls=2, tempo_tolerance_pct=4.0)  # fmt: skip
    assert len(engine.requests) == 3 and retries == [1, 2]  # no /retry after the last attempt
    (clip,) = made.clips
    assert clip.seed == 11 and clip.tempo.bpm == pytest.approx(131, rel=0.01)
    assert _files(tmp_path) == sorted([made.wavs[0].name, made.wavs[0].stem + ".json"])


@pytest.mark.parametrize(("max_rerolls", "tolerance"), [(0, 4.0), (3, 20.0)])
def test_no_reroll_without_rerolls_or_within_tolerance(tmp_path, max_rerolls, tolerance):
    engine = ClickEngine([132, 120])  # 10 % off
    made = _make(engine, tmp_path, LoopRequest("drums", bpm=120, bars=4, seed=3),
                 max_rerolls=max_rerolls, tempo_tolerance_pct=tolerance)  # fmt: skip
    assert len(engine.requests) == 1
    assert made.clips[0].tempo.bpm == pytest.approx(132, rel=0.01)


# --- all variations or none --------------------------------------------------------------------


def test_a_failed_second_variation_leaves_no_file_of_the_job(tmp_path, monkeypatch):
    real = writer.write_loop_wav
    calls = []

    def fail_second(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:  # the second variation's WAV: the disk "fills up" here
            raise OutputError(f"cannot write {path}: No space left on device")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(writer, "write_loop_wav", fail_second)
    engine = ClickEngine([120])
    with pytest.raises(OutputError, match="No space left"):
        _make(engine, tmp_path, LoopRequest("drums", bpm=120, bars=2, seed=1, variations=3))
    assert len(calls) == 2  # the first variation's WAV and sidecar were really written...
    assert _files(tmp_path) == []  # ...and removed; no temp file is left either


def test_variations_are_written_in_order_with_their_clips(tmp_path):
    made = _make(ClickEngine([120]), tmp_path, LoopRequest("drums", bpm=120, bars=2, seed=1,
                                                           variations=2))  # fmt: skip
    assert [c.variation for c in made.clips] == [0, 1]
    for clip, wav in zip(made.clips, made.wavs, strict=True):
        data, rate = sf.read(wav, dtype="float32")
        assert rate == clip.sample_rate and data.shape == (clip.frames, 2)
        np.testing.assert_array_equal(data, clip.audio)  # float files hold the clip exactly
    assert not any(name.startswith(TEMP_PREFIX) for name in _files(tmp_path))


# --- cancel -------------------------------------------------------------------------------------


def test_a_cancel_after_the_last_sampler_step_writes_nothing(tmp_path):
    steps = []
    hooks = LoopCallbacks(
        on_step=lambda step, total, sigma: steps.append(step),
        should_cancel=lambda: len(steps) >= 2,  # false during sampling, true once it is over
    )
    engine = ClickEngine([120])
    engine.render = _cancel_only_after_sampling(engine.render)
    with pytest.raises(RenderCancelled, match="before the files were written"):
        _make(engine, tmp_path, LoopRequest("drums", bpm=120, bars=2, seed=1), hooks)
    assert steps == [1, 2] and _files(tmp_path) == []


def _cancel_only_after_sampling(render):
    """The engine polls should_cancel during sampling; hide it so only the pipeline sees it."""
    return lambda request, on_step=None, should_cancel=None: render(request, on_step, None)


# --- the final prompt and the request's checks -------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "bpm", "key", "tempo_in_prompt", "expected"),
    [
        ("dusty drums", 92, None, True, "dusty drums, 92 BPM"),
        ("dusty drums 92 BPM", 92, None, True, "dusty drums 92 BPM"),  # names a tempo already
        ("dusty drums at 90bpm", 92, None, True, "dusty drums at 90bpm"),  # even another one
        ("dusty drums", 92, None, False, "dusty drums"),
        ("dusty drums", 92.5, "F minor", True, "dusty drums, 92.5 BPM, F minor"),
        ("dusty drums in f minor", 92, "F minor", True, "dusty drums in f minor, 92 BPM"),
        ("pad", None, "C major", True, "pad, C major"),  # a seconds render: no tempo to add
        ("  ", 100, None, True, "100 BPM"),
    ],
)
def test_final_prompt(prompt, bpm, key, tempo_in_prompt, expected):
    assert final_prompt(prompt, bpm, key, tempo_in_prompt) == expected


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"bpm": 10}, "bpm must be 20..999, got 10"),
        ({"bpm": 120, "bars": 0}, "bars must be > 0 and <= 64, got 0"),
        ({"seconds": 4, "bpm": 120}, "not both"),
        ({"bars": 2}, "bars needs bpm"),
        ({"seconds": 4, "variations": 17}, "variations must be 1..16, got 17"),
        ({"seconds": 4, "init_noise_level": 0.5}, "init_noise_level needs init audio"),
    ],
)
def test_loop_request_checks_protocol_ranges(changes, message):
    with pytest.raises(RenderError, match=message):
        LoopRequest("p", **changes)


def test_lengths_default_from_the_render_section(tmp_path):
    engine = ClickEngine([120, 120])
    made = _make(engine, tmp_path, LoopRequest("drums", bpm=120, seed=1), bars=2.0)
    assert made.clips[0].frames == 2 * 4 * RATE // 2  # 2 bars of 4/4 at 120 BPM
    made = _make(engine, tmp_path, LoopRequest("pad", seed=1), seconds=3.0, beats_per_bar=3)
    assert made.clips[0].frames == 3 * RATE and not made.clips[0].is_loop
