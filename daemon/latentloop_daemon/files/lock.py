"""One daemon per output folder: an exclusive, non-blocking lock on ``<folder>/.latentloop.lock``.

Two daemons writing one folder would clean up each other's temp files and orphan sidecars and
share a journal. The lock is advisory (``flock`` on POSIX, ``msvcrt.locking`` on Windows) and
held for the life of the process; the kernel releases it when the process dies, even under
SIGKILL, so a crash never leaves the folder locked.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from latentloop_daemon.errors import OutputError, OutputFolderLocked

logger = logging.getLogger(__name__)

LOCK_NAME = ".latentloop.lock"


class FolderLock:
    """Holds ``<folder>/.latentloop.lock``; ``acquire`` raises ``OutputFolderLocked`` if taken."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        try:  # read-only: no descriptor open for writing blocks a remount read-only
            fd = os.open(self.path, os.O_RDONLY | os.O_CREAT, 0o644)
        except OSError as e:
            raise OutputError(f"cannot create {self.path}: {e.strerror or e}") from e
        try:
            _lock(fd)
        except OSError:
            os.close(fd)
            holder = _read_pid(self.path)
            who = f" (pid {holder})" if holder else ""
            raise OutputFolderLocked(
                f"output folder {self.path.parent} is in use by another latentloop daemon{who}; "
                "give this one its own folder (--out / render.out_dir)"
            ) from None
        self._fd = fd
        try:
            self.path.write_text(f"{os.getpid()}\n", encoding="ascii")  # for the message above
        except OSError:
            logger.debug("could not write the pid into %s", self.path)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _read_pid(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii").strip()[:20]
    except (OSError, UnicodeDecodeError):
        return ""
