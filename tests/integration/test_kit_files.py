"""The host kits that cannot run here (Max, Max for Live, Sonic Pi, REAPER), checked from their
own files.

- Max: ``plugin_stub/max/latentloop.maxpat`` is loaded as JSON and its structure checked (boxes,
  connections, ports, addresses). The exact text of each message box is encoded the way Max
  sends it (ints ``i``, floats ``f``, symbols ``s``) and parsed by our bridge.
- Max for Live: ``latentloop_clip.js`` runs under Node with a stand-in ``LiveAPI``.
- Sonic Pi: the ``osc`` lines of ``latentloop.rb`` are read from the Ruby text, encoded as
  Sonic Pi does (Integer ``i``, Float ``f``, String/Symbol ``s``) and parsed.
- REAPER: ``latentloop_render.py`` is imported with a stand-in for REAPER's ``RPR_`` API only;
  its send/poll loop runs against a real daemon (stand-in engine), driven by executing what it
  passes to ``RPR_defer``, and the insert it asks REAPER for is checked.
"""

from __future__ import annotations

import importlib.util
import json
import re
import socket
import subprocess
import time
from collections import deque
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import soundfile as sf
from pythonosc.osc_message_builder import OscMessageBuilder
from tests.conftest import require_tool

from latentloop_bridge.commands import (
    AuthCommand,
    CancelCommand,
    Command,
    NotifyCommand,
    PingCommand,
    RenderCommand,
    StopCommand,
)
from latentloop_bridge.packets import parse_packet
from latentloop_bridge.protocol import (
    done_reply,
    encode_message,
    fail_reply,
    parse_message,
    progress_reply,
    queued_reply,
)
from latentloop_bridge.spec import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    DONE,
    FAIL,
    NOTIFY,
    PROGRESS,
    QUEUED,
    REPLY_ADDRESSES,
    REQUEST_ADDRESSES,
    SUGGESTED_REPLY_PORT,
)

REPO = Path(__file__).resolve().parents[2]
MAX_DIR = REPO / "plugin_stub" / "max"
SONIC_PI = REPO / "plugin_stub" / "sonic-pi" / "latentloop.rb"
REAPER = REPO / "plugin_stub" / "reaper" / "latentloop_render.py"
SR = 44100
SONIC_PI_PORT = 4560


def typed_datagram(address: str, args: list[Any]) -> bytes:
    """What a host that types int -> i, float -> f, str -> s sends (python-osc's encoder)."""
    builder = OscMessageBuilder(address)
    for value in args:
        tag = "i" if isinstance(value, int) else "f" if isinstance(value, float) else "s"
        builder.add_arg(value, tag)
    return builder.build().dgram


def parse_datagram(data: bytes) -> Command:
    (message,) = parse_packet(data)
    return parse_message(message.address, message.args)


def tags_of(data: bytes) -> str:
    (message,) = parse_packet(data)
    return "".join(
        "i" if isinstance(a, int) else "f" if isinstance(a, float) else "s" for a in message.args
    )


# ------------------------------------------------------------------------------------------- Max


def max_atoms(text: str) -> list[int | float | str]:
    """A Max message box's text as Max reads it: quoted text is one symbol, `92` an int, `92.`
    or `0.5` a float, anything else a symbol."""
    assert "," not in text and ";" not in text, f"one message per box expected: {text!r}"
    atoms: list[int | float | str] = []
    for m in re.finditer(r'"((?:[^"\\]|\\.)*)"|(\S+)', text):
        if m.group(1) is not None:
            atoms.append(re.sub(r"\\(.)", r"\1", m.group(1)))
        elif re.fullmatch(r"-?\d+", word := m.group(2)):
            atoms.append(int(word))
        elif re.fullmatch(r"-?(\d+\.\d*|\.\d+)([eE][-+]?\d+)?", word):
            atoms.append(float(word))
        else:
            atoms.append(word)
    return atoms


class MaxPatch:
    def __init__(self, path: Path) -> None:
        self.doc = json.loads(path.read_text(encoding="utf-8"))
        patcher = self.doc["patcher"]
        self.boxes = {b["box"]["id"]: b["box"] for b in patcher["boxes"]}
        assert len(self.boxes) == len(patcher["boxes"]), "duplicate box ids"
        self.lines = [
            (ln["patchline"]["source"], ln["patchline"]["destination"]) for ln in patcher["lines"]
        ]

    def objects(self, name: str) -> list[dict[str, Any]]:
        """The object boxes whose class (first word of the text) is `name`."""
        return [
            b for b in self.boxes.values()
            if b["maxclass"] == "newobj" and b["text"].split()[0] == name
        ]  # fmt: skip

    def one(self, name: str) -> dict[str, Any]:
        (box,) = self.objects(name)
        return box

    def messages(self) -> list[dict[str, Any]]:
        return [b for b in self.boxes.values() if b["maxclass"] == "message"]

    def sources(self, box_id: str, inlet: int | None = None) -> list[tuple[str, int]]:
        return [(s[0], s[1]) for s, d in self.lines if d[0] == box_id and inlet in (None, d[1])]

    def targets(self, box_id: str, outlet: int | None = None) -> list[tuple[str, int]]:
        return [(d[0], d[1]) for s, d in self.lines if s[0] == box_id and outlet in (None, s[1])]

    def reaches(self, start: str, goal: str) -> bool:
        seen, todo = {start}, deque([start])
        while todo:
            here = todo.popleft()
            if here == goal:
                return True
            for there, _ in self.targets(here):
                if there not in seen:
                    seen.add(there)
                    todo.append(there)
        return False


@pytest.fixture(scope="module")
def patch() -> MaxPatch:
    return MaxPatch(MAX_DIR / "latentloop.maxpat")


def test_max_patch_boxes_and_lines_are_consistent(patch: MaxPatch) -> None:
    assert patch.doc["patcher"]["boxes"] and patch.doc["patcher"]["lines"]
    for box in patch.boxes.values():
        assert {"id", "maxclass", "numinlets", "numoutlets", "patching_rect"} <= box.keys(), box
        assert len(box["patching_rect"]) == 4
        if box["numoutlets"]:
            assert len(box["outlettype"]) == box["numoutlets"], box
        if box["maxclass"] in ("newobj", "message", "comment"):
            assert box["text"].strip(), box
    for (src, outlet), (dst, inlet) in patch.lines:
        assert src in patch.boxes and dst in patch.boxes, (src, dst)
        assert 0 <= outlet < patch.boxes[src]["numoutlets"], (src, outlet)
        assert 0 <= inlet < patch.boxes[dst]["numinlets"], (dst, inlet)
    # the classes the kit relies on are there
    for name in ("udpsend", "udpreceive", "route", "buffer~", "groove~", "transport", "metro"):
        assert patch.objects(name), name
    assert any(b["maxclass"] == "ezdac~" for b in patch.boxes.values())
    print(f"Max: {len(patch.boxes)} boxes, {len(patch.lines)} lines, every end in range")


def test_max_patch_ports_follow_the_protocol(patch: MaxPatch) -> None:
    _, host, port = patch.one("udpsend")["text"].split()
    assert (host, int(port)) == (DEFAULT_HOST, DEFAULT_PORT)
    _, reply_port = patch.one("udpreceive")["text"].split()[:2]
    assert int(reply_port) == SUGGESTED_REPLY_PORT
    notify = [m for m in patch.messages() if max_atoms(m["text"])[0] == NOTIFY]
    assert [max_atoms(m["text"]) for m in notify] == [[NOTIFY, 1, int(reply_port)]]
    # the subscription is sent on load, after the auth
    (loadbang,) = [b for b in patch.objects("loadbang") if patch.reaches(b["id"], notify[0]["id"])]
    auth = next(m for m in patch.messages() if m["text"].startswith("/latentloop/auth"))
    assert patch.reaches(loadbang["id"], auth["id"])
    (trigger,) = patch.objects("t")
    # [t b b] fires right to left: outlet 1 (auth) before outlet 0 (a delay, then notify)
    assert patch.targets(trigger["id"], 1) == [(auth["id"], 0)]
    (after,) = patch.targets(trigger["id"], 0)
    assert patch.reaches(after[0], notify[0]["id"])
    print(f"Max: udpsend {host} {port}, udpreceive {reply_port} = notify port; auth, then notify")


def test_max_patch_routes_replies_into_buffer_and_groove(patch: MaxPatch) -> None:
    receive, route = patch.one("udpreceive"), patch.one("route")
    assert patch.targets(receive["id"]) == [(route["id"], 0)]
    addresses = route["text"].split()[1:]
    assert set(addresses) <= REPLY_ADDRESSES and {QUEUED, PROGRESS, DONE, FAIL} <= set(addresses)
    assert route["numoutlets"] == len(addresses) + 1  # and the reject outlet
    # /done -> [unpack i s f f f s i]: its types are the reply's, in order
    (unpack,) = [
        patch.boxes[b] for b, _ in patch.targets(route["id"], addresses.index(DONE))
        if patch.boxes[b]["text"].startswith("unpack")
    ]  # fmt: skip
    done_tags = tags_of(encode_message(*done_reply(1, "/x.wav", 8.0, 92.0, 4.0, 7, 0)))
    formats = unpack["text"].split()[1:]
    assert "".join(formats) == done_tags[: len(formats)]
    (progress,) = patch.targets(route["id"], addresses.index(PROGRESS))
    progress_formats = "".join(patch.boxes[progress[0]]["text"].split()[1:])
    assert progress_formats == tags_of(encode_message(*progress_reply(1, 1, 8)))
    # the path (outlet 1) -> [prepend replace] -> [buffer~ name]; groove~ plays that buffer
    (prepend,) = patch.targets(unpack["id"], 1)
    assert patch.boxes[prepend[0]]["text"] == "prepend replace"
    (buffer,) = patch.targets(prepend[0])
    _, name = patch.boxes[buffer[0]]["text"].split()
    assert patch.boxes[buffer[0]]["text"].startswith("buffer~")
    groove = patch.one("groove~")
    assert groove["text"].split()[1] == name
    assert {i for _, i in patch.targets(groove["id"])} == {0, 1}  # both channels to the dac
    # the loop restarts on the transport: metro (bar-quantized) -> ... -> startloop -> groove~
    metro = patch.one("metro")
    assert "@quantize" in metro["text"]
    (startloop,) = [m for m in patch.messages() if m["text"] == "startloop"]
    assert patch.reaches(metro["id"], startloop["id"])
    assert patch.targets(startloop["id"]) == [(groove["id"], 0)]
    # the loop's length in bars from /done (outlet 4) sets the modulo
    (modulo,) = patch.targets(unpack["id"], 4)
    assert patch.boxes[modulo[0]]["text"].startswith("%") and modulo[1] == 1
    print(f"Max: route {len(addresses)} reply addresses; done -> unpack {''.join(formats)} -> "
          f"replace -> buffer~ {name} -> groove~, restarted by a quantized metro")  # fmt: skip


MAX_EXPECTED: dict[str, Command] = {
    "/latentloop/auth 1 my-token": AuthCommand(1, "my-token"),
    "/latentloop/notify 1 7879": NotifyCommand(True, 7879),
    '/latentloop/render 1 prompt "dusty boom bap drums" bpm 92 bars 4 seed 1234': RenderCommand(
        1, "dusty boom bap drums", bpm=92.0, bars=4.0, seed=1234
    ),
    '/latentloop/render 2 prompt "dub chords" bpm $1 bars 4 beats_per_bar $2': RenderCommand(
        2, "dub chords", bpm=120.0, bars=4.0, beats_per_bar=4
    ),  # $1 $2 from [pack f i]: the test feeds 120. and 4
    '/latentloop/render 3 prompt "warm rhodes chords" bpm 120 bars 4 play 0': RenderCommand(
        3, "warm rhodes chords", bpm=120.0, bars=4.0, play=0
    ),
    "/latentloop/stop 4 0 bar": StopCommand(4, 0, "bar"),
    "/latentloop/cancel -1": CancelCommand(-1),
    "/latentloop/ping 5": PingCommand(5),
}
PACK_SAMPLES = {"f": 120.0, "i": 4}  # what [pack f i] would hold: the transport's tempo, meter


def test_max_message_boxes_parse_to_the_intended_requests(patch: MaxPatch) -> None:
    udpsend = patch.one("udpsend")["id"]
    sent: dict[str, Command] = {}
    for box in patch.messages():
        atoms = max_atoms(box["text"])
        if not (isinstance(atoms[0], str) and atoms[0].startswith("/")):
            assert not patch.reaches(box["id"], udpsend), box["text"]  # e.g. startloop
            continue
        assert atoms[0] in REQUEST_ADDRESSES, atoms[0]
        assert patch.reaches(box["id"], udpsend), f"{box['text']!r} is not wired to udpsend"
        if any(isinstance(a, str) and a.startswith("$") for a in atoms):
            (feeder,) = patch.sources(box["id"], 0)
            formats = patch.boxes[feeder[0]]["text"].split()
            assert formats[0] == "pack"
            values = [PACK_SAMPLES[f] for f in formats[1:]]
            atoms = [values[int(a[1:]) - 1] if isinstance(a, str) and a.startswith("$") else a
                     for a in atoms]  # fmt: skip
        data = typed_datagram(str(atoms[0]), atoms[1:])
        sent[box["text"]] = parse_datagram(data)
    assert sent == MAX_EXPECTED
    print(f"Max: {len(sent)} message boxes, each parsed to its intended request")


def test_max_for_live_clip_script_creates_a_clip_in_the_first_empty_slot(tmp_path) -> None:
    node = require_tool("node")
    harness = tmp_path / "harness.js"
    harness.write_text(
        """
const fs = require("fs"), vm = require("vm");
const calls = [], out = [];
const hasClip = [1, 0, 0, 0];
function LiveAPI(path) { this.path = path; }
LiveAPI.prototype.getcount = function (what) {
  calls.push(["getcount", this.path, what]); return hasClip.length; };
LiveAPI.prototype.get = function (what) {
  const i = Number(this.path.split(" ").pop()); return [hasClip[i]]; };
LiveAPI.prototype.call = function () {
  const args = Array.prototype.slice.call(arguments);
  calls.push(["call", this.path].concat(args));
  if (args[0] === "create_audio_clip") hasClip[Number(this.path.split(" ").pop())] = 1; };
const context = { LiveAPI: LiveAPI, outlet: function () {
  out.push(Array.prototype.slice.call(arguments)); }, post: function () {} };
vm.createContext(context);
vm.runInContext(fs.readFileSync(process.argv[2], "utf8"), context);
context.load("/loops/dusty-boom-bap_92bpm_4bars_seed1.wav");
context.fire(0);
context.load("/loops/second.wav");
console.log(JSON.stringify({ calls: calls, out: out }));
"""
    )
    result = subprocess.run(
        [node, str(harness), str(MAX_DIR / "latentloop_clip.js")],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    record = json.loads(result.stdout)
    track = "this_device canonical_parent"
    created = [c for c in record["calls"] if c[0] == "call"]
    assert created == [
        ["call", f"{track} clip_slots 1", "create_audio_clip",
         "/loops/dusty-boom-bap_92bpm_4bars_seed1.wav"],
        ["call", f"{track} clip_slots 1", "fire"],
        ["call", f"{track} clip_slots 2", "create_audio_clip", "/loops/second.wav"],
    ]  # fmt: skip
    assert record["out"][0] == [0, "clip", 1, "/loops/dusty-boom-bap_92bpm_4bars_seed1.wav"]
    print("Max for Live: create_audio_clip(path) in the first empty slot of the device's track, "
          "then fire; fire 0 only creates")  # fmt: skip


# -------------------------------------------------------------------------------------- Sonic Pi


def ruby_args(text: str, variables: dict[str, Any]) -> list[Any]:
    """Ruby call arguments (literals and simple variables) as Sonic Pi would send them."""
    values: list[Any] = []
    for m in re.finditer(r'\s*("(?:[^"\\]|\\.)*"|:\w+|[-\w.]+)\s*(?:,|$)', text):
        token = m.group(1)
        if token.startswith('"'):
            values.append(re.sub(r"\\(.)", r"\1", token[1:-1]))
        elif token.startswith(":"):
            values.append(token[1:])  # a Symbol goes out as a string
        elif re.fullmatch(r"-?\d+", token):
            values.append(int(token))
        elif re.fullmatch(r"-?\d+\.\d+", token):
            values.append(float(token))
        else:
            values.append(variables[token])
    return values


def sonic_pi_calls() -> tuple[list[tuple[bool, str, list[Any]]], list[str], str]:
    """(commented?, address, args) per `osc "/latentloop/..."` line, `sync` addresses, text."""
    text = SONIC_PI.read_text(encoding="utf-8")
    variables: dict[str, Any] = {}
    for name, literal in re.findall(r"^(\w+)\s*=\s*(-?[\d.]+|\"[^\"]*\")\s*$", text, re.M):
        variables[name] = ruby_args(literal, {})[0]
    calls = []
    for commented, rest in re.findall(r"^\s*(#\s*)?osc\s+(\"/latentloop/.*)$", text, re.M):
        address, *args = ruby_args(rest.split(" #")[0], variables)
        calls.append((bool(commented), address, args))
    syncs = re.findall(r'sync\s+"/osc\*(/latentloop/[\w.]+)"', text)
    return calls, syncs, text


SONIC_PI_EXPECTED: list[tuple[bool, Command]] = [
    (True, AuthCommand(1, "my-token")),
    (False, NotifyCommand(True, SONIC_PI_PORT)),
    (False, RenderCommand(1, "dusty boom bap drums", bpm=92.0, bars=4.0, beats_per_bar=4)),
    (True, RenderCommand(2, "dub chords", bpm=92.0, bars=4.0, seed=1234)),
    (True, CancelCommand(-1)),
]


def test_sonic_pi_kit_is_valid_ruby() -> None:
    """Sonic Pi can't run here, but its language is Ruby: the kit must at least parse."""
    ruby = require_tool("ruby")
    kit = REPO / "plugin_stub" / "sonic-pi" / "latentloop.rb"
    result = subprocess.run([ruby, "-c", str(kit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "Syntax OK" in result.stdout, result.stderr


def test_sonic_pi_osc_lines_parse_to_the_intended_requests() -> None:
    calls, syncs, text = sonic_pi_calls()
    assert re.search(rf'^use_osc "{DEFAULT_HOST}", {DEFAULT_PORT}$', text, re.M)
    parsed = []
    for commented, address, args in calls:
        assert address in REQUEST_ADDRESSES, address
        parsed.append((commented, parse_datagram(typed_datagram(address, args))))
    assert parsed == SONIC_PI_EXPECTED
    # the render goes out as Sonic Pi types it: Integer bpm/bars -> i
    render = next(args for _, address, args in calls if address == "/latentloop/render")
    assert tags_of(typed_datagram("/latentloop/render", render)) == "isssisisi"
    # replies are waited for as cues of the subscribed port
    assert set(syncs) <= REPLY_ADDRESSES and DONE in syncs
    assert "sample_free path" in text and "beat_stretch:" in text
    print(f"Sonic Pi: {len(parsed)} osc lines ({sum(not c for c, _ in parsed)} live) parse as "
          f"intended; notify {SONIC_PI_PORT}; sync on {', '.join(syncs)}")  # fmt: skip


# ---------------------------------------------------------------------------------------- REAPER


def load_reaper_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("latentloop_render", REAPER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # no RPR_ names in it: main() does not run
    return module


class FakeReaper:
    """The few RPR_ functions the script calls, on one constant tempo and meter; records calls."""

    def __init__(self, bpm: float, numerator: int, cursor: float) -> None:
        self.bpm, self.numerator, self.cursor = bpm, numerator, cursor
        self.deferred: list[str] = []
        self.tracks: list[dict[str, Any]] = []
        self.console: list[str] = []
        self.undo: list[str] = []

    # tempo map: quarter-note beats, `numerator` of them per bar
    def RPR_GetCursorPosition(self) -> float:
        return self.cursor

    def RPR_Master_GetTempo(self) -> float:
        return self.bpm

    def RPR_TimeMap_GetTimeSigAtTime(self, proj, t, num, denom, tempo):
        return (proj, t, self.numerator, 4, self.bpm)

    def RPR_TimeMap2_timeToBeats(self, proj, t, measures, cml, fullbeats, cdenom):
        beats = t * self.bpm / 60
        measure = int(beats // self.numerator)
        return (beats - measure * self.numerator, proj, t, measure, self.numerator, beats, 4)

    def RPR_TimeMap2_beatsToTime(self, proj, tpos, measure):
        return ((measure * self.numerator + tpos) * 60 / self.bpm, proj, tpos, measure)

    # tracks and items
    def RPR_CountTracks(self, proj) -> int:
        return len(self.tracks)

    def RPR_InsertTrackAtIndex(self, index, defaults) -> None:
        self.tracks.insert(index, {"items": []})

    def RPR_GetTrack(self, proj, index):
        return self.tracks[index]

    def RPR_GetSetMediaTrackInfo_String(self, track, name, value, set_it):
        assert set_it
        track[name] = value
        return (True, track, name, value, set_it)

    def RPR_AddMediaItemToTrack(self, track):
        item: dict[str, Any] = {"takes": []}
        track["items"].append(item)
        return item

    def RPR_AddTakeToMediaItem(self, item):
        take: dict[str, Any] = {}
        item["takes"].append(take)
        return take

    def RPR_PCM_Source_CreateFromFile(self, path):
        return {"path": path}

    def RPR_SetMediaItemTake_Source(self, take, source) -> bool:
        take["source"] = source
        return True

    def RPR_GetMediaSourceLength(self, source, is_qn):
        return (sf.info(source["path"]).duration, source, False)

    def RPR_SetMediaItemInfo_Value(self, item, name, value) -> bool:
        item[name] = value
        return True

    def RPR_UpdateArrange(self) -> None:
        pass

    def RPR_Undo_BeginBlock(self) -> None:
        self.undo.append("begin")

    def RPR_Undo_EndBlock(self, text, flags) -> None:
        self.undo.append(text)

    def RPR_ShowConsoleMsg(self, text: str) -> None:
        self.console.append(text)

    def RPR_defer(self, code: str) -> None:
        self.deferred.append(code)

    def RPR_GetUserInputs(self, title, count, captions, defaults, size):
        assert captions.startswith("Prompt,Bars,separator=|")
        self.asked = defaults
        return (True, title, count, captions, "night bus pads|2", size)


def drive(namespace: dict[str, Any], api: FakeReaper, timeout_s: float = 30.0) -> list[float]:
    """Run REAPER's deferred loop by hand: exec each deferred string in the script's namespace
    (as REAPER does), one per 'UI tick'. Returns how long each callback took."""
    took: list[float] = []
    deadline = time.monotonic() + timeout_s
    while api.deferred and time.monotonic() < deadline:
        code = api.deferred.pop(0)
        start = time.monotonic()
        exec(code, namespace)
        took.append(time.monotonic() - start)
        time.sleep(0.03)  # REAPER's defer runs about every 30 ms
    return took


def test_reaper_script_renders_and_inserts_at_the_bar_snapped_cursor(daemon_factory) -> None:
    daemon = daemon_factory("--no-warmup", standin=True)
    port = daemon.wait_ready()
    module = load_reaper_script()
    bpm, numerator = 126.0, 3
    bar_s = numerator * 60 / bpm
    api = FakeReaper(bpm, numerator, cursor=3.6 * bar_s)  # past halfway: snaps to the next bar
    session = module.start(api, "dusty boom bap drums", 1, daemon=("127.0.0.1", port),
                           timeout_s=30.0, token="")  # fmt: skip
    # what went out parses in the bridge as a canonical render at the project's tempo and meter
    sent = parse_datagram(module.encode_message(*session.request))
    assert sent == RenderCommand(
        session.request_id, "dusty boom bap drums", bpm=bpm, bars=1.0, beats_per_bar=numerator
    )
    took = drive(module.__dict__, api)
    assert session.outcome == "done", "".join(api.console)
    assert len(took) > 1 and max(took) < 0.25  # polled from deferred calls, never waiting
    (track,) = api.tracks
    (item,) = track["items"]
    (take,) = item["takes"]
    assert take["source"]["path"] == session.path and Path(session.path).is_file()
    assert session.path.startswith(str(daemon.out_dir))
    assert item["D_POSITION"] == pytest.approx(4 * bar_s, abs=1e-9)
    frames = round(numerator * 60 * SR / bpm)
    info = sf.info(session.path)
    assert (info.samplerate, info.frames) == (SR, frames)
    assert item["D_LENGTH"] == pytest.approx(frames / SR) and item["B_LOOPSRC"] == 1
    assert track["P_NAME"] == Path(session.path).name
    assert api.undo == ["begin", "latentloop: insert loop"]
    print(
        f"REAPER: {len(took)} deferred polls (longest {max(took) * 1000:.1f} ms); inserted "
        f"{Path(session.path).name} ({frames} frames) at bar 4 = {4 * bar_s:.4f} s"
    )


def test_reaper_script_runs_as_reaper_runs_it(daemon_factory, monkeypatch) -> None:
    """REAPER executes the file with its RPR_ names among the globals: main() runs, asks for a
    prompt and bars, sends, and defers; the deferred string is executed in that namespace."""
    daemon = daemon_factory("--no-warmup", standin=True)
    monkeypatch.setenv("LATENTLOOP_OSC_PORT", str(daemon.wait_ready()))
    api = FakeReaper(100.0, 4, cursor=1.0)  # 2.4 s bars: 1.0 s is nearer bar 0
    namespace: dict[str, Any] = {"__name__": "reaper_script", "__file__": str(REAPER)}
    namespace.update({n: getattr(api, n) for n in dir(api) if n.startswith("RPR_")})
    exec(compile(REAPER.read_text(encoding="utf-8"), str(REAPER), "exec"), namespace)
    assert api.asked == "dusty boom bap drums|4" and api.deferred == ["_latentloop_poll()"]
    drive(namespace, api)
    session = namespace["_SESSION"]
    assert session.outcome == "done", "".join(api.console)
    (track,) = api.tracks
    (item,) = track["items"]
    assert item["D_POSITION"] == 0.0 and item["takes"][0]["source"]["path"] == session.path
    assert sf.info(session.path).frames == round(2 * 4 * 60 * SR / 100.0)
    print(
        f"REAPER: run with injected RPR_ names: asked, sent, deferred, inserted "
        f"{Path(session.path).name} at bar 0"
    )


def test_reaper_script_sends_the_token_and_reports_fail_and_timeout(daemon_factory) -> None:
    token = "reaper-studio-token"
    daemon = daemon_factory("--no-warmup", standin=True, env={"LATENTLOOP_OSC_TOKEN": token})
    port = daemon.wait_ready()
    module = load_reaper_script()
    api = FakeReaper(120.0, 4, cursor=0.0)
    refused = module.start(api, "pads", 1, daemon=("127.0.0.1", port), token="")
    drive(module.__dict__, api)
    assert refused.outcome == "fail" and "unauthorized" in "".join(api.console)
    assert api.tracks == []
    allowed = module.start(api, "pads", 1, daemon=("127.0.0.1", port), token=token)
    request = parse_datagram(module.encode_message(*allowed.request))
    assert isinstance(request, RenderCommand) and request.token == token
    drive(module.__dict__, api)
    assert allowed.outcome == "done", "".join(api.console)
    assert len(api.tracks) == 1
    # nobody answers: the deferred loop gives up at the timeout instead of waiting forever
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        late = module.start(api, "pads", 1, daemon=silent.getsockname(), timeout_s=0.3)
        drive(module.__dict__, api, timeout_s=5.0)
    assert late.outcome == "timeout" and api.deferred == []
    print(
        "REAPER: without the token fail unauthorized, nothing inserted; with it done; "
        "a silent peer times out"
    )


def test_reaper_script_osc_codec_matches_the_bridge() -> None:
    module = load_reaper_script()
    for reply in (
        queued_reply(7, 0),
        progress_reply(7, 3, 8),
        done_reply(7, "/loops/é x.wav", 6.0, 120.0, 4.0, 123, 0, 119.5, -0.4),
        fail_reply(7, "render", "invalid", "bpm must be 20..999, got 5000"),
    ):
        address, args = module.decode_message(encode_message(*reply))
        assert address == reply[0] and len(args) == len(reply[1])
        for got, want in zip(args, reply[1], strict=True):
            assert type(got) is type(want)
            assert got == (pytest.approx(want) if isinstance(want, float) else want)
    assert module.decode_message(b"#bundle\x00" + bytes(8)) is None
    request = module.render_request(9, "dub", 92.5, 2, 4, token="t")
    assert tags_of(module.encode_message(*request)) == "isssfsisiss"
    assert parse_datagram(module.encode_message(*request)) == RenderCommand(
        9, "dub", bpm=92.5, bars=2.0, beats_per_bar=4, token="t"
    )
    print("REAPER: its decoder reads the bridge's replies; its render (,isssfsisiss) parses")
