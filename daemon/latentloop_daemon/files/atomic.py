"""WAV and sidecar files, written atomically and never over an existing file.

A file is written under a hidden temporary name in the destination folder, flushed to disk, then
published with ``os.link`` (which fails if the name exists) or, where hard links are not
available, ``os.replace`` after an existence check. A crash leaves at most a hidden temp file,
never a half-written WAV under its final name.
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from latentloop_daemon.errors import OutputError
from latentloop_daemon.files.formats import sample_format

TEMP_PREFIX = ".latentloop-"


def slugify(text: str, max_len: int = 40) -> str:
    """A short, filesystem-safe, lowercase ASCII name for ``text`` ("untitled" if empty)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    slug = slug[:max_len].rstrip("-") or "untitled"
    if slug.upper() in _WINDOWS_RESERVED:  # "con", "nul", "com1": device names on Windows
        slug = f"{slug}-"
    return slug


_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"{d}{n}" for d in ("COM", "LPT") for n in range(1, 10)}
)
MAX_NAME_BYTES = 200
"""File names we make stay well under the 255-byte limit of ext4, APFS, NTFS and exFAT."""
_UNSAFE_NAME = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')


def check_file_name(name: str) -> str:
    """Return ``name`` if it is safe on Linux, macOS and Windows file systems, else raise.

    Safe: 1..200 bytes of UTF-8, no path separators, control or Windows-reserved characters,
    no leading dot (hidden) or trailing dot/space, not a Windows device name.

    Raises:
        OutputError: naming the problem (a bug: our names come from ``slugify``).
    """
    stem = name.split(".", 1)[0]
    if (
        not name
        or len(name.encode()) > MAX_NAME_BYTES
        or _UNSAFE_NAME.search(name)
        or name.startswith(".")
        or name.endswith((".", " "))
        or stem.upper() in _WINDOWS_RESERVED
    ):
        raise OutputError(f"unsafe file name {name!r}")
    return name


def write_wav_atomic(
    path: Path, audio: npt.NDArray[np.float32], sample_rate: int, fmt: str = "pcm24"
) -> Path:
    """Write (frames, channels) float32 audio as a WAV file at ``path``; never overwrites."""
    import soundfile as sf

    subtype = sample_format(fmt).subtype
    data = np.ascontiguousarray(audio, dtype=np.float32)
    if data.ndim != 2:
        raise ValueError(f"audio must be (frames, channels), got shape {data.shape}")

    def write(tmp: Path) -> None:
        with sf.SoundFile(
            str(tmp), "w", samplerate=sample_rate, channels=data.shape[1],
            subtype=subtype, format="WAV",
        ) as f:  # fmt: skip
            f.write(data)

    return _publish(path, write)


def write_json_atomic(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as pretty JSON at ``path``; never overwrites."""
    text = json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n"
    return _publish(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def unique_stem(folder: Path, stem: str, suffixes: tuple[str, ...] = (".wav", ".json")) -> str:
    """``stem``, or ``stem-2``, ``stem-3``... so that no file ``stem+suffix`` exists yet."""
    candidate, n = stem, 1
    while any((folder / f"{candidate}{s}").exists() for s in suffixes):
        n += 1
        candidate = f"{stem}-{n}"
    return candidate


def remove_orphan_sidecars(folder: Path) -> int:
    """Delete our sidecars whose WAV is missing (a crash between the two); return how many.

    A sidecar is ours when it is JSON whose ``software`` starts with "latentloop" and whose
    ``file`` names the WAV beside it. Anything else in the folder is left alone. Call it only
    while holding the folder's lock (``files.lock``), when no write is in flight.
    """
    removed = 0
    for side in Path(folder).glob("*.json"):
        wav = side.with_suffix(".wav")
        if wav.exists():
            continue
        try:
            meta = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # unreadable or not JSON: not ours to judge
        if (
            isinstance(meta, dict)
            and str(meta.get("software", "")).startswith("latentloop")
            and meta.get("file") == wav.name
        ):
            side.unlink(missing_ok=True)
            removed += 1
    return removed


def remove_stale_temp_files(folder: Path, older_than_s: float = 60.0) -> int:
    """Delete our hidden temp files left in ``folder`` by a killed process; return how many."""
    import time

    removed = 0
    cutoff = time.time() - older_than_s
    for tmp in Path(folder).glob(f"{TEMP_PREFIX}*.tmp"):
        try:
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()
                removed += 1
        except OSError:
            pass  # gone meanwhile, or not ours to delete: leave it
    return removed


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, at import, before threads start
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _publish(path: Path, write: Any) -> Path:
    path = Path(path)
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".tmp", dir=folder)
    except OSError as e:
        raise OutputError(f"cannot write to {folder}: {e.strerror or e}") from e
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; published files follow the umask
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic, and fails if path exists
        except FileExistsError as e:
            raise OutputError(f"refusing to overwrite {path}") from e
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EIO):
                raise
            if path.exists():  # no hard links on this filesystem
                raise OutputError(f"refusing to overwrite {path}") from None
            os.replace(tmp, path)
        _fsync_folder(folder)  # the new name survives a power cut too
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows: folders cannot be opened; NTFS journals the rename itself
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (network mounts) refuse fsync on a folder; the rename stands
    finally:
        os.close(fd)


def publish_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a hidden temp file beside ``path``, then publish it; never overwrites.

    The same path as ``write_wav_atomic``: fsync, ``os.link`` (or a checked ``os.replace``), and
    the temp file is removed whatever happens. Raises ``RenderError`` if ``path`` exists.
    """
    return _publish(path, write)
