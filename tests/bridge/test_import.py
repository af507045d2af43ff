"""The bridge imports only the standard library and python-osc: never torch, numpy or the daemon."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import latentloop_bridge

FORBIDDEN = ("torch", "numpy", "latentloop_daemon")


def bridge_modules() -> list[str]:
    found = pkgutil.iter_modules(latentloop_bridge.__path__, "latentloop_bridge.")
    return ["latentloop_bridge", *sorted(module.name for module in found)]


def test_every_module_is_listed() -> None:
    assert {
        "latentloop_bridge.client",
        "latentloop_bridge.packets",
        "latentloop_bridge.protocol",
        "latentloop_bridge.server",
    } <= set(bridge_modules())


def test_importing_the_bridge_loads_nothing_heavy() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {bridge_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_the_bridge_imports_only_stdlib_and_python_osc() -> None:
    code = (
        "import importlib, sys\n"
        "before = set(sys.modules)\n"
        f"for name in {bridge_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "third = sorted(m for m in new if m not in sys.stdlib_module_names\n"
        "               and m not in ('latentloop_bridge', 'pythonosc'))\n"
        "print(','.join(third))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
