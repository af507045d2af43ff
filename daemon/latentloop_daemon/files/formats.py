"""Output sample formats: the one definition (config, CLI flags and both WAV writers use it)."""

from __future__ import annotations

from dataclasses import dataclass

from latentloop_daemon.errors import RenderError


@dataclass(frozen=True, slots=True)
class SampleFormat:
    """How samples are stored: libsndfile ``subtype``, WAVE format tag, bits per sample."""

    subtype: str
    format_tag: int  # 1 = WAVE_FORMAT_PCM, 3 = WAVE_FORMAT_IEEE_FLOAT
    bits: int


FORMATS: dict[str, SampleFormat] = {
    "pcm24": SampleFormat("PCM_24", 1, 24),
    "pcm16": SampleFormat("PCM_16", 1, 16),
    "float": SampleFormat("FLOAT", 3, 32),
}
FORMAT_NAMES = tuple(FORMATS)


def sample_format(name: str) -> SampleFormat:
    """The format called ``name``; ``RenderError`` naming the choices otherwise."""
    try:
        return FORMATS[name]
    except KeyError:
        raise RenderError(f"unknown format {name!r}; use one of {', '.join(FORMATS)}") from None
