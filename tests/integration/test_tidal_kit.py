"""The TidalCycles kit (plugin_stub/tidal): the Haskell side can't run here (no GHC/Tidal), so its
OSC shape is read from the kit's own ``BootTidal-latentloop.hs`` (parsed, not retyped), the
message a Tidal pattern would send is encoded the way Tidal does (a bundle timetagged at the
event, ``ArgList`` values in order: ``pF`` -> float32 ``f``, ``pS`` -> ``s``), and checked
against the bridge's parser and then the real daemon. The SuperDirt side
(``superdirt-latentloop.scd``) runs in headless sclang with only ``~dirt`` stubbed: it
subscribes to the daemon's replies and loads each ``/done`` file under the documented names.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message_builder import OscMessageBuilder
from tests.integration.test_hosts import loop_frames
from tests.integration.test_sc_kit import (
    check_loop,
    lines,
    sclang_command,
    sclang_env,
    sclang_script,
    sclang_tool,  # noqa: F401  (fixture)
)

from latentloop_bridge.protocol import RenderCommand, parse_message, parse_packet

REPO = Path(__file__).resolve().parents[2]
KIT = REPO / "plugin_stub" / "tidal"
BOOT = KIT / "BootTidal-latentloop.hs"
SNIPPET = KIT / "superdirt-latentloop.scd"

# Tidal's Value constructors and param functions -> OSC type tags (Sound.Tidal's toDatum:
# VF -> float, VS -> string, VI -> int32)
VALUE_TAGS = {"F": "f", "S": "s", "I": "i"}


@dataclass
class TidalKit:
    address: str
    args: list[tuple[str, tuple[str, object] | None]]  # (name, (tag, default) | None)
    params: dict[str, str]  # name -> tag
    host: str
    port: int
    schedule: str
    latency: float
    beats_per_cycle: float
    example: str  # the d8 example line


def group(pattern: str, text: str, index: int = 1) -> str:
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in {text!r}"
    return m[index]


def read_kit() -> TidalKit:
    text = BOOT.read_text()
    shape = re.search(r'OSC "(/[^"]+)" \$ ArgList \[(.*)\]', text)
    assert shape, "no OSC ... $ ArgList [...] shape in " + str(BOOT)
    args: list[tuple[str, tuple[str, object] | None]] = []
    for name, default in re.findall(r'\("(\w+)", (Nothing|Just \$ V[FSI] [^)]+)\)', shape[2]):
        if default == "Nothing":
            args.append((name, None))
        else:
            kind, raw = group(r"V([FSI]) ", default), group(r"V[FSI] (.+)", default)
            value = float(raw) if kind == "F" else int(raw) if kind == "I" else raw.strip('"')
            args.append((name, (VALUE_TAGS[kind], value)))
    assert len(args) == shape[2].count("("), shape[2]
    params = {n: VALUE_TAGS[k] for _, k, n in re.findall(r'(\w+) = p([FSI]) "(\w+)"', text)}

    def field(name: str) -> str:
        m = re.search(rf"\b{name} = ([^,}}\n]+)", text)
        assert m, name
        return m[1].strip()

    example = next(line for line in text.splitlines() if line.startswith("-- d8 "))
    return TidalKit(
        address=shape[1], args=args, params=params, host=field("oAddress").strip('"'),
        port=int(field("oPort")), schedule=field("oSchedule"), latency=float(field("oLatency")),
        beats_per_cycle=float(field("beatsPerCycle").split("::")[0]), example=example,
    )  # fmt: skip


def tidal_message(kit: TidalKit, event: dict[str, object]) -> list[tuple[str, object]] | None:
    """What Tidal's ``toData`` does with an ``ArgList`` shape: each name's value from the event,
    else its default; a missing value without a default means nothing is sent. Returns
    ``(tag, value)`` per argument."""
    tagged: list[tuple[str, object]] = []
    for name, default in kit.args:
        if name in event:
            tagged.append((kit.params[name], event[name]))
        elif default is not None:
            tagged.append(default)
        else:
            return None
    return tagged


def tidal_bundle(kit: TidalKit, event: dict[str, object], at_unix: float) -> bytes:
    """``Pre BundleStamp``: one message in a bundle timetagged at the event's time."""
    tagged = tidal_message(kit, event)
    assert tagged is not None
    builder = OscMessageBuilder(kit.address)
    for tag, value in tagged:
        builder.add_arg(value, tag)
    bundle = OscBundleBuilder(at_unix)
    bundle.add_content(builder.build())
    return bundle.build().dgram


def example_event(kit: TidalKit) -> dict[str, object]:
    """The kit's own ``d8`` example, as the event it makes: the first prompt, its BPM from the
    cps with the kit's ``cpsToBpm`` rule, its bars."""
    prompts = re.findall(r'pure "([^"]+)"', kit.example)
    cps = float(group(r"cpsToBpm ([\d.]+)", kit.example))
    bars = float(group(r"# llbars ([\d.]+)", kit.example))
    return {"llprompt": prompts[0], "llbpm": cps * 60 * kit.beats_per_cycle, "llbars": bars}


def test_tidal_shape_parses_to_the_intended_render():
    """The kit's target points at the daemon (127.0.0.1:7878, bundles stamped ahead), and the
    message its example pattern sends (0.5 cps at 4 beats per cycle = 120 BPM, 8 bars) parses
    in the bridge to the positional render: daemon-assigned id, that prompt, BPM and bars. An
    event without ``llbars`` takes the shape's default; one without ``llprompt`` (a SuperDirt
    ``s "bd"``) sends nothing to latentloop."""
    kit = read_kit()
    assert (kit.host, kit.port) == ("127.0.0.1", 7878)
    assert (kit.schedule, kit.address) == ("Pre BundleStamp", "/latentloop/render")
    assert [name for name, _ in kit.args] == ["llbpm", "llbars", "llprompt"]
    assert kit.params == {"llbpm": "f", "llbars": "f", "llprompt": "s"}
    assert kit.beats_per_cycle == 4

    event = example_event(kit)
    assert event == {"llprompt": "dusty boom bap drums", "llbpm": 120.0, "llbars": 8.0}
    at = time.time() + kit.latency
    (timed,) = parse_packet(tidal_bundle(kit, event, at))
    assert timed.timetag_unix == pytest.approx(at, abs=1e-6)
    assert parse_message(timed.address, timed.args) == RenderCommand(
        client_id=None, prompt="dusty boom bap drums", bpm=120.0, bars=8.0
    )
    (timed,) = parse_packet(tidal_bundle(kit, {"llprompt": "dub chords", "llbpm": 93.0}, at))
    assert parse_message(timed.address, timed.args) == RenderCommand(
        client_id=None, prompt="dub chords", bpm=93.0, bars=4.0
    )
    assert tidal_message(kit, {"s": "bd", "llbpm": 120.0}) is None
    print("Tidal: example pattern -> render bpm 120 bars 8 'dusty boom bap drums' (bundle)")


SUPERDIRT_SCRIPT = """
var calls = 0;
~latentloopPort = @PORT@;
// the only stub: a ~dirt that records loadSoundFile(path, name, appendToExisting)
~dirt = (loadSoundFile: { |self, path, name, append|
    var sf = SoundFile.openRead(path);
    "DIRT_LOAD name=% append=% frames=% path=%".format(name, append, sf.numFrames, path).postln;
    sf.close;
    calls = calls + 1;
    if(calls == 4) { 0.exit };
});
thisProcess.interpreter.executeFile("@SNIPPET@");
~latentloop.onReply = { |reply|
    if(reply[\\reply] == 'notify.reply') {
        "LL_SUBSCRIBED on=% port=%".format(reply[\\args][0], reply[\\args][1]).postln;
        NetAddr("127.0.0.1", @READY@).sendMsg('/ready');
    };
};
"""


def test_superdirt_side_loads_tidal_renders_by_name(sclang_tool, daemon_factory, tmp_path):  # noqa: F811
    """sclang runs the kit's ``superdirt-latentloop.scd`` (``~dirt`` stubbed): it subscribes
    (``/latentloop/notify``); two renders then arrive as Tidal sends them (bundles from another
    socket, built from the kit's shape: the example's prompt and one more, bars from the
    shape's default), and each ``/done`` is loaded with ``~dirt.loadSoundFile`` appended under
    ``ll`` and ``ll_<prompt>`` (the documented rule)."""
    daemon = daemon_factory("--no-warmup", standin=True)
    port = daemon.wait_ready()
    kit = read_kit()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ready:
        ready.bind(("127.0.0.1", 0))
        ready.settimeout(40)
        script = (
            SUPERDIRT_SCRIPT.replace("@PORT@", str(port))
            .replace("@SNIPPET@", str(SNIPPET))
            .replace("@READY@", str(ready.getsockname()[1]))
        )
        cmd = sclang_command(tmp_path, sclang_script(script))
        proc = subprocess.Popen(
            cmd, env=sclang_env(tmp_path), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            try:
                ready.recvfrom(1024)  # sclang's kit is subscribed
            except TimeoutError:
                proc.kill()
                raise AssertionError("sclang never subscribed:\n" + proc.communicate()[0]) from None
            prompts = [example_event(kit)["llprompt"], "dub chords"]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tidal:
                for prompt in prompts:
                    event = {"llprompt": prompt, "llbpm": 120.0}  # llbars: the shape's default 4
                    tidal.sendto(
                        tidal_bundle(kit, event, time.time() + kit.latency), ("127.0.0.1", port)
                    )
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, out
    assert lines(out, "LL_SUBSCRIBED")[0]["on"] == "1", out
    loads = lines(out, "DIRT_LOAD")
    assert len(loads) == 4, out
    frames = loop_frames(120, 4)
    by_file: dict[str, list[str]] = {}
    for load in loads:
        assert load["append"] == "true" and load["frames"] == str(frames), load
        by_file.setdefault(load["path"], []).append(load["name"])
    assert sorted(by_file.values()) == [
        ["ll", "ll_dub_chords"], ["ll", "ll_dusty_boom_bap_drums"]
    ], out  # fmt: skip
    for path in by_file:
        check_loop(path, frames)
        assert Path(path).parent.resolve() == Path(daemon.out_dir).resolve()
    for prompt in prompts:
        assert f"started: '{prompt}'" in daemon.log
    print("SuperDirt side: 2 Tidal-shaped renders -> loadSoundFile as ll + ll_<prompt>")
