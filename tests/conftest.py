"""Shared fixtures: built-in engines loaded once per session; CI's tool requirement switch."""

import os
import shutil

import pytest

REQUIRE_TOOLS = os.environ.get("LATENTLOOP_REQUIRE_TOOLS") == "1"


def require_tool(name: str) -> str:
    """Path of a system tool; skip the test if missing (fail instead when CI requires tools)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (Debian: see .ci/run for the package)"
        if REQUIRE_TOOLS:
            pytest.fail(message + " and LATENTLOOP_REQUIRE_TOOLS=1")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def tiny_engine():
    from latentloop_daemon.backends.sat.backend import SatEngine

    return SatEngine.load("tiny", device="cpu")


@pytest.fixture(scope="session")
def tiny_rf_engine():
    from latentloop_daemon.backends.sat.backend import SatEngine

    return SatEngine.load("tiny-rf", device="cpu")
