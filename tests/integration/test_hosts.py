"""Real OSC hosts against a real daemon: Pure Data (vanilla, headless) and liblo's oscsend/oscdump.

Nothing on the sending side is Python: Pd builds its packets with ``[oscformat]`` (Pd's own type
tags: floats and one symbol per word, or ``-f`` typed), liblo with its own encoder. Replies are
read the way the host reads them: ``[oscparse]`` in Pd, ``oscdump`` for liblo.

Two daemons serve the whole module (started together, so their model loads overlap):

- ``tiny`` (canonical requests, ``steps`` 2): reached by Pd's typed ``[oscformat -f ...]`` with the
  replies read from ``[netsend]``'s own port, and by ``oscsend`` with a ``/notify`` subscription;
- ``tiny-rf`` (positional requests, which cannot pass ``steps``: this model's own default is 8
  sampler steps where ``tiny`` has 100), started with ``--reply-target``: reached by the
  ``plugin_stub/pd`` kit (``[latentloop]``, subscribed reply port) and by ``oscsend`` with the
  replies read at the fixed target.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

# the root conftest is registered as ``tests.conftest`` (pytest's importlib mode)
from tests.conftest import DaemonProcess, require_tool

REPO = Path(__file__).resolve().parents[2]
KIT = REPO / "plugin_stub" / "pd"
SR = 44100
PD_TIMEOUT_MS = 45_000  # the patches quit by themselves after this, done or not
PD_ARGS = ["-nogui", "-nosound", "-nomidi", "-noprefs", "-stderr"]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loop_frames(bpm: float, bars: float, beats_per_bar: int = 4) -> int:
    return round(bars * beats_per_bar * 60 * SR / bpm)


def check_audio(path: str, frames: int) -> None:
    """The file exists, has exactly ``frames`` frames at 44.1 kHz, and holds finite, non-silent
    audio."""
    assert Path(path).is_file(), path
    info = sf.info(path)
    assert (info.samplerate, info.frames) == (SR, frames), info
    audio, _ = sf.read(path, dtype="float32", always_2d=True)
    assert audio.shape[0] == frames
    assert np.isfinite(audio).all()
    assert float(np.abs(audio).max()) > 0.0


# --------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pd_tool() -> str:
    return require_tool("pd")


@pytest.fixture(scope="module")
def liblo_tools() -> None:
    require_tool("oscsend")
    require_tool("oscdump")


@pytest.fixture(scope="module")
def daemons(tmp_path_factory):
    base = tmp_path_factory.mktemp("hosts")
    target = free_udp_port()  # the rf daemon's fixed reply target (oscdump listens there)
    started: list[DaemonProcess] = []
    try:
        tiny = DaemonProcess(base / "tiny", "--no-warmup")
        started.append(tiny)
        rf = DaemonProcess(
            base / "rf", "--no-warmup", "--reply-target", f"127.0.0.1:{target}", model="tiny-rf"
        )
        started.append(rf)
        tiny.wait_ready()
        rf.wait_ready()
        yield SimpleNamespace(tiny=tiny, rf=rf, target=target)
    finally:
        for d in started:
            try:
                d.stop()
            finally:
                if d.proc.poll() is None:
                    d.proc.kill()
                    d.proc.wait()


# ------------------------------------------------------------------------------- Pure Data helpers


class Patch:
    """A Pd patch file built from boxes named in Python (connections by name, not index)."""

    def __init__(self) -> None:
        self.lines = ["#N canvas 0 50 900 600 12;"]
        self.index: dict[str, int] = {}
        self.connections: list[str] = []

    def _box(self, kind: str, name: str, text: str) -> None:
        n = len(self.index)
        self.index[name] = n
        self.lines.append(f"#X {kind} {20 + 40 * (n % 20)} {20 + 25 * n} {text};")

    def obj(self, name: str, text: str) -> None:
        self._box("obj", name, text)

    def msg(self, name: str, text: str) -> None:
        self._box("msg", name, text)

    def wire(self, src: str, dst: str, outlet: int = 0, inlet: int = 0) -> None:
        self.connections.append(f"#X connect {self.index[src]} {outlet} {self.index[dst]} {inlet};")

    def quit_after(self, trigger: str, outlet: int = 0, delay_ms: int = 100) -> None:
        """``trigger`` (a bang) quits Pd ``delay_ms`` later; also a global timeout."""
        if "quit" not in self.index:
            self.msg("quit", "\\; pd quit")
            self.obj("timeout_lb", "loadbang")
            self.obj("timeout", f"delay {PD_TIMEOUT_MS}")
            self.obj("timeout_t", "t b b")
            self.obj("timeout_print", "print timeout")
            self.wire("timeout_lb", "timeout")
            self.wire("timeout", "timeout_t")
            self.wire("timeout_t", "timeout_print", 1)
            self.wire("timeout_t", "quit", 0)
        name = f"quit_delay_{len(self.index)}"
        self.obj(name, f"delay {delay_ms}")
        self.wire(trigger, name, outlet)
        self.wire(name, "quit")

    def write(self, path: Path) -> Path:
        path.write_text("\n".join(self.lines + self.connections) + "\n")
        return path


def run_pd(*patches: Path, timeout: float = 60.0) -> str:
    """Run Pd headless on the patches with the kit on its path; return what Pd printed."""
    cmd = ["pd", *PD_ARGS, "-path", str(KIT)]
    for patch in patches:
        cmd += ["-open", str(patch)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "couldn't create" not in out, out
    assert "timeout: bang" not in out, "Pd timed out:\n" + out
    return out


def pd_lines(out: str, label: str) -> list[str]:
    """The values that ``[print label]`` printed, with Pd's ``\\ `` escapes undone."""
    found = []
    for line in out.splitlines():
        if line.startswith(label + ": "):
            found.append(line[len(label) + 2 :].replace("\\ ", " "))
    return found


def pd_symbol(value: str) -> str:
    """``symbol x`` / ``list x`` / ``x`` -> ``x`` (how [print] shows a one-symbol message)."""
    return re.sub(r"^(symbol|list) ", "", value)


def print_id_and_path(p: Patch, source: str, outlet: int, prefix: str) -> None:
    """From ``<id> <path> ...`` print the id exactly (%d: [print] would show 1000001 as 1e+06) and
    the path."""
    p.obj(f"{prefix}_split", "list split 1")
    p.obj(f"{prefix}_id", "makefilename %d")
    p.obj(f"{prefix}_id_print", f"print {prefix}-id")
    p.obj(f"{prefix}_rest", "list split 1")
    p.obj(f"{prefix}_path_print", f"print {prefix}-path")
    p.wire(source, f"{prefix}_split", outlet)
    p.wire(f"{prefix}_split", f"{prefix}_id", 0)
    p.wire(f"{prefix}_id", f"{prefix}_id_print")
    p.wire(f"{prefix}_split", f"{prefix}_rest", 1)
    p.wire(f"{prefix}_rest", f"{prefix}_path_print", 0)


# ----------------------------------------------------------------------------------- liblo helpers


class OscDump:
    """``oscdump -L PORT`` in the background; its lines are collected as they arrive."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            ["oscdump", "-L", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()
        self._wait_bound()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def _wait_bound(self, timeout: float = 5.0) -> None:
        """Until oscdump holds the port (our own bind on it fails)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "oscdump exited:\n" + "\n".join(self.lines)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind(("127.0.0.1", self.port))
                except OSError:
                    return
            time.sleep(0.02)
        raise AssertionError(f"oscdump did not bind port {self.port}")

    def messages(self) -> list[tuple[str, str, str]]:
        """``(address, types, args)`` per line (the first field is the timetag)."""
        out = []
        for line in list(self.lines):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1].startswith("/"):
                out.append((parts[1], parts[2], parts[3] if len(parts) > 3 else ""))
        return out

    def wait_for(self, address: str, args_prefix: str = "", timeout: float = 40.0):
        """The first message at ``address`` whose arguments start with ``args_prefix``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self.messages():
                    if m[0] == address and m[2].startswith(args_prefix):
                        return m
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(
                        f"no {address} {args_prefix!r} at oscdump:\n" + "\n".join(self.lines)
                    )
                self._cond.wait(min(left, 0.5))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._pump.join(5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture
def oscdump():
    dumps: list[OscDump] = []

    def start(port: int) -> OscDump:
        d = OscDump(port)
        dumps.append(d)
        return d

    yield start
    for d in dumps:
        d.close()


def oscsend(port: int, address: str, types: str, *values: object) -> None:
    r = subprocess.run(
        ["oscsend", "localhost", str(port), address, types, *map(str, values)],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    assert r.returncode == 0 and "Failed" not in r.stderr + r.stdout, r.stderr + r.stdout


# done's first 7 arguments (protocol v1 may append more: clients read the first N)
DONE_ARGS = re.compile(r'^(-?\d+) "([^"]+)" (\S+) (\S+) (\S+) "(\d+)" (\d+)( |$)')


# ---------------------------------------------------------------------------------- Pd: wire level


def test_pd_type_tags_on_the_wire(pd_tool, liblo_tools, oscdump, tmp_path):
    """What vanilla Pd actually sends, read by oscdump standing in for the daemon: the kit
    subscribes its reply port on load, its positional render is ,ffsss (floats and one symbol
    per word), a bare ``cancel`` is -1 (all), ``disconnect``/``connect`` unsubscribe and
    subscribe again, and ``[oscformat -f isssfsfsisi ...]`` gives the canonical typed render."""
    dump = oscdump(free_udp_port())
    reply_port = free_udp_port()
    p = Patch()
    p.obj("ll", f"latentloop 127.0.0.1 {dump.port} {reply_port}")
    p.obj("lb", "loadbang")
    p.obj("seq", "t b b b b b b b b b")
    p.msg("render", "render 120 1 dusty boom bap")
    p.msg("cancel", "cancel 1000001")
    p.msg("cancel_all", "cancel")
    p.msg("ping", "ping")
    p.msg("status", "status 6")
    p.msg("osc", "osc render 9 prompt pads bpm 120 bars 8 seed \\12345678901 steps 8")
    p.msg("disconnect", "disconnect")
    p.msg("reconnect", "connect")
    p.msg("connect", f"connect 127.0.0.1 {dump.port}")
    p.msg("typed", "7 prompt dusty\\ boom\\ bap bpm 93 bars 2 steps 2 seed 1234")
    p.obj("fmt", "oscformat -f isssfsfsisi latentloop render")
    p.obj("prep", "list prepend send")
    p.obj("trim", "list trim")
    p.obj("net", "netsend -u -b")
    p.obj("first", "t b b")
    p.wire("lb", "first")
    p.wire("first", "connect", 1)
    p.wire("first", "seq", 0)
    kit_boxes = "render cancel cancel_all ping status osc disconnect reconnect".split()
    for i, box in enumerate([*kit_boxes, "typed"]):
        p.wire("seq", box, 8 - i)  # [t] fires right to left: render first
    for box in kit_boxes:
        p.wire(box, "ll")
    p.wire("connect", "net")
    p.wire("typed", "fmt")
    p.wire("fmt", "prep")
    p.wire("prep", "trim")
    p.wire("trim", "net")
    p.quit_after("seq", 0, delay_ms=300)
    run_pd(p.write(tmp_path / "tags.pd"))
    dump.wait_for("/latentloop/render", "7 ")
    assert dump.messages() == [
        ("/latentloop/notify", "ff", f"1.000000 {reply_port}.000000"),
        ("/latentloop/render", "ffsss", '120.000000 1.000000 "dusty" "boom" "bap"'),
        ("/latentloop/cancel", "f", "1000001.000000"),
        ("/latentloop/cancel", "f", "-1.000000"),
        ("/latentloop/ping", "", ""),
        ("/latentloop/status", "f", "6.000000"),
        ("/latentloop/render", "fsssfsfsssf",
         '9.000000 "prompt" "pads" "bpm" 120.000000 "bars" 8.000000 "seed" "12345678901" '
         '"steps" 8.000000'),
        ("/latentloop/notify", "ff", f"0.000000 {reply_port}.000000"),  # disconnect
        ("/latentloop/notify", "ff", f"1.000000 {reply_port}.000000"),  # connect again
        ("/latentloop/render", "isssfsfsisi",
         '7 "prompt" "dusty boom bap" "bpm" 93.000000 "bars" 2.000000 "steps" 2 "seed" 1234'),
    ]  # fmt: skip


# ------------------------------------------------------------------------ Pd against the daemon


def test_pd_kit_positional_render(pd_tool, daemons, tmp_path):
    """Scenario a: ``[latentloop 127.0.0.1 PORT REPLY]`` from plugin_stub/pd, a message box
    ``render 120 1 dusty boom bap`` (Pd's defaults: ,ffsss). The kit subscribes its reply port
    (/notify 1 REPLY) and reads replies there and at [netsend]'s port, each exactly once."""
    daemon = daemons.rf
    reply_port = free_udp_port()
    p = Patch()
    p.obj("ll", f"latentloop 127.0.0.1 {daemon.port} {reply_port}")
    p.obj("print", "print reply")
    p.obj("lb", "loadbang")
    p.obj("seq", "t b b b b")
    p.msg("ping", "ping 5")
    p.msg("status", "status 6")
    p.msg("cancel", "cancel 12345")
    p.msg("render", "render 120 1 dusty boom bap")
    p.obj("route", "route queued done fail")
    p.obj("not_cancel", "route 12345")
    p.obj("fail_t", "t b")
    p.obj("done_t", "t b l")
    p.wire("lb", "seq")
    for i, box in enumerate(["render", "cancel", "status", "ping"]):
        p.wire("seq", box, i)
        p.wire(box, "ll")
    p.wire("ll", "print")
    p.wire("ll", "route")
    print_id_and_path(p, "route", 0, "queued")
    p.wire("route", "done_t", 1)
    print_id_and_path(p, "done_t", 1, "done")
    p.quit_after("done_t", 0)
    p.wire("route", "not_cancel", 2)  # a fail other than the expected not_found quits at once
    p.wire("not_cancel", "fail_t", 1)
    p.quit_after("fail_t", 0, delay_ms=0)
    out = run_pd(p.write(tmp_path / "kit_positional.pd"))

    replies = pd_lines(out, "reply")
    by_kind: dict[str, list[str]] = {}
    for r in replies:
        by_kind.setdefault(r.split(" ", 1)[0], []).append(r)
    assert by_kind["notify.reply"] == [f"notify.reply -1 1 {reply_port}"], out
    assert by_kind["pong"] == ["pong 5 1"], out
    assert len(by_kind["status.reply"]) == 1
    assert by_kind["status.reply"][0].startswith("status.reply 6 ready "), out
    assert by_kind["fail"] == [
        "fail 12345 cancel not_found no queued or running job with id 12345 from this sender"
    ], out
    assert len(by_kind["queued"]) == 1 and len(by_kind["done"]) == 1, out

    # the daemon assigned the id; Pd holds it exactly (< 2^24) and gets it in queued and done
    (queued_id,) = map(pd_symbol, pd_lines(out, "queued-id"))
    (done_id,) = map(pd_symbol, pd_lines(out, "done-id"))
    (path,) = map(pd_symbol, pd_lines(out, "done-path"))
    assert queued_id == done_id
    assert 100_000 <= int(done_id) < 1_000_000  # six digits: Pd shows them exactly
    assert f"(id {done_id} from 127.0.0.1:" in daemon.log
    assert re.search(rf"\(id {done_id} from [^)]*\) started: 'dusty boom bap'", daemon.log)
    assert by_kind["progress"][-1].endswith(" 8 8 1"), out  # tiny-rf: 8 steps, last always sent
    # done <id> <path> <seconds> <bpm> <bars> <seed> <variation> (v1 may append more);
    done = by_kind["done"][0].split(" ")
    assert done[2] == path and done[3:6] == ["2", "120", "1"] and done[7] == "0", out
    assert done[6].isdigit()
    assert Path(path).parent.resolve() == Path(daemon.out_dir).resolve()
    check_audio(path, loop_frames(120, 1))


def test_pd_typed_canonical_render(pd_tool, daemons, tmp_path):
    """Scenario b: ``[oscformat -f isssfsfsisi latentloop render]`` with
    ``7 prompt dusty\\ boom\\ bap bpm 93 bars 2 steps 2 seed 1234`` (id, steps and seed as int32,
    bpm and bars as float32, the prompt one escaped symbol). Replies come back to [netsend]'s
    own port (reply to sender, no subscription) and are read with [oscparse]."""
    daemon = daemons.tiny
    p = Patch()
    p.obj("lb", "loadbang")
    p.obj("seq", "t b b")
    p.msg("connect", f"connect 127.0.0.1 {daemon.port}")
    p.msg("typed", "7 prompt dusty\\ boom\\ bap bpm 93 bars 2 steps 2 seed 1234")
    p.obj("fmt", "oscformat -f isssfsfsisi latentloop render")
    p.obj("prep", "list prepend send")
    p.obj("trim", "list trim")
    p.obj("net", "netsend -u -b")
    p.obj("parse", "oscparse")
    p.obj("rtrim", "list trim")
    p.obj("ours", "route latentloop")
    p.obj("print", "print reply")
    p.obj("route", "route done fail")
    p.obj("done_t", "t b l")
    p.obj("fail_t", "t b")
    p.wire("lb", "seq")
    p.wire("seq", "connect", 1)
    p.wire("seq", "typed", 0)
    p.wire("connect", "net")
    p.wire("typed", "fmt")
    p.wire("fmt", "prep")
    p.wire("prep", "trim")
    p.wire("trim", "net")
    p.wire("net", "parse", 1)
    p.wire("parse", "rtrim")
    p.wire("rtrim", "ours")
    p.wire("ours", "print")
    p.wire("ours", "route")
    p.wire("route", "done_t", 0)
    print_id_and_path(p, "done_t", 1, "done")
    p.quit_after("done_t", 0)
    p.wire("route", "fail_t", 1)
    p.quit_after("fail_t", 0, delay_ms=0)
    out = run_pd(p.write(tmp_path / "typed_canonical.pd"))

    replies = pd_lines(out, "reply")
    assert replies[0] == "queued 7 0", out
    assert all(r.startswith("progress 7 ") for r in replies[1:-1]), out
    assert replies[-2] == "progress 7 2 2 1", out
    (path,) = map(pd_symbol, pd_lines(out, "done-path"))
    assert replies[-1].split(" ")[:8] == ["done", "7", path, "5.16129", "93", "2", "1234", "0"], out
    assert pd_lines(out, "done-id") == ["symbol 7"]
    assert "'dusty boom bap'" in daemon.log
    check_audio(path, loop_frames(93, 2))


def test_pd_help_patch_loads(pd_tool, tmp_path):
    """The kit is vanilla: the help patch and the abstractions instantiate in this Pd with no
    error (run on free ports, so it talks to nobody)."""
    for name in ["latentloop.pd", "latentloop-loop.pd", "latentloop-help.pd"]:
        shutil.copy(KIT / name, tmp_path / name)
    help_patch = tmp_path / "latentloop-help.pd"
    text = help_patch.read_text()
    assert "latentloop 127.0.0.1 7878 9011" in text
    help_patch.write_text(text.replace("7878 9011", f"{free_udp_port()} {free_udp_port()}"))
    p = Patch()
    p.obj("lb", "loadbang")
    p.quit_after("lb", 0, delay_ms=300)
    out = run_pd(help_patch, p.write(tmp_path / "quit.pd"))
    assert "error" not in out.lower(), out


# ------------------------------------------------------------------------------------------ liblo


def test_liblo_canonical_with_notify(liblo_tools, daemons, oscdump):
    """oscsend (liblo's encoder) sends the canonical form with its own types: id i, bpm i,
    bars d, steps i, seed as a string. oscdump listens on a port subscribed with
    ``/latentloop/notify ii 1 PORT`` (also sent by oscsend) and sees queued, progress and done."""
    daemon = daemons.tiny
    dump = oscdump(free_udp_port())
    oscsend(daemon.port, "/latentloop/notify", "ii", 1, dump.port)
    assert dump.wait_for("/latentloop/notify.reply")[1:] == ("iii", f"-1 1 {dump.port}")
    oscsend(
        daemon.port, "/latentloop/render", "isssisdsiss",
        4242, "prompt", "liblo canonical groove", "bpm", 97, "bars", 1.5, "steps", 2, "seed", "99",
    )  # fmt: skip
    assert dump.wait_for("/latentloop/queued", "4242 ")[1:] == ("ii", "4242 0")
    _, types, args = dump.wait_for("/latentloop/done", "4242 ")
    assert types[:7] == "isfffsi" and set(types[7:]) <= set("ifs")
    m = DONE_ARGS.match(args)
    assert m, args
    assert m.group(4, 5, 6, 7) == ("97.000000", "1.500000", "99", "0")
    assert "liblo-canonical-groove" in m.group(2)
    progress = [a for addr, _, a in dump.messages() if addr == "/latentloop/progress"]
    assert progress and progress[-1] == "4242 2 2 1.000000"
    check_audio(m.group(2), loop_frames(97, 1.5))
    oscsend(daemon.port, "/latentloop/notify", "ii", 0, dump.port)
    assert dump.wait_for("/latentloop/notify.reply", "-1 0 ")[2] == f"-1 0 {dump.port}"


def test_liblo_positional_and_invalid_at_fixed_target(liblo_tools, daemons, oscdump):
    """Positional ``ffsss`` from oscsend gets a daemon-assigned id, the same in queued and done;
    a wrong type (bpm "fast") is answered with fail ... invalid. oscdump listens on the
    daemon's fixed ``--reply-target`` (oscsend's own socket is gone by the time replies come)."""
    daemon = daemons.rf
    dump = oscdump(daemons.target)
    oscsend(daemon.port, "/latentloop/ping", "i", 5)
    assert dump.wait_for("/latentloop/pong", "5 ")[1:] == ("ii", "5 1")
    oscsend(daemon.port, "/latentloop/render", "issss", 8, "prompt", "x", "bpm", "fast")
    fail = dump.wait_for("/latentloop/fail", "8 ")
    assert fail[1:] == ("isss", '8 "render" "invalid" "bpm must be a number, got string \'fast\'"')
    oscsend(daemon.port, "/latentloop/render", "ffsss", 120.0, 2, "liblo", "positional", "beat")
    _, types, args = dump.wait_for("/latentloop/queued")
    assert types == "ii"
    assigned = int(args.split()[0])
    assert 100_000 <= assigned < 1_000_000
    _, types, args = dump.wait_for("/latentloop/done", f"{assigned} ")
    assert types[:7] == "isfffsi" and set(types[7:]) <= set("ifs")  # Pd and Max read only i f s
    m = DONE_ARGS.match(args)
    assert m, args
    assert m.group(4, 5, 7) == ("120.000000", "2.000000", "0")
    assert "liblo-positional-beat" in m.group(2)
    assert f"(id {assigned} from 127.0.0.1:" in daemon.log
    check_audio(m.group(2), loop_frames(120, 2))
