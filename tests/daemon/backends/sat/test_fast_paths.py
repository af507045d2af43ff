"""Fast paths and their accuracy contracts (docs/perf.md): the decoder's receptive field and
the kept-span decode, the fused Snake, the cached weight norm, text-embedding caching, CPU
threads. Bit-exact where claimed; otherwise each bound is stated next to its assertion."""

import numpy as np
import pytest
import torch

from latentloop_daemon.backends.sat.backend import SatEngine, physical_cores, set_cpu_threads
from latentloop_daemon.backends.sat.oobleck import AutoencoderPretransform, SnakeBeta
from latentloop_daemon.backends.sat.options import SatOptions
from latentloop_daemon.backends.sat.tiny import randomize_, tiny_model_config
from latentloop_daemon.engine import RenderRequest
from latentloop_daemon.errors import ConfigError, RenderError

# Kept-span decode vs full decode, fp32: the same sums, but a shorter input may be blocked
# differently by the convolution kernels. Measured 3e-6 x max|audio| on full-size random
# weights (AVX2); 1e-5 x max|audio| is ~100 fp32 ulp at the signal's peak.
KEPT_DECODE_RTOL = 1e-5
# Fused Snake vs the reference op chain: one rounding fewer (addcmul), else the same ops.
SNAKE_RTOL = 4 * 2.0**-23


@pytest.fixture(scope="module")
def vae() -> AutoencoderPretransform:
    pt = AutoencoderPretransform(tiny_model_config("tiny-rf").pretransform)
    randomize_(pt, 5)
    return pt.eval().requires_grad_(False).float()


LATENT = tiny_model_config("tiny-rf").pretransform.latent_dim


def _latents(t: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, LATENT, t, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("keep", [1, 2047, 2048, 5000, 20000, 40000])
def test_latents_needed_is_the_decoders_receptive_field(vae, keep):
    z = _latents(32)
    needed = vae.model.decoder.latents_needed(keep)
    assert needed < 32
    with torch.no_grad():
        base = vae.decode(z)[..., :keep]
        beyond = z.clone()
        beyond[..., needed:] += 10.0  # everything past the needed latents
        assert torch.equal(vae.decode(beyond)[..., :keep], base)
        inside = z.clone()
        inside[..., needed - 1] += 10.0  # the last needed latent does reach the kept span
        assert not torch.equal(vae.decode(inside)[..., :keep], base)


def test_receptive_field_of_the_oobleck_decoder_is_ten_latents():
    """SAO's decoder (strides 2,4,4,8,8; k7 convs; dilations 1,3,9) reaches at most 10 latents
    past the latent holding the last kept sample; a 4-bar loop at 120 BPM (+20 ms) needs 182 of
    SAO Small's 256 latents and of SAO 1.0's 1024."""
    from latentloop_daemon.backends.sat.config import parse_model_config
    from latentloop_daemon.backends.sat.known_configs import known_config
    from latentloop_daemon.backends.sat.oobleck import OobleckDecoder

    cfg = parse_model_config(known_config("sao-small"), source="test").pretransform.decoder
    with torch.device("meta"):
        dec = OobleckDecoder(cfg)
    assert dec.latents_needed(2048) == 1 + 10
    assert dec.latents_needed(8 * 44100 + 882) == 182


@pytest.mark.parametrize("fast", [False, True])
def test_kept_decode_equals_the_full_decode_within_fp32_rounding(vae, fast):
    z = _latents(32, seed=1)
    vae.set_fast_snake(fast)
    try:
        with torch.no_grad():
            full = vae.decode(z)
            for keep in (3000, 30000, 65536):
                kept = vae.decode(z, keep)
                assert kept.shape == (1, 2, keep)
                scale = full.abs().max()
                assert (kept - full[..., :keep]).abs().max() <= KEPT_DECODE_RTOL * scale
    finally:
        vae.set_fast_snake(False)


def test_kept_decode_checks_its_argument(vae):
    with pytest.raises(ValueError):
        vae.decode(_latents(4), 0)
    with pytest.raises(ValueError):
        vae.decode(_latents(4), 4 * 2048 + 1)


def test_fused_snake_is_within_a_few_ulp():
    snake = SnakeBeta(16)
    randomize_(snake, 3)
    x = torch.randn(2, 16, 4096, generator=torch.Generator().manual_seed(2)) * 3
    with torch.no_grad():
        ref = snake(x)
        snake.fast = True
        fast = snake(x)
    assert (fast - ref).abs().max() <= SNAKE_RTOL * ref.abs().max()


def test_cached_weight_norm_is_bit_identical_and_follows_casts(vae):
    z = _latents(6, seed=3)
    with torch.no_grad():
        vae.cache_decoder_weights(False)
        plain = vae.decode(z)
        vae.cache_decoder_weights(True)
        assert torch.equal(vae.decode(z), plain)
        assert torch.equal(vae.decode(z), plain)  # from the cache
        vae.half()
        half = vae.decode(z)
        vae.cache_decoder_weights(False)
        assert torch.equal(vae.decode(z), half)  # the cast invalidated the cached fp32 weights
        vae.float()
        plain = vae.decode(z)  # the fp16 round trip changed the weights
        vae.cache_decoder_weights(True)
        first = vae.model.decoder.layers[0]
        first.weight_g.mul_(2)  # an in-place write invalidates too
        doubled = vae.decode(z)
        first.weight_g.div_(2)
        assert not torch.equal(doubled, plain)
        assert torch.equal(vae.decode(z), plain)
        vae.cache_decoder_weights(False)


def _req(**kw) -> RenderRequest:
    base = {"prompt": "120 BPM house loop", "seconds_total": 6.0, "seed": 3, "steps": 3}
    return RenderRequest(**{**base, **kw})


def test_engine_decodes_only_the_kept_span(tiny_rf_engine):
    keep = 3 * 44100 + 882
    full = tiny_rf_engine.render(_req())
    kept = tiny_rf_engine.render(_req(keep_frames=keep))
    assert kept.audio.shape == (1, 2, keep)
    assert kept.settings["decoded_samples"] == keep
    scale = np.abs(full.audio).max()
    assert np.abs(kept.audio - full.audio[..., :keep]).max() <= KEPT_DECODE_RTOL * scale
    whole = tiny_rf_engine.render(_req(keep_frames=full.audio.shape[-1]))
    np.testing.assert_array_equal(whole.audio, full.audio)


def test_reference_precision_always_decodes_the_full_window():
    engine = SatEngine.load("tiny-rf", device="cpu", precision="reference")
    full = engine.render(_req(steps=2))
    kept = engine.render(_req(steps=2, keep_frames=44100))
    np.testing.assert_array_equal(kept.audio, full.audio)
    assert kept.audio.shape[-1] == engine.capabilities.window_samples


def test_full_decode_option_turns_the_kept_decode_off():
    engine = SatEngine.load("tiny-rf", device="cpu", kept_decode=False)
    assert engine.render(_req(steps=1, keep_frames=44100)).audio.shape[-1] == (
        engine.capabilities.window_samples
    )


@pytest.mark.parametrize("keep", [0, -1, 10**9])
def test_keep_frames_out_of_range_is_a_render_error(tiny_rf_engine, keep):
    with pytest.raises(RenderError, match="keep_frames"):
        tiny_rf_engine.render(_req(keep_frames=keep))


def test_the_loop_pipeline_asks_for_loop_plus_crossfade(tiny_rf_engine, tmp_path):
    from latentloop_daemon.config import RenderConfig
    from latentloop_daemon.loops.pipeline import LoopRequest, make_loops

    seen: list[RenderRequest] = []

    class Spy:
        capabilities = tiny_rf_engine.capabilities

        def render(self, request, on_step=None, should_cancel=None):
            seen.append(request)
            return tiny_rf_engine.render(request, on_step, should_cancel)

        def close(self):
            pass

    settings = RenderConfig(tempo_check=False)
    made = make_loops(
        Spy(), LoopRequest("house", bpm=120, bars=1, seed=1, steps=2), settings, tmp_path,
        lambda i: {},
    )  # fmt: skip
    loop = 2 * 44100
    assert seen[0].keep_frames == loop + round(settings.crossfade_ms * 44100 / 1000)
    assert made.result.audio.shape[-1] == seen[0].keep_frames
    assert made.clips[0].audio.shape == (loop, 2)


def test_text_embeddings_are_cached_per_prompt(tiny_rf_engine):
    (cond,) = tiny_rf_engine.model.conditioner.t5_conditioners()
    calls: list[list[str]] = []
    encode = cond._encode

    def counting(texts, device):
        calls.append(list(texts))
        return encode(texts, device)

    cond._encode = counting  # type: ignore[method-assign]
    size = cond.cache_size
    try:
        cond._cache.clear()
        a = tiny_rf_engine.render(_req(prompt="dub techno chords", steps=1))
        b = tiny_rf_engine.render(_req(prompt="dub techno chords", steps=1, seed=4))
        assert calls == [["dub techno chords"]]  # a re-roll on the same prompt: no T5 call
        again = tiny_rf_engine.render(_req(prompt="dub techno chords", steps=1))
        np.testing.assert_array_equal(again.audio, a.audio)  # cached = freshly encoded
        assert not np.array_equal(a.audio, b.audio)
        cond.cache_size = 2
        for p in ("one", "two", "three"):  # least recently used out
            cond(["" + p], torch.device("cpu"))
        cond(["one"], torch.device("cpu"))
        assert calls[-1] == ["one"] and len(cond._cache) == 2
        cond.cache_size = 0
        cond._cache.clear()
        cond(["two"], torch.device("cpu"))
        cond(["two"], torch.device("cpu"))
        assert calls[-2:] == [["two"], ["two"]] and not cond._cache
    finally:
        cond._encode = encode  # type: ignore[method-assign]
        cond.cache_size = size


def test_threads_default_to_the_physical_cores():
    before = torch.get_num_threads()
    try:
        assert 1 <= physical_cores() <= (__import__("os").cpu_count() or 1)
        set_cpu_threads(1)
        assert torch.get_num_threads() == 1
        set_cpu_threads(0)
        assert torch.get_num_threads() == physical_cores()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("kw", [{"threads": -1}, {"text_cache": -1}])
def test_sat_options_are_checked(kw):
    with pytest.raises(ConfigError):
        SatOptions(**kw)
