"""The fit window (``[sat] fit_window``, experimental, docs/perf.md): with a request's
``keep_frames``, only the latents covering seconds_total's samples plus the decoder's
receptive-field margin are sampled. It is a different computation from the full window (other
noise, a shorter DiT sequence), so these tests check its shape, determinism and bookkeeping, and
that it does differ from the full window: nothing here claims it is close to it."""

import json
import logging
import math

import numpy as np
import pytest
import torch

from latentloop_daemon.backends import load_engine
from latentloop_daemon.backends.sat.backend import SatEngine
from latentloop_daemon.backends.sat.options import SatOptions
from latentloop_daemon.engine import InitAudio, RenderRequest

RATE = 44100
KEEP = 3 * RATE + 882  # a 3 s loop + 20 ms crossfade, as the loop pipeline asks
SECONDS_TOTAL = 5.0  # loop + 2 s padding


@pytest.fixture(scope="module")
def fit_engines() -> dict[str, SatEngine]:
    return {
        name: SatEngine.load(name, device="cpu", fit_window=True) for name in ("tiny", "tiny-rf")
    }


def _req(**kw) -> RenderRequest:
    base = {
        "prompt": "120 BPM house loop", "seconds_total": SECONDS_TOTAL, "seed": 3, "steps": 3,
        "keep_frames": KEEP,
    }  # fmt: skip
    return RenderRequest(**{**base, **kw})


def _expected_frames(engine: SatEngine, seconds_total: float) -> int:
    samples = math.ceil(round(seconds_total * engine.config.sample_rate, 6))
    return engine.model.pretransform.model.decoder.latents_needed(samples)


class DiTLengths:
    """Records the sequence length of every DiT call."""

    def __init__(self, engine: SatEngine) -> None:
        self.lengths: list[int] = []
        self.handle = engine.model.model.register_forward_pre_hook(self._hook)

    def _hook(self, module, args) -> None:
        self.lengths.append(int(args[0].shape[-1]))

    def __enter__(self) -> "DiTLengths":
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


@pytest.mark.parametrize("name", ["tiny", "tiny-rf"])
def test_fit_window_samples_only_the_latents_the_loop_needs(fit_engines, name):
    engine = fit_engines[name]
    frames = _expected_frames(engine, SECONDS_TOTAL)
    # loop + padding (5 s = 108 latents) + the tiny decoder's margin, well under the window
    assert math.ceil(SECONDS_TOTAL * RATE / 2048) < frames < engine.config.latent_length
    with DiTLengths(engine) as dit:
        result = engine.render(_req(batch_size=2))
    assert dit.lengths and set(dit.lengths) == {frames}  # noise, sampler state, DiT: T_fit
    assert result.audio.shape == (2, 2, KEEP)
    assert np.isfinite(result.audio).all() and np.abs(result.audio).max() > 0
    assert result.settings["fit_window"] is True
    assert result.settings["latent_frames"] == frames
    assert result.settings["decoded_samples"] == KEEP


@pytest.mark.parametrize("name", ["tiny", "tiny-rf"])
def test_fit_window_is_deterministic_for_a_seed_and_differs_from_the_full_window(
    fit_engines, tiny_engine, tiny_rf_engine, name
):
    engine = fit_engines[name]
    full_engine = {"tiny": tiny_engine, "tiny-rf": tiny_rf_engine}[name]
    a = engine.render(_req())
    b = engine.render(_req())
    np.testing.assert_array_equal(a.audio, b.audio)
    assert not np.array_equal(engine.render(_req(seed=4)).audio, a.audio)
    full = full_engine.render(_req())
    assert full.settings["fit_window"] is False
    assert full.settings["latent_frames"] == full_engine.config.latent_length
    assert full.audio.shape == a.audio.shape
    # a different computation, not an approximation: the difference is of the signal's order
    diff = np.abs(a.audio - full.audio).max()
    assert diff > 0.1 * np.abs(full.audio).max()


def test_the_length_conditioning_stays_loop_plus_padding(fit_engines):
    engine = fit_engines["tiny"]
    seen: list[float] = []
    handle = engine.model.conditioner.register_forward_pre_hook(
        lambda module, args: seen.extend(float(c["seconds_total"]) for c in args[0])
    )
    try:
        engine.render(_req(steps=1))
    finally:
        handle.remove()
    assert seen == [SECONDS_TOTAL]


def test_a_request_without_keep_frames_is_unaffected(fit_engines, tiny_rf_engine):
    engine = fit_engines["tiny-rf"]
    fit = engine.render(_req(keep_frames=None))
    plain = tiny_rf_engine.render(_req(keep_frames=None))
    np.testing.assert_array_equal(fit.audio, plain.audio)
    assert fit.audio.shape[-1] == engine.config.sample_size
    assert fit.settings["fit_window"] is False
    assert fit.settings["latent_frames"] == engine.config.latent_length


def test_a_span_that_needs_the_whole_window_is_the_full_window(fit_engines, tiny_rf_engine):
    engine = fit_engines["tiny-rf"]
    window_s = engine.config.sample_size / RATE
    request = _req(seconds_total=window_s, keep_frames=KEEP)
    fit = engine.render(request)
    assert fit.settings["fit_window"] is False  # clamped to the window: nothing changed
    np.testing.assert_array_equal(fit.audio, tiny_rf_engine.render(request).audio)


def test_fit_window_with_init_audio_and_with_full_decode():
    engine = SatEngine.load("tiny-rf", device="cpu", fit_window=True, kept_decode=False)
    frames = _expected_frames(engine, SECONDS_TOTAL)
    rng = np.random.default_rng(0)
    init = InitAudio((rng.standard_normal((RATE * 4, 2)) * 0.1).astype(np.float32), RATE)
    with DiTLengths(engine) as dit:
        result = engine.render(_req(init_audio=init, init_noise_level=0.5))
    assert set(dit.lengths) == {frames}
    # no kept-span decode: every sampled latent is decoded (at least keep_frames samples)
    assert result.audio.shape == (1, 2, frames * 2048)
    assert np.isfinite(result.audio).all()


def test_reference_precision_ignores_it_with_a_warning(caplog, tiny_rf_engine):
    with caplog.at_level(logging.WARNING, logger="latentloop_daemon.backends.sat.backend"):
        engine = SatEngine.load("tiny-rf", device="cpu", precision="reference", fit_window=True)
    assert not engine.fit_window
    assert "fit_window is ignored in reference precision" in caplog.text
    plain = SatEngine.load("tiny-rf", device="cpu", precision="reference")
    result = engine.render(_req(steps=2))
    np.testing.assert_array_equal(result.audio, plain.render(_req(steps=2)).audio)
    assert result.settings["fit_window"] is False
    assert result.settings["latent_frames"] == engine.config.latent_length


def test_loading_with_it_warns_once_that_it_is_experimental(caplog):
    with caplog.at_level(logging.WARNING, logger="latentloop_daemon.backends.sat.backend"):
        engine = load_engine("tiny-rf", device="cpu", options=SatOptions(fit_window=True))
        engine.render(_req(steps=1))
    assert isinstance(engine, SatEngine) and engine.fit_window
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "experimental" in warnings[0] and "changes the output" in warnings[0]
    assert "random weights can't tell" in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="latentloop_daemon.backends.sat.backend"):
        load_engine("tiny-rf", device="cpu")
    assert not caplog.records  # off by default, and silent


def test_the_option_parses_from_toml_environment_and_flag(tmp_path):
    import argparse

    from latentloop_daemon.cli.options import add_model_options, model_overrides
    from latentloop_daemon.config import load_config

    assert SatOptions().fit_window is False
    toml = tmp_path / "latentloop.toml"
    toml.write_text("[sat]\nfit_window = true\n")
    assert load_config(toml, environ={}).backend_options("sat").fit_window is True
    off = load_config(toml, environ={"LATENTLOOP_SAT_FIT_WINDOW": "false"})
    assert off.backend_options("sat").fit_window is False
    env = load_config(None, environ={"LATENTLOOP_SAT_FIT_WINDOW": "1"})
    assert env.backend_options("sat").fit_window is True
    parser = argparse.ArgumentParser()
    add_model_options(parser)
    overrides = model_overrides(parser.parse_args(["--fit-window"]))
    assert load_config(None, overrides, environ={}).backend_options("sat").fit_window is True
    default = model_overrides(parser.parse_args([]))
    assert load_config(None, default, environ={}).backend_options("sat").fit_window is False


def test_the_sidecar_says_how_the_loop_was_made(fit_engines, tmp_path):
    from latentloop_daemon.config import RenderConfig
    from latentloop_daemon.loops.pipeline import LoopRequest, make_loops

    engine = fit_engines["tiny-rf"]
    settings = RenderConfig(tempo_check=False)
    made = make_loops(
        engine, LoopRequest("house", bpm=120, bars=1, seed=1, steps=2), settings, tmp_path,
        lambda i: {},
    )  # fmt: skip
    frames = _expected_frames(engine, made.plan.seconds_total)
    assert frames < engine.config.latent_length
    side = json.loads(made.wavs[0].with_suffix(".json").read_text())
    assert side["settings"]["fit_window"] is True
    assert side["settings"]["latent_frames"] == frames
    assert made.clips[0].audio.shape == (2 * RATE, 2)
    assert np.isfinite(made.clips[0].audio).all()


def test_generate_checks_the_latent_length(fit_engines):
    from latentloop_daemon.backends.sat.model import SamplerSettings, generate
    from latentloop_daemon.errors import RenderError

    engine = fit_engines["tiny-rf"]
    cond = [engine._cond_item("x", _req())]
    for frames in (0, engine.config.latent_length + 1):
        with pytest.raises(RenderError, match="latent_frames"):
            generate(
                engine.model, SamplerSettings(1, 1.0, "pingpong"), cond, None, 0,
                torch.device("cpu"), latent_frames=frames,
            )  # fmt: skip
