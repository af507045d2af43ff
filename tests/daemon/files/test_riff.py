"""Loop WAVs read back by our parser, libsndfile, sndfile-info, Python's wave and sox."""

import itertools
import logging
import re
import struct
import subprocess
import wave

import numpy as np
import pytest
import soundfile as sf
from tests.conftest import require_tool

from latentloop_daemon.errors import RenderError
from latentloop_daemon.files.atomic import TEMP_PREFIX, write_wav_atomic
from latentloop_daemon.files.riff import (
    LoopInfo,
    describe_loop,
    encode_chunks,
    key_root_note,
    read_chunks,
    title_from_prompt,
    write_loop_wav,
)
from latentloop_daemon.loops.length import loop_frames

BPM, BARS = 171.3, 3  # a tempo that gives a non-integer frame count, and > 2 bars
PROMPT = "dark techno loop with rolling bass, F minor, 171 bpm"  # 52 chars: odd with its NUL
FORMATS = ["pcm24", "float"]
CHANNELS = [1, 2]
RATES = [44100, 48000]
METERS = [(4, 4), (3, 4), (7, 8)]  # (beats per bar, beat unit)
KEYS = [None, "F minor"]
COMBOS = list(itertools.product(FORMATS, CHANNELS, RATES, METERS, KEYS))


def combo_id(combo):
    fmt, channels, rate, (num, den), key = combo
    return f"{fmt}-{channels}ch-{rate}-{num}of{den}-{'key' if key else 'nokey'}"


def make_audio(frames, channels, seed=0):
    """Sine plus noise in [-0.9, 0.9], with exact full scale (+-1.0) and tiny values mixed in."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None] / 48000
    audio = 0.5 * np.sin(2 * np.pi * 110 * t * np.arange(1, channels + 1)) + 0.4 * rng.uniform(
        -1, 1, (frames, channels)
    )
    audio[:4] = np.array([1.0, -1.0, 1e-9, -3e-7])[:, None]
    return audio.astype(np.float32)


def quantise_like_libsndfile(audio):
    """24-bit codes as libsndfile makes them: lrint at 32-bit scale (clipped), top 24 bits kept."""
    scaled = np.clip(np.rint(audio.astype(np.float64) * 2.0**31), -(2.0**31), 2.0**31 - 1)
    return np.floor_divide(scaled.astype(np.int64), 256).astype(np.int32)


def expected_data_bytes(audio, fmt):
    if fmt == "float":
        return audio.astype("<f4").tobytes()
    codes = quantise_like_libsndfile(audio).astype("<i4")
    return codes.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()  # interleaved, little-endian


@pytest.fixture(scope="module", params=COMBOS, ids=[combo_id(c) for c in COMBOS])
def loop_file(request, tmp_path_factory):
    fmt, channels, rate, (num, den), key = request.param
    frames = loop_frames(BPM, BARS, num, rate)
    audio = make_audio(frames, channels)
    info = describe_loop(frames, rate, BARS, beats_per_bar=num, beat_unit=den, key=key,
                         prompt=PROMPT, seed=1234, model="tiny")  # fmt: skip
    path = tmp_path_factory.mktemp("loops") / "loop.wav"
    write_loop_wav(path, audio, rate, info=info, fmt=fmt)
    return path, audio, info, fmt, rate


def test_read_chunks_gives_back_what_we_wrote(loop_file):
    path, audio, info, fmt, rate = loop_file
    frames, channels = audio.shape
    c = read_chunks(path)
    assert c["riff_size"] == c["file_size"] - 8 == path.stat().st_size - 8
    order = [chunk_id for chunk_id, _, _ in c["chunks"]]
    metadata = ["acid", "smpl", "cue ", "LIST", "LIST", "data"]
    assert order == (["fmt ", "fact"] if fmt == "float" else ["fmt "]) + metadata
    assert all(offset % 2 == 0 for _, offset, _ in c["chunks"])
    bits = 24 if fmt == "pcm24" else 32
    assert c["fmt"] == {"format_tag": 1 if fmt == "pcm24" else 3, "channels": channels,
                        "sample_rate": rate, "byte_rate": rate * channels * bits // 8,
                        "block_align": channels * bits // 8, "bits_per_sample": bits,
                        "extension": b"" if fmt == "pcm24" else b"\0\0"}  # fmt: skip
    if fmt == "float":
        assert c["fact"] == {"frames": frames}
    assert c["acid"] == {"flags": 0x04 | (0x02 if info.key else 0),
                         "root_note": 53 if info.key else 0, "unknown_6": 0x8000,
                         "unknown_8": 0.0, "beats": BARS * info.beats_per_bar,
                         "meter_numerator": info.beats_per_bar,
                         "meter_denominator": info.beat_unit,
                         "tempo": float(np.float32(info.bpm))}  # fmt: skip
    smpl = c["smpl"]
    assert (smpl["sample_period_ns"], smpl["unity_note"], smpl["loop_count"]) == (
        1_000_000_000 // rate, 60, 1,
    )  # fmt: skip
    assert smpl["loops"] == [{"cue_id": 0, "type": 0, "start": 0, "end": frames - 1,
                              "fraction": 0, "play_count": 0}]  # fmt: skip
    assert [(q["id"], q["frame"], q["position"], q["chunk"]) for q in c["cue"]] == [
        (i + 1, f, f, b"data") for i, f in enumerate(info.bar_frames)
    ]
    assert len(c["cue"]) == BARS
    assert c["labels"] == {i: f"Bar {i}" for i in range(1, BARS + 1)}
    assert c["info"] == {"INAM": PROMPT, "ICMT": f"prompt: {PROMPT}; seed: 1234; model: tiny",
                         "ISFT": info.software}  # fmt: skip
    data_size = frames * channels * bits // 8
    assert c["data"] == {"offset": c["file_size"] - data_size - (data_size & 1), "size": data_size}


def test_tempo_is_the_actual_tempo_of_the_frames(loop_file):
    path, audio, info, _, rate = loop_file
    assert info.bpm == pytest.approx(info.beats * 60 * rate / audio.shape[0], rel=1e-12)
    assert info.bpm == pytest.approx(BPM, rel=1e-4)  # rounding to whole frames moves it a little


def test_soundfile_reads_the_samples_and_strings_back(loop_file):
    path, audio, info, fmt, rate = loop_file
    with sf.SoundFile(str(path)) as f:
        assert (f.samplerate, f.channels, f.frames) == (rate, audio.shape[1], audio.shape[0])
        assert (f.format, f.subtype) == ("WAV", "PCM_24" if fmt == "pcm24" else "FLOAT")
        assert (f.title, f.comment, f.software) == (info.title, info.comment, info.software)
        if fmt == "pcm24":
            np.testing.assert_array_equal(
                f.read(dtype="int32", always_2d=True), quantise_like_libsndfile(audio) << 8
            )
        else:
            np.testing.assert_array_equal(f.read(dtype="float32", always_2d=True), audio)


def test_python_wave_gives_the_exact_bytes(loop_file):
    path, audio, _, fmt, rate = loop_file
    if fmt != "pcm24":  # wave reads integer PCM only, and says so
        with pytest.raises(wave.Error, match="unknown format: 3"):
            wave.open(str(path))
        return
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (
            audio.shape[1], 3, rate, audio.shape[0],
        )  # fmt: skip
        assert w.readframes(w.getnframes()) == expected_data_bytes(audio, fmt)


def test_sox_reports_the_format_and_round_trips_the_samples(loop_file):
    sox = require_tool("sox")
    path, audio, _, fmt, rate = loop_file
    info = subprocess.run([sox, "--i", str(path)], capture_output=True, text=True, check=True)
    assert re.search(rf"Channels\s*: {audio.shape[1]}\n", info.stdout)
    assert re.search(rf"Sample Rate\s*: {rate}\n", info.stdout)
    assert f"= {audio.shape[0]} samples" in info.stdout
    encoding = "24-bit Signed Integer PCM" if fmt == "pcm24" else "32-bit Floating Point PCM"
    assert re.search(rf"Sample Encoding: {encoding}", info.stdout)
    raw_args = (
        ["-e", "signed-integer", "-b", "24"]
        if fmt == "pcm24"
        else ["-e", "floating-point", "-b", "32"]
    )
    raw = subprocess.run([sox, "-D", str(path), "-t", "raw", *raw_args, "-L", "-"],
                         capture_output=True, check=True).stdout  # fmt: skip
    if fmt == "pcm24":
        assert raw == expected_data_bytes(audio, fmt)
    else:  # sox takes 32-bit float as 25-bit precision ("Precision: 25-bit"), so within 2**-24
        from_sox = np.frombuffer(raw, "<f4").reshape(audio.shape)
        np.testing.assert_allclose(from_sox, audio, rtol=0, atol=2.0**-24)


def sndfile_info_sections(path):
    """sndfile-info's header dump, split into {chunk id: [lines]} (LIST sections merged)."""
    out = subprocess.run([require_tool("sndfile-info"), str(path)], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    assert "Error" not in out and "error" not in out, out
    sections, current = {}, None
    for line in out.splitlines():
        m = re.match(r"^(\S.{3}) : \d+$", line)
        if m:
            current = sections.setdefault(m.group(1), [])
        elif current is not None and line.startswith(" "):
            current.append(line.strip())
        else:
            current = None
    return sections


def field(lines, name):
    values = [line.split(":", 1)[1].strip() for line in lines if re.match(rf"{name}\s*:", line)]
    assert len(values) == 1, (name, lines)
    return values[0]


def test_sndfile_info_reports_acid_smpl_and_cues(loop_file):
    path, audio, info, _, rate = loop_file
    s = sndfile_info_sections(path)
    acid = s["acid"]
    assert field(acid, "Beats") == str(BARS * info.beats_per_bar)
    # libsndfile reads offset 16 as the denominator: it prints our 3/4 as "4/3" (see riff.py)
    assert field(acid, "Meter") == f"{info.beat_unit}/{info.beats_per_bar}"
    assert field(acid, "Tempo") == f"{float(np.float32(info.bpm)):.6f}"
    flags = field(acid, "Flags")
    assert "Loop," in flags and "StretchOn" in flags
    assert ("RootNoteValid" in flags) == (info.key is not None)
    assert field(acid, "Root note") == (hex(53) if info.key else "0x0")
    smpl = s["smpl"]
    assert field(smpl, "Period") == f"{1_000_000_000 // rate} nsec"
    assert (field(smpl, "Midi Note"), field(smpl, "Loop Count")) == ("60", "1")
    loop = [line for line in smpl if line.startswith("Cue ID")]
    assert len(loop) == 1 and re.fullmatch(
        rf"Cue ID :\s+0\s+Type :\s+0\s+Start :\s+0\s+End :\s+{audio.shape[0] - 1}\s+"
        r"Fraction :\s+0\s+Count :\s+0",
        loop[0],
    ), loop  # type 0 = forward, count 0 = forever
    cue = s["cue "]
    assert field(cue, "Count") == str(BARS)
    offsets = [int(line.rsplit(":", 1)[1]) for line in cue if line.startswith("Cue ID")]
    assert offsets == list(info.bar_frames)
    assert [line for line in s["LIST"] if line.startswith("labl")] == [
        f"labl : {i} : Bar {i}" for i in range(1, BARS + 1)
    ]
    assert f"INAM : {info.title}" in s["LIST"] and f"ISFT : {info.software}" in s["LIST"]


@pytest.mark.parametrize(
    "key, note",
    [("C major", 48), ("F minor", 53), ("F#m", 54), ("Gb", 54), ("Bb major", 58), ("bbm", 58),
     ("B", 59), ("Cb", 59), ("B#", 48), ("E♭ minor", 51), ("a", 57), ("F sharp minor", 54),
     ("D flat dorian", 49), ("  g  Min ", 55)],
)  # fmt: skip
def test_key_root_note_is_the_tonic_in_octave_3(key, note):
    assert key_root_note(key) == note


@pytest.mark.parametrize("key", ["", "H minor", "F minor 7", "major", "C##", "Fm7"])
def test_key_root_note_rejects_what_it_cannot_read(key):
    with pytest.raises(ValueError, match="cannot read a key"):
        key_root_note(key)


def test_fractional_bars_round_to_whole_beats(caplog):
    frames = loop_frames(120, 2.5, 4, 48000)  # 10 beats: whole, no warning
    info = describe_loop(frames, 48000, 2.5)
    assert (info.beats, info.bar_frames, info.bpm) == (10, (0, 96000, 192000), 120.0)
    with caplog.at_level(logging.WARNING, logger="latentloop_daemon.files.riff"):
        info = describe_loop(frames, 48000, 2.3)  # 9.2 beats -> 9
    assert info.beats == 9 and len(info.bar_frames) == 3 and "writing 9" in caplog.text
    assert info.bpm == pytest.approx(9 * 60 * 48000 / frames)


def test_title_is_one_line_cut_at_a_word():
    assert title_from_prompt("  warm\n pads \t in  C ") == "warm pads in C"
    title = title_from_prompt("word " * 40)
    assert len(title) <= 64 and title.endswith("word") and "  " not in title
    assert len(title_from_prompt("x" * 200)) == 64


def test_strings_are_nul_terminated_and_padded_to_even(tmp_path):
    info = LoopInfo(bpm=120.0, beats=48, title="odd", comment="even", date="2026-09-01",
                    bar_frames=range(0, 12 * 1000, 1000))  # fmt: skip
    blob = encode_chunks(info, 12 * 1000, 48000)
    pos, seen = 0, []
    while pos < len(blob):
        chunk_id, size = blob[pos : pos + 4], struct.unpack("<I", blob[pos + 4 : pos + 8])[0]
        body = blob[pos + 8 : pos + 8 + size]
        if chunk_id == b"LIST":
            sub = 12
            while sub < 8 + size:
                sub_id, sub_size = struct.unpack("<4sI", blob[pos + sub : pos + sub + 8])
                text = blob[pos + sub + 8 : pos + sub + 8 + sub_size]
                assert text.endswith(b"\0")
                if sub_size % 2:
                    assert blob[pos + sub + 8 + sub_size] == 0  # the pad byte, not counted
                seen.append((sub_id, sub_size, text))
                sub += 8 + sub_size + sub_size % 2
            assert sub == 8 + size
        assert len(body) == size
        pos += 8 + size + size % 2
    assert pos == len(blob) and len(blob) % 2 == 0
    assert (b"INAM", 4, b"odd\0") in seen and (b"ICMT", 5, b"even\0") in seen
    assert (b"ICRD", 11, b"2026-09-01\0") in seen
    assert (b"labl", 11, struct.pack("<I", 10) + b"Bar 10\0") in seen


def test_odd_data_size_is_padded_and_counted_in_the_riff_size(tmp_path):
    audio = make_audio(1001, 1)  # 3003 bytes of 24-bit mono
    info = describe_loop(1001, 44100, 1, key="C")
    path = write_loop_wav(tmp_path / "odd.wav", audio, 44100, info=info)
    c = read_chunks(path)
    assert c["data"]["size"] == 3003 and c["file_size"] == c["data"]["offset"] + 3004
    assert path.read_bytes()[-1] == 0 and c["riff_size"] == c["file_size"] - 8
    with wave.open(str(path)) as w:
        assert w.readframes(1001) == expected_data_bytes(audio, "pcm24")


def test_samples_match_write_wav_atomic(tmp_path):
    audio = make_audio(4000, 2)
    for fmt in ("pcm24", "pcm16", "float"):
        plain = write_wav_atomic(tmp_path / f"plain-{fmt}.wav", audio, 48000, fmt=fmt)
        loop = write_loop_wav(tmp_path / f"loop-{fmt}.wav", audio, 48000, fmt=fmt,
                              info=describe_loop(4000, 48000, 1))  # fmt: skip
        np.testing.assert_array_equal(
            sf.read(plain, dtype="int32")[0], sf.read(loop, dtype="int32")[0]
        )
        d = read_chunks(loop)["data"]
        assert loop.read_bytes()[d["offset"] : d["offset"] + d["size"]] in plain.read_bytes()


def test_more_than_two_channels_use_extensible(tmp_path):
    audio = make_audio(3000, 4)
    path = write_loop_wav(tmp_path / "quad.wav", audio, 48000, info=describe_loop(3000, 48000, 1))
    fmt = read_chunks(path)["fmt"]
    assert fmt["format_tag"] == 0xFFFE and fmt["extension"][:2] == struct.pack("<H", 22)
    read, rate = sf.read(path, dtype="int32")
    assert rate == 48000
    np.testing.assert_array_equal(read, quantise_like_libsndfile(audio) << 8)
    sndfile_info_sections(path)  # parses without errors


def test_never_overwrites_and_leaves_no_temp_files(tmp_path):
    audio = make_audio(2000, 2)
    info = describe_loop(2000, 48000, 1, prompt="first")
    path = write_loop_wav(tmp_path / "loop.wav", audio, 48000, info=info)
    before = path.read_bytes()
    with pytest.raises(RenderError, match="refusing to overwrite"):
        write_loop_wav(path, audio * 0.5, 48000, info=describe_loop(2000, 48000, 1, prompt="2nd"))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["loop.wav"]
    assert not list(tmp_path.glob(f"{TEMP_PREFIX}*"))


def test_rejects_bad_input(tmp_path):
    audio, info = make_audio(100, 2), describe_loop(100, 48000, 1)
    with pytest.raises(RenderError, match="unknown format"):
        write_loop_wav(tmp_path / "a.wav", audio, 48000, info=info, fmt="mp3")
    with pytest.raises(ValueError, match="NaN"):
        write_loop_wav(tmp_path / "a.wav", np.full((100, 2), np.nan, np.float32), 48000, info=info)
    with pytest.raises(ValueError, match="frames, channels"):
        write_loop_wav(tmp_path / "a.wav", audio[:, 0], 48000, info=info)
    with pytest.raises(ValueError, match="past the last frame"):
        encode_chunks(LoopInfo(bpm=120.0, beats=4, bar_frames=(0, 100)), 100, 48000)
    for bad in ({"bpm": 0.0}, {"beats": 0}, {"key": "X"}, {"unity_note": 128}, {"beat_unit": 3},
                {"bar_frames": (0, 0)}):  # fmt: skip
        with pytest.raises(ValueError):
            LoopInfo(**{"bpm": 120.0, "beats": 4, **bad})
    assert not list(tmp_path.iterdir())


def test_non_ascii_prompt_round_trips_as_utf8(tmp_path):
    prompt = "Lo-fi Klavier über Regen, Fis-Moll — 80 BPM"
    info = describe_loop(2000, 48000, 1, prompt=prompt)
    path = write_loop_wav(tmp_path / "u.wav", make_audio(2000, 2), 48000, info=info)
    assert read_chunks(path)["info"]["INAM"] == prompt
    with sf.SoundFile(str(path)) as f:
        assert f.title == prompt


def test_many_bars_are_all_written_though_sndfile_info_lists_ten(tmp_path):
    frames = loop_frames(120, 64, 4, 48000)
    info = describe_loop(frames, 48000, 64, prompt="long", date="2026-09-01")
    path = write_loop_wav(
        tmp_path / "long.wav", np.zeros((frames, 2), np.float32), 48000, info=info
    )
    c = read_chunks(path)
    assert [q["frame"] for q in c["cue"]] == [i * 96000 for i in range(64)]
    assert c["labels"][64] == "Bar 64" and c["info"]["ICRD"] == "2026-09-01"
    cue = sndfile_info_sections(path)["cue "]
    assert field(cue, "Count") == "64" and "(Skipping)" in cue  # libsndfile logs 10 cue lines
    with sf.SoundFile(str(path)) as f:
        assert (f.frames, f.date) == (frames, "2026-09-01")
