"""Model sources: local folders, the Hub (a fake one on loopback, real huggingface_hub), the cache.

The fake hub (`tests/hubserver.py`) is a real HTTP server on 127.0.0.1:0. huggingface_hub reads
HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE once, when it is imported, so in-process tests point its
module constants at the fake hub and at tmp_path (the `hub_env` fixture); one test runs a
subprocess with the real environment variables instead. Nothing touches the user's cache or token.

The fake hub's auth (see its docstring): tokens ``hf_granted`` (accepted every license) and
``hf_not_granted`` (accepted none) are valid; any other token gets 401 "Invalid credentials".
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hubserver
import pytest
from huggingface_hub import constants
from inprocess import run_cli

from latentloop_daemon.backends.sat.sources import (
    KNOWN_MODELS,
    T5_REPO,
    ModelFiles,
    download_model,
    download_t5,
    list_local_models,
    resolve_model,
)
from latentloop_daemon.errors import (
    HubUnreachableError,
    ModelAccessError,
    ModelLoadError,
    ModelNotFoundError,
)

FakeHub, FakeRepo = hubserver.FakeHub, hubserver.FakeRepo

SAO = KNOWN_MODELS["sao-1.0"]
SMALL = KNOWN_MODELS["sao-small"]
GRANTED, NOT_GRANTED = "hf_granted", "hf_not_granted"
CONFIG = json.dumps({"model_type": "diffusion_cond", "sample_rate": 44100}).encode()
T5_CONFIG = json.dumps({"model_type": "t5", "d_model": 768}).encode()


def _blob(tag: str, size: int) -> bytes:
    """Distinct payloads (the fake CDN finds blobs by sha256)."""
    return (tag.encode() * size)[:size]


def _sao_repo() -> Any:
    """Like stabilityai/stable-audio-open-1.0: SAT files, diffusers folders, gated."""
    files = {
        "model_config.json": CONFIG,
        "model.safetensors": _blob("sao-st", 3000),
        "model.ckpt": _blob("sao-ckpt", 5000),  # decoy: never fetched when safetensors exist
        "model_index.json": b"{}",
        "README.md": b"# SAO 1.0",
        "text_encoder/config.json": T5_CONFIG,
        "text_encoder/model.safetensors": _blob("sao-t5", 1500),
        "tokenizer/spiece.model": _blob("sao-spiece", 300),
        "tokenizer/tokenizer.json": b'{"model": "unigram"}',
        "tokenizer/tokenizer_config.json": b'{"model_max_length": 512}',
        "tokenizer/special_tokens_map.json": b'{"eos_token": "</s>"}',
        "transformer/config.json": b"{}",
        "transformer/diffusion_pytorch_model.safetensors": _blob("sao-dit", 4000),
        "vae/diffusion_pytorch_model.safetensors": _blob("sao-vae", 2000),
    }
    # distinct contents: huggingface_hub skips the GET of a blob it already has (same ETag)
    return FakeRepo(files, gated=True)


def _small_repo() -> Any:
    """Like stabilityai/stable-audio-open-small: no T5 of its own, gated."""
    files = {
        "model_config.json": CONFIG,
        "model.safetensors": _blob("small-st", 2000),
        "model.ckpt": _blob("small-ckpt", 2500),
        "base_model_config.json": CONFIG,
        "base_model.ckpt": _blob("small-base", 2500),
    }
    return FakeRepo(files, gated=True)


def _t5_repo() -> Any:
    """Like google-t5/t5-base: one encoder-decoder in many formats."""
    files = {
        "config.json": T5_CONFIG,
        "model.safetensors": _blob("t5-st", 1800),
        "pytorch_model.bin": _blob("t5-bin", 1800),
        "tf_model.h5": _blob("t5-tf", 1800),
        "flax_model.msgpack": _blob("t5-flax", 1800),
        "rust_model.ot": _blob("t5-rust", 1800),
        "onnx/encoder_model.onnx": _blob("t5-onnx", 900),
        "spiece.model": _blob("t5-spiece", 300),
        "tokenizer.json": b'{"model": "unigram"}',
        "tokenizer_config.json": b"{}",
        "generation_config.json": b"{}",
        "README.md": b"# T5",
    }
    return FakeRepo(files)


SAO_EXPECTED = {
    "model_config.json",
    "model.safetensors",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/spiece.model",
    "tokenizer/tokenizer.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/special_tokens_map.json",
}
T5_EXPECTED = {
    "config.json",
    "model.safetensors",
    "spiece.model",
    "tokenizer.json",
    "tokenizer_config.json",
}


@pytest.fixture
def hub_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Isolate huggingface_hub from the user's setup: no token, no offline flag, tmp HF_HOME.

    Returns the hub cache folder to pass as ``cache_dir``.
    """
    home = tmp_path / "hf_home"
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(home / ".agent_harnesses.json"))
    return home / "hub"


def _point_hub_at(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """What HF_ENDPOINT=url does at huggingface_hub's import time."""
    monkeypatch.setattr(constants, "ENDPOINT", url)
    template = url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)


@pytest.fixture
def hub(hub_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A running fake hub with SAO-1.0-like, SAO-Small-like and t5-base-like repos."""
    repos = {
        SAO: _sao_repo(),
        SMALL: _small_repo(),
        T5_REPO: _t5_repo(),
        "someone/ckpt-only": FakeRepo({"model_config.json": CONFIG, "model.ckpt": b"C" * 100}),
        "someone/no-config": FakeRepo({"model.safetensors": b"S" * 100}),
        "someone/no-checkpoint": FakeRepo({"model_config.json": CONFIG}),
        "someone/lost-weights": FakeRepo(
            {"model_config.json": CONFIG, "model.safetensors": b"L" * 100},
            lost=frozenset({"model.safetensors"}),
        ),
    }
    with FakeHub(repos, tokens={GRANTED: {SAO, SMALL}, NOT_GRANTED: set()}) as fake:
        _point_hub_at(monkeypatch, fake.url)
        yield fake


def _snapshot(cache: Path, repo_id: str, sha: str) -> Path:
    return cache / f"models--{repo_id.replace('/', '--')}" / "snapshots" / sha


def _fetched(hub: Any, repo_id: str) -> set[str]:
    return {
        name.removeprefix(repo_id + "/")
        for name in hub.downloaded()
        if name.startswith(repo_id + "/")
    }


# --- the hub -------------------------------------------------------------------------------------


def test_sao_1_0_downloads_only_the_needed_files(
    hub: Any, hub_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="latentloop_daemon")
    files = resolve_model("sao-1.0", token=GRANTED, cache_dir=hub_env)
    sha = hub.repos[SAO].sha
    root = _snapshot(hub_env, SAO, sha)
    assert files == ModelFiles(
        name="sao-1.0",
        root=root,
        config_path=root / "model_config.json",
        checkpoint_path=root / "model.safetensors",
        t5_dir=root / "text_encoder",
        tokenizer_dir=root / "tokenizer",
        repo_id=SAO,
        revision=sha,
    )
    assert files.config_path.read_bytes() == CONFIG
    assert (root / "text_encoder" / "model.safetensors").read_bytes() == _blob("sao-t5", 1500)
    assert _fetched(hub, SAO) == SAO_EXPECTED
    assert _fetched(hub, T5_REPO) == set()  # the repo's own T5 is used
    touched = {r.path for r in hub.requests}
    for decoy in ("model.ckpt", "transformer/", "vae/", "README.md", "model_index.json"):
        assert not any(decoy in path for path in touched), decoy
    # LFS files came from the "CDN" host, without the token (huggingface_hub drops it off-Hub)
    cdn = [r for r in hub.requests if r.path.startswith("/cdn/")]
    assert len(cdn) == 3 and all(r.authorization is None for r in cdn)
    assert "downloading model.safetensors from stabilityai/stable-audio-open-1.0 (3.00 kB)" in (
        caplog.text
    )


def test_second_resolve_downloads_nothing(hub: Any, hub_env: Path) -> None:
    first = resolve_model(SAO, token=GRANTED, cache_dir=hub_env)
    hub.requests.clear()
    second = resolve_model(SAO, token=GRANTED, cache_dir=hub_env)
    assert second == first
    assert hub.downloaded() == []  # only the listing and HEAD checks


def test_sao_small_gets_t5_from_t5_base(hub: Any, hub_env: Path) -> None:
    files = resolve_model("sao-small", token=GRANTED, cache_dir=hub_env)
    root = _snapshot(hub_env, SMALL, hub.repos[SMALL].sha)
    t5_root = _snapshot(hub_env, T5_REPO, hub.repos[T5_REPO].sha)
    assert (files.root, files.checkpoint_path) == (root, root / "model.safetensors")
    assert files.t5_dir == files.tokenizer_dir == t5_root
    assert (files.repo_id, files.revision) == (SMALL, hub.repos[SMALL].sha)
    assert _fetched(hub, SMALL) == {"model_config.json", "model.safetensors"}
    assert _fetched(hub, T5_REPO) == T5_EXPECTED


def test_checkpoint_falls_back_to_ckpt(hub: Any, hub_env: Path) -> None:
    files = resolve_model("someone/ckpt-only", cache_dir=hub_env)
    assert files.checkpoint_path.name == "model.ckpt"
    assert (
        files.t5_dir is not None and files.t5_dir.parent.parent.name == "models--google-t5--t5-base"
    )


# --- access errors -------------------------------------------------------------------------------


def test_gated_repo_without_token_explains_license_and_login(hub: Any, hub_env: Path) -> None:
    with pytest.raises(ModelAccessError) as info:
        resolve_model("sao-1.0", cache_dir=hub_env)
    message = str(info.value)
    assert message.startswith(f"{SAO} is a gated model and you are not logged in")
    assert f"https://huggingface.co/{SAO}" in message
    assert "`hf auth login`" in message and "HF_TOKEN" in message
    assert f"HF_ENDPOINT={hub.url}" in message
    assert hub.downloaded() == []


def test_gated_repo_with_token_of_user_without_access(hub: Any, hub_env: Path) -> None:
    with pytest.raises(ModelAccessError, match="has not been granted access") as info:
        resolve_model("sao-1.0", token=NOT_GRANTED, cache_dir=hub_env)
    assert f"https://huggingface.co/{SAO}" in str(info.value)


def test_invalid_token_is_rejected(hub: Any, hub_env: Path) -> None:
    with pytest.raises(ModelAccessError, match="token was rejected"):
        resolve_model("sao-1.0", token="hf_typo", cache_dir=hub_env)


def test_hf_token_env_is_used_and_explicit_token_wins(
    hub: Any, hub_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", GRANTED)
    assert resolve_model("sao-small", cache_dir=hub_env).repo_id == SMALL
    monkeypatch.setenv("HF_TOKEN", "hf_typo")
    assert resolve_model("sao-small", token=GRANTED, cache_dir=hub_env).repo_id == SMALL
    auth = {r.authorization for r in hub.requests if "/resolve/" in r.path}
    assert auth == {f"Bearer {GRANTED}"}


# --- not found -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "kwargs", "message"),
    [
        ("someone/nothing-here", {}, "no such model repo on the Hugging Face Hub: someone/noth"),
        ("someone/nothing-here", {"token": GRANTED}, "no such model repo"),
        ("sao-small", {"token": GRANTED, "revision": "v9"}, "has no revision 'v9'"),
        ("someone/no-config", {}, "has no model_config.json, so it is not a stable-audio-tools"),
        ("someone/no-checkpoint", {}, "has neither model.safetensors nor model.ckpt"),
        ("someone/lost-weights", {}, "someone/lost-weights has no file model.safetensors"),
    ],
    ids=["repo-anonymous", "repo-with-token", "revision", "config", "checkpoint", "file-404"],
)
def test_hub_not_found(
    hub: Any, hub_env: Path, source: str, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ModelNotFoundError, match=message):
        resolve_model(source, cache_dir=hub_env, **kwargs)


# --- offline and unreachable ---------------------------------------------------------------------


@pytest.mark.parametrize("alias", ["sao-1.0", "sao-small"])
def test_offline_after_download_needs_no_server(
    hub: Any, hub_env: Path, monkeypatch: pytest.MonkeyPatch, alias: str
) -> None:
    online = download_model(alias, token=GRANTED, cache_dir=hub_env)
    hub.stop()
    hub.requests.clear()
    assert resolve_model(alias, offline=True, cache_dir=hub_env) == online
    assert resolve_model(alias, download=False, cache_dir=hub_env) == online
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model(alias, cache_dir=hub_env) == online
    assert hub.requests == []


def test_unreachable_hub_falls_back_to_the_cache(
    hub: Any, hub_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    online = resolve_model("sao-small", token=GRANTED, cache_dir=hub_env)
    hub.stop()  # connection refused from now on
    assert resolve_model("sao-small", token=GRANTED, cache_dir=hub_env) == online
    assert f"the Hugging Face Hub at {hub.url} cannot be reached (ConnectError:" in caplog.text
    assert "using the cached copy of stabilityai/stable-audio-open-small" in caplog.text


def test_offline_with_empty_cache_says_what_is_missing(
    hub_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("sao-1.0", offline=True, cache_dir=hub_env)
    assert str(info.value) == (
        f"model_config.json of {SAO} is not in the local cache ({hub_env}) and offline mode is"
        " on; fetch it while online with `latentloop download sao-1.0`"
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match=r"offline mode is on \(HF_HUB_OFFLINE=1\)"):
        resolve_model("sao-1.0", cache_dir=hub_env)
    with pytest.raises(ModelNotFoundError, match="offline mode is on; fetch it while online"):
        download_t5(offline=True, cache_dir=hub_env)


def test_unreachable_hub_with_empty_cache(hub_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeHub({}) as gone:
        url = gone.url
    _point_hub_at(monkeypatch, url)  # nothing listens there any more
    with pytest.raises(HubUnreachableError) as info:
        resolve_model("sao-1.0", cache_dir=hub_env)
    assert str(info.value) == (
        f"model_config.json of {SAO} is not in the local cache ({hub_env}) and the Hugging Face"
        f" Hub at {url} cannot be reached (ConnectError: [Errno 111] Connection refused); fetch"
        " it while online with `latentloop download sao-1.0`"
    )
    assert isinstance(info.value, ModelLoadError)
    with pytest.raises(HubUnreachableError) as info:
        download_t5(cache_dir=hub_env)
    assert str(info.value).endswith(
        "; without a network, use a model already in the local cache (offline mode:"
        " HF_HUB_OFFLINE=1) or a local model folder"
    )


# --- local folders and files ---------------------------------------------------------------------


def _folder(path: Path, *names: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name in names:
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(CONFIG if name.endswith(".json") else b"x")
    return path


OWN_T5 = ("text_encoder/config.json", "text_encoder/model.safetensors", "tokenizer/spiece.model")


def test_local_folder_prefers_safetensors_and_own_t5(tmp_path: Path, hub_env: Path) -> None:
    root = _folder(tmp_path / "ft", "model_config.json", "model.safetensors", "model.ckpt", *OWN_T5)
    files = resolve_model(str(root), cache_dir=hub_env)
    assert files == ModelFiles(
        name=str(root),
        root=root,
        config_path=root / "model_config.json",
        checkpoint_path=root / "model.safetensors",
        t5_dir=root / "text_encoder",
        tokenizer_dir=root / "tokenizer",
        repo_id=None,
        revision=None,
    )


def test_checkpoint_file_in_a_model_folder(tmp_path: Path, hub_env: Path) -> None:
    root = _folder(tmp_path / "ft", "model_config.json", "model.safetensors", "step_9000.ckpt")
    files = resolve_model(str(root / "step_9000.ckpt"), cache_dir=hub_env)
    assert (files.root, files.checkpoint_path) == (root, root / "step_9000.ckpt")
    assert files.t5_dir is None and files.tokenizer_dir is None  # nothing in the cache either


def test_local_folder_takes_t5_from_the_cache(hub: Any, hub_env: Path, tmp_path: Path) -> None:
    root = _folder(tmp_path / "ft", "model_config.json", "model.ckpt")
    t5 = download_t5(cache_dir=hub_env)
    assert t5 == _snapshot(hub_env, T5_REPO, hub.repos[T5_REPO].sha)
    hub.stop()
    files = resolve_model(str(root), cache_dir=hub_env)
    assert (files.checkpoint_path, files.t5_dir, files.tokenizer_dir) == (
        root / "model.ckpt",
        t5,
        t5,
    )


def test_local_folder_finds_legacy_t5_base_cache(tmp_path: Path, hub_env: Path) -> None:
    # the layout engine-spec §13.3 describes: models--t5-base with refs/main and one snapshot
    sha = "a" * 40
    repo = hub_env / "models--t5-base"
    _folder(repo / "snapshots" / sha, "config.json", "model.safetensors", "tokenizer.json")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    root = _folder(tmp_path / "ft", "model_config.json", "model.safetensors")
    files = resolve_model(str(root), cache_dir=hub_env)
    assert files.t5_dir == files.tokenizer_dir == repo / "snapshots" / sha


def test_existing_path_wins_over_repo_id(
    tmp_path: Path, hub_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _folder(tmp_path / "stabilityai" / "stable-audio-open-1.0", "model_config.json", "model.ckpt")
    monkeypatch.chdir(tmp_path)
    files = resolve_model(SAO, cache_dir=hub_env)  # no hub running: it must not be asked
    assert files.repo_id is None and files.root == tmp_path / SAO


@pytest.mark.parametrize(
    ("names", "source", "message"),
    [
        ((), "./missing-finetune", "no model './missing-finetune': it is not an existing file"),
        ((), "tiny-typo", r"not a known alias \(sao-1.0, sao-small\), and not a Hugging Face"),
        (("model.safetensors",), ".", "has no model_config.json, so it is not a stable-audio"),
        (("model_config.json",), ".", "has neither model.safetensors nor model.ckpt"),
        (("model_config.json", "notes.txt"), "notes.txt", "notes.txt is not a checkpoint"),
    ],
    ids=["missing-path", "bare-name", "no-config", "no-checkpoint", "not-a-checkpoint"],
)
def test_local_errors(
    tmp_path: Path,
    hub_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    names: tuple[str, ...],
    source: str,
    message: str,
) -> None:
    _folder(tmp_path / "work", *names)
    monkeypatch.chdir(tmp_path / "work")
    with pytest.raises(ModelNotFoundError, match=message):
        resolve_model(source, cache_dir=hub_env)


# --- the local cache listing ---------------------------------------------------------------------


def test_list_local_models(hub: Any, hub_env: Path) -> None:
    assert list_local_models(hub_env) == []  # no cache folder yet
    resolve_model("sao-1.0", token=GRANTED, cache_dir=hub_env)
    resolve_model("sao-small", token=GRANTED, cache_dir=hub_env)
    found = {m.repo_id: m for m in list_local_models(hub_env)}
    assert set(found) == {SAO, SMALL, T5_REPO}
    sao, small, t5 = found[SAO], found[SMALL], found[T5_REPO]
    assert (sao.kind, sao.has_checkpoint, sao.has_t5) == ("sat", True, True)
    assert (small.kind, small.has_checkpoint, small.has_t5) == ("sat", True, False)
    assert (t5.kind, t5.has_checkpoint) == ("t5", True)
    assert sao.revisions == (hub.repos[SAO].sha,) and sao.refs == ("main",)
    assert sao.size_bytes == sum(len(hub.repos[SAO].files[n]) for n in SAO_EXPECTED)


# --- the CLI -------------------------------------------------------------------------------------


def test_cli_download_and_models_json(
    hub: Any, hub_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = run_cli(["download", "sao-small", "--token", GRANTED, "--cache-dir", str(hub_env)])
    out = capsys.readouterr().out
    root = _snapshot(hub_env, SMALL, hub.repos[SMALL].sha)
    assert rc == 0
    assert f"model       {SMALL} @ {hub.repos[SMALL].sha}" in out
    assert f"checkpoint  {root / 'model.safetensors'}" in out
    assert run_cli(["models", "--cache-dir", str(hub_env), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [b["name"] for b in report["builtin"]] == ["tiny", "tiny-rf"]
    assert all(
        "built-in, random weights, makes noise" in b["description"] for b in report["builtin"]
    )
    assert {a["alias"]: a["cached"] for a in report["aliases"]} == {
        "sao-1.0": False,
        "sao-small": True,
    }
    assert report["t5_cached"] is True and report["cache_dir"] == str(hub_env)
    assert {m["repo_id"] for m in report["local"]} == {SMALL, T5_REPO}


def test_cli_models_text_and_t5_download(
    hub: Any, hub_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["models", "--cache-dir", str(hub_env)]) == 0
    out = capsys.readouterr().out
    assert "tiny       built-in, random weights, makes noise" in out
    assert "(no stable-audio-tools models)" in out
    assert f"not cached: latentloop download {T5_REPO}" in out
    assert run_cli(["download", T5_REPO, "--cache-dir", str(hub_env)]) == 0
    assert capsys.readouterr().out.startswith("t5          ")
    assert _fetched(hub, T5_REPO) == T5_EXPECTED


def test_cli_download_error_exits_3(
    hub: Any, hub_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(["download", "someone/nothing-here", "--cache-dir", str(hub_env)]) == 3
    assert capsys.readouterr().err == (
        "latentloop: cannot load model: no such model repo on the Hugging Face Hub:"
        " someone/nothing-here (check the name; if it is private, log in with `hf auth login`"
        " or set HF_TOKEN)\n"
    )


# --- the real environment variables, in a subprocess ---------------------------------------------


def test_subprocess_uses_hf_endpoint_home_and_token_without_torch(hub: Any, tmp_path: Path) -> None:
    home = tmp_path / "sub_home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env |= {"HF_ENDPOINT": hub.url, "HF_HOME": str(home), "HF_TOKEN": GRANTED}
    code = (
        "import sys\n"
        "from latentloop_daemon.cli import models\n"
        "from latentloop_daemon.backends.sat.sources import download_model\n"
        "print(download_model('sao-1.0').checkpoint_path)\n"
        "assert 'torch' not in sys.modules, 'sources and cli.models must not import torch'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    root = _snapshot(home / "hub", SAO, hub.repos[SAO].sha)
    assert done.stdout.strip() == str(root / "model.safetensors")
