"""Command-line options shared by ``serve``, ``render`` and ``bench``: the config file and the
model options, each flag the command-line form of a config key (flags > environment > TOML).

Backend flags (``--t5``, ``--trust-checkpoint``) come from the backend registry: each option
field whose metadata names a ``flag`` becomes one, so a new backend needs no edit here.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from latentloop_daemon.backends import BACKENDS
from latentloop_daemon.engine import PRECISIONS


def add_config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML config file (docs/config.md); flags override it",
    )


def add_model_options(p: argparse.ArgumentParser) -> None:
    """``engine.*`` flags and every backend's flags."""
    g = p.add_argument_group("model (config [engine] and backend sections)")
    g.add_argument(
        "--model",
        default=None,
        help="engine.model: tiny, tiny-rf, a Hugging Face repo id or alias (sao-1.0, sao-small),"
        " or a folder (default: tiny)",
    )
    g.add_argument(
        "--backend", default=None, choices=sorted(BACKENDS), help="engine.backend (default: sat)"
    )
    g.add_argument(
        "--device", default=None, help="engine.device: auto (cuda > mps > cpu), cpu, cuda, mps"
    )
    g.add_argument(
        "--precision",
        default=None,
        choices=PRECISIONS,
        help="engine.precision: auto = fp16 on CUDA, fp32 elsewhere; reference = bit-exact "
        "with the backend's reference implementation",
    )
    g.add_argument(
        "--offline",
        action="store_true",
        default=None,
        help="engine.offline: never contact the Hugging Face Hub",
    )
    for name, backend in BACKENDS.items():
        for f in dataclasses.fields(backend.options):
            flag = f.metadata.get("flag")
            if flag is None:
                continue
            kwargs: dict[str, Any] = {
                "default": None,
                "dest": f"{name}__{f.name}",
                "help": f"{name}.{f.name}: {f.metadata.get('help', '')}",
            }
            if f.type in (bool, "bool"):
                kwargs["action"] = "store_true"
            g.add_argument(flag, **kwargs)


def model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The model flags as config overrides (``section.key`` -> value; None = not given)."""
    overrides: dict[str, Any] = {
        "engine.model": args.model,
        "engine.backend": args.backend,
        "engine.device": args.device,
        "engine.precision": args.precision,
        "engine.offline": args.offline,
    }
    for name, backend in BACKENDS.items():
        for f in dataclasses.fields(backend.options):
            dest = f"{name}__{f.name}"
            if hasattr(args, dest):
                overrides[f"{name}.{f.name}"] = getattr(args, dest)
    return overrides
