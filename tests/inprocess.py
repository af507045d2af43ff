"""In-process harnesses shared by tests: the Service in a thread on 127.0.0.1:0, and the CLI's
``main`` with its global logging set-up undone afterwards."""

import logging
import threading
import time
from contextlib import contextmanager

from latentloop_daemon import cli
from latentloop_daemon.config import load_config
from latentloop_daemon.service import Service

READY_S = 10.0


def start_service(tmp_path, loader, **overrides):
    """A running Service (state ``ready``) whose engine comes from ``loader()``; ``overrides``
    are config keys ("render.format": ...) on top of port 0, ``tmp_path`` and no warm-up.
    Returns (service, thread); stop it with ``stop_service``."""
    config = load_config(
        overrides={"osc.port": 0, "render.out_dir": str(tmp_path), "engine.warmup": False,
                   **overrides},
        environ={},
    )  # fmt: skip
    svc = Service(config, loader=loader)
    thread = threading.Thread(target=svc.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + READY_S
    while svc.state != "ready":
        assert time.monotonic() < deadline, "service did not become ready"
        time.sleep(0.01)
    return svc, thread


def stop_service(svc, thread):
    svc.should_exit.set()
    thread.join(READY_S)
    assert not thread.is_alive()


@contextmanager
def running_service(tmp_path, loader, **overrides):
    """``start_service`` for the length of a ``with`` block."""
    svc, thread = start_service(tmp_path, loader, **overrides)
    try:
        yield svc
    finally:
        stop_service(svc, thread)


def run_cli(argv: list[str]) -> int:
    """Run `latentloop ARGV` through cli.main, then undo its global logging set-up."""
    root, package = logging.getLogger(), logging.getLogger("latentloop_daemon")
    handlers, root_level, package_level = list(root.handlers), root.level, package.level
    try:
        return cli.main(argv)
    finally:  # dictConfig replaced root's handlers (pytest's capture ones included)
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(root_level)
        package.setLevel(package_level)
