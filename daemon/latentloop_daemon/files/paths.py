"""Paths a client may name (``play <path>``, init audio): inside the allowed folders only.

``resolve_client_path`` follows every symlink first and then checks containment, so neither
``../`` nor a link inside the output folder pointing elsewhere gets out (docs/security.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from latentloop_daemon.errors import PathRefused

MAX_CLIENT_PATH_CHARS = 4096


def resolve_client_path(path: str, roots: Sequence[Path | str]) -> Path:
    """The real path of the existing regular file ``path`` names, if it lies inside a root.

    Args:
        path: as the client sent it; a relative path is taken relative to the first root
            (the output folder), an absolute one must resolve inside some root.
        roots: the output folder first, then ``[audio] input_roots``.

    Raises:
        PathRefused: empty, too long, a NUL, no such file, not a regular file, or outside
            every root once symlinks are resolved.
    """
    if not roots:
        raise PathRefused("no folder is open to clients")
    if not path or len(path) > MAX_CLIENT_PATH_CHARS or "\x00" in path:
        raise PathRefused("the path is empty, too long or contains a NUL character")
    real_roots = [Path(root).expanduser().resolve() for root in roots]
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        candidate = real_roots[0] / candidate
    try:
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, a symlink loop, unreadable
        raise PathRefused(f"no such file: {path}") from None
    if not any(real.is_relative_to(root) for root in real_roots):
        raise PathRefused(f"{path} is outside the output folder and [audio] input_roots")
    if not real.is_file():
        raise PathRefused(f"{path} is not a regular file")
    return real
