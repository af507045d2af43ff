"""Checkpoint loading: strict keys, bad files, .ckpt safety, training checkpoints, dtypes, T5.

Every case copies a committed golden model folder (tests/data/goldens/sao10-tiny: a tiny
SAO-1.0-shaped model in the released checkpoint layout) into tmp_path, changes one thing, and
loads it through `SatEngine.load`, as `latentloop render --model FOLDER` does. The Hugging Face
cache is pointed at an empty tmp folder, so a t5-base the developer has cached cannot interfere.
"""

import functools
import json
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from safetensors.torch import load_file, save_file

from latentloop_daemon.backends.sat.backend import SatEngine
from latentloop_daemon.backends.sat.checkpoint import read_state_dict
from latentloop_daemon.backends.sat.model import SamplerSettings, generate
from latentloop_daemon.engine import RenderRequest
from latentloop_daemon.errors import (
    ConfigError,
    ModelLoadError,
    ModelNotFoundError,
    UnsafeCheckpointError,
)

GOLDENS = Path(__file__).resolve().parents[3] / "data" / "goldens"
T5 = GOLDENS / "t5-tiny"
DIT = "model."  # the DiT's keys in the released layout: model.model.*
CPU = torch.device("cpu")


class NotAWeight:
    """A custom class: unpickling it needs this module, i.e. arbitrary code."""

    def __init__(self, note: str) -> None:
        self.note = note


@pytest.fixture(autouse=True)
def empty_hf_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point huggingface_hub at an empty cache (it read HF_HOME at import, so patch constants)."""
    home = tmp_path / "hf_home"
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    return home / "hub"


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A fresh copy of the golden sao10-tiny folder: model_config.json + model.safetensors."""
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("model_config.json", "model.safetensors"):
        shutil.copyfile(GOLDENS / "sao10-tiny" / name, folder / name)
    return folder


def _state(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _load(folder: Path, **kw) -> SatEngine:
    return SatEngine.load(str(folder), device="cpu", precision="fp32", t5_dir=T5, **kw)


def _weights(engine: SatEngine) -> dict[str, torch.Tensor]:
    return engine.model.state_dict()


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def _latents(engine: SatEngine) -> torch.Tensor:
    """Two sampler steps (DiT + conditioners), no decoding: [1, C, latent_length]."""
    settings = SamplerSettings(steps=2, cfg_scale=7.0, sampler=engine.defaults.sampler)
    cond = [{"prompt": "dusty drums", "seconds_start": 0.0, "seconds_total": 0.3}]
    return generate(engine.model, settings, cond, None, 11, CPU, return_latents=True)


@pytest.fixture(scope="module")
def reference_latents() -> torch.Tensor:
    """Latents of the untouched golden model (loaded from its committed folder)."""
    return _latents(_load(GOLDENS / "sao10-tiny"))


# --- strict keys -------------------------------------------------------------------------------


def test_golden_loads_with_aligned_cpu_parameters(model_dir: Path):
    engine = _load(model_dir)
    sd = _state(model_dir)
    _assert_same_weights(_weights(engine), sd)
    # load_into copies tensors that safetensors hands out at unaligned offsets: CPU kernels
    # round differently on unaligned data, which would break bit-exact parity.
    params = list(engine.model.parameters())
    assert params and all(p.device.type == "cpu" for p in params)
    unaligned = [n for n, p in engine.model.named_parameters() if p.data_ptr() % 64]
    assert unaligned == []


def test_missing_key_is_named(model_dir: Path):
    sd = _state(model_dir)
    gone = "model.model.transformer.layers.1.cross_attn.to_kv.weight"
    assert gone in sd
    del sd[gone]
    save_file(sd, str(model_dir / "model.safetensors"))
    with pytest.raises(ModelLoadError) as info:
        _load(model_dir)
    message = str(info.value)
    assert f"1 missing key(s): {gone}" in message
    assert f"({len(sd)} tensors in the file, {len(sd) + 1} expected)" in message
    assert "unexpected" not in message and "wrong shape" not in message


def test_unexpected_key_is_named(model_dir: Path):
    sd = _state(model_dir)
    n = len(sd)
    sd["model.model.transformer.layers.9.extra.weight"] = torch.zeros(3)
    save_file(sd, str(model_dir / "model.safetensors"))
    with pytest.raises(ModelLoadError) as info:
        _load(model_dir)
    message = str(info.value)
    assert "1 unexpected key(s): model.model.transformer.layers.9.extra.weight" in message
    assert f"({n + 1} tensors in the file, {n} expected)" in message
    assert "missing" not in message


def test_misshaped_key_is_named_with_both_shapes(model_dir: Path):
    sd = _state(model_dir)
    key = "model.model.transformer.project_in.weight"
    shape = tuple(sd[key].shape)
    sd[key] = torch.zeros(shape[0] + 1, *shape[1:])
    save_file(sd, str(model_dir / "model.safetensors"))
    with pytest.raises(ModelLoadError) as info:
        _load(model_dir)
    bad = (shape[0] + 1, *shape[1:])
    assert f"1 wrong shape key(s): {key}: checkpoint {bad} vs model {shape}" in str(info.value)


def test_many_problems_show_the_first_five_and_a_count(model_dir: Path):
    sd = _state(model_dir)
    layer0 = sorted(k for k in sd if k.startswith("model.model.transformer.layers.0."))
    assert len(layer0) > 7
    for k in layer0:
        del sd[k]
    sd["conditioner.conditioners.lyrics.weight"] = torch.zeros(2)
    save_file(sd, str(model_dir / "model.safetensors"))
    with pytest.raises(ModelLoadError) as info:
        _load(model_dir)
    message = str(info.value)
    assert f"{len(layer0)} missing key(s): " in message
    assert f"; ... ({len(layer0) - 5} more)" in message
    assert sum(k in message for k in layer0) == 5  # only the first five are listed
    assert " | 1 unexpected key(s): conditioner.conditioners.lyrics.weight" in message


# --- bad files ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[: len(b) // 2], id="truncated-half"),
        pytest.param(lambda b: b[:100], id="truncated-header"),
        pytest.param(lambda b: b"", id="empty"),
        pytest.param(
            lambda b: b"\x08\x00\x00\x00\x00\x00\x00\x00not json" + b[16:], id="bad-header"
        ),
    ],
)
def test_damaged_safetensors_is_a_clear_error(model_dir: Path, damage):
    path = model_dir / "model.safetensors"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ModelLoadError, match="is not a valid safetensors file"):
        _load(model_dir)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        pytest.param(None, "not a readable checkpoint", id="truncated-zip"),
        pytest.param([1, 2, 3], "does not hold a state dict of tensors", id="a-list"),
        pytest.param({"state_dict": {"a": 1}}, "does not hold a state dict", id="non-tensors"),
    ],
)
def test_bad_ckpt_is_a_clear_error(model_dir: Path, content, match):
    path = model_dir / "model.ckpt"
    if content is None:
        torch.save({"state_dict": _state(model_dir)}, path)
        path.write_bytes(path.read_bytes()[:5000])
    else:
        torch.save(content, path)
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=match):
        _load(model_dir)


def test_missing_checkpoint(tmp_path: Path, model_dir: Path):
    with pytest.raises(ModelNotFoundError, match="not an existing file or folder"):
        _load(tmp_path / "no-such-model")
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match="has neither model.safetensors nor model.ckpt"):
        _load(model_dir)
    (model_dir / "model_config.json").unlink()
    with pytest.raises(ModelNotFoundError, match="has no model_config.json"):
        _load(model_dir)
    with pytest.raises(ModelLoadError, match="checkpoint not found: .*gone.safetensors"):
        read_state_dict(tmp_path / "gone.safetensors")
    weights = tmp_path / "weights.npz"
    weights.write_bytes(b"PK")
    with pytest.raises(ModelLoadError, match="unknown checkpoint format '.npz'"):
        read_state_dict(weights)


@pytest.mark.parametrize(
    ("key", "value", "error", "match"),
    [
        ("depth", "2", ConfigError, "depth: expected a positive integer, got '2'"),
        ("depth", 3, ModelLoadError, r"missing key\(s\): model\.model\.transformer\.layers\.2\."),
        (
            "depth",
            1,
            ModelLoadError,
            r"unexpected key\(s\): model\.model\.transformer\.layers\.1\.",
        ),
        ("embed_dim", 144, ModelLoadError, r"wrong shape key\(s\): model\.model\."),
    ],
)
def test_config_that_does_not_fit_the_checkpoint(model_dir: Path, key, value, error, match):
    path = model_dir / "model_config.json"
    raw = json.loads(path.read_text())
    raw["model"]["diffusion"]["config"][key] = value
    if key == "embed_dim":  # keep 48-wide heads, so the config itself stays valid
        raw["model"]["diffusion"]["config"]["num_heads"] = value // 48
    path.write_text(json.dumps(raw))
    with pytest.raises(error, match=match):
        _load(model_dir)


# --- .ckpt files -------------------------------------------------------------------------------


@pytest.mark.parametrize("wrapped", [True, False], ids=["state_dict", "bare"])
def test_ckpt_loads_weights_only_and_matches_safetensors(
    model_dir: Path, reference_latents: torch.Tensor, wrapped: bool
):
    sd = _state(model_dir)
    torch.save({"state_dict": sd, "epoch": 3} if wrapped else sd, model_dir / "model.ckpt")
    (model_dir / "model.safetensors").unlink()
    engine = _load(model_dir)
    _assert_same_weights(_weights(engine), sd)
    assert all(p.data_ptr() % 64 == 0 for p in engine.model.parameters())
    assert torch.equal(_latents(engine), reference_latents)


@pytest.mark.parametrize(
    ("extra", "what"),
    [
        pytest.param(functools.partial(int, base=2), "functools.partial", id="partial"),
        pytest.param(NotAWeight("hello"), "NotAWeight", id="custom-class"),
    ],
)
def test_ckpt_needing_unpickling_is_refused_unless_trusted(
    model_dir: Path, caplog: pytest.LogCaptureFixture, extra, what
):
    sd = _state(model_dir)
    torch.save({"state_dict": sd, "hyper_parameters": {"x": extra}}, model_dir / "model.ckpt")
    (model_dir / "model.safetensors").unlink()
    with pytest.raises(UnsafeCheckpointError) as info:
        _load(model_dir)
    message = str(info.value)
    assert "model.ckpt holds Python objects that need arbitrary code to unpickle" in message
    assert what in message and "Loading it could run code from the file" in message
    assert "--trust-checkpoint" in message and "model.safetensors" in message
    assert "\x1b[" not in message  # no terminal escape codes from torch's message
    engine = _load(model_dir, trust_checkpoint=True)
    _assert_same_weights(_weights(engine), sd)
    assert "full unpickling (trusted by the user)" in caplog.text


def test_training_checkpoint_uses_the_ema_weights(
    tmp_path: Path, model_dir: Path, reference_latents: torch.Tensor
):
    online = _state(model_dir)
    ema = {k: v * 0.5 + 0.01 if k.startswith(DIT) else v for k, v in online.items()}
    training = {f"diffusion.{k}": v for k, v in online.items()}
    training |= {
        f"diffusion_ema.ema_model.{k.removeprefix(DIT)}": v  # EMA of the DiT only, as upstream
        for k, v in ema.items()
        if k.startswith(DIT)
    }
    training |= {"diffusion_ema.step": torch.tensor(1000), "diffusion_ema.initted": torch.tensor(1)}
    torch.save({"state_dict": training, "epoch": 3, "global_step": 1000}, model_dir / "model.ckpt")
    (model_dir / "model.safetensors").unlink()
    released = tmp_path / "released-ema"
    released.mkdir()
    shutil.copyfile(model_dir / "model_config.json", released / "model_config.json")
    save_file(ema, str(released / "model.safetensors"))

    from_training = _load(model_dir)
    from_release = _load(released)
    _assert_same_weights(_weights(from_training), _weights(from_release))
    latents = _latents(from_training)
    assert torch.equal(latents, _latents(from_release))
    assert not torch.equal(latents, reference_latents)  # the online weights were not used


def test_fp16_checkpoint_is_cast_and_renders(model_dir: Path):
    sd = _state(model_dir)
    half = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    save_file(half, str(model_dir / "model.safetensors"))
    engine = _load(model_dir)
    weights = _weights(engine)
    assert {v.dtype for v in weights.values()} == {torch.float32}
    _assert_same_weights(weights, {k: v.float() for k, v in half.items()})
    assert all(p.data_ptr() % 64 == 0 for p in engine.model.parameters())
    result = engine.render(RenderRequest("dusty drums", 0.3, seed=1, steps=1))
    assert result.audio.shape == (1, 2, engine.capabilities.window_samples)
    assert torch.isfinite(torch.from_numpy(result.audio)).all()


def test_safetensors_is_preferred_over_ckpt(model_dir: Path, reference_latents: torch.Tensor):
    sd = _state(model_dir)
    torch.save({"state_dict": {k: v + 1 for k, v in sd.items()}}, model_dir / "model.ckpt")
    engine = _load(model_dir)
    _assert_same_weights(_weights(engine), sd)
    assert torch.equal(_latents(engine), reference_latents)
    # Naming the .ckpt explicitly loads it.
    named = SatEngine.load(str(model_dir / "model.ckpt"), device="cpu", t5_dir=T5)
    assert torch.equal(_weights(named)["model.model.preprocess_conv.weight"],
                       sd["model.model.preprocess_conv.weight"] + 1)  # fmt: skip


# --- T5 ----------------------------------------------------------------------------------------


def test_model_without_t5_says_how_to_get_it(model_dir: Path, empty_hf_cache: Path):
    with pytest.raises(ModelLoadError) as info:
        SatEngine.load(str(model_dir), device="cpu")
    message = str(info.value)
    assert "no T5 text encoder found" in message
    assert "text_encoder/ + tokenizer/" in message
    assert "latentloop download google-t5/t5-base" in message
    assert not empty_hf_cache.exists() or not any(empty_hf_cache.iterdir())
