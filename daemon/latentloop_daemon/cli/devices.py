"""``latentloop devices``: the output devices PortAudio sees (what ``[audio] device`` names)."""

from __future__ import annotations

import argparse
from typing import Any

from latentloop_daemon.exit_codes import ExitCode


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "devices",
        help="list the audio output devices",
        description="List output devices: index, name, host API, channels, default rate; '*' "
        "marks the default. [audio] device takes an index or (part of) a name.",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from latentloop_daemon.playback.devices import NoOutputDevice, format_devices, list_outputs

    try:
        devices = list_outputs()
    except NoOutputDevice as e:
        print(e)
        return ExitCode.OK
    print(format_devices(devices))
    return ExitCode.OK
