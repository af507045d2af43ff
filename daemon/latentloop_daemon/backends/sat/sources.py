"""Find a stable-audio-tools-format model's files: in a local folder, or on the Hugging Face Hub.

A model is ``model_config.json`` plus a checkpoint (``model.safetensors``, else ``model.ckpt``),
and a T5-base encoder with its tokenizer (engine-spec §11-§12). `resolve_model` turns what the user
typed (a folder, a checkpoint file, an alias from `KNOWN_MODELS`, or a Hub repo id) into
`ModelFiles`. From the Hub it fetches only those files, never the whole repo: SAO 1.0's repo also
holds a multi-GB ``model.ckpt`` and diffusers folders. T5 comes from the repo's own
``text_encoder/`` + ``tokenizer/`` folders when it has them (SAO 1.0), else from `T5_REPO`.

Hub access goes through `huggingface_hub`, so its settings apply: ``HF_ENDPOINT``, ``HF_HOME`` /
``HF_HUB_CACHE``, ``HF_TOKEN`` or the token saved by ``hf auth login``, ``HF_HUB_OFFLINE``. Its
exceptions are translated into `latentloop_daemon.errors` in one place, `_hub_errors`. This
module never imports torch.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import (
    HfApi,
    constants,
    hf_hub_download,
    scan_cache_dir,
    try_to_load_from_cache,
)
from huggingface_hub.errors import (
    CacheNotFound,
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from latentloop_daemon.errors import (
    HubUnreachableError,
    ModelAccessError,
    ModelLoadError,
    ModelNotFoundError,
)

logger = logging.getLogger(__name__)

KNOWN_MODELS: dict[str, str] = {
    "sao-1.0": "stabilityai/stable-audio-open-1.0",
    "sao-small": "stabilityai/stable-audio-open-small",
}
T5_REPO = "google-t5/t5-base"
T5_CACHE_REPOS = (T5_REPO, "t5-base")  # "t5-base" is the legacy name older caches use
# Where users accept a gated model's license. Gating lives on huggingface.co even when HF_ENDPOINT
# points at a mirror (or at a test server), so messages always show this standard form.
HUB_WEB_URL = "https://huggingface.co"
CONFIG_NAME = "model_config.json"
CHECKPOINT_NAMES = ("model.safetensors", "model.ckpt")  # in order of preference
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
T5_WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")  # in order of preference
T5_VOCAB_NAMES = ("spiece.model", "tokenizer.json")  # at least one must exist
T5_TOKENIZER_NAMES = (*T5_VOCAB_NAMES, "tokenizer_config.json", "special_tokens_map.json")
OWN_T5_DIRS = ("text_encoder/", "tokenizer/")  # diffusers layout inside SAO 1.0's repo
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_TRUE = {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True, slots=True)
class ModelFiles:
    """The files of one stable-audio-tools-format model, all on local disk."""

    name: str  # what the user asked for ("stabilityai/stable-audio-open-1.0", "./my-finetune")
    root: Path  # folder holding model_config.json
    config_path: Path  # model_config.json
    checkpoint_path: Path  # model.safetensors, else model.ckpt (or the file the user named)
    t5_dir: Path | None  # T5 encoder: config.json + model.safetensors / pytorch_model.bin
    tokenizer_dir: Path | None  # T5 tokenizer files (spiece.model and/or tokenizer.json)
    repo_id: str | None  # hub repo id when it came from the hub
    revision: str | None  # hub commit hash when known


@dataclass(frozen=True, slots=True)
class LocalModel:
    """A model repo found in the local Hugging Face cache."""

    repo_id: str
    kind: str  # "sat" (stable-audio-tools format: has model_config.json) or "t5" (text encoder)
    revisions: tuple[str, ...]  # cached commit hashes, newest first
    refs: tuple[str, ...]  # branch or tag names pointing at one of them ("main")
    size_bytes: int  # on disk, all cached revisions together
    has_checkpoint: bool  # sat: a revision holds config + checkpoint; t5: config + weights + vocab
    has_t5: bool  # sat: a revision holds its own text_encoder/ + tokenizer/; t5: = has_checkpoint
    path: Path  # the repo's folder in the cache


@dataclass(frozen=True, slots=True)
class _Listing:
    """The files of a hub repo at one commit, with their sizes in bytes."""

    sha: str
    sizes: dict[str, int | None]


def resolve_model(
    source: str,
    *,
    offline: bool | None = None,
    token: str | None = None,
    cache_dir: Path | None = None,
    download: bool = True,
    revision: str | None = None,
) -> ModelFiles:
    """Find (and, from the Hub, download) the files of the model named by ``source``.

    Args:
        source: a local folder holding model_config.json, a .safetensors/.ckpt file in such a
            folder, an alias from `KNOWN_MODELS`, or a Hub repo id ``owner/name``. An existing
            path always wins over an alias or repo id.
        offline: use only the local cache; None means "if HF_HUB_OFFLINE is set".
        token: Hub token; None uses HF_TOKEN or the one saved by ``hf auth login``.
        cache_dir: Hugging Face hub cache; None uses huggingface_hub's (HF_HUB_CACHE).
        download: False never touches the network, like ``offline``.
        revision: branch, tag or commit of the Hub repo; None means "main".

    Raises:
        ModelNotFoundError: no such folder, file, repo, revision or file, or not cached offline.
        ModelAccessError: the repo is gated (license not accepted, not logged in) or the token
            was rejected.
        HubUnreachableError: the Hub cannot be reached and the files are not cached.
    """
    path = Path(source).expanduser()
    if path.exists():
        return _resolve_local(source, path, cache_dir)
    repo_id = _repo_id_for(source, path)
    if _is_offline(offline):
        reason = "offline mode is on" + (" (HF_HUB_OFFLINE=1)" if offline is None else "")
        return _resolve_cached(source, repo_id, revision, cache_dir, reason)
    if not download:
        return _resolve_cached(source, repo_id, revision, cache_dir, "downloads are disabled")
    return _resolve_hub(source, repo_id, revision=revision, token=token, cache_dir=cache_dir)


def download_model(
    source: str,
    *,
    offline: bool | None = None,
    token: str | None = None,
    cache_dir: Path | None = None,
    download: bool = True,
    revision: str | None = None,
) -> ModelFiles:
    """Download what `resolve_model` needs (``latentloop download``); ``download`` is forced on."""
    del download  # accepted for signature parity with resolve_model; always downloads
    return resolve_model(
        source, offline=offline, token=token, cache_dir=cache_dir, download=True, revision=revision
    )


def download_t5(
    *, offline: bool | None = None, token: str | None = None, cache_dir: Path | None = None
) -> Path:
    """Fetch `T5_REPO`'s config, encoder weights and tokenizer files; return their folder.

    For models whose repo carries no T5 (SAO Small), and for ``latentloop download
    google-t5/t5-base``. Offline, or when the Hub is unreachable, it returns the cached copy.
    """
    if _is_offline(offline):
        cached = _cached_t5(cache_dir)
        if cached is None:
            raise ModelNotFoundError(
                f"{T5_REPO} is not in the local cache ({hub_cache_dir(cache_dir)}) and"
                f" offline mode is on; fetch it while online with `latentloop download {T5_REPO}`"
            )
        return cached
    try:
        return _download_t5_files(token, cache_dir)
    except HubUnreachableError as e:
        cached = _cached_t5(cache_dir)
        if cached is None:
            raise
        logger.warning(
            "%s; using the cached copy of %s", _unreachable_reason(e.__cause__ or e), T5_REPO
        )
        return cached


def list_local_models(cache_dir: Path | None = None) -> list[LocalModel]:
    """List the stable-audio-tools repos and T5 encoders in the local Hugging Face cache."""
    try:
        info = scan_cache_dir(cache_dir)
    except CacheNotFound:
        return []
    found = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        revisions = sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True)
        contents = [
            {f.file_path.relative_to(r.snapshot_path).as_posix() for f in r.files}
            for r in revisions
        ]
        model = _describe_cached_repo(repo.repo_id, contents)
        if model is None:
            continue
        kind, has_checkpoint, has_t5 = model
        found.append(
            LocalModel(
                repo_id=repo.repo_id,
                kind=kind,
                revisions=tuple(r.commit_hash for r in revisions),
                refs=tuple(sorted(ref for r in revisions for ref in r.refs)),
                size_bytes=repo.size_on_disk,
                has_checkpoint=has_checkpoint,
                has_t5=has_t5,
                path=repo.repo_path,
            )
        )
    return sorted(found, key=lambda m: (m.kind, m.repo_id))


def hub_cache_dir(cache_dir: Path | None = None) -> Path:
    """Return the hub cache folder in use: ``cache_dir``, else huggingface_hub's HF_HUB_CACHE."""
    return Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE)


def format_size(num_bytes: int | None) -> str:
    """Format a byte count for people ("4.85 GB"); "size unknown" for None."""
    if num_bytes is None:
        return "size unknown"
    size = float(num_bytes)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


# --- choosing files (shared by local folders, the cache and the hub) ------------------------------


def _pick_checkpoint(has: Callable[[str], bool]) -> str | None:
    """Return the preferred checkpoint name among those ``has`` reports, or None."""
    return next((name for name in CHECKPOINT_NAMES if has(name)), None)


def _t5_files(has: Callable[[str], bool], encoder_dir: str, tokenizer_dir: str) -> list[str] | None:
    """Return the T5 files to use (config first); None if the encoder or vocabulary is missing."""
    config = f"{encoder_dir}config.json"
    weights = next((f"{encoder_dir}{n}" for n in T5_WEIGHT_NAMES if has(f"{encoder_dir}{n}")), None)
    tokenizer = [f"{tokenizer_dir}{n}" for n in T5_TOKENIZER_NAMES if has(f"{tokenizer_dir}{n}")]
    has_vocab = any(has(f"{tokenizer_dir}{n}") for n in T5_VOCAB_NAMES)
    if not has(config) or weights is None or not has_vocab:
        return None
    return [config, weights, *tokenizer]


def _own_t5_files(has: Callable[[str], bool]) -> list[str] | None:
    """Return the repo's own diffusers-layout T5 files (text_encoder/, tokenizer/), if complete."""
    return _t5_files(has, *OWN_T5_DIRS)


def _describe_cached_repo(repo_id: str, contents: list[set[str]]) -> tuple[str, bool, bool] | None:
    """Classify a cached repo from its revisions' file lists: (kind, has_checkpoint, has_t5)."""
    if repo_id in T5_CACHE_REPOS:
        complete = any(_t5_files(names.__contains__, "", "") is not None for names in contents)
        return "t5", complete, complete
    if not any(CONFIG_NAME in names for names in contents):
        return None
    has_checkpoint = any(
        CONFIG_NAME in names and _pick_checkpoint(names.__contains__) is not None
        for names in contents
    )
    has_t5 = any(_own_t5_files(names.__contains__) is not None for names in contents)
    return "sat", has_checkpoint, has_t5


# --- local folders --------------------------------------------------------------------------------


def _resolve_local(source: str, path: Path, cache_dir: Path | None) -> ModelFiles:
    """Resolve a local model folder, or a checkpoint file (or model_config.json) inside one."""
    path = path.resolve()
    root = path if path.is_dir() else path.parent
    config_path = root / CONFIG_NAME
    if not config_path.is_file():
        raise ModelNotFoundError(
            f"{root} has no {CONFIG_NAME}, so it is not a stable-audio-tools model folder"
        )
    if path.is_dir() or path.name == CONFIG_NAME:
        checkpoint_name = _pick_checkpoint(lambda name: (root / name).is_file())
        if checkpoint_name is None:
            raise ModelNotFoundError(f"{root} has neither {' nor '.join(CHECKPOINT_NAMES)}")
        checkpoint_path = root / checkpoint_name
    elif path.suffix in CHECKPOINT_SUFFIXES:
        checkpoint_path = path
    else:
        raise ModelNotFoundError(
            f"{path} is not a checkpoint: expected a {' or '.join(CHECKPOINT_SUFFIXES)} file"
        )
    t5_dir, tokenizer_dir = _local_t5(root, cache_dir)
    return ModelFiles(source, root, config_path, checkpoint_path, t5_dir, tokenizer_dir, None, None)


def _local_t5(root: Path, cache_dir: Path | None) -> tuple[Path | None, Path | None]:
    """Find T5 for a local folder: its own text_encoder/ + tokenizer/, else t5-base in the cache."""
    if _own_t5_files(lambda name: (root / name).is_file()) is not None:
        return root / "text_encoder", root / "tokenizer"
    cached = _cached_t5(cache_dir)
    if cached is None:
        logger.warning("no T5 encoder next to %s and %s is not in the local cache", root, T5_REPO)
        return None, None
    return cached, cached


def _repo_id_for(source: str, path: Path) -> str:
    """Map an alias or ``owner/name`` to a repo id; raise ModelNotFoundError for anything else."""
    if source in KNOWN_MODELS:
        return KNOWN_MODELS[source]
    if _REPO_ID.fullmatch(source):
        return source
    raise ModelNotFoundError(
        f"no model {source!r}: it is not an existing file or folder ({path.resolve()}), not a"
        f" known alias ({', '.join(KNOWN_MODELS)}), and not a Hugging Face repo id (owner/name)"
    )


# --- the local Hugging Face cache -----------------------------------------------------------------


def _is_offline(offline: bool | None) -> bool:
    """Decide offline mode: the argument if given, else HF_HUB_OFFLINE (at import or now)."""
    if offline is not None:
        return offline
    now = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return bool(constants.HF_HUB_OFFLINE) or now.upper() in _TRUE


def _cached_file(
    repo_id: str, filename: str, cache_dir: Path | None, revision: str | None
) -> Path | None:
    """Return a file's path in the local cache at ``revision`` (default "main"), or None."""
    found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
    return Path(found) if isinstance(found, str) else None


def _cached_t5(cache_dir: Path | None) -> Path | None:
    """Return the snapshot folder of a complete cached t5-base (either repo name), or None."""
    for repo_id in T5_CACHE_REPOS:
        config = _cached_file(repo_id, "config.json", cache_dir, None)
        if config is not None and _is_t5_folder(config.parent):
            return config.parent
    return None


def _is_t5_folder(folder: Path) -> bool:
    """Tell whether a folder holds a whole T5 encoder: config, weights and tokenizer vocabulary."""
    return _t5_files(lambda name: (folder / name).is_file(), "", "") is not None


def _resolve_cached(
    source: str, repo_id: str, revision: str | None, cache_dir: Path | None, reason: str
) -> ModelFiles:
    """Resolve a hub model from the local cache only; ``reason`` says why the hub is not asked."""

    def has(name: str) -> bool:
        return _cached_file(repo_id, name, cache_dir, revision) is not None

    def missing(name: str) -> ModelNotFoundError:
        where = hub_cache_dir(cache_dir)
        return ModelNotFoundError(
            f"{name} of {repo_id} is not in the local cache ({where}) and {reason}; fetch it"
            f" while online with `latentloop download {source}`"
        )

    config_path = _cached_file(repo_id, CONFIG_NAME, cache_dir, revision)
    if config_path is None:
        raise missing(CONFIG_NAME)
    checkpoint_name = _pick_checkpoint(has)
    if checkpoint_name is None:
        raise missing(CHECKPOINT_NAMES[0])
    root = config_path.parent
    own_t5 = _own_t5_files(has) is not None
    t5_dir = root / "text_encoder" if own_t5 else _cached_t5(cache_dir)
    tokenizer_dir = root / "tokenizer" if own_t5 else t5_dir
    logger.info("using %s from the local cache (%s)", repo_id, reason)
    return ModelFiles(
        source, root, config_path, root / checkpoint_name, t5_dir, tokenizer_dir, repo_id, root.name
    )


# --- the hub --------------------------------------------------------------------------------------


def _resolve_hub(
    source: str, repo_id: str, *, revision: str | None, token: str | None, cache_dir: Path | None
) -> ModelFiles:
    """Download the model's files from the Hub; use the cached copy if the Hub is unreachable."""
    try:
        return _download_hub(source, repo_id, revision=revision, token=token, cache_dir=cache_dir)
    except HubUnreachableError as e:
        return _fallback_to_cache(source, repo_id, revision, cache_dir, e)


def _download_hub(
    source: str, repo_id: str, *, revision: str | None, token: str | None, cache_dir: Path | None
) -> ModelFiles:
    """Download the model's files from the Hub (only those needed) and return their paths."""
    # 1. List the repo's files and their sizes (one API call).
    listing = _list_repo(repo_id, revision, token)
    # 2. Choose the files: config, one checkpoint, and T5 when the repo carries its own.
    has = listing.sizes.__contains__
    if not has(CONFIG_NAME):
        raise ModelNotFoundError(
            f"{repo_id} has no {CONFIG_NAME}, so it is not a stable-audio-tools model"
        )
    checkpoint_name = _pick_checkpoint(has)
    if checkpoint_name is None:
        raise ModelNotFoundError(f"{repo_id} has neither {' nor '.join(CHECKPOINT_NAMES)}")
    own_t5 = _own_t5_files(has) or []
    # 3. Download them into the cache (files already there are only checked, not fetched).
    paths = {
        name: _fetch(repo_id, name, listing, revision, token, cache_dir)
        for name in (CONFIG_NAME, checkpoint_name, *own_t5)
    }
    root = paths[CONFIG_NAME].parent
    # 4. T5 from the repo itself, else from google-t5/t5-base.
    if own_t5:
        t5_dir, tokenizer_dir = root / "text_encoder", root / "tokenizer"
    else:
        t5_dir = tokenizer_dir = download_t5(offline=False, token=token, cache_dir=cache_dir)
    return ModelFiles(
        name=source,
        root=root,
        config_path=paths[CONFIG_NAME],
        checkpoint_path=paths[checkpoint_name],
        t5_dir=t5_dir,
        tokenizer_dir=tokenizer_dir,
        repo_id=repo_id,
        revision=listing.sha,
    )


def _fallback_to_cache(
    source: str, repo_id: str, revision: str | None, cache_dir: Path | None, error: Exception
) -> ModelFiles:
    """Use the cached copy when the hub is unreachable; re-raise ``error`` if there is none."""
    reason = _unreachable_reason(error.__cause__ or error)
    try:
        files = _resolve_cached(source, repo_id, revision, cache_dir, reason)
    except ModelNotFoundError as missing:
        raise HubUnreachableError(str(missing)) from error
    logger.warning("%s; using the cached copy of %s", reason, repo_id)
    return files


def _download_t5_files(token: str | None, cache_dir: Path | None) -> Path:
    """Download the T5 files of `T5_REPO` (only those needed) and return their folder."""
    listing = _list_repo(T5_REPO, None, token)
    files = _t5_files(listing.sizes.__contains__, "", "")
    if files is None:
        raise ModelNotFoundError(
            f"{T5_REPO} lacks config.json, model weights or a tokenizer vocabulary"
        )
    paths = [_fetch(T5_REPO, name, listing, None, token, cache_dir) for name in files]
    return paths[0].parent


def _list_repo(repo_id: str, revision: str | None, token: str | None) -> _Listing:
    """Ask the hub for the repo's commit and file sizes at ``revision``."""
    with _hub_errors(repo_id, revision=revision):
        info = HfApi().model_info(repo_id, revision=revision, token=token, files_metadata=True)
    sizes = {s.rfilename: s.size for s in info.siblings or []}
    return _Listing(sha=info.sha or "", sizes=sizes)


def _fetch(
    repo_id: str,
    filename: str,
    listing: _Listing,
    revision: str | None,
    token: str | None,
    cache_dir: Path | None,
) -> Path:
    """Download one file into the cache (only checked when already there); return its path."""
    if _cached_file(repo_id, filename, cache_dir, listing.sha) is None:
        size = format_size(listing.sizes.get(filename))
        logger.info("downloading %s from %s (%s)", filename, repo_id, size)
    else:
        logger.debug("%s from %s is already cached", filename, repo_id)
    with _hub_errors(repo_id, filename=filename, revision=revision):
        path = hf_hub_download(
            repo_id, filename, revision=revision, token=token, cache_dir=cache_dir
        )
    return Path(path)


def _network_errors() -> tuple[type[BaseException], ...]:
    """Return the exception types huggingface_hub's HTTP client raises when the network fails."""
    types: list[type[BaseException]] = [ConnectionError, TimeoutError]  # OfflineModeIsEnabled too
    for client in ("httpx2", "httpx"):  # huggingface_hub 2.x uses httpx2, 1.x httpx
        module = sys.modules.get(client)
        if module is not None:
            types.append(module.TransportError)
    return tuple(types)


@contextmanager
def _hub_errors(
    repo_id: str, *, filename: str | None = None, revision: str | None = None
) -> Iterator[None]:
    """Translate huggingface_hub's exceptions into latentloop's (the one place that does)."""
    try:
        yield
    except GatedRepoError as e:
        raise ModelAccessError(_gated_message(repo_id, e.response.status_code)) from e
    except RepositoryNotFoundError as e:
        raise ModelNotFoundError(
            f"no such model repo on the Hugging Face Hub: {repo_id} (check the name; if it is"
            " private, log in with `hf auth login` or set HF_TOKEN)"
        ) from e
    except RevisionNotFoundError as e:
        raise ModelNotFoundError(f"{repo_id} has no revision {revision!r}") from e
    except LocalEntryNotFoundError as e:  # the HEAD call failed and the file is not cached
        raise HubUnreachableError(_unreachable_message(e)) from e
    except EntryNotFoundError as e:
        raise ModelNotFoundError(f"{repo_id} has no file {filename}") from e
    except HfHubHTTPError as e:
        raise _http_error(repo_id, filename, e) from e
    except _network_errors() as e:
        raise HubUnreachableError(_unreachable_message(e)) from e


def _http_error(repo_id: str, filename: str | None, e: HfHubHTTPError) -> ModelLoadError:
    """Translate an HTTP error the specific handlers did not cover."""
    status = e.response.status_code
    what = f"{repo_id}/{filename}" if filename else repo_id
    if status in (401, 403):
        return ModelAccessError(
            f"the Hugging Face Hub refused access to {what} (HTTP {status}: your token was"
            " rejected or lacks permission); log in again with `hf auth login` or set HF_TOKEN"
            " to a valid token"
        )
    return ModelLoadError(f"the Hugging Face Hub answered HTTP {status} for {what}: {e}")


def _gated_message(repo_id: str, status: int) -> str:
    """Explain a gated repo: where to accept the license, and how to log in."""
    why = (
        "you are not logged in (no token was sent)"
        if status == 401
        else "your token's account has not been granted access yet"
    )
    message = (
        f"{repo_id} is a gated model and {why}. Accept its license at"
        f" {HUB_WEB_URL}/{repo_id} (with the account whose token you use), then log in with"
        " `hf auth login` or set HF_TOKEN"
    )
    if constants.ENDPOINT.rstrip("/") != HUB_WEB_URL:
        message += f" (requests went to HF_ENDPOINT={constants.ENDPOINT})"
    return message


def _unreachable_reason(e: BaseException) -> str:
    """Say that the hub cannot be reached, naming the endpoint and the network error."""
    cause = e.__cause__ or e  # LocalEntryNotFoundError wraps the network error
    return (
        f"the Hugging Face Hub at {constants.ENDPOINT} cannot be reached"
        f" ({cause.__class__.__name__}: {cause})"
    )


def _unreachable_message(e: BaseException) -> str:
    """Say that the hub cannot be reached, and what works without it."""
    return (
        f"{_unreachable_reason(e)}; without a network, use a model already in the local cache"
        " (offline mode: HF_HUB_OFFLINE=1) or a local model folder"
    )
