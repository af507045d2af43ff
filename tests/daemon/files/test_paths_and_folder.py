"""What a client may name and what the daemon leaves in its folder: ``resolve_client_path``
(traversal, symlink escapes), the folder lock, start-up cleanup, and safe file names."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latentloop_daemon.errors import OutputError, OutputFolderLocked, PathRefused
from latentloop_daemon.files.atomic import (
    check_file_name,
    remove_orphan_sidecars,
    remove_stale_temp_files,
    slugify,
)
from latentloop_daemon.files.lock import FolderLock
from latentloop_daemon.files.paths import resolve_client_path


@pytest.fixture
def folders(tmp_path):
    out, inputs, secret = tmp_path / "out", tmp_path / "inputs", tmp_path / "secret"
    for folder in (out, inputs, secret):
        folder.mkdir()
    (out / "loop.wav").write_bytes(b"RIFF")
    (inputs / "init.wav").write_bytes(b"RIFF")
    (secret / "key.wav").write_bytes(b"secret")
    return out, inputs, secret


def test_paths_inside_the_roots_resolve(folders) -> None:
    out, inputs, _ = folders
    assert resolve_client_path(str(out / "loop.wav"), [out, inputs]) == (out / "loop.wav").resolve()
    assert resolve_client_path("loop.wav", [out, inputs]) == (out / "loop.wav").resolve()
    assert resolve_client_path(str(inputs / "init.wav"), [out, inputs]).name == "init.wav"
    (out / "sub").mkdir()
    (out / "sub" / "a.wav").write_bytes(b"x")
    assert resolve_client_path("sub/../sub/a.wav", [out]).name == "a.wav"


@pytest.mark.parametrize(
    "name",
    [
        "../secret/key.wav",
        "../../etc/passwd",
        "/etc/passwd",
        "sub/../../secret/key.wav",
        "",
        "loop.wav\x00.txt",
        "x" * 5000,
        "missing.wav",
        ".",
    ],
)
def test_traversal_and_odd_paths_are_refused(folders, name) -> None:
    out, inputs, _ = folders
    with pytest.raises(PathRefused):
        resolve_client_path(name, [out, inputs])


def test_symlink_escapes_are_refused(folders) -> None:
    out, inputs, secret = folders
    (out / "escape.wav").symlink_to(secret / "key.wav")  # a file link out of the folder
    (out / "door").symlink_to(secret)  # a folder link out of it
    (out / "loop-link.wav").symlink_to(out / "loop.wav")  # a link that stays inside
    for name in ("escape.wav", "door/key.wav", str(out / "door" / "key.wav")):
        with pytest.raises(PathRefused, match="outside"):
            resolve_client_path(name, [out, inputs])
    assert resolve_client_path("loop-link.wav", [out]) == (out / "loop.wav").resolve()
    (out / "loop1").symlink_to(out / "loop2")
    (out / "loop2").symlink_to(out / "loop1")
    with pytest.raises(PathRefused):
        resolve_client_path("loop1", [out])
    with pytest.raises(PathRefused, match="not a regular file"):
        resolve_client_path(str(inputs), [out, inputs])
    with pytest.raises(PathRefused):
        resolve_client_path("loop.wav", [])


def test_a_second_lock_on_the_folder_is_refused_until_the_first_is_released(tmp_path) -> None:
    with FolderLock(tmp_path):
        with pytest.raises(OutputFolderLocked, match=str(os.getpid())):
            FolderLock(tmp_path).acquire()
        # another process too (flock is per open file description, so this is not just us)
        code = (
            "import sys; from latentloop_daemon.files.lock import FolderLock\n"
            "try:\n FolderLock(sys.argv[1]).acquire()\n"
            "except Exception as e:\n print(e); sys.exit(7)"
        )
        r = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True
        )
        assert r.returncode == 7 and "in use by another latentloop daemon" in r.stdout
    with FolderLock(tmp_path):  # released: free again
        pass


def test_start_up_cleanup_removes_only_our_temp_files_and_orphan_sidecars(tmp_path) -> None:
    ours = {"software": "latentloop 0.1.0"}
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    (tmp_path / "a.json").write_text(json.dumps({**ours, "file": "a.wav"}))  # complete pair
    (tmp_path / "b.json").write_text(json.dumps({**ours, "file": "b.wav"}))  # orphan: removed
    (tmp_path / "c.json").write_text(json.dumps({"software": "other", "file": "c.wav"}))
    (tmp_path / "d.json").write_text("not json")
    (tmp_path / "e.json").write_text(json.dumps({**ours, "file": "elsewhere.wav"}))
    (tmp_path / ".latentloop-x1.tmp").write_bytes(b"half a wav")
    (tmp_path / ".other-tool.tmp").write_bytes(b"not ours")
    assert remove_stale_temp_files(tmp_path, older_than_s=-1.0) == 1
    assert remove_orphan_sidecars(tmp_path) == 1
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".other-tool.tmp", "a.json", "a.wav", "c.json", "d.json", "e.json"]


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(max_size=300))
def test_slugs_make_safe_names_for_any_prompt(prompt: str) -> None:
    slug = slugify(prompt)
    name = check_file_name(f"{slug}_120bpm_4bars_seed18446744073709551615_v16.wav")
    assert 1 <= len(slug) <= 41 and name.isascii()


@pytest.mark.parametrize(
    "name",
    ["a/b.wav", "a\\b.wav", "con.wav", "NUL", "lpt1.json", ".hidden.wav", "x.wav.", "a\x07.wav",
     "a:b.wav", "q?.wav", "x" * 201, ""],
)  # fmt: skip
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(OutputError):
        check_file_name(name)


@pytest.mark.parametrize("prompt", ["con", "NUL", "Com1", "lpt9"])
def test_windows_device_names_never_become_slugs(prompt: str) -> None:
    assert slugify(prompt).upper() not in {"CON", "NUL", "COM1", "LPT9"}
    check_file_name(slugify(prompt) + ".wav")
