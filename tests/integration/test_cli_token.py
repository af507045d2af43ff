"""The command-line client against a daemon with a shared token (docs/security.md): the token
comes from LATENTLOOP_OSC_TOKEN or the daemon's own --config file, never a flag."""

from __future__ import annotations

import os
import subprocess
import sys

import soundfile as sf

TOKEN = "s3cret-token-for-the-cli"


def cli(*args, env=None):
    environ = {k: v for k, v in os.environ.items() if k != "LATENTLOOP_OSC_TOKEN"}
    return subprocess.run([sys.executable, "-m", "latentloop_daemon", *args], capture_output=True,
                          text=True, timeout=120, env={**environ, **(env or {})})  # fmt: skip


def test_the_cli_sends_the_token_from_the_environment_or_the_config(daemon_factory, tmp_path):
    daemon = daemon_factory("--no-warmup", standin=True, env={"LATENTLOOP_OSC_TOKEN": TOKEN})
    port = str(daemon.wait_ready())
    target = ("--port", port, "--timeout", "60")

    assert cli("ping", *target).returncode == 0  # ping needs no token
    without = cli("send", "no token", "--seconds", "1", *target)
    assert without.returncode == 1 and "unauthorized" in without.stderr, without.stderr
    wrong = cli("send", "wrong", "--seconds", "1", *target, env={"LATENTLOOP_OSC_TOKEN": "nope"})
    assert wrong.returncode == 1 and "refused the token" in wrong.stderr, wrong.stderr

    by_env = cli("send", "by env", "--seconds", "1", *target, env={"LATENTLOOP_OSC_TOKEN": TOKEN})
    assert by_env.returncode == 0, by_env.stderr
    assert sf.info(by_env.stdout.strip()).frames == 44100

    config = tmp_path / "latentloop.toml"
    config.write_text(f'[osc]\ntoken = "{TOKEN}"\n')
    by_config = cli("status", *target, "--config", str(config))
    assert by_config.returncode == 0 and "state ready" in by_config.stdout, by_config.stderr
    assert TOKEN not in daemon.log  # never logged
