"""Model backends, chosen through a registry keyed by ``[engine] backend``.

Each backend is a folder (``backends/<name>/``) with its engine (implementing
``latentloop_daemon.engine.Engine``) and a light options dataclass: the backend's own config
section ``[<name>]`` (environment ``LATENTLOOP_<NAME>_<KEY>``), whose fields may name a CLI flag
in their metadata. Adding a backend adds a folder and a row in ``BACKENDS``; the config, the
``serve``/``render``/``bench`` commands and the service need no edit. Importing this module
imports no torch: a backend's runtime is imported only when it loads a model.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from latentloop_daemon.backends.sat.options import SatOptions
from latentloop_daemon.engine import Engine
from latentloop_daemon.errors import ConfigError

if TYPE_CHECKING:
    from latentloop_daemon.config import DaemonConfig


@dataclass(frozen=True, slots=True)
class Backend:
    """One registry row: ``loader`` is ``"module:function"``, called as
    ``function(model, device=, precision=, offline=, token=, options=)`` -> Engine."""

    name: str
    description: str
    options: type  # a frozen dataclass: the [<name>] section
    loader: str


BACKENDS: dict[str, Backend] = {
    "sat": Backend(
        name="sat",
        description="stable-audio-tools checkpoints: Stable Audio Open 1.0, Small, fine-tunes",
        options=SatOptions,
        loader="latentloop_daemon.backends.sat.backend:load",
    ),
}
DEFAULT_BACKEND = "sat"


def get_backend(name: str) -> Backend:
    """The registry row for ``name``; ``ConfigError`` naming the choices otherwise."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise ConfigError(
            f"engine.backend: unknown backend {name!r}; known: {', '.join(BACKENDS)}"
        ) from None


def load_engine(
    model: str,
    *,
    backend: str = DEFAULT_BACKEND,
    device: str = "auto",
    precision: str = "auto",
    offline: bool | None = None,
    token: str | None = None,
    options: Any = None,
    **option_values: Any,
) -> Engine:
    """Load ``model`` with ``backend`` (for ``sat``: ``tiny``, ``tiny-rf``, a hub repo id or
    alias, or a local folder). Backend options come as ``options`` (the section's dataclass)
    or as keywords (``t5="..."``, ``trust_checkpoint=True``)."""
    entry = get_backend(backend)
    if options is None:
        try:
            options = entry.options(**option_values)
        except TypeError as e:
            known = ", ".join(f.name for f in dataclasses.fields(entry.options))
            raise ConfigError(f"[{backend}] options: {e}; known: {known}") from e
    elif option_values:
        raise TypeError("give backend options as `options` or as keywords, not both")
    module_name, _, function = entry.loader.partition(":")
    loader = getattr(importlib.import_module(module_name), function)
    engine: Engine = loader(
        model, device=device, precision=precision, offline=offline, token=token, options=options
    )
    return engine


def load_configured(config: DaemonConfig) -> Engine:
    """Load the engine that ``[engine]`` and the chosen backend's section describe."""
    e = config.engine
    return load_engine(
        e.model,
        backend=e.backend,
        device=e.device,
        precision=e.precision,
        offline=e.offline or None,
        options=config.backend_options(),
    )
