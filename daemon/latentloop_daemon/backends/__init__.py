"""Model backends. Each implements ``latentloop_daemon.engine.Engine``."""

from __future__ import annotations

from pathlib import Path

from ..engine import Engine


def load_engine(
    model: str,
    *,
    device: str = "auto",
    precision: str = "auto",
    trust_checkpoint: bool = False,
    t5_dir: Path | None = None,
    offline: bool | None = None,
    token: str | None = None,
) -> Engine:
    """Load ``model`` (``tiny``, ``tiny-rf``, a hub repo id or alias, or a local folder)."""
    from .sat.backend import SatEngine

    return SatEngine.load(
        model,
        device=device,
        precision=precision,
        trust_checkpoint=trust_checkpoint,
        t5_dir=t5_dir,
        offline=offline,
        token=token,
    )
