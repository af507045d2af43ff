"""Playback requests: parsing, errors, and reply shapes (docs/protocol.md §4.6)."""

import pytest

from latentloop_bridge import protocol as p
from latentloop_bridge.errors import ProtocolError


@pytest.mark.parametrize(
    ("address", "args", "expected"),
    [
        ("/latentloop/play", [1, 7], p.PlayCommand(1, 7, None, 0, None, 0)),
        ("/latentloop/play", [1, 7.0, 3.0, "2bar", 1], p.PlayCommand(1, 7, None, 3, "2bar", 1)),
        ("/latentloop/play", [1, "a.wav", 2, 4], p.PlayCommand(1, None, "a.wav", 2, "4bar", 0)),
        ("/latentloop/stop", [2], p.StopCommand(2, None, None)),
        ("/latentloop/stop", [2, -1, "now"], p.StopCommand(2, None, "now")),
        ("/latentloop/stop", [2, 5, "beat"], p.StopCommand(2, 5, "beat")),
        ("/latentloop/gain", [3, 1, -6.5], p.GainCommand(3, 1, -6.5)),
        ("/latentloop/gain", [3, 1, -1000.0], p.GainCommand(3, 1, -120.0)),
        ("/latentloop/tempo", [4, 127.5], p.TempoCommand(4, 127.5, None)),
        ("/latentloop/tempo", [4, 90, 3], p.TempoCommand(4, 90.0, 3)),
        ("/latentloop/transport", [5, 1], p.TransportCommand(5, True)),
        ("/latentloop/link", [6, 0.0], p.LinkCommand(6, False)),
        ("/latentloop/audio", [7, "restart"], p.AudioCommand(7, "restart")),
    ],
)
def test_playback_requests_parse(address, args, expected):
    assert p.parse_message(address, args) == expected


@pytest.mark.parametrize(
    ("address", "args", "request_id", "message"),
    [
        ("/latentloop/play", [1], 1, "usage: play <id>"),
        ("/latentloop/play", [1, 7, 64], 1, "slot must be 0..63, got 64"),
        ("/latentloop/play", [1, 7, 0, "3bar"], 1, "quantize must be one of now, beat, bar"),
        ("/latentloop/gain", [3, 1, 30], 3, "db must be -120..24, got 30"),
        ("/latentloop/tempo", [4, 5000], 4, "bpm must be 20..999, got 5000"),
        ("/latentloop/transport", [5, 2], 5, "transport flag must be 0 or 1"),
        ("/latentloop/audio", [7, "reboot"], 7, "audio action must be one of restart"),
    ],
)
def test_bad_playback_requests_are_invalid_with_their_id(address, args, request_id, message):
    with pytest.raises(ProtocolError) as caught:
        p.parse_message(address, args)
    assert caught.value.code == "invalid" and caught.value.request_id == request_id
    assert message in caught.value.message


def test_render_play_option():
    cmd = p.parse_message("/latentloop/render", [1, "prompt", "x", "bpm", 120, "play", 3])
    assert cmd.play == 3


def test_bar_notice_is_a_timetagged_bundle():
    address, args = p.bar_notice(12, 127.0, 4)
    data = p.encode_bundle(1_800_000_000.25, address, args)
    (message,) = p.parse_packet(data)
    assert message.address == "/latentloop/bar" and list(message.args) == [-1, 12, 127.0, 4]
    assert message.timetag_unix == pytest.approx(1_800_000_000.25, abs=1e-6)
