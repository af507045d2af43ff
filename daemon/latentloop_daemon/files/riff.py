"""Loop WAV files: RIFF WAVE with `acid`, `smpl`, `cue `, `LIST/adtl` and `LIST/INFO` chunks.

Layouts follow ``shared/reference/hosts-and-formats.md`` §10; offsets are from the start of a
chunk's data (after its 8-byte ID + size). All integers are little-endian, every chunk is padded
to an even length with one zero byte that its size does not count, and the RIFF size is the file
size - 8. The file is laid out as::

    RIFF WAVE | fmt  | fact (float only) | acid | smpl | cue  | LIST adtl | LIST INFO | data

The metadata goes *before* ``data``, where libsndfile's own writer puts ``smpl``/``cue ``/``LIST``
(reference §10). Readers that stop at ``data`` still see it: libsndfile itself does on a
non-seekable stream (``wav_read_header`` breaks after ``data`` unless it can seek), as do other
streaming loaders. Readers that walk the chunk list (Python's ``wave``, sox, libsndfile, DAWs)
skip what they do not know either way. The cost: readers that assume a 44-byte header, or look
for ``data`` only in the first 512 bytes (some embedded players), miss the audio; our header is
about 400 bytes for 2 bars and a short prompt, 24 + ~18 bytes more per bar (cue + label).

The samples are encoded by libsndfile (through soundfile, headerless), so they are the same
bytes ``files.atomic.write_wav_atomic`` writes; the header is ours, so the format tag is always
plain ``WAVE_FORMAT_PCM`` (1) or ``WAVE_FORMAT_IEEE_FLOAT`` (3) for mono and stereo, which every
reader, Python's ``wave`` included, opens. More than two channels use
``WAVE_FORMAT_EXTENSIBLE`` with no speaker mask, as the format requires.
"""

from __future__ import annotations

import io
import logging
import math
import re
import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from latentloop_daemon import __version__
from latentloop_daemon.errors import RenderError
from latentloop_daemon.files.atomic import publish_atomic
from latentloop_daemon.files.formats import sample_format

logger = logging.getLogger(__name__)

WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# KSDATAFORMAT_SUBTYPE_PCM/_IEEE_FLOAT: {tag:08x}-0000-0010-8000-00aa00389b71, after the u16 tag
_GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")

ACID_ONE_SHOT, ACID_ROOT_SET, ACID_STRETCH = 0x01, 0x02, 0x04
ACID_ROOT_OCTAVE_BASE = 48  # ACID writes C..B as 0x30..0x3B with flag 0x10 clear (C3..B3)
SMPL_FORWARD = 0
TITLE_MAX_CHARS = 64

_PITCH_CLASSES = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
_KEY_RE = re.compile(
    r"^\s*([a-g])\s*(#|♯|b|♭|-?sharp|-?flat)?\s*"
    r"(major|minor|maj|min|m|ionian|dorian|phrygian|lydian|mixolydian|aeolian|locrian)?\s*$",
    re.IGNORECASE,
)


def key_root_note(key: str) -> int:
    """MIDI note of the tonic of ``key`` ("F minor", "F#m", "Bb major", "E♭") in octave 3.

    Octave 3 with middle C = C4 = 60, i.e. C3..B3 = 48..59 (0x30..0x3B): the range ACID itself
    writes in the `acid` root-note field with flag 0x10 clear. Only the tonic matters; the mode
    word is checked, not used. Raises ``ValueError`` for anything else.
    """
    m = _KEY_RE.match(key)
    if m is None:
        raise ValueError(f"cannot read a key from {key!r}; use e.g. 'F minor', 'C#m', 'Bb major'")
    pitch = _PITCH_CLASSES[m.group(1).lower()]
    accidental = (m.group(2) or "").lower().lstrip("-")
    pitch += {"": 0, "#": 1, "♯": 1, "sharp": 1, "b": -1, "♭": -1, "flat": -1}[accidental]
    return ACID_ROOT_OCTAVE_BASE + pitch % 12


def title_from_prompt(prompt: str, max_chars: int = TITLE_MAX_CHARS) -> str:
    """The prompt on one line, cut at a word boundary to at most ``max_chars`` characters."""
    text = " ".join(prompt.split())
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars + 1].rfind(" ")  # a word that ends right at the limit is kept
    return text[: cut if cut >= max_chars // 2 else max_chars].rstrip(" ,;:-")


@dataclass(frozen=True, slots=True)
class LoopInfo:
    """What a loop file says about itself; see ``describe_loop`` to build one from a render.

    ``bpm`` is the tempo the file really has (beats x 60 x rate / frames), not the requested
    one; ``beats`` = bars x ``beats_per_bar`` (whole); ``beat_unit`` is the meter's
    denominator, written as-is (4 unless the caller knows better). ``bar_frames`` are the
    frame offsets of the bar starts (one cue point each). ``stretch`` sets ACID's "stretch on"
    flag (0x04). ``date`` (free text, ISO 8601 advised) goes to ICRD when given.
    """

    bpm: float
    beats: int
    beats_per_bar: int = 4
    beat_unit: int = 4
    key: str | None = None
    title: str = ""
    comment: str = ""
    software: str = f"latentloop {__version__}"
    bar_frames: tuple[int, ...] = (0,)
    unity_note: int = 60
    stretch: bool = True
    date: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "bar_frames", tuple(int(f) for f in self.bar_frames))
        if not (math.isfinite(self.bpm) and self.bpm > 0):
            raise ValueError(f"bpm must be a positive number, got {self.bpm}")
        if not 1 <= self.beats < 2**32:
            raise ValueError(f"beats must be 1..2**32-1, got {self.beats}")
        if not 1 <= self.beats_per_bar < 2**16:
            raise ValueError(f"beats_per_bar must be 1..65535, got {self.beats_per_bar}")
        if self.beat_unit not in (1, 2, 4, 8, 16, 32, 64):
            raise ValueError(f"beat_unit must be a power of two up to 64, got {self.beat_unit}")
        if not 0 <= self.unity_note <= 127:
            raise ValueError(f"unity_note must be a MIDI note 0..127, got {self.unity_note}")
        if self.key is not None:
            key_root_note(self.key)
        f = self.bar_frames
        if any(b <= a for a, b in zip(f, f[1:], strict=False)) or (f and f[0] < 0):
            raise ValueError(f"bar_frames must be increasing and >= 0, got {f[:8]}...")


def describe_loop(
    frames: int, sample_rate: int, bars: float, *, beats_per_bar: int = 4, beat_unit: int = 4,
    key: str | None = None, prompt: str = "", seed: int | None = None, model: str | None = None,
    unity_note: int = 60, date: str | None = None,
) -> LoopInfo:  # fmt: skip
    """The ``LoopInfo`` of a loop of ``frames`` samples at ``sample_rate`` Hz holding ``bars`` bars.

    If ``bars`` x ``beats_per_bar`` is not whole (2.3 bars of 4/4), it is rounded to the nearest
    whole number of beats (at least 1) and a warning logged: the `acid` chunk only holds whole
    beats, and the written tempo then matches that beat count. A fractional last bar still gets
    its cue point.
    """
    if frames < 1 or sample_rate < 1:
        raise ValueError(f"frames and sample_rate must be positive, got {frames}, {sample_rate}")
    exact = Fraction(bars) * beats_per_bar
    beats = max(1, round(exact))
    if beats != exact:
        logger.warning("%s bars of %d is %s beats; writing %d", bars, beats_per_bar, exact, beats)
    bar_count = math.ceil(Fraction(beats, beats_per_bar))
    bar_frames = [round(Fraction(i * beats_per_bar * frames, beats)) for i in range(bar_count)]
    comment = "; ".join(
        part
        for part in (f"prompt: {prompt}" if prompt else "",
                     f"seed: {seed}" if seed is not None else "",
                     f"model: {model}" if model else "")
        if part
    )  # fmt: skip
    return LoopInfo(
        bpm=beats * 60 * sample_rate / frames, beats=beats, beats_per_bar=beats_per_bar,
        beat_unit=beat_unit, key=key, title=title_from_prompt(prompt), comment=comment,
        bar_frames=tuple(bar_frames), unity_note=unity_note, date=date,
    )  # fmt: skip


def _chunk(chunk_id: bytes, payload: bytes) -> bytes:
    """One RIFF chunk: ID, size (without the pad byte), payload, zero pad to an even length."""
    return chunk_id + struct.pack("<I", len(payload)) + payload + b"\0" * (len(payload) & 1)


def _zstr(text: str) -> bytes:
    """NUL-terminated UTF-8 (INFO text is nominally ASCII; ASCII text is unaffected)."""
    return text.replace("\0", "").encode("utf-8") + b"\0"


def encode_acid(info: LoopInfo) -> bytes:
    """The `acid` chunk (24 bytes of data), meter numerator at offset 16, denominator at 18."""
    flags = ACID_STRETCH if info.stretch else 0  # one-shot bit (0x01) clear: a loop
    root = 0
    if info.key is not None:
        flags |= ACID_ROOT_SET
        root = key_root_note(info.key)
    # flags, root note, 0x8000 ("always"), 0.0 ("always"), beats, meter num/den, tempo
    payload = struct.pack(
        "<IHHfIHHf", flags, root, 0x8000, 0.0, info.beats, info.beats_per_bar, info.beat_unit,
        info.bpm,
    )  # fmt: skip
    return _chunk(b"acid", payload)


def encode_smpl(info: LoopInfo, frames: int, sample_rate: int) -> bytes:
    """The `smpl` chunk: one forward loop over the whole file, end frame inclusive."""
    period_ns = 1_000_000_000 // sample_rate  # truncated, as libsndfile writes it
    header = struct.pack("<9I", 0, 0, period_ns, info.unity_note, 0, 0, 0, 1, 0)
    loop = struct.pack("<6I", 0, SMPL_FORWARD, 0, frames - 1, 0, 0)  # cue id 0, play forever
    return _chunk(b"smpl", header + loop)


def encode_cues(info: LoopInfo) -> bytes:
    """The `cue ` chunk (one point per bar, IDs from 1) and its `LIST/adtl` "Bar n" labels."""
    if not info.bar_frames:
        return b""
    points = b"".join(
        struct.pack("<II4sIII", i, frame, b"data", 0, 0, frame)
        for i, frame in enumerate(info.bar_frames, start=1)
    )
    labels = b"".join(
        _chunk(b"labl", struct.pack("<I", i) + _zstr(f"Bar {i}"))
        for i in range(1, len(info.bar_frames) + 1)
    )
    cue = _chunk(b"cue ", struct.pack("<I", len(info.bar_frames)) + points)
    return cue + _chunk(b"LIST", b"adtl" + labels)


def encode_info(info: LoopInfo) -> bytes:
    """The `LIST/INFO` chunk: INAM title, ICMT comment, ISFT software, ICRD date (if set)."""
    fields = [(b"INAM", info.title), (b"ICMT", info.comment), (b"ISFT", info.software),
              (b"ICRD", info.date or "")]  # fmt: skip
    body = b"".join(_chunk(tag, _zstr(text)) for tag, text in fields if text)
    return _chunk(b"LIST", b"INFO" + body) if body else b""


def encode_chunks(info: LoopInfo, frames: int, sample_rate: int) -> bytes:
    """`acid`, `smpl`, `cue `, `LIST/adtl` and `LIST/INFO`, ready to go before ``data``."""
    if frames < 1 or sample_rate < 1:
        raise ValueError(f"frames and sample_rate must be positive, got {frames}, {sample_rate}")
    if info.bar_frames and info.bar_frames[-1] >= frames:
        raise ValueError(f"bar start {info.bar_frames[-1]} is past the last frame {frames - 1}")
    parts = (encode_acid(info), encode_smpl(info, frames, sample_rate), encode_cues(info),
             encode_info(info))  # fmt: skip
    return b"".join(parts)


def encode_fmt(fmt: str, channels: int, sample_rate: int, frames: int) -> bytes:
    """`fmt ` (plain tag for 1-2 channels, EXTENSIBLE above) plus `fact` for non-PCM data."""
    sample = sample_format(fmt)
    tag, bits = sample.format_tag, sample.bits
    block = channels * bits // 8
    common = struct.pack("<HIIHH", channels, sample_rate, sample_rate * block, block, bits)
    if channels > 2:
        ext = struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", tag) + _GUID_TAIL
        body = struct.pack("<H", WAVE_FORMAT_EXTENSIBLE) + common + ext
    elif tag == 1:
        body = struct.pack("<H", tag) + common  # 16 bytes, no cbSize, as for every PCM writer
    else:
        body = struct.pack("<H", tag) + common + struct.pack("<H", 0)  # cbSize 0
    fact = _chunk(b"fact", struct.pack("<I", frames)) if tag != 1 else b""
    return _chunk(b"fmt ", body) + fact


def write_loop_wav(
    path: Path, audio: npt.NDArray[np.float32], sample_rate: int, *, info: LoopInfo,
    fmt: str = "pcm24",
) -> Path:  # fmt: skip
    """Write (frames, channels) float32 audio at ``sample_rate`` Hz as a loop WAV; never overwrites.

    ``fmt`` is "pcm24" (default), "pcm16" or "float". Raises ``RenderError`` for an unknown
    format, a file past the 4 GiB RIFF limit, or if ``path`` exists; ``ValueError`` for bad audio.
    """
    import soundfile as sf

    # 1. Check inputs
    subtype = sample_format(fmt).subtype
    data = np.ascontiguousarray(audio, dtype=np.float32)
    if data.ndim != 2 or data.shape[0] < 1 or not 1 <= data.shape[1] < 2**16:
        raise ValueError(f"audio must be (frames, channels) with frames >= 1, got {data.shape}")
    if not np.isfinite(data).all():
        raise ValueError("audio contains NaN or infinite samples")
    frames, channels = data.shape
    # 2. Samples, encoded by libsndfile exactly as in a WAV it writes (same quantisation)
    samples = io.BytesIO()
    sf.write(samples, data, sample_rate, subtype=subtype, format="RAW",
             endian="LITTLE")  # fmt: skip
    sample_bytes = samples.getbuffer()
    # 3. Header: format, metadata, then the data chunk's own header
    header = encode_fmt(fmt, channels, sample_rate, frames)
    header += encode_chunks(info, frames, sample_rate)
    pad = len(sample_bytes) & 1
    riff_size = 4 + len(header) + 8 + len(sample_bytes) + pad
    if riff_size > 0xFFFFFFFF:
        raise RenderError(f"{path}: {riff_size + 8} bytes is past the 4 GiB limit of a WAV file")

    # 4. Publish: temp file beside ``path``, fsync, link
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(b"RIFF" + struct.pack("<I", riff_size) + b"WAVE" + header)
            f.write(b"data" + struct.pack("<I", len(sample_bytes)))
            f.write(sample_bytes)
            f.write(b"\0" * pad)

    return publish_atomic(path, write)


def read_chunks(path: Path) -> dict[str, Any]:
    """Parse a RIFF WAVE file's chunks into plain values (for tests and debugging).

    Keys: ``riff_size``, ``file_size``, ``chunks`` [(id, offset, size)], and where present
    ``fmt``, ``fact``, ``acid``, ``smpl``, ``cue`` (list), ``labels`` {cue id: text},
    ``info`` {INFO id: text}, ``data`` {offset, size}. Raises ``ValueError`` if not RIFF WAVE.
    """
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) != 12 or head[:4] != b"RIFF" or head[8:] != b"WAVE":
            raise ValueError(f"{path} is not a RIFF WAVE file")
        out: dict[str, Any] = {"riff_size": struct.unpack("<I", head[4:8])[0], "chunks": []}
        out["file_size"] = f.seek(0, io.SEEK_END)
        f.seek(12)
        while (chunk := _next_chunk(f)) is not None:
            chunk_id, offset, size = chunk
            out["chunks"].append((chunk_id, offset, size))
            if chunk_id == "data":
                out["data"] = {"offset": offset + 8, "size": size}
                f.seek(size + (size & 1), io.SEEK_CUR)
            else:
                _parse_chunk(out, chunk_id, f.read(size + (size & 1))[:size])
    return out


def _next_chunk(f: BinaryIO) -> tuple[str, int, int] | None:
    offset = f.tell()
    head = f.read(8)
    if len(head) < 8:
        return None
    return head[:4].decode("latin-1"), offset, struct.unpack("<I", head[4:])[0]


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def _subchunks(body: bytes) -> list[tuple[str, bytes]]:
    out, pos = [], 0
    while pos + 8 <= len(body):
        size = struct.unpack("<I", body[pos + 4 : pos + 8])[0]
        out.append((body[pos : pos + 4].decode("latin-1"), body[pos + 8 : pos + 8 + size]))
        pos += 8 + size + (size & 1)
    return out


def _parse_chunk(out: dict[str, Any], chunk_id: str, body: bytes) -> None:
    if chunk_id == "fmt ":
        tag, ch, rate, byte_rate, block, bits = struct.unpack("<HHIIHH", body[:16])
        out["fmt"] = {"format_tag": tag, "channels": ch, "sample_rate": rate,
                      "byte_rate": byte_rate, "block_align": block, "bits_per_sample": bits,
                      "extension": body[16:]}  # fmt: skip
    elif chunk_id == "fact":
        out["fact"] = {"frames": struct.unpack("<I", body[:4])[0]}
    elif chunk_id == "acid":
        acid_names = ("flags", "root_note", "unknown_6", "unknown_8", "beats", "meter_numerator",
                 "meter_denominator", "tempo")  # fmt: skip
        out["acid"] = dict(zip(acid_names, struct.unpack("<IHHfIHHf", body[:24]), strict=True))
    elif chunk_id == "smpl":
        smpl_names = ("manufacturer", "product", "sample_period_ns", "unity_note", "pitch_fraction",
                 "smpte_format", "smpte_offset", "loop_count", "sampler_data_size")  # fmt: skip
        smpl = dict(zip(smpl_names, struct.unpack("<9I", body[:36]), strict=True))
        loop_names = ("cue_id", "type", "start", "end", "fraction", "play_count")
        smpl["loops"] = [dict(zip(loop_names, struct.unpack("<6I", body[p : p + 24]), strict=True))
                         for p in range(36, 36 + 24 * smpl["loop_count"], 24)]  # fmt: skip
        out["smpl"] = smpl
    elif chunk_id == "cue ":
        cue_names = ("id", "position", "chunk", "chunk_start", "block_start", "frame")
        (count,) = struct.unpack("<I", body[:4])
        out["cue"] = [dict(zip(cue_names, struct.unpack("<II4sIII", body[p : p + 24]), strict=True))
                      for p in range(4, 4 + 24 * count, 24)]  # fmt: skip
    elif chunk_id == "LIST" and body[:4] == b"adtl":
        out["labels"] = {struct.unpack("<I", sub[:4])[0]: _text(sub[4:])
                         for tag, sub in _subchunks(body[4:]) if tag == "labl"}  # fmt: skip
    elif chunk_id == "LIST" and body[:4] == b"INFO":
        out["info"] = {tag: _text(sub) for tag, sub in _subchunks(body[4:])}
