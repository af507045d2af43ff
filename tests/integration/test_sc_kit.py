"""The SuperCollider kit (plugin_stub/supercollider, class ``Latentloop``) in headless sclang
against ``latentloop serve`` as a real process.

sclang loads the kit the way a user's install does: from its class library path, here through
``-l <config.yaml>`` with ``includePaths`` naming the kit folder (and once through
``Quarks.install(path)``). No scsynth runs: the kit reads each finished file's header in the
language (``SoundFile``), and the test script reads it again with ``SoundFile.openRead``.
Every script has its own deadline (it exits by itself), and ``subprocess`` kills sclang past
the test's timeout.

Most cases run the daemon around the stand-in engine (tests/standin_daemon.py: no torch, starts
in about a second); one runs the real ``tiny`` model.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import soundfile as sf
from tests.conftest import require_tool
from tests.integration.test_hosts import SR, free_udp_port, loop_frames

REPO = Path(__file__).resolve().parents[2]
KIT = REPO / "plugin_stub" / "supercollider"
SCRIPT_DEADLINE_S = 40  # the script exits by itself (code 3) after this
TOKEN = "sc-studio-token-7"


@pytest.fixture(scope="module")
def sclang_tool() -> str:
    return require_tool("sclang")


def sclang_env(home: Path) -> dict[str, str]:
    import os

    runtime = home / "xdg"
    runtime.mkdir(mode=0o700, exist_ok=True)
    return {
        **os.environ,
        "QT_QPA_PLATFORM": "offscreen",  # no display
        "QTWEBENGINE_DISABLE_SANDBOX": "1",  # as root, Qt WebEngine aborts without it
        "XDG_RUNTIME_DIR": str(runtime),
        "HOME": str(home),  # sclang's config and user extension folders go here
    }


def kit_config(tmp_path: Path) -> Path:
    """An sclang library config that adds the kit folder to the class library path."""
    config = tmp_path / "sclang_conf.yaml"
    config.write_text(f"includePaths:\n  - {KIT}\nexcludePaths: []\npostInlineWarnings: false\n")
    return config


def sclang_script(body: str, deadline_s: int = SCRIPT_DEADLINE_S) -> str:
    """``body`` (a function body: its ``var``s first) with a deadline that prints LL_TIMEOUT
    and exits 3."""
    return (
        f'(\nfork {{ {deadline_s}.wait; "LL_TIMEOUT".postln; 3.exit }};\n{{\n{body}\n}}.value;\n)\n'
    )


def sclang_command(tmp_path: Path, script: str, *, with_kit: bool = True) -> list[str]:
    path = tmp_path / f"script_{len(list(tmp_path.glob('script_*.scd')))}.scd"
    path.write_text(script)
    cmd = ["sclang", "-u", str(free_udp_port())]
    if with_kit:
        cmd += ["-l", str(kit_config(tmp_path))]
    return [*cmd, str(path)]


def run_sclang(tmp_path: Path, script: str, *, with_kit: bool = True, timeout: float = 60) -> str:
    """Run ``script`` in sclang; return what it printed. Fails on a non-zero exit or timeout."""
    cmd = sclang_command(tmp_path, script, with_kit=with_kit)
    try:
        r = subprocess.run(
            cmd, env=sclang_env(tmp_path), stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired as e:  # run() has killed sclang
        printed = [
            b.decode(errors="replace") if isinstance(b, bytes) else b or ""
            for b in (e.stdout, e.stderr)
        ]
        raise AssertionError(f"sclang ran past {timeout} s:\n" + "\n".join(printed)) from None
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"sclang exited {r.returncode}:\n{out}"
    assert "ERROR:" not in out, out
    return out


def lines(out: str, label: str) -> list[dict[str, str]]:
    """``LABEL k=v k=v ...`` lines printed by the script, as dicts (values without spaces)."""
    found = []
    for line in out.splitlines():
        if line.startswith(label + " ") or line == label:
            found.append(dict(re.findall(r"(\w+)=(\S*)", line[len(label) :])))
    return found


def check_loop(path: str, frames: int) -> None:
    info = sf.info(path)
    assert (info.samplerate, info.frames, info.channels) == (SR, frames, 2), info


DONE_LINE = (
    '"LL_DONE id=% bpm=% bars=% seed=% variation=% frames=% kitframes=% rate=% channels=% '
    'buffer=% path=%".format(done[\\id], done[\\bpm], done[\\bars], done[\\seed], '
    "done[\\variation], sf.numFrames, done[\\frames], done[\\sampleRate], done[\\channels], "
    "done[\\buffer], done[\\path]).postln"
)


RENDER_SCRIPT = """
var ll = Latentloop("127.0.0.1", @PORT@), dones = List.new, check;
// a /done from another source (sclang's own port) must not reach the kit: its OSCdefs match
// the daemon's NetAddr only
NetAddr("127.0.0.1", NetAddr.langPort).sendMsg(
    '/latentloop/done', 1, "/forged.wav", 2.0, 120.0, 1.0, "1", 0, 0.0, 0.0);
check = { |done|
    var sf = SoundFile.openRead(done[\\path]);
    @DONE_LINE@;
    sf.close;
    dones.add(done);
    if(dones.size == 2) {
        // the daemon's player: this daemon runs --no-audio, so play is answered no_audio
        ll.play(dones[0][\\id], 0, \\bar, 0, { |reply|
            "LL_PLAY ok=% code=%".format(reply[\\ok], reply[\\code]).postln;
            0.exit;
        });
    };
};
ll.render("sc kit groove", 120, 1, 4321, check, [\\steps, 2]);
// timetagged: a bundle 0.3 s ahead, like s.bind; the largest seed, as a string
ll.render("sc kit bundle", 93, 2, "18446744073709551615", check, (steps: 2), latency: 0.3);
"LL_SENT port=%".format(NetAddr.langPort).postln;
"""


def test_sc_kit_renders_receives_done_and_reads_the_file(sclang_tool, daemon_factory, tmp_path):
    """The kit's ``render`` (canonical form, once as a plain message, once as a bundle 0.3 s
    ahead) reaches the daemon as intended (prompt, bpm, bars, seed, steps); ``/done`` comes back
    from the daemon's listening socket and is matched by the kit's OSCdefs (a forged ``/done``
    from another port is not); ``SoundFile.openRead`` in sclang reads the file's frame count,
    equal to the WAV's; ``play`` reaches the daemon's player (answered ``no_audio`` here)."""
    daemon = daemon_factory("--no-warmup", standin=True)
    port = daemon.wait_ready()
    script = RENDER_SCRIPT.replace("@PORT@", str(port)).replace("@DONE_LINE@", DONE_LINE)
    out = run_sclang(tmp_path, sclang_script(script))

    assert "forged" not in out, out
    dones = lines(out, "LL_DONE")
    assert len(dones) == 2, out
    by_seed = {d["seed"]: d for d in dones}
    plain, bundled = by_seed["4321"], by_seed["18446744073709551615"]
    for done, bpm, bars in [(plain, 120, 1), (bundled, 93, 2)]:
        frames = loop_frames(bpm, bars)
        check_loop(done["path"], frames)
        assert done["frames"] == done["kitframes"] == str(frames), done
        assert (float(done["bpm"]), float(done["bars"])) == (bpm, bars), done
        assert (done["rate"], done["channels"], done["variation"]) == ("44100", "2", "0"), done
        assert done["buffer"] == "nil", done  # no server runs: no Buffer.read
    assert {plain["id"], bundled["id"]} == {"1", "2"}, dones
    (sent,) = lines(out, "LL_SENT")
    sender = f"from 127.0.0.1:{sent['port']})"
    assert re.search(rf"\(id 1 {re.escape(sender)} started: 'sc kit groove'", daemon.log)
    assert re.search(rf"\(id 2 {re.escape(sender)} started: 'sc kit bundle'", daemon.log)
    assert lines(out, "LL_PLAY") == [{"ok": "false", "code": "no_audio"}], out
    print(
        f"sclang: 2 renders done (message and bundle), frames {plain['frames']} and "
        f"{bundled['frames']} read with SoundFile; forged /done ignored; play -> no_audio"
    )


TOKEN_SCRIPT = """
var ll = Latentloop("127.0.0.1", @PORT@);
ll.render("locked out", 120, 1, 1, { "LL_UNEXPECTED_DONE".postln; 1.exit }, [\\steps, 1],
    failAction: { |fail|
        "LL_FAIL id=% code=%".format(fail[\\id], fail[\\code]).postln;
        ll.token = "@TOKEN@"; // sent as the pair token <t> with each render
        ll.render("with token", 120, 1, 2, { |done|
            "LL_TOKEN_DONE frames=%".format(done[\\frames]).postln;
            ll.token = nil;
            ll.auth("@TOKEN@", { |reply|
                "LL_AUTH reply=% seconds=%".format(reply[\\reply], reply[\\args][0]).postln;
                ll.render("after auth", 120, 1, 3, { |done|
                    "LL_AUTH_DONE frames=%".format(done[\\frames]).postln;
                    0.exit;
                }, [\\steps, 1]);
            });
        }, [\\steps, 1]);
    });
"""


def test_sc_kit_token(sclang_tool, daemon_factory, tmp_path):
    """A daemon with a shared token: a render without it fails ``unauthorized``; with
    ``.token`` set the render carries the pair ``token <t>`` and is done; ``auth`` authorises
    the host (``auth.reply``), after which a render without a token is done."""
    daemon = daemon_factory("--no-warmup", standin=True, env={"LATENTLOOP_OSC_TOKEN": TOKEN})
    port = daemon.wait_ready()
    script = TOKEN_SCRIPT.replace("@PORT@", str(port)).replace("@TOKEN@", TOKEN)
    out = run_sclang(tmp_path, sclang_script(script))
    frames = str(loop_frames(120, 1))
    assert lines(out, "LL_FAIL") == [{"id": "1", "code": "unauthorized"}], out
    assert lines(out, "LL_TOKEN_DONE") == [{"frames": frames}], out
    assert lines(out, "LL_AUTH") == [{"reply": "auth.reply", "seconds": "3600"}], out
    assert lines(out, "LL_AUTH_DONE") == [{"frames": frames}], out
    assert TOKEN not in daemon.log
    print("sclang: no token -> unauthorized; token pair -> done; auth.reply 3600; then done")


def test_sc_kit_with_the_tiny_model(sclang_tool, daemon_factory, tmp_path):
    """The same path with the real ``tiny`` model in ``latentloop serve``: one render of 1 bar
    at 120 BPM, 2 steps, seed 77; the kit's /done matches the file."""
    daemon = daemon_factory("--no-warmup")
    port = daemon.wait_ready()
    script = f"""
var ll = Latentloop("127.0.0.1", {port});
ll.render("tiny sc loop", 120, 1, 77, {{ |done|
    var sf = SoundFile.openRead(done[\\path]);
    {DONE_LINE};
    sf.close;
    0.exit;
}}, [\\steps, 2]);
"""
    out = run_sclang(tmp_path, sclang_script(script, deadline_s=90), timeout=120)
    (done,) = lines(out, "LL_DONE")
    frames = loop_frames(120, 1)
    check_loop(done["path"], frames)
    assert done["frames"] == done["kitframes"] == str(frames), done
    assert (done["bpm"], done["bars"], done["seed"]) == ("120.0", "1.0", "77"), done
    assert "'tiny sc loop'" in daemon.log
    print(f"sclang + tiny model: done, {frames} frames read with SoundFile")


def test_sc_kit_installs_as_a_quark(sclang_tool, tmp_path):
    """``Quarks.install(<kit folder>)`` adds the kit to sclang's class library path (saved in
    the config under HOME); a fresh sclang then compiles the class and finds its help file."""
    run_sclang(
        tmp_path, sclang_script(f'Quarks.install("{KIT}"); "LL_INSTALLED".postln; 0.exit;'),
        with_kit=False,
    )  # fmt: skip
    out = run_sclang(
        tmp_path,
        sclang_script(
            '"LL_CLASS file=% help=%".format(Latentloop.filenameSymbol, '
            "File.exists(PathName(Latentloop.filenameSymbol.asString).pathOnly "
            '+/+ "../HelpSource/Classes/Latentloop.schelp")).postln; 0.exit;'
        ),
        with_kit=False,
    )
    (found,) = lines(out, "LL_CLASS")
    assert Path(found["file"]).resolve() == (KIT / "Classes" / "Latentloop.sc").resolve(), out
    assert found["help"] == "true", out
    print("sclang: Quarks.install(kit) -> Latentloop compiled from", found["file"])
