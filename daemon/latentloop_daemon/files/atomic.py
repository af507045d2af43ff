"""WAV and sidecar files, written atomically and never over an existing file.

A file is written under a hidden temporary name in the destination folder, flushed to disk, then
published with ``os.link`` (which fails if the name exists) or, where hard links are not
available, ``os.replace`` after an existence check. A crash leaves at most a hidden temp file,
never a half-written WAV under its final name.
"""

from __future__ import annotations

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
    return slug[:max_len].rstrip("-") or "untitled"


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
        except OSError:  # no hard links on this filesystem
            if path.exists():
                raise OutputError(f"refusing to overwrite {path}") from None
            os.replace(tmp, path)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return path


def publish_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a hidden temp file beside ``path``, then publish it; never overwrites.

    The same path as ``write_wav_atomic``: fsync, ``os.link`` (or a checked ``os.replace``), and
    the temp file is removed whatever happens. Raises ``RenderError`` if ``path`` exists.
    """
    return _publish(path, write)
