"""Atomic, never-overwriting publication of files (``files.atomic``), including the path taken
on file systems without hard links (FAT/exFAT USB drives, some network shares)."""

import errno
import json
import os

import numpy as np
import pytest
import soundfile as sf

from latentloop_daemon.errors import OutputError
from latentloop_daemon.files import atomic
from latentloop_daemon.files.atomic import TEMP_PREFIX, write_json_atomic, write_wav_atomic

AUDIO = (0.25 * np.sin(np.linspace(0, 60, 4410))[:, None] * [1, -1]).astype(np.float32)


@pytest.fixture
def no_hard_links(monkeypatch):
    """``os.link`` fails as it does on a file system without hard links (EPERM on vfat/exFAT)."""
    calls = []

    def refuse(src, dst, *args, **kwargs):
        calls.append(dst)
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(atomic.os, "link", refuse)
    return calls


def test_without_hard_links_files_are_published_by_rename(tmp_path, no_hard_links):
    wav = write_wav_atomic(tmp_path / "a.wav", AUDIO, 44100, "float")
    side = write_json_atomic(tmp_path / "a.json", {"file": "a.wav"})
    assert no_hard_links == [wav, side]  # the link was tried first, then the fallback ran
    data, rate = sf.read(wav, dtype="float32")
    assert rate == 44100 and np.array_equal(data, AUDIO)
    assert json.loads(side.read_text()) == {"file": "a.wav"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.wav"]  # no temp file left


def test_without_hard_links_an_existing_file_is_never_replaced(tmp_path, no_hard_links):
    target = tmp_path / "a.wav"
    target.write_bytes(b"the user's file")
    with pytest.raises(OutputError, match="refusing to overwrite"):
        write_wav_atomic(target, AUDIO, 44100, "pcm16")
    assert target.read_bytes() == b"the user's file"
    assert [p.name for p in tmp_path.iterdir()] == ["a.wav"]


def test_with_hard_links_an_existing_file_is_never_replaced(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("{}")
    with pytest.raises(OutputError, match="refusing to overwrite"):
        write_json_atomic(target, {"x": 1})
    assert target.read_text() == "{}" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_published_files_follow_the_umask(tmp_path):
    wav = write_wav_atomic(tmp_path / "a.wav", AUDIO, 44100, "pcm24")
    assert os.stat(wav).st_mode & 0o777 == 0o666 & ~atomic._UMASK


def test_an_unwritable_destination_is_an_output_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError, match="cannot write to"):
        write_wav_atomic(blocker / "a.wav", AUDIO, 44100, "pcm24")
    assert not any(p.name.startswith(TEMP_PREFIX) for p in tmp_path.iterdir())
