"""Daemon settings: defaults < TOML < environment < CLI, with errors that name the key."""

import pytest

from latentloop_daemon.backends.sat.options import SatOptions
from latentloop_daemon.config import DaemonConfig, load_config
from latentloop_daemon.errors import ConfigError


def test_defaults_are_safe():
    c = load_config(environ={})
    assert c == DaemonConfig()
    assert (c.osc.host, c.osc.port) == ("127.0.0.1", 7878)
    assert c.engine.model == "tiny" and c.render.format == "pcm24"


def test_precedence_toml_then_environment_then_flags(tmp_path):
    toml = tmp_path / "l.toml"
    toml.write_text(
        '[osc]\nport = 7001\nreply_targets = ["127.0.0.1:7879"]\n'
        '[engine]\nmodel = "tiny-rf"\n[render]\nqueue_size = 3\nout_dir = "a"\n'
    )
    env = {"LATENTLOOP_OSC_PORT": "7002", "LATENTLOOP_RENDER_OUT_DIR": "b", "HOME": "/x",
           "LATENTLOOP_REQUIRE_TOOLS": "1"}  # fmt: skip
    c = load_config(toml, {"render.out_dir": "c", "engine.model": None}, environ=env)
    assert c.osc.port == 7002  # env beats TOML
    assert c.render.out_dir == "c"  # flag beats env
    assert c.engine.model == "tiny-rf"  # a None flag does not override
    assert c.render.queue_size == 3 and c.osc.reply_targets == ("127.0.0.1:7879",)


def test_environment_types_are_parsed():
    env = {"LATENTLOOP_ENGINE_OFFLINE": "yes", "LATENTLOOP_RENDER_BARS": "2.5",
           "LATENTLOOP_OSC_REPLY_TARGETS": "127.0.0.1:7879, 127.0.0.1:7880"}  # fmt: skip
    c = load_config(environ=env)
    assert c.engine.offline is True and c.render.bars == 2.5
    assert c.osc.reply_targets == ("127.0.0.1:7879", "127.0.0.1:7880")


@pytest.mark.parametrize(
    ("toml", "env", "flags", "message"),
    [
        ("[osc]\nprot = 1\n", {}, {}, "unknown key osc.prot"),
        ("[oscc]\nport = 1\n", {}, {}, "unknown section"),
        ("[osc]\nport = 70000\n", {}, {}, "osc.port must be 1..65535, got 70000"),
        ("", {"LATENTLOOP_OSC_PORT": "seven"}, {}, "osc.port must be int"),
        ("", {"LATENTLOOP_ENGINE_OFFLINE": "maybe"}, {}, "engine.offline must be bool"),
        ("", {}, {"render.format": "mp3"}, "render.format must be one of"),
        ("", {}, {"render.queue_size": 0}, "render.queue_size must be 1..1000"),
        ("", {}, {"osc.reply_targets": ("nohost",)}, "expected 'host:port'"),
        ("", {}, {"osc.host": "my laptop"}, "osc.host"),
        ("", {}, {"render.while_loading": "wait"}, "render.while_loading"),
        ("[osc\n", {}, {}, "l.toml"),
    ],
)
def test_bad_settings_name_the_key(tmp_path, toml, env, flags, message):
    path = tmp_path / "l.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_config(path, flags, environ=env)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", environ={})


def test_backend_section_from_toml_environment_and_flags(tmp_path):
    toml = tmp_path / "l.toml"
    toml.write_text('[engine]\nbackend = "sat"\n[sat]\nt5 = "/models/t5"\n')
    c = load_config(toml, environ={"LATENTLOOP_SAT_TRUST_CHECKPOINT": "1"})
    assert c.engine.backend == "sat"
    assert c.backend_options() == SatOptions(t5="/models/t5", trust_checkpoint=True)
    c = load_config(toml, {"sat.t5": "/elsewhere"}, environ={})
    assert c.backend_options("sat").t5 == "/elsewhere"


@pytest.mark.parametrize(
    ("toml", "env"),
    [
        ('[engine]\nt5 = "/models/t5"\ntrust_checkpoint = true\n', {}),
        ("", {"LATENTLOOP_ENGINE_T5": "/models/t5", "LATENTLOOP_ENGINE_TRUST_CHECKPOINT": "1"}),
    ],
    ids=["toml", "environment"],
)
def test_old_engine_keys_still_work_with_a_deprecation_warning(tmp_path, caplog, toml, env):
    path = tmp_path / "old.toml"
    path.write_text(toml)
    with caplog.at_level("WARNING", logger="latentloop_daemon.config"):
        c = load_config(path, environ=env)
    assert c.backend_options() == SatOptions(t5="/models/t5", trust_checkpoint=True)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert "engine.t5 is deprecated; use sat.t5 (environment: LATENTLOOP_SAT_T5)" in warnings[0]
    assert "engine.trust_checkpoint is deprecated; use sat.trust_checkpoint" in warnings[1]


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[engine]\nbackend = "comfy"\n', "unknown backend 'comfy'; known: sat"),
        ("[sat]\nt6 = 1\n", "unknown key sat.t6; known: t5, trust_checkpoint"),
        ("[render]\nbars = 65\n", r"render.bars must be > 0 and <= 64, got 65"),
        ("[render]\nbeats_per_bar = 0\n", r"render.beats_per_bar must be 1..32, got 0"),
        ('[engine]\nprecision = "fp8"\n', "engine.precision must be one of"),
    ],
)
def test_backend_and_range_errors_name_the_key(tmp_path, toml, message):
    path = tmp_path / "l.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ={})


def test_every_key_is_documented_in_its_section():
    import dataclasses
    import re
    from pathlib import Path

    from latentloop_daemon.config import SECTIONS

    text = (Path(__file__).resolve().parents[2] / "docs" / "config.md").read_text()
    sections = {m.group(1): m.start() for m in re.finditer(r"^## `\[(\w+)\]`", text, re.M)}
    assert set(sections) == set(SECTIONS), "docs/config.md sections differ from the config's"
    starts = sorted(sections.values()) + [len(text)]
    for name, cls in SECTIONS.items():
        start = sections[name]
        body = text[start : starts[starts.index(start) + 1]]
        documented = re.findall(r"^\| `(\w+)` \|", body, re.M)
        assert documented == [f.name for f in dataclasses.fields(cls)], f"[{name}] in config.md"
