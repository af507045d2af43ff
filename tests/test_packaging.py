"""Packaging rules (style guide §2): two uniquely named import packages under source roots that are
not packages, torch-free light imports, the console script, and package data."""

import json
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest

import latentloop_daemon
from latentloop_daemon.backends.sat.config import parse_model_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"sao-1.0.json", "sao-small.json", "tiny.json", "tiny-rf.json"}


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (nothing imported yet), from outside the repo."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO.parent, timeout=120
    )


def _latentloop(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed `latentloop` console script (the venv's bin folder holds python too)."""
    script = Path(sys.executable).parent / "latentloop"
    assert script.is_file(), f"console script not installed next to {sys.executable}"
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("root", ["daemon", "bridge"])
def test_source_roots_are_not_packages(root: str):
    # An __init__.py here would make `import daemon` / `import bridge` find our folder and
    # clash with python-daemon (style guide §2).
    assert (REPO / root).is_dir()
    assert not (REPO / root / "__init__.py").exists()
    assert (REPO / root / f"latentloop_{root}" / "__init__.py").is_file()
    assert (REPO / root / f"latentloop_{root}" / "py.typed").is_file()


def test_bridge_never_imports_torch():
    done = _python(
        "import importlib, pkgutil, sys\n"
        "import latentloop_bridge\n"
        "assert 'torch' not in sys.modules, 'import latentloop_bridge loaded torch'\n"
        "for m in pkgutil.walk_packages(latentloop_bridge.__path__, 'latentloop_bridge.'):\n"
        "    importlib.import_module(m.name)\n"
        "    assert 'torch' not in sys.modules, m.name + ' loaded torch'\n"
        "    assert 'latentloop_daemon' not in sys.modules, m.name + ' imported the daemon'\n"
    )
    assert done.returncode == 0, done.stderr


def test_light_daemon_modules_do_not_import_torch():
    modules = [
        "latentloop_daemon",
        "latentloop_daemon.errors",
        "latentloop_daemon.engine",
        "latentloop_daemon.exit_codes",
        "latentloop_daemon.config",
        "latentloop_daemon.cli",
        "latentloop_daemon.files.formats",
        "latentloop_daemon.files.writer",
        "latentloop_daemon.loops.pipeline",
        "latentloop_daemon.service",  # torch loads with the backend, on the render worker
        "latentloop_daemon.backends",
        "latentloop_daemon.backends.sat.options",
        "latentloop_daemon.backends.sat.sources",
        "latentloop_daemon.backends.sat.config",
        "latentloop_daemon.backends.sat.known_configs",
        "latentloop_daemon.playback.player",  # sounddevice, stretch and Link load lazily
        "latentloop_daemon.playback.link",
        "latentloop_daemon.cli.devices",
    ]
    done = _python(
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "    assert 'torch' not in sys.modules, name + ' loaded torch'\n"
        "    for lazy in ('sounddevice', 'python_stretch', 'link', 'jack'):\n"
        "        assert lazy not in sys.modules, name + ' loaded ' + lazy\n"
        "from latentloop_daemon import cli\n"
        "cli.build_parser()  # every subcommand's module, as `latentloop --help` does\n"
        "assert 'torch' not in sys.modules, 'building the CLI parser loaded torch'\n"
    )
    assert done.returncode == 0, done.stderr


def test_console_script_version_and_help():
    version = _latentloop("--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout == f"latentloop {latentloop_daemon.__version__}\n"
    help_ = _latentloop("--help")
    assert help_.returncode == 0, help_.stderr
    assert help_.stdout.startswith("usage: latentloop ")
    for command in ("render", "download", "models", "bench"):
        assert f"\n    {command} " in help_.stdout
    render_help = _latentloop("render", "--help")
    assert render_help.returncode == 0 and "--trust-checkpoint" in render_help.stdout
    usage = _latentloop()
    assert usage.returncode == 2 and "usage: latentloop" in usage.stderr


def test_packaged_configs_are_found_through_importlib_resources():
    folder = resources.files("latentloop_daemon.backends.sat").joinpath("configs")
    names = {entry.name for entry in folder.iterdir() if entry.name.endswith(".json")}
    assert names == CONFIGS
    for name in sorted(names):
        raw = json.loads(folder.joinpath(name).read_text(encoding="utf-8"))
        config = parse_model_config(raw, source=name)
        assert config.sample_rate == 44100


def test_wheel_holds_both_packages_and_the_configs(tmp_path: Path):
    pytest.importorskip("hatchling", reason="hatchling (the build backend) is not installed")
    done = subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("latentloop-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {
        "latentloop_daemon",
        "latentloop_bridge",
        wheel.name.split("-py")[0] + ".dist-info",
    }
    for name in CONFIGS:
        assert f"latentloop_daemon/backends/sat/configs/{name}" in names
    assert {"latentloop_daemon/py.typed", "latentloop_bridge/py.typed"} <= set(names)
    assert not any(n.startswith("tests/") or "/tests/" in n for n in names)
