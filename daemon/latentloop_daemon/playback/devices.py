"""Output devices: list them, choose the one ``[audio] device`` names, re-scan.

``sounddevice`` is imported lazily (here only), so the daemon and its tests import without
PortAudio. PortAudio lists host APIs (and JACK's devices) only when it initialises, so
``rescan`` re-initialises it: that is how ``/latentloop/audio <id> restart`` finds a device
plugged in (or a JACK server started) after the daemon.

Threads: the control thread or the CLI; never while a stream of this process is open (a
re-scan closes every PortAudio stream).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from latentloop_daemon.errors import AudioDeviceError

logger = logging.getLogger(__name__)


class NoOutputDevice(AudioDeviceError):
    """PortAudio (or the system) has no output device at all: file-only mode."""


class UnknownDevice(AudioDeviceError):
    """``[audio] device`` names a device that does not exist; the message lists them."""


@dataclass(frozen=True, slots=True)
class Device:
    """One output device as PortAudio reports it."""

    index: int
    name: str
    host_api: str
    channels: int  # max output channels
    default_rate: int
    is_default: bool


def sounddevice() -> Any:
    """The ``sounddevice`` module, or NoOutputDevice when PortAudio cannot be loaded."""
    try:
        import sounddevice as sd
    except (ImportError, OSError) as e:
        raise NoOutputDevice(f"no audio: sounddevice/PortAudio unavailable ({e})") from e
    return sd


def rescan() -> None:
    """Re-initialise PortAudio so it lists devices and host APIs as they are now."""
    sd = sounddevice()
    sd._terminate()  # private, but the only way (see docs/playback.md, "Devices")
    sd._initialize()


def terminate_at_exit(enabled: bool) -> None:
    """Let ``sounddevice`` terminate PortAudio at interpreter exit, or not.

    While a stream whose JACK server vanished is still being closed (``Player``: PortAudio
    19.6's JACK backend waits up to 10 minutes in ``Pa_AbortStream`` for a server that is
    gone), ``Pa_Terminate`` would wait on it too, and the daemon would not exit.
    """
    import atexit

    sd = sounddevice()
    atexit.unregister(sd._exit_handler)  # private, like _terminate (never registered twice)
    if enabled:
        atexit.register(sd._exit_handler)


def list_outputs() -> list[Device]:
    """Every device with output channels, in PortAudio's order."""
    sd = sounddevice()
    apis = sd.query_hostapis()
    try:
        default_out = sd.default.device[1]
        if default_out is None or default_out < 0:
            default_out = sd.query_devices(kind="output")["index"]
    except Exception:  # noqa: BLE001 - no default output is not an error here
        default_out = -1
    out = []
    for info in sd.query_devices():
        if info["max_output_channels"] < 1:
            continue
        out.append(
            Device(
                index=int(info["index"]),
                name=str(info["name"]),
                host_api=str(apis[info["hostapi"]]["name"]),
                channels=int(info["max_output_channels"]),
                default_rate=int(info["default_samplerate"]),
                is_default=int(info["index"]) == default_out,
            )
        )
    return out


def format_devices(devices: list[Device]) -> str:
    """The table ``latentloop devices`` prints (and ``serve`` when a device is unknown)."""
    if not devices:
        return "no output devices"
    lines = ["  index  name                              host API                  ch   rate"]
    for d in devices:
        mark = "*" if d.is_default else " "
        lines.append(
            f"{mark} {d.index:5d}  {d.name[:32]:32s}  {d.host_api[:24]:24s}  "
            f"{d.channels:2d}  {d.default_rate}"
        )
    return "\n".join(lines)


def choose(spec: str, devices: list[Device] | None = None) -> Device:
    """The device ``spec`` names: "" the default output (a JACK one first, when a JACK server
    runs), a number an index, else a case-insensitive substring of the name.

    Raises:
        NoOutputDevice: there are no output devices (and ``spec`` names none).
        UnknownDevice: ``spec`` matches none (the message lists the devices): a device the
            user named is never silently replaced by file-only mode.
    """
    devices = list_outputs() if devices is None else devices
    spec = spec.strip()
    if not devices and not spec:
        raise NoOutputDevice("no output device found")
    if not spec:
        jack = [d for d in devices if "JACK" in d.host_api]
        default = [d for d in devices if d.is_default]
        return (jack or default or devices)[0]
    if spec.lstrip("-").isdigit():
        hit = [d for d in devices if d.index == int(spec)]
    else:
        hit = [d for d in devices if d.name == spec] or [
            d for d in devices if spec.lower() in d.name.lower()
        ]
    if not hit:
        raise UnknownDevice(
            f"no output device {spec!r}; the devices are:\n" + format_devices(devices)
        )
    return hit[0]
