"""Model configs shipped with the package: the published model sections of SAO 1.0 and SAO Small
(engine-spec §3; structure checks and ``random:`` benchmarks) and the built-in ``tiny`` models."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

KNOWN_CONFIGS = ("sao-1.0", "sao-small")


def packaged_config(name: str) -> dict[str, Any]:
    """A fresh copy of ``configs/<name>.json``: sao-1.0, sao-small, tiny or tiny-rf."""
    path = resources.files(__package__).joinpath("configs", f"{name}.json")
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError as e:
        raise KeyError(name) from e


def known_config(name: str) -> dict[str, Any]:
    """A published config by short name."""
    if name not in KNOWN_CONFIGS:
        raise KeyError(name)
    return packaged_config(name)
