"""The Stable Audio engine on the built-in tiny models: determinism, variations, defaults,
callbacks, cancel, init audio and request validation. (Parity with the reference: test_parity.)"""

import numpy as np
import pytest

from latentloop_daemon.engine import InitAudio, RenderRequest
from latentloop_daemon.errors import RenderCancelled, RenderError


def _req(**kw):
    base = {"prompt": "128 BPM tech house drum loop", "seconds_total": 4.0, "seed": 7, "steps": 4}
    return RenderRequest(**{**base, **kw})


def test_capabilities_come_from_the_model(tiny_engine, tiny_rf_engine):
    v, rf = tiny_engine.capabilities, tiny_rf_engine.capabilities
    assert (v.objective, v.default_sampler, v.default_steps, v.default_cfg_scale) == (
        "v", "dpmpp-3m-sde", 100, 7.0,
    )  # fmt: skip
    assert (rf.objective, rf.default_sampler, rf.default_steps, rf.default_cfg_scale) == (
        "rf_denoiser", "pingpong", 8, 1.0,
    )  # fmt: skip
    assert v.sample_rate == rf.sample_rate == 44100
    assert v.window_seconds >= 12 and rf.window_seconds >= 11.8
    assert v.conditioning == ("prompt", "seconds_start", "seconds_total")
    assert v.builtin_noise_model and rf.builtin_noise_model


@pytest.mark.parametrize("fixture", ["tiny_engine", "tiny_rf_engine"])
def test_render_is_deterministic_full_window_float32(fixture, request):
    engine = request.getfixturevalue(fixture)
    a = engine.render(_req())
    b = engine.render(_req())
    caps = engine.capabilities
    assert a.audio.dtype == np.float32
    assert a.audio.shape == (1, 2, caps.window_samples)
    assert np.isfinite(a.audio).all() and a.audio.std() > 1e-3
    np.testing.assert_array_equal(a.audio, b.audio)
    c = engine.render(_req(seed=8))
    assert not np.array_equal(a.audio, c.audio)


def test_variations_are_one_batch_and_reproducible(tiny_rf_engine):
    batch = tiny_rf_engine.render(_req(batch_size=3))
    assert batch.audio.shape[0] == 3
    assert not np.array_equal(batch.audio[0], batch.audio[1])
    again = tiny_rf_engine.render(_req(batch_size=3))
    np.testing.assert_array_equal(batch.audio, again.audio)
    assert batch.settings["batch_size"] == 3 and batch.seed == 7


def test_prompt_negative_prompt_and_cfg_change_the_output(tiny_engine):
    base = tiny_engine.render(_req()).audio
    assert not np.array_equal(base, tiny_engine.render(_req(prompt="ambient piano")).audio)
    assert not np.array_equal(base, tiny_engine.render(_req(negative_prompt="drums")).audio)
    assert not np.array_equal(base, tiny_engine.render(_req(cfg_scale=3.0)).audio)


def test_seconds_total_conditions_the_model(tiny_rf_engine):
    a = tiny_rf_engine.render(_req(seconds_total=4)).audio
    b = tiny_rf_engine.render(_req(seconds_total=8)).audio
    assert not np.array_equal(a, b)


def test_step_callback_and_cancel(tiny_engine):
    seen = []
    tiny_engine.render(_req(steps=5), on_step=lambda s, n, sigma: seen.append((s, n, sigma)))
    assert [s for s, _, _ in seen] == [1, 2, 3, 4, 5] and all(n == 5 for _, n, _ in seen)
    assert seen[0][2] > seen[-1][2] > 0  # sigma decreases
    steps = []

    def cancel_after_two() -> bool:
        return len(steps) >= 2

    with pytest.raises(RenderCancelled, match="step 2/5"):
        tiny_engine.render(_req(steps=5), on_step=lambda s, n, sg: steps.append(s),
                           should_cancel=cancel_after_two)  # fmt: skip
    with pytest.raises(RenderCancelled, match="before start"):
        tiny_engine.render(_req(), should_cancel=lambda: True)


@pytest.mark.parametrize("fixture", ["tiny_engine", "tiny_rf_engine"])
def test_init_audio_any_rate_and_channels(fixture, request):
    engine = request.getfixturevalue(fixture)
    t = np.arange(22050 * 3) / 22050
    mono = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[:, None]
    out = engine.render(_req(init_audio=InitAudio(mono, 22050), init_noise_level=0.5))
    assert out.audio.shape == (1, 2, engine.capabilities.window_samples)
    assert np.isfinite(out.audio).all()
    quad = np.repeat(mono, 4, axis=1)
    out4 = engine.render(_req(init_audio=InitAudio(quad, 22050), init_noise_level=0.5))
    np.testing.assert_array_equal(out.audio, out4.audio)  # extra channels dropped, as upstream
    free = engine.render(_req())
    assert not np.array_equal(out.audio, free.audio)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"seconds_total": 0}, "seconds_total"),
        ({"seconds_total": 1000}, "seconds_total"),
        ({"steps": 0}, "steps"),
        ({"cfg_scale": float("nan")}, "cfg"),
        ({"sampler": "pingpong"}, "sampler"),
        ({"sampler": "k-heun"}, "sampler"),
        ({"batch_size": 0}, "variations"),
        ({"batch_size": 99}, "variations"),
        ({"seed": -1}, "seed"),
        ({"init_noise_level": -1.0}, "noise"),
        ({"init_audio": InitAudio(np.zeros((0, 2), np.float32), 44100)}, "init audio"),
        ({"init_audio": InitAudio(np.full((10, 2), np.nan, np.float32), 44100)}, "NaN"),
    ],
)
def test_bad_requests_are_clear_errors(tiny_engine, kw, message):
    with pytest.raises(RenderError, match=message):
        tiny_engine.render(_req(**kw))


def test_rf_model_rejects_v_samplers(tiny_rf_engine):
    with pytest.raises(RenderError, match="sampler"):
        tiny_rf_engine.render(_req(sampler="dpmpp-3m-sde"))
    euler = tiny_rf_engine.render(_req(sampler="euler"))
    assert euler.settings["sampler"] == "euler"


def test_render_does_not_leak_global_torch_flags(tiny_engine):
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        tiny_engine.render(_req(steps=1))
        assert torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False
