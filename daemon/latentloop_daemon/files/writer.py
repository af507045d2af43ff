"""Clips to files: a WAV (with DAW loop chunks when the clip has bars) plus its sidecar JSON,
every variation of a render or none; and ``--raw`` output (the model's window untouched)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latentloop_daemon.engine import RenderRequest, RenderResult, to_frames_first
from latentloop_daemon.files.atomic import (
    check_file_name,
    slugify,
    unique_stem,
    write_json_atomic,
    write_wav_atomic,
)
from latentloop_daemon.files.riff import describe_loop, write_loop_wav
from latentloop_daemon.files.sidecar import clip_meta, render_meta

if TYPE_CHECKING:
    from latentloop_daemon.loops.clip import Clip
    from latentloop_daemon.loops.length import LoopLength
    from latentloop_daemon.loops.plan import LoopPlan


def clip_stem(prompt: str, length: LoopLength, seed: int, count: int, index: int) -> str:
    """File-name stem: prompt slug, bpm and bars (or seconds), seed, variation number."""
    if length.bpm is not None and length.bars is not None:
        stem = f"{slugify(prompt)}_{length.bpm:g}bpm_{length.bars:g}bars_seed{seed}"
    else:
        stem = f"{slugify(prompt)}_{length.seconds:g}s_seed{seed}"
    return stem + (f"_v{index + 1}" if count > 1 else "")


def write_clip(
    clip: Clip, out_dir: Path, stem: str, *, fmt: str, model: str, meta: dict[str, Any]
) -> tuple[Path, Path]:
    """Write one clip's sidecar JSON, then its WAV (acid/smpl/cue/LIST chunks when it has bars).

    The sidecar goes first and the WAV last, each published atomically, so a reader of the
    folder never sees a WAV without its sidecar; a crash between the two leaves an orphan
    sidecar, which the daemon removes at start-up (``atomic.remove_orphan_sidecars``).
    """
    name = check_file_name(unique_stem(out_dir, stem))
    wav_path = out_dir / f"{name}.wav"
    side = write_json_atomic(out_dir / f"{name}.json", {"file": wav_path.name, **meta})
    try:
        wav = _write_wav(clip, wav_path, fmt=fmt, model=model)
    except BaseException:
        side.unlink(missing_ok=True)
        raise
    return wav, side


def _write_wav(clip: Clip, wav_path: Path, *, fmt: str, model: str) -> Path:
    length = clip.length
    if length.bars is None:
        return write_wav_atomic(wav_path, clip.audio, clip.sample_rate, fmt)
    info = describe_loop(
        clip.frames,
        clip.sample_rate,
        length.bars,
        beats_per_bar=length.beats_per_bar,
        key=clip.key,
        prompt=clip.prompt,
        seed=clip.seed,
        model=model,
    )
    return write_loop_wav(wav_path, clip.audio, clip.sample_rate, info=info, fmt=fmt)


def write_clips(
    clips: list[Clip],
    plan: LoopPlan,
    result: RenderResult,
    out_dir: Path,
    *,
    fmt: str,
    model: str,
    prompt: str,
    negative: str | None,
    extra_meta: Callable[[int], dict[str, Any]] | None = None,
) -> list[Path]:
    """Write every clip (``write_clip``): all of them or none. If one fails, the files already
    published for this render are removed and the error propagates. Returns the WAV paths."""
    published: list[Path] = []
    wavs: list[Path] = []
    try:
        for clip in clips:
            i = clip.variation
            meta = {
                **render_meta(result, i, prompt, negative),
                **(extra_meta(i) if extra_meta else {}),
                **clip_meta(clip, plan, fmt),
            }
            stem = clip_stem(prompt, clip.length, clip.seed, len(clips), i)
            wav, side = write_clip(clip, out_dir, stem, fmt=fmt, model=model, meta=meta)
            published += [side, wav]
            wavs.append(wav)
    except BaseException:
        for path in reversed(published):  # WAVs before their sidecars
            path.unlink(missing_ok=True)
        raise
    return wavs


def save_raw(result: RenderResult, request: RenderRequest, out_dir: Path) -> list[Path]:
    """Write each variation's full window [C, N] as float WAV + sidecar; return the WAV paths.

    For comparing with another implementation given the same checkpoint, seed and settings.
    """
    out_dir = Path(out_dir)
    paths = []
    for index in range(result.batch_size):
        audio = result.audio[index]  # [C, N]
        seconds = audio.shape[-1] / result.sample_rate
        name = f"{slugify(request.prompt)}_{seconds:g}s_seed{result.seed}"
        if result.batch_size > 1:
            name += f"_v{index + 1}"
        name = unique_stem(out_dir, name + "_raw")
        meta = {
            **render_meta(result, index, request.prompt, request.negative_prompt),
            "sample_rate": result.sample_rate,
            "channels": int(audio.shape[0]),
            "frames": int(audio.shape[-1]),
            "seconds": seconds,
            "raw_window": True,
            "format": "float",
            "gain": 1.0,
        }
        wav = write_wav_atomic(
            out_dir / f"{name}.wav", to_frames_first(audio), result.sample_rate, "float"
        )
        write_json_atomic(out_dir / f"{name}.json", {"file": wav.name, **meta})
        paths.append(wav)
    return paths
