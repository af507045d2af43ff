"""latentloop for REAPER: render a loop at the project's tempo and put it on a new track.

A Python ReaScript (Actions -> Show action list -> New action -> Load ReaScript...; Python must
be enabled in Preferences -> Plug-ins -> ReaScript). Start the daemon first: `latentloop serve`.

Run it, type a prompt and a bar count. The script reads the project tempo and time signature at
the edit cursor, sends `/latentloop/render` to 127.0.0.1:7878, and then polls its socket from
REAPER's deferred-call loop (`RPR_defer`), so REAPER's UI never waits on the network. When
`/latentloop/done` arrives, it inserts the WAV on a new track at the edit cursor snapped to the
nearest bar. `/latentloop/fail`, or no answer within `TIMEOUT_S`, ends with a message in the
console.

Only the standard library: the OSC encoder and decoder are in this file. The replies come back
to the socket the request left from (the daemon answers the sender), so no subscription is
needed. With a token configured in the daemon, set `LATENTLOOP_OSC_TOKEN` in REAPER's
environment or `TOKEN` below; it is sent with the render. `LATENTLOOP_OSC_PORT` (as for the
daemon) changes the port.

Not run in REAPER: `tests/integration/test_kit_files.py` imports this file with a stand-in for
REAPER's API, runs its send/poll loop against a real daemon, and checks what it would insert.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import time
import types
from typing import Any, Union

DAEMON = ("127.0.0.1", int(os.environ.get("LATENTLOOP_OSC_PORT", "7878")))
TOKEN = os.environ.get("LATENTLOOP_OSC_TOKEN", "")
TIMEOUT_S = 600.0
DEFAULT_PROMPT = "dusty boom bap drums"
DEFAULT_BARS = 4

RENDER = "/latentloop/render"
QUEUED = "/latentloop/queued"
PROGRESS = "/latentloop/progress"
DONE = "/latentloop/done"
FAIL = "/latentloop/fail"

OscValue = Union[int, float, str]  # noqa: UP007 (REAPER may run Python 3.8/3.9)

# --- OSC 1.0, the i/f/s subset latentloop uses (no REAPER needed below this line) ---------------


def _pad(data: bytes) -> bytes:
    return data + b"\x00" * (4 - len(data) % 4)


def encode_message(address: str, args: list[OscValue]) -> bytes:
    """One OSC message: int -> i (int32), float -> f (float32), str -> s."""
    tags = ","
    body = b""
    for value in args:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError(f"OSC argument must be int, float or str, got {value!r}")
        if isinstance(value, int):
            tags += "i"
            body += struct.pack(">i", value)
        elif isinstance(value, float):
            tags += "f"
            body += struct.pack(">f", value)
        else:
            tags += "s"
            body += _pad(value.encode("utf-8"))
    return _pad(address.encode("ascii")) + _pad(tags.encode("ascii")) + body


def _read_string(data: bytes, offset: int) -> tuple[str, int]:
    end = data.index(b"\x00", offset)
    return data[offset:end].decode("utf-8", "replace"), (end // 4 + 1) * 4


def decode_message(data: bytes) -> tuple[str, list[OscValue]] | None:
    """`(address, args)` of one OSC message; None for a bundle or anything unreadable."""
    try:
        if not data.startswith(b"/"):
            return None  # a bundle (/latentloop/bar comes in bundles, only to subscribers)
        address, offset = _read_string(data, 0)
        tags, offset = _read_string(data, offset)
        args: list[OscValue] = []
        for tag in tags[1:]:
            if tag == "i":
                args.append(struct.unpack_from(">i", data, offset)[0])
                offset += 4
            elif tag == "f":
                args.append(struct.unpack_from(">f", data, offset)[0])
                offset += 4
            elif tag == "s":
                text, offset = _read_string(data, offset)
                args.append(text)
            else:
                return None  # latentloop replies use only i, f and s
        return address, args
    except (ValueError, struct.error):
        return None


def render_request(
    request_id: int, prompt: str, bpm: float, bars: int, beats_per_bar: int, token: str = ""
) -> tuple[str, list[OscValue]]:
    """The canonical render at the project's tempo and meter (docs/protocol.md §4.1)."""
    args: list[OscValue] = [request_id, "prompt", prompt, "bpm", float(bpm), "bars", int(bars)]
    args += ["beats_per_bar", int(beats_per_bar)]
    if token:
        args += ["token", token]
    return RENDER, args


def parse_inputs(csv: str) -> tuple[str, int]:
    """`prompt|bars` from `GetUserInputs` (separator `|`) -> (prompt, bars)."""
    prompt, _, bars = csv.partition("|")
    return prompt.strip() or DEFAULT_PROMPT, int(float(bars)) if bars.strip() else DEFAULT_BARS


# --- REAPER (every RPR_ name goes through `api`) ------------------------------------------------


def find_api() -> Any:
    """REAPER's API: the RPR_ names REAPER puts into this script, or its `reaper_python`."""
    names = {name: value for name, value in globals().items() if name.startswith("RPR_")}
    if names:
        return types.SimpleNamespace(**names)
    import reaper_python  # type: ignore[import-not-found]  # only inside REAPER

    return reaper_python


def tempo_at(api: Any, position: float) -> tuple[float, int]:
    """(bpm, beats per bar) at `position` seconds: the tempo map's, else the master tempo."""
    # void TimeMap_GetTimeSigAtTime(proj, time, int* num, int* denom, double* tempo): REAPER's
    # Python returns every parameter, the outputs last.
    result = api.RPR_TimeMap_GetTimeSigAtTime(0, position, 0, 0, 0.0)
    numerator, tempo = int(result[-3]), float(result[-1])
    if tempo <= 0:
        tempo = float(api.RPR_Master_GetTempo())
    return tempo, max(1, numerator)


def snap_to_bar(api: Any, position: float) -> float:
    """`position` moved to the nearest bar line (TimeMap2_timeToBeats / beatsToTime)."""
    # double TimeMap2_timeToBeats(proj, tpos, int* measures, int* cml, double* fullbeats,
    # int* cdenom) -> (beats in the measure, proj, tpos, measures, cml, fullbeats, cdenom)
    result = api.RPR_TimeMap2_timeToBeats(0, position, 0, 0, 0.0, 0)
    beats_in_measure, measure, beats_per_measure = float(result[0]), int(result[3]), result[4]
    if beats_in_measure >= float(beats_per_measure) / 2:
        measure += 1
    # double TimeMap2_beatsToTime(proj, tpos, const int* measuresIn): beat 0 of `measure`
    return float(api.RPR_TimeMap2_beatsToTime(0, 0.0, measure)[0])


def insert_loop(api: Any, path: str, position: float, name: str) -> Any:
    """A new track at the end with one item of `path` at `position`, looping its source."""
    api.RPR_Undo_BeginBlock()
    index = int(api.RPR_CountTracks(0))
    api.RPR_InsertTrackAtIndex(index, True)
    track = api.RPR_GetTrack(0, index)
    api.RPR_GetSetMediaTrackInfo_String(track, "P_NAME", name, True)
    item = api.RPR_AddMediaItemToTrack(track)
    take = api.RPR_AddTakeToMediaItem(item)
    source = api.RPR_PCM_Source_CreateFromFile(path)
    api.RPR_SetMediaItemTake_Source(take, source)
    length = float(api.RPR_GetMediaSourceLength(source, False)[0])
    api.RPR_SetMediaItemInfo_Value(item, "D_POSITION", position)
    api.RPR_SetMediaItemInfo_Value(item, "D_LENGTH", length)
    api.RPR_SetMediaItemInfo_Value(item, "B_LOOPSRC", 1)
    api.RPR_UpdateArrange()
    api.RPR_Undo_EndBlock("latentloop: insert loop", -1)
    return item


class Render:
    """One render: send it, then `poll()` from the deferred loop until done, failed or late."""

    def __init__(self, api: Any, prompt: str, bars: int, daemon: tuple[str, int] = DAEMON,
                 timeout_s: float = TIMEOUT_S, token: str = TOKEN) -> None:  # fmt: skip
        self.api = api
        self.daemon = daemon
        self.position = snap_to_bar(api, float(api.RPR_GetCursorPosition()))
        bpm, beats_per_bar = tempo_at(api, self.position)
        self.request_id = random.randint(1, 999_999)
        self.request = render_request(self.request_id, prompt, bpm, bars, beats_per_bar, token)
        self.deadline = time.monotonic() + timeout_s
        self.outcome: str | None = None  # "done", "fail" or "timeout" once finished
        self.path: str | None = None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)

    def send(self) -> None:
        self.sock.sendto(encode_message(*self.request), self.daemon)
        self._say(f"latentloop: render {self.request_id} sent ({self.request[1][2]!r})")

    def poll(self) -> bool:
        """Read what has arrived, without waiting; True while the render is still running."""
        while self.outcome is None:
            try:
                data, _ = self.sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:  # e.g. ICMP port unreachable: no daemon
                self._finish("fail", f"latentloop: socket error {error}; is the daemon running?")
                break
            self._handle(decode_message(data))
        if self.outcome is None and time.monotonic() > self.deadline:
            self._finish("timeout", "latentloop: no /done in time; is `latentloop serve` up?")
        return self.outcome is None

    def _handle(self, message: tuple[str, list[OscValue]] | None) -> None:
        if message is None or not message[1] or message[1][0] != self.request_id:
            return  # not ours (or not readable)
        address, args = message
        if address == QUEUED:
            self._say(f"latentloop: queued, {args[1]} ahead")
        elif address == PROGRESS:
            self._say(f"latentloop: step {args[1]}/{args[2]}")
        elif address == DONE:
            self.path = str(args[1])
            insert_loop(self.api, self.path, self.position, os.path.basename(self.path))
            self._finish("done", f"latentloop: inserted {self.path}")
        elif address == FAIL:
            self._finish("fail", "latentloop: failed: " + " ".join(str(a) for a in args[1:]))

    def _finish(self, outcome: str, text: str) -> None:
        self.outcome = outcome
        self.sock.close()
        self._say(text)

    def _say(self, text: str) -> None:
        self.api.RPR_ShowConsoleMsg(text + "\n")


_SESSION: Render | None = None


def _latentloop_poll() -> None:
    """The deferred callback: REAPER calls it again on its next UI tick while it re-defers."""
    if _SESSION is not None and _SESSION.poll():
        _SESSION.api.RPR_defer("_latentloop_poll()")


def start(api: Any, prompt: str, bars: int, **options: Any) -> Render:
    """Send the render and hand the polling to REAPER's deferred loop."""
    global _SESSION
    _SESSION = Render(api, prompt, bars, **options)
    _SESSION.send()
    api.RPR_defer("_latentloop_poll()")
    return _SESSION


def main() -> None:
    api = find_api()
    answer = api.RPR_GetUserInputs(
        "latentloop", 2, "Prompt,Bars,separator=|,extrawidth=240",
        f"{DEFAULT_PROMPT}|{DEFAULT_BARS}", 1024,
    )  # fmt: skip
    if not answer[0]:
        return  # cancelled
    prompt, bars = parse_inputs(answer[4])
    start(api, prompt, bars)


if any(name.startswith("RPR_") for name in globals()) or __name__ == "__main__":
    main()
