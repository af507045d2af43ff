"""Settings of ``latentloop serve`` and ``latentloop render``: frozen dataclass sections,
loaded as defaults < TOML < environment < CLI flags.

Sections: ``[osc]``, ``[engine]``, ``[render]``, ``[audio]``, ``[limits]``, and one per model
backend (``[sat]``; the backend registry supplies its dataclass). Environment variables are
``LATENTLOOP_<SECTION>_<KEY>`` (e.g. ``LATENTLOOP_OSC_PORT=7880``, ``LATENTLOOP_SAT_T5``).
Unknown keys and bad values fail with a ConfigError naming the key; keys that moved (``[engine]
t5`` -> ``[sat] t5``) still work, with a deprecation warning. Every key is documented in
docs/config.md. Parsed once in the CLI and passed down; no globals.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args

from latentloop_bridge.spec import MAX_DATAGRAM_BYTES, MAX_PROMPT_CHARS, QUANTIZE, RANGES
from latentloop_daemon.backends import BACKENDS, DEFAULT_BACKEND, get_backend
from latentloop_daemon.engine import PRECISIONS
from latentloop_daemon.errors import ConfigError
from latentloop_daemon.files.formats import FORMAT_NAMES

logger = logging.getLogger(__name__)

LOADING_POLICIES = ("fail", "queue")
RESTART_POLICIES = ("rerun", "report")
CrossfadeMode = Literal["auto", "equal_gain", "equal_power"]  # render.seam_mode
SEAM_MODES: tuple[str, ...] = get_args(CrossfadeMode)


@dataclass(frozen=True, slots=True)
class OscConfig:
    """Where the daemon listens and where replies go besides the sender."""

    host: str = "127.0.0.1"  # loopback only unless the user opts in (e.g. "0.0.0.0")
    port: int = 7878  # outside the ports other music software uses
    reply_targets: tuple[str, ...] = ()  # "host:port" fixed targets, e.g. Max's [udpreceive 7879]
    max_subscribers: int = 32
    allow: tuple[str, ...] = ()  # source networks (CIDR); required when host is not loopback
    token: str = field(default="", repr=False)  # shared secret; file or environment, never a flag
    auth_ttl_s: float = 3600.0  # how long `/latentloop/auth` authorises a source host

    def __post_init__(self) -> None:
        _check_host("osc.host", self.host)
        _check_port("osc.port", self.port, allow_zero=True)
        for target in self.reply_targets:
            parse_target("osc.reply_targets", target)
        _check_range("osc.max_subscribers", self.max_subscribers, 0, 1024)
        for network in self.allow:
            _check_network("osc.allow", network)
        if not self.allow and not _is_loopback_host(self.host):
            raise ConfigError(
                f"osc.host {self.host} is reachable from the network: set osc.allow to the "
                "source networks that may use it (--allow 192.168.1.0/24, or [osc] allow in the "
                "config file); see docs/security.md"
            )
        if self.token and len(self.token) < 8:
            raise ConfigError("osc.token must be at least 8 characters long")
        _check_range("osc.auth_ttl_s", self.auth_ttl_s, 1, 30 * 86400)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Which model to load, where, and how."""

    model: str = "tiny"
    backend: str = DEFAULT_BACKEND  # the registry key (backends.BACKENDS); its options: [<name>]
    device: str = "auto"
    precision: str = "auto"
    offline: bool = False  # never contact the Hugging Face Hub (HF_HUB_OFFLINE=1 does the same)
    warmup: bool = True  # one short render at start-up so the first request is fast
    process: bool = True  # serve: the model in a child process (backends/process.py)

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("engine.model must not be empty")
        get_backend(self.backend)
        _check_choice("engine.precision", self.precision, PRECISIONS)


@dataclass(frozen=True, slots=True)
class RenderConfig:
    """Jobs, files and loop making; ``latentloop render`` reads this section too."""

    out_dir: str = "out"
    format: str = "pcm24"
    queue_size: int = 8
    history_size: int = 64
    while_loading: str = "fail"  # renders sent during start-up: "fail" (/fail loading) or "queue"
    beats_per_bar: int = 4
    bars: float = 4.0  # default length when a request names bpm but no bars
    seconds: float = 8.0  # default length when a request names neither
    progress_interval_s: float = 0.25  # at most one /progress per job per interval
    cancel_timeout_s: float = 10.0  # how long shutdown waits for a running render to stop
    crossfade_ms: float = 20.0  # seam: the rendered continuation faded into the loop start
    seam_mode: str = "auto"  # auto (by correlation), equal_gain, equal_power
    padding_s: float = 2.0  # rendered past the loop end (seconds_total = loop + padding)
    normalize: bool = True  # loudness normalisation (off: peak-safe only)
    target_lufs: float = -14.0
    ceiling_dbtp: float = -1.0
    limiter: bool = False  # reach the target with a peak limiter instead of stopping the gain
    tempo_in_prompt: bool = True  # add "N BPM" to prompts that name no tempo
    tempo_check: bool = True
    tempo_tolerance_pct: float = 4.0
    max_rerolls: int = 0  # re-render with new seeds while the tempo is off by more
    on_restart: str = "rerun"  # jobs a crash left unfinished: "rerun" or "report" (interrupted)

    def __post_init__(self) -> None:
        _check_choice("render.format", self.format, FORMAT_NAMES)
        _check_choice("render.on_restart", self.on_restart, RESTART_POLICIES)
        _check_choice("render.while_loading", self.while_loading, LOADING_POLICIES)
        _check_range("render.queue_size", self.queue_size, 1, 1000)
        _check_range("render.history_size", self.history_size, 1, 100000)
        for name in ("beats_per_bar", "bars", "seconds"):  # protocol v1's ranges
            r, value = RANGES[name], getattr(self, name)
            if not r.contains(value):
                raise ConfigError(f"render.{name} must be {r.describe()}, got {value!r}")
        _check_range("render.progress_interval_s", self.progress_interval_s, 0.0, 60)
        _check_range("render.cancel_timeout_s", self.cancel_timeout_s, 0.1, 600)
        _check_range("render.crossfade_ms", self.crossfade_ms, 0, 500)
        _check_choice("render.seam_mode", self.seam_mode, SEAM_MODES)
        _check_range("render.padding_s", self.padding_s, 0, 30)
        _check_range("render.target_lufs", self.target_lufs, -70, 0)
        _check_range("render.ceiling_dbtp", self.ceiling_dbtp, -20, 0)
        _check_range("render.tempo_tolerance_pct", self.tempo_tolerance_pct, 0, 100)
        _check_range("render.max_rerolls", self.max_rerolls, 0, 10)


MIN_DATAGRAM_CAP = 512
"""The smallest `limits.max_datagram`: a render with a short prompt and its options fits."""


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """What one request may ask for: protocol v1's ranges (docs/protocol.md §10), or tighter.

    A value looser than the protocol's is a ConfigError naming the key. Enforced at the door
    (``service.limits``), each with its own ``/fail``: sizes and ranges ``invalid``, the rate
    ``busy``. Queue depth and subscribers are ``render.queue_size`` and ``osc.max_subscribers``.
    """

    max_datagram: int = MAX_DATAGRAM_BYTES  # bytes; larger datagrams: /fail -1 ? invalid
    max_prompt_chars: int = MAX_PROMPT_CHARS  # prompt and negative, each
    max_seconds: float = RANGES["seconds"].high  # a clip's length, or a loop's (bars at its bpm)
    max_bars: float = RANGES["bars"].high
    max_steps: int = int(RANGES["steps"].high)
    max_variations: int = int(RANGES["variations"].high)
    min_cfg: float = RANGES["cfg"].low
    max_cfg: float = RANGES["cfg"].high
    renders_per_minute: int = 0  # per source address (host; ports are ephemeral); 0: no limit

    def __post_init__(self) -> None:
        _check_tighter(
            "limits.max_datagram", self.max_datagram, MIN_DATAGRAM_CAP, MAX_DATAGRAM_BYTES
        )
        _check_tighter("limits.max_prompt_chars", self.max_prompt_chars, 1, MAX_PROMPT_CHARS)
        for key, name in (("max_seconds", "seconds"), ("max_bars", "bars")):
            r, value = RANGES[name], getattr(self, key)
            if not r.contains(value):
                raise ConfigError(
                    f"limits.{key} must be {r.describe()} (protocol v1's range; [limits] may "
                    f"only tighten it), got {value!r}"
                )
        for key, name in (("max_steps", "steps"), ("max_variations", "variations")):
            r = RANGES[name]
            _check_tighter(f"limits.{key}", getattr(self, key), r.low, r.high)
        cfg = RANGES["cfg"]
        _check_tighter("limits.min_cfg", self.min_cfg, cfg.low, cfg.high)
        _check_tighter("limits.max_cfg", self.max_cfg, cfg.low, cfg.high)
        if self.min_cfg > self.max_cfg:
            raise ConfigError(
                f"limits.min_cfg ({self.min_cfg:g}) must not be above limits.max_cfg "
                f"({self.max_cfg:g})"
            )
        _check_range("limits.renders_per_minute", self.renders_per_minute, 0, 100_000)


AUDIO_CONFORM = ("stretch", "as_is", "refuse")  # audio.conform (playback/conform.py)


@dataclass(frozen=True, slots=True)
class AudioConfig:
    """Playback through the sound card (docs/playback.md); ``enabled = false``: file-only."""

    enabled: bool = True
    device: str = ""  # "" PortAudio's default output (JACK's when a server runs), index or name
    slots: int = 8  # clip-launcher tracks, each looping one clip
    block_size: int = 1024  # frames per callback (0: PortAudio chooses)
    latency: str = "high"  # PortAudio's suggested latency: "low", "high" or seconds
    channels: int = 2  # output channels (fewer if the device has fewer)
    quantize: str = "bar"  # default launch quantization: now, beat, bar, 2bar, 4bar
    launch_fade_ms: float = 5.0  # the replaced clip fades out over this after the boundary
    master_gain_db: float = 0.0
    limiter_db: float = -0.3  # the safety limiter's threshold (bit-transparent below it)
    conform: str = "stretch"  # clips at another tempo: stretch, as_is, refuse
    bpm: float = 0.0  # the transport's starting tempo; 0: the first clip's (else 120)
    beats_per_bar: int = 4
    bar_messages: bool = False  # send /latentloop/bar bundles to subscribers
    bar_lead_ms: float = 150.0  # how far ahead of the audible downbeat /bar is sent
    link: bool = False  # join an Ableton Link session at start (needs latentloop[link])
    input_roots: tuple[str, ...] = ()  # folders besides out_dir that `play <path>` may read

    def __post_init__(self) -> None:
        _check_range("audio.slots", self.slots, 1, 64)
        _check_range("audio.block_size", self.block_size, 0, 16384)
        if self.latency not in ("low", "high"):
            try:
                _check_range("audio.latency", float(self.latency), 0.0, 2.0)
            except ValueError:
                raise ConfigError(
                    f"audio.latency must be low, high or seconds, got {self.latency!r}"
                ) from None
        _check_range("audio.channels", self.channels, 1, 32)
        _check_choice("audio.quantize", self.quantize, QUANTIZE)
        _check_range("audio.launch_fade_ms", self.launch_fade_ms, 0.1, 1000)
        _check_range("audio.master_gain_db", self.master_gain_db, -120, 24)
        _check_range("audio.limiter_db", self.limiter_db, -40, 0)
        _check_choice("audio.conform", self.conform, AUDIO_CONFORM)
        if self.bpm != 0.0 and not RANGES["bpm"].contains(self.bpm):
            raise ConfigError(f"audio.bpm must be 0 or {RANGES['bpm'].describe()}, got {self.bpm}")
        if not RANGES["beats_per_bar"].contains(self.beats_per_bar):
            raise ConfigError(f"audio.beats_per_bar must be 1..32, got {self.beats_per_bar}")
        _check_range("audio.bar_lead_ms", self.bar_lead_ms, 0, 5000)

    @property
    def latency_value(self) -> str | float:
        """``latency`` as sounddevice takes it."""
        return self.latency if self.latency in ("low", "high") else float(self.latency)


def _default_backend_options() -> Mapping[str, Any]:
    return MappingProxyType({name: b.options() for name, b in BACKENDS.items()})


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """All settings: ``serve`` uses every section, ``render`` [engine], [render] and backends'."""

    osc: OscConfig = field(default_factory=OscConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    backends: Mapping[str, Any] = field(default_factory=_default_backend_options)

    def __post_init__(self) -> None:
        # the defaults a request falls back on must pass the daemon's own limits
        if self.render.seconds > self.limits.max_seconds:
            raise ConfigError(
                f"render.seconds ({self.render.seconds:g}) is over limits.max_seconds "
                f"({self.limits.max_seconds:g})"
            )
        if self.render.bars > self.limits.max_bars:
            raise ConfigError(
                f"render.bars ({self.render.bars:g}) is over limits.max_bars "
                f"({self.limits.max_bars:g})"
            )

    def backend_options(self, name: str | None = None) -> Any:
        """The options section of backend ``name`` (default: the one ``[engine]`` chooses)."""
        return self.backends[name or self.engine.backend]


CORE_SECTIONS: dict[str, type] = {
    "osc": OscConfig,
    "engine": EngineConfig,
    "render": RenderConfig,
    "audio": AudioConfig,
    "limits": LimitsConfig,
}
SECTIONS: dict[str, type] = {**CORE_SECTIONS, **{n: b.options for n, b in BACKENDS.items()}}

MOVED_KEYS: dict[str, str] = {
    "engine.t5": "sat.t5",
    "engine.trust_checkpoint": "sat.trust_checkpoint",
}
"""Keys that moved to a backend's section; the old names still work, with a warning."""


def load_config(
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> DaemonConfig:
    """Build the config: defaults < TOML file < ``LATENTLOOP_*`` environment < ``overrides``.

    ``overrides`` maps "section.key" to values (from CLI flags; None values are ignored).
    """
    values: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    if path is not None:
        _merge(values, _read_toml(Path(path)), source=str(path))
    _merge(values, _from_environ(os.environ if environ is None else environ), source="environment")
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        _merge(values, {section: {key: value}}, source="command line")
    sections = {}
    for name, cls in SECTIONS.items():
        try:
            sections[name] = cls(**values[name])
        except TypeError as e:
            raise ConfigError(f"{name}: {e}") from e
    core = {name: sections.pop(name) for name in CORE_SECTIONS}
    return DaemonConfig(**core, backends=MappingProxyType(sections))


def parse_target(key: str, target: str) -> tuple[str, int]:
    """'host:port' -> (host, port), with a ConfigError naming ``key`` when malformed."""
    host, sep, port_text = target.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ConfigError(f"{key}: expected 'host:port', got {target!r}")
    port = int(port_text)
    _check_host(key, host)
    _check_port(key, port)
    return host, port


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as e:
        raise ConfigError(f"config file not found: {path}") from e
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"config file {path}: {e}") from e


def _from_environ(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, value in environ.items():
        if not name.startswith("LATENTLOOP_"):
            continue
        rest = name[len("LATENTLOOP_") :].lower()
        section, _, key = rest.partition("_")
        if section not in SECTIONS:
            continue  # other LATENTLOOP_* variables (test switches, venv paths) are not settings
        out.setdefault(section, {})[key] = value
    return out


def _merge(values: dict[str, dict[str, Any]], data: Mapping[str, Any], source: str) -> None:
    for section, entries in data.items():
        if section not in SECTIONS:
            raise ConfigError(
                f"{source}: unknown section [{section}]; known: {', '.join(SECTIONS)}"
            )
        if not isinstance(entries, Mapping):
            raise ConfigError(f"{source}: [{section}] must be a table")
        for key, raw in entries.items():
            moved = MOVED_KEYS.get(f"{section}.{key}")
            if moved is not None:
                logger.warning(
                    "%s: %s.%s is deprecated; use %s (environment: LATENTLOOP_%s)",
                    source, section, key, moved, moved.replace(".", "_").upper(),
                )  # fmt: skip
                new_section, _, new_key = moved.partition(".")
                _merge(values, {new_section: {new_key: raw}}, source)
                continue
            fields = {f.name: f for f in dataclasses.fields(SECTIONS[section])}
            if key not in fields:
                known = ", ".join(fields)
                raise ConfigError(f"{source}: unknown key {section}.{key}; known: {known}")
            values[section][key] = _coerce(f"{section}.{key}", fields[key], raw, source)


def _coerce(key: str, f: dataclasses.Field[Any], raw: Any, source: str) -> Any:
    """Convert a TOML/env/CLI value to the field's type, or fail naming the key."""
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind == "bool":
            return _to_bool(raw)
        if kind == "int":
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            return int(raw)
        if kind == "float":
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
        if kind == "str":
            if not isinstance(raw, str | int | float) or isinstance(raw, bool):
                raise ValueError
            return str(raw)
        if kind.startswith("tuple"):
            items = raw.split(",") if isinstance(raw, str) else raw
            if not isinstance(items, list | tuple):
                raise ValueError
            return tuple(str(i).strip() for i in items if str(i).strip())
    except (TypeError, ValueError):
        pass
    else:
        return raw
    raise ConfigError(f"{source}: {key} must be {kind}, got {raw!r}")


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _check_host(key: str, host: str) -> None:
    """IPv4 addresses or 'localhost' (the OSC server is IPv4 only)."""
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        if host != "localhost":
            raise ConfigError(
                f"{key}: expected an IPv4 address or 'localhost', got {host!r}"
            ) from None


def _check_network(key: str, network: str) -> None:
    """An IPv4 network in CIDR form ("192.168.1.0/24") or a single address."""
    try:
        ipaddress.IPv4Network(network, strict=False)
    except ValueError:
        raise ConfigError(
            f"{key}: expected an IPv4 network like '192.168.1.0/24' or an address, got {network!r}"
        ) from None


def _is_loopback_host(host: str) -> bool:
    return host == "localhost" or ipaddress.IPv4Address(host).is_loopback


def _check_port(key: str, port: int, allow_zero: bool = False) -> None:
    if not (0 if allow_zero else 1) <= port <= 65535:
        raise ConfigError(f"{key} must be 1..65535, got {port}")


def _check_tighter(key: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise ConfigError(
            f"{key} must be {lo:g}..{hi:g} (protocol v1's range; [limits] may only tighten it), "
            f"got {value!r}"
        )


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {choices}, got {value!r}")


def _check_range(key: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise ConfigError(f"{key} must be {lo:g}..{hi:g}, got {value!r}")
