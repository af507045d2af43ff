"""`latentloop render` end to end: files, formats, determinism, and clear errors with exit codes.

One real subprocess renders with the built-in ``tiny`` model (a module fixture, shared by the
tests that inspect its output); input errors caught before the model loads and the missing-model
failure also run as real subprocesses. The other cases run `cli.main` in-process (the same code
path minus the interpreter start-up, which costs seconds per run), mostly on the committed golden
``small-tiny`` folder: SAO-Small-shaped, with a 16384-sample window that decodes far faster than
the built-in models' windows, so the file stays fast on a 2-core machine. All on the CPU.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from inprocess import run_cli

from latentloop_daemon.backends.sat.backend import SatEngine
from latentloop_daemon.engine import RenderRequest
from latentloop_daemon.files.atomic import TEMP_PREFIX

PROMPT = "128 BPM tech house drum loop"
FIRST = ["--model", "tiny", "--seconds", "2", "--steps", "2", "--seed", "3", "--device", "cpu"]
GOLDENS = Path(__file__).resolve().parents[2] / "data" / "goldens"
SMALL = [
    "--model",
    str(GOLDENS / "small-tiny"),
    "--t5",
    str(GOLDENS / "t5-tiny"),
    "--steps",
    "1",
    "--seed",
    "5",
    "--device",
    "cpu",
    "--padding",
    "0.05",
]  # fmt: skip  (its window is 0.37 s: loop + padding must fit)
SMALL_CONFIG = json.loads((GOLDENS / "small-tiny" / "model_config.json").read_text())
SMALL_WINDOW = SMALL_CONFIG["sample_size"]  # = capabilities.window_samples (16384)


def _env(tmp: Path) -> dict[str, str]:
    """The caller's environment without Hugging Face settings; an empty cache, offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    return env | {"HF_HOME": str(tmp / "hf_home"), "HF_HUB_OFFLINE": "1"}


def _render_subprocess(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "latentloop_daemon", "render", PROMPT, *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, env=_env(tmp), timeout=300)


def _files(folder: Path, suffix: str) -> list[Path]:
    return sorted(folder.glob(f"*{suffix}")) if folder.is_dir() else []


def _assert_no_temp_files(folder: Path) -> None:
    if folder.is_dir():
        assert [p.name for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX)] == []


def _sidecar(wav: Path) -> dict:
    return json.loads(wav.with_suffix(".json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def first_render(tmp_path_factory: pytest.TempPathFactory):
    """`latentloop render PROMPT --model tiny --seconds 2 --steps 2 --seed 3` in a subprocess."""
    tmp = tmp_path_factory.mktemp("first")
    out = tmp / "out"
    done = _render_subprocess([*FIRST, "--out", str(out)], tmp)
    return done, out


# --- the happy path, as a real subprocess ------------------------------------------------------


@pytest.mark.slow
def test_render_writes_a_pcm24_wav_and_its_sidecar(first_render):
    done, out = first_render
    assert done.returncode == 0, done.stderr
    wavs = _files(out, ".wav")
    assert len(wavs) == 1
    wav = wavs[0]
    assert wav.name == "128-bpm-tech-house-drum-loop_2s_seed3.wav"
    assert done.stdout == f"{wav}\n"  # exactly the path: scripts can use $(latentloop render ...)
    info = sf.info(str(wav))
    assert (info.format, info.subtype) == ("WAV", "PCM_24")
    assert (info.channels, info.samplerate, info.frames) == (2, 44100, round(2 * 44100))
    meta = _sidecar(wav)
    assert meta["file"] == wav.name
    assert (meta["seed"], meta["prompt"], meta["format"]) == (3, PROMPT, "pcm24")
    assert (meta["frames"], meta["sample_rate"], meta["variation_index"]) == (88200, 44100, 0)
    assert meta["settings"]["model"] == "tiny" and meta["settings"]["steps"] == 2
    # the model is conditioned on the loop plus the default 2 s of padding
    assert meta["settings"]["seconds_total"] == 4.0 and meta["settings"]["device"] == "cpu"
    assert meta["seconds_total_conditioning"] == 4.0 and meta["seam"]["crossfade_ms"] > 0
    assert "makes noise, not music" in done.stderr
    assert "Traceback" not in done.stderr
    audio, _ = sf.read(str(wav), dtype="float32")
    assert np.isfinite(audio).all() and audio.std() > 1e-3
    assert sorted(p.name for p in out.iterdir()) == [wav.with_suffix(".json").name, wav.name]
    _assert_no_temp_files(out)


@pytest.mark.slow
def test_rerun_does_not_overwrite_and_gives_identical_audio(first_render, tmp_path, capsys):
    done, first_out = first_render
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out"
    shutil.copytree(first_out, out)
    (first,) = _files(out, ".wav")
    assert run_cli(["render", PROMPT, *FIRST, "--out", str(out)]) == 0
    wavs = _files(out, ".wav")
    assert len(wavs) == 2 and first in wavs
    (second,) = [w for w in wavs if w != first]
    assert second.name == first.stem + "-2.wav"
    assert capsys.readouterr().out == f"{second}\n"
    assert _sidecar(second)["file"] == second.name
    a, _ = sf.read(str(first), dtype="int32")
    b, _ = sf.read(str(second), dtype="int32")
    np.testing.assert_array_equal(a, b)  # same process or not: same seed, same audio
    _assert_no_temp_files(out)


# --- options, in-process on the golden small-tiny ----------------------------------------------


def test_variations_write_one_file_each(tmp_path, capsys):
    out = tmp_path / "out"
    assert run_cli(["render", PROMPT, *SMALL, "--seconds", "0.25", "--variations", "2",
                     "--out", str(out)]) == 0  # fmt: skip
    wavs = _files(out, ".wav")
    assert [w.name for w in wavs] == [
        "128-bpm-tech-house-drum-loop_0.25s_seed5_v1.wav",
        "128-bpm-tech-house-drum-loop_0.25s_seed5_v2.wav",
    ]
    assert capsys.readouterr().out.splitlines() == [str(w) for w in wavs]
    metas = [_sidecar(w) for w in wavs]
    assert [m["variation_index"] for m in metas] == [0, 1]
    assert [m["seed"] for m in metas] == [5, 5] and all(m["batch_size"] == 2 for m in metas)
    a, b = (sf.read(str(w), dtype="float32")[0] for w in wavs)
    assert not np.array_equal(a, b)
    _assert_no_temp_files(out)


def test_raw_writes_the_full_window_as_float(tmp_path):
    out = tmp_path / "out"
    assert run_cli(["render", PROMPT, *SMALL, "--seconds", "0.25", "--raw", "--out", str(out)]) == 0
    (wav,) = _files(out, ".wav")
    assert wav.name.endswith("_raw.wav")
    info = sf.info(str(wav))
    assert (info.subtype, info.channels, info.frames) == ("FLOAT", 2, SMALL_WINDOW)
    meta = _sidecar(wav)
    assert meta["raw_window"] is True and meta["format"] == "float" and meta["gain"] == 1.0
    _assert_no_temp_files(out)


def test_format_float_keeps_the_requested_length(tmp_path):
    out = tmp_path / "out"
    assert run_cli(["render", PROMPT, *SMALL, "--seconds", "0.3", "--format", "float",
                     "--out", str(out)]) == 0  # fmt: skip
    (wav,) = _files(out, ".wav")
    info = sf.info(str(wav))
    assert (info.subtype, info.samplerate, info.frames) == ("FLOAT", 44100, round(0.3 * 44100))
    assert _sidecar(wav)["format"] == "float"
    _assert_no_temp_files(out)


def test_init_audio_mono_at_another_rate(tmp_path):
    t = np.arange(22050 // 2) / 22050
    init = tmp_path / "init.wav"
    sf.write(str(init), (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 22050)
    out = tmp_path / "out"
    assert run_cli(["render", PROMPT, *SMALL, "--seconds", "0.25", "--init", str(init),
                     "--init-noise", "0.5", "--out", str(out)]) == 0  # fmt: skip
    (wav,) = _files(out, ".wav")
    meta = _sidecar(wav)
    assert meta["settings"]["init_noise_level"] == 0.5 and meta["frames"] == 11025
    audio, rate = sf.read(str(wav), dtype="float32")
    assert rate == 44100 and audio.shape == (11025, 2) and np.isfinite(audio).all()
    _assert_no_temp_files(out)


# --- bad input: a clear message, exit code 2, nothing written ----------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seconds", "0"], "seconds must be > 0 and <= 600, got 0"),  # checked before loading
        (["--seconds", "500"], "a 500.00 s loop plus 2.00 s of padding is longer than tiny"),
        (["--steps", "0"], "steps must be 1..1000, got 0"),
        (["--sampler", "nope"], "unknown sampler 'nope' for this model; use one of dpmpp-3m-sde, "),
        (["--variations", "0"], "variations must be 1..16, got 0"),
        (["--variations", "17"], "variations must be 1..16, got 17"),
    ],
    ids=["seconds-0", "seconds-500", "steps-0", "sampler-nope", "variations-0", "variations-17"],
)
def test_invalid_request_exits_2(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    argv = ["render", PROMPT, "--model", "tiny", "--device", "cpu", *args, "--out", str(out)]
    assert run_cli(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    window_s = 2**20 / 44100  # tiny's window: the longest it can render
    assert f"latentloop: {message.format(max=f'{window_s:g}')}" in captured.err
    assert "Traceback" not in captured.err
    assert not out.exists()  # nothing written, not even the folder


def _write_unreadable(tmp: Path) -> str:
    path = tmp / "notes.wav"
    path.write_text("these are not samples\n")
    return str(path)


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda tmp: ["--init-noise", "0.3"], "latentloop: init_noise_level needs init audio"),
        (
            lambda tmp: ["--init", "missing.wav"],
            "latentloop: cannot read init audio missing.wav: not an existing file",
        ),
        (
            lambda tmp: ["--init", _write_unreadable(tmp)],
            "cannot read init audio {tmp}/notes.wav: Error opening",
        ),
    ],
    ids=["init-noise-without-init", "init-missing", "init-unreadable"],
)
def test_bad_init_exits_2_before_loading_the_model(tmp_path, make_args, message):
    out = tmp_path / "out"
    done = _render_subprocess([*make_args(tmp_path), "--out", str(out)], tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert message.format(tmp=tmp_path) in done.stderr
    assert "Traceback" not in done.stderr and "loaded" not in done.stderr
    assert not out.exists()


def test_out_that_is_a_file_exits_2(tmp_path):
    target = tmp_path / "taken"
    target.write_text("keep me")
    done = _render_subprocess([*SMALL, "--out", str(target)], tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert f"latentloop: the output folder {target} is a file" in done.stderr
    assert "Traceback" not in done.stderr
    assert target.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no out folder, nothing


def test_missing_model_folder_exits_3(tmp_path):
    out = tmp_path / "out"
    done = _render_subprocess(["--model", "/no/such/folder", "--out", str(out)], tmp_path)
    assert done.returncode == 3, done.stderr
    assert done.stdout == ""
    assert done.stderr.startswith("latentloop: cannot load model: no model '/no/such/folder'")
    assert "not an existing file or folder" in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()


# --- precision, through the Python API ---------------------------------------------------------


@pytest.mark.parametrize(
    ("precision", "dit_dtype", "vae_dtype"),
    [("fp32", "float32", "float32"), ("bf16", "bfloat16", "bfloat16"),
     ("reference", "float32", "float16")],  # tiny-rf has model_half: fp16 VAE, as upstream
)  # fmt: skip
def test_precisions_render_finite_audio(precision, dit_dtype, vae_dtype):
    engine = SatEngine.load("tiny-rf", device="cpu", precision=precision)
    assert engine.capabilities.precision == precision
    assert str(engine.model.dit_dtype) == f"torch.{dit_dtype}"
    assert str(engine.model.pretransform.dtype) == f"torch.{vae_dtype}"
    result = engine.render(RenderRequest(PROMPT, 1.0, seed=2, steps=1))
    assert result.audio.dtype == np.float32
    assert result.audio.shape == (1, 2, engine.capabilities.window_samples)
    assert np.isfinite(result.audio).all() and result.audio.std() > 1e-3
    assert result.settings["precision"] == precision


def test_render_reads_the_same_config_file_as_serve(tmp_path, capsys):
    """[render] settings in the config reach the written file; flags override the file."""
    pyloudnorm = pytest.importorskip("pyloudnorm")
    out = tmp_path / "from_config"
    config = tmp_path / "latentloop.toml"
    config.write_text(
        f'[engine]\nmodel = "tiny"\ndevice = "cpu"\n'
        f'[render]\nout_dir = "{out}"\nformat = "float"\ntarget_lufs = -23.0\n'
        f"ceiling_dbtp = -0.1\ntempo_check = false\n"
    )
    argv = ["render", PROMPT, "--config", str(config), "--bpm", "120", "--bars", "1",
            "--seed", "3", "--steps", "2"]  # fmt: skip
    assert run_cli(argv) == 0
    (wav,) = [Path(line) for line in capsys.readouterr().out.split()]
    assert wav.parent == out
    info = sf.info(str(wav))
    assert info.subtype == "FLOAT" and info.frames == 88200
    audio, rate = sf.read(str(wav), dtype="float64")
    tiled = np.concatenate([audio] * 4)  # loudness of the loop as it plays (docs/loops.md)
    lufs = pyloudnorm.Meter(rate).integrated_loudness(tiled)
    # the target is met to within the gain step's precision; the ceiling is far above this
    # noise's true peak at -23 LUFS, so it does not bind
    assert lufs == pytest.approx(-23.0, abs=0.1)
    assert run_cli([*argv, "--target-lufs", "-18", "--out", str(tmp_path / "flag")]) == 0
    (wav,) = [Path(line) for line in capsys.readouterr().out.split()]
    audio, rate = sf.read(str(wav), dtype="float64")
    assert pyloudnorm.Meter(rate).integrated_loudness(np.concatenate([audio] * 4)) == (
        pytest.approx(-18.0, abs=0.1)
    )
