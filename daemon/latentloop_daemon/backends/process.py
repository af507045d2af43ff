"""An engine in a process of its own, so the daemon's audio never waits for the model.

``ProcessEngine`` is an ``Engine`` whose model lives in a child process (a fresh interpreter,
``python -c``, never a re-run of the daemon's own ``__main__`` as multiprocessing's ``spawn``
would do): the daemon keeps the OSC threads, the player and its audio callback, and the
render worker, which waits on a pipe while the child samples and decodes. The reason is the
interpreter lock: a render holds it between torch calls on the worker thread, and a thread
that holds it while the kernel has preempted it makes the audio callback wait (measured: up to
~12 ms on a 2-core machine, half a 1024-frame period; docs/perf.md). In a child process the
model's Python code holds the child's lock, never the daemon's. A crash of the model (a
segfault, the kernel's out-of-memory killer) also ends only the child: the job fails with
``internal`` and the next render starts a new child.

The two talk over ``multiprocessing.connection`` on a loopback socket: the child listens on
127.0.0.1 port 0, prints the port, and accepts one connection that answers the challenge of
a random key the daemon wrote to the child's standard input (so no other local process can
drive the model). The messages (pickled):

- daemon -> child: ``("load", EngineSpec, log levels)`` first; then ``("render",
  RenderRequest)``, ``("cancel",)``, ``("close",)``;
- child -> daemon: ``("ready", Capabilities)`` or ``("error", kind, message)`` after loading;
  per render ``("step", step, total, fraction)``..., then ``("result", RenderResult)`` or
  ``("error", kind, message)``; any time ``("log", level, logger name, message)``.

``kind`` names the exception to raise again in the daemon (``ERRORS``). The child ignores
SIGINT and SIGTERM (a terminal's Ctrl+C or a service manager reaches the whole process group;
the daemon stops it), and dies with the daemon (Linux: ``PR_SET_PDEATHSIG``; elsewhere at its
next pipe read).

Threads: ``render`` and ``close`` on the render worker (one at a time, as ``Engine`` requires).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Listener
from typing import TYPE_CHECKING, Any

from latentloop_daemon.engine import (
    CancelFn,
    Capabilities,
    Engine,
    RenderRequest,
    RenderResult,
    StepFn,
)
from latentloop_daemon.errors import (
    BadOutputError,
    EngineError,
    ModelLoadError,
    OutOfMemoryError,
    RenderCancelled,
    RenderError,
    is_out_of_memory,
)

if TYPE_CHECKING:
    from latentloop_daemon.config import DaemonConfig

logger = logging.getLogger(__name__)

ERRORS: dict[str, type[BaseException]] = {
    "cancelled": RenderCancelled,
    "bad_output": BadOutputError,
    "out_of_memory": OutOfMemoryError,
    "render": RenderError,
    "value": ValueError,
    "load": ModelLoadError,
    "engine": EngineError,
    "internal": RuntimeError,
}
_POLL_S = 0.05  # how often the waiting daemon looks at should_cancel and the child's health
_CLOSE_S = 10.0  # a child that does not exit after close for this long is killed
_ACCEPT_S = 60.0  # a child whose daemon never connects gives up after this long
_CHILD = "from latentloop_daemon.backends.process import child_entry; child_entry()"


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """What the child loads (``backends.load_engine``'s arguments); picklable."""

    model: str
    backend: str
    device: str
    precision: str
    offline: bool | None
    options: Any
    max_threads: int = 0  # at most this many torch threads in the child; 0 = no cap


class EngineProcessDied(EngineError):
    """The child process ended without answering (a crash, or killed)."""


class ProcessEngine:
    """``Engine`` over a child process; ``start()`` loads the model there (blocks until ready)."""

    def __init__(self, spec: EngineSpec) -> None:
        self.spec = spec
        self._caps: Capabilities | None = None
        self._process: Any = None
        self._conn: Any = None

    @property
    def capabilities(self) -> Capabilities:
        assert self._caps is not None, "start() first"
        return self._caps

    def start(self) -> ProcessEngine:
        """Start the child and wait for its model to load (``ModelLoadError`` if it fails)."""
        key = secrets.token_bytes(32)
        process = subprocess.Popen(
            [sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        self._process = process
        assert process.stdin is not None and process.stdout is not None
        with process.stdin:
            process.stdin.write(key.hex().encode() + b"\n")
        with process.stdout:
            line = process.stdout.readline()  # the port; EOF if the child died first
        if not line.strip().isdigit():
            process.wait(_CLOSE_S)
            raise ModelLoadError(f"{self._death()} before it could load the model")
        self._conn = Client(("127.0.0.1", int(line)), authkey=key)
        self._conn.send(("load", self.spec, _log_levels()))
        message = self._receive(None)
        assert message is not None  # no timeout: a message or EngineProcessDied
        if message[0] == "ready":
            self._caps = message[1]
            logger.info("model process %d holds %s", process.pid, self._caps.model_id)
            return self
        self._stop_child()
        raise _error(message)

    def render(
        self,
        request: RenderRequest,
        on_step: StepFn | None = None,
        should_cancel: CancelFn | None = None,
    ) -> RenderResult:
        if self._process is None or self._process.poll() is not None:
            logger.warning("the model process is gone: starting a new one")
            self._stop_child()
            self.start()
        self._conn.send(("render", request))
        cancel_sent = False
        while True:
            if not cancel_sent and should_cancel is not None and should_cancel():
                self._conn.send(("cancel",))
                cancel_sent = True
            message = self._receive(_POLL_S)
            if message is None:
                continue
            kind = message[0]
            if kind == "step":
                if on_step is not None:
                    on_step(message[1], message[2], message[3])
            elif kind == "result":
                result: RenderResult = message[1]
                return result
            else:
                raise _error(message)

    def close(self) -> None:
        """Ask the child to exit; kill it if it does not."""
        if self._conn is not None:
            try:
                self._conn.send(("close",))
            except (OSError, ValueError):
                pass
        self._stop_child()

    # --- internals ----------------------------------------------------------------------------

    def _receive(self, timeout: float | None) -> tuple[Any, ...] | None:
        """The next non-log message; None when ``timeout`` passed with none."""
        while True:
            try:
                if not self._conn.poll(timeout):
                    if self._process.poll() is None:
                        return None
                    if not self._conn.poll(0):
                        raise EngineProcessDied(self._death())
                message: tuple[Any, ...] = self._conn.recv()
            except (EOFError, OSError):
                try:
                    self._process.wait(1)
                except subprocess.TimeoutExpired:
                    pass
                raise EngineProcessDied(self._death()) from None
            if message[0] != "log":
                return message
            _, level, name, text = message
            logging.getLogger(name).log(level, "%s", text)

    def _death(self) -> str:
        code = self._process.poll()
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return f"the model process {self._process.pid} ended ({how})"

    def _stop_child(self) -> None:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            conn.close()
        if process is not None:
            try:
                process.wait(_CLOSE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def _error(message: tuple[Any, ...]) -> BaseException:
    """The exception a child's ``("error", kind, text)`` stands for."""
    if message[0] != "error":
        return RuntimeError(f"unexpected message from the model process: {message[0]!r}")
    return ERRORS.get(message[1], RuntimeError)(message[2])


def spec_of(config: DaemonConfig, max_threads: int = 0) -> EngineSpec:
    """The ``[engine]`` section and the backend's own, as the child loads them."""
    e = config.engine
    return EngineSpec(
        e.model, e.backend, e.device, e.precision, e.offline or None, config.backend_options(),
        max_threads,
    )  # fmt: skip


def load_in_process(spec: EngineSpec) -> Engine:
    """Load ``spec`` in a child process; the daemon's engine when ``[engine] process`` is on."""
    return ProcessEngine(spec).start()


# --- the child --------------------------------------------------------------------------------


def error_kind(error: BaseException) -> str:
    """The ``ERRORS`` key that carries ``error`` across the pipe: the first class (in the
    table's order, subclasses first) it is an instance of."""
    if is_out_of_memory(error):
        return "out_of_memory"
    return next((k for k, cls in ERRORS.items() if isinstance(error, cls)), "internal")


class _PipeLog(logging.Handler):
    """The child's log records, sent to the daemon to be logged there."""

    def __init__(self, send: Any) -> None:
        super().__init__()
        self.send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.send(("log", record.levelno, record.name, record.getMessage()))
        except Exception:  # noqa: BLE001 - the daemon is gone: nothing to log to
            pass


def _log_levels() -> dict[str, int]:
    """The daemon's log levels (root and ours), for the child to filter as the daemon does."""
    return {name: logging.getLogger(name).getEffectiveLevel() for name in ("", "latentloop_daemon")}


def child_entry() -> None:
    """``python -c``: the key from stdin, the port to stdout, one authenticated connection."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon stops us: a terminal's Ctrl+C
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # or a service manager's group signal must
    # not end a render the daemon is cancelling
    _die_with_parent()
    key = bytes.fromhex(sys.stdin.readline().strip())
    with Listener(("127.0.0.1", 0), authkey=key) as listener:
        listener._listener._socket.settimeout(_ACCEPT_S)  # type: ignore[attr-defined]
        print(listener.address[1], flush=True)
        sys.stdout.close()
        try:
            conn = listener.accept()
        except (OSError, AuthenticationError):  # timed out (the daemon is gone), or a peer
            # without the key: either way this child serves no one
            return
    message = conn.recv()
    if message[0] == "load":
        child_main(conn, message[1], message[2])


def child_main(conn: Any, spec: EngineSpec, log_levels: dict[str, int]) -> None:
    """The child process: load the model, then serve renders until ``close`` or EOF."""
    lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with lock:
            conn.send(message)

    root = logging.getLogger()
    root.handlers[:] = [_PipeLog(send)]
    for name, level in log_levels.items():
        logging.getLogger(name).setLevel(level)
    try:
        from latentloop_daemon.backends import load_engine

        engine = load_engine(
            spec.model, backend=spec.backend, device=spec.device, precision=spec.precision,
            offline=spec.offline, options=spec.options,
        )  # fmt: skip
        cap_torch_threads(spec.max_threads)
    except BaseException as e:  # noqa: BLE001 - reported to the daemon, which exits 3
        kind = "load" if not isinstance(e, KeyboardInterrupt) else "internal"
        send(("error", kind, str(e) if isinstance(e, ModelLoadError) else _describe(e)))
        return
    send(("ready", engine.capabilities))
    try:
        _serve(conn, send, engine)
    finally:
        engine.close()


def _serve(conn: Any, send: Any, engine: Engine) -> None:
    cancelled = False

    def should_cancel() -> bool:
        nonlocal cancelled
        while not cancelled and conn.poll():
            try:
                message = conn.recv()
            except EOFError:  # the daemon is gone
                sys.exit(0)
            cancelled = message[0] in ("cancel", "close")
        return cancelled

    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message[0] == "close":
            return
        if message[0] != "render":
            continue
        cancelled = False
        try:
            result = engine.render(
                message[1],
                on_step=lambda step, total, fraction: send(("step", step, total, fraction)),
                should_cancel=should_cancel,
            )
        except BaseException as e:  # noqa: BLE001 - every outcome goes back to the daemon
            send(("error", error_kind(e), _describe(e)))
            continue
        send(("result", dataclasses.replace(result, settings=_plain(result.settings))))


def cap_torch_threads(max_threads: int) -> None:
    """At most ``max_threads`` torch threads in this process, if torch is loaded (0: no cap).
    Playback on: ``cores - 1``, leaving a core to the daemon's audio callback."""
    torch = sys.modules.get("torch")
    if max_threads > 0 and torch is not None and torch.get_num_threads() > max_threads:
        torch.set_num_threads(max_threads)
        logger.info("render threads: %d (one core left to playback)", max_threads)


def _plain(value: Any) -> Any:
    """``value`` as built-in types only, so unpickling it in the daemon imports nothing (the
    settings carry e.g. ``torch.__version__``, a ``str`` subclass that would import torch)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def _describe(error: BaseException) -> str:
    if isinstance(error, RenderError | ValueError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when the daemon dies (even by SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the daemon died before prctl took effect
            os._exit(0)
    except (OSError, AttributeError):
        pass
