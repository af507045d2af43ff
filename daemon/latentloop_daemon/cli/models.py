"""The `latentloop download` and `latentloop models` subcommands: fetch models, list local ones.

Both print their result to stdout (paths, tables or JSON); errors propagate as `LatentloopError`s,
which `cli.main` turns into exit codes. Neither imports torch, and huggingface_hub is imported only
when a subcommand runs, so `latentloop --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latentloop_daemon.exit_codes import ExitCode

if TYPE_CHECKING:
    from latentloop_daemon.backends.sat.sources import LocalModel, ModelFiles

BUILTIN_NOTE = "built-in, random weights, makes noise"
BUILTIN_MODELS: dict[str, str] = {
    "tiny": "v-objective sampler, like SAO 1.0",
    "tiny-rf": "rectified-flow sampler, like SAO Small",
}


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``download`` and ``models`` subcommands."""
    download = subparsers.add_parser(
        "download",
        help="download a model (and its T5 text encoder) into the Hugging Face cache",
        description="Download only the files a model needs: model_config.json, one checkpoint"
        " and the T5 encoder + tokenizer. MODEL is an alias (sao-1.0, sao-small), a Hub repo"
        " id (owner/name), or google-t5/t5-base for the T5 encoder alone.",
    )
    download.add_argument("model", metavar="MODEL", help="alias or Hub repo id")
    download.add_argument("--revision", help="branch, tag or commit (default: main)")
    download.add_argument("--token", help="Hugging Face token (default: HF_TOKEN or hf auth login)")
    download.add_argument("--cache-dir", type=Path, help="hub cache folder (default: HF_HUB_CACHE)")
    download.set_defaults(handler=run_download)

    models = subparsers.add_parser(
        "models",
        help="list built-in models, known aliases and the models in the local cache",
    )
    models.add_argument("--cache-dir", type=Path, help="hub cache folder (default: HF_HUB_CACHE)")
    models.add_argument("--json", action="store_true", help="print machine-readable JSON")
    models.set_defaults(handler=run_models)


def run_download(args: argparse.Namespace) -> int:
    """Download MODEL's files and print where they are."""
    from latentloop_daemon.backends.sat import sources

    if args.model in sources.T5_CACHE_REPOS:
        folder = sources.download_t5(token=args.token, cache_dir=args.cache_dir)
        print(f"t5          {folder}")
        return ExitCode.OK
    files = sources.download_model(
        args.model, revision=args.revision, token=args.token, cache_dir=args.cache_dir
    )
    print(_describe_files(files))
    return ExitCode.OK


def run_models(args: argparse.Namespace) -> int:
    """Print the built-in models, the known aliases and what is in the local cache."""
    from latentloop_daemon.backends.sat import sources

    local = sources.list_local_models(args.cache_dir)
    report = models_report(local, sources.KNOWN_MODELS, sources.hub_cache_dir(args.cache_dir))
    print(json.dumps(report, indent=2) if args.json else _format_report(report))
    return ExitCode.OK


def models_report(
    local: list[LocalModel], aliases: dict[str, str], cache_dir: Path
) -> dict[str, Any]:
    """Build the ``latentloop models --json`` document (plain JSON types only)."""
    cached = {m.repo_id for m in local if m.kind == "sat" and m.has_checkpoint}
    return {
        "builtin": [
            {"name": name, "description": f"{BUILTIN_NOTE} ({like})"}
            for name, like in BUILTIN_MODELS.items()
        ],
        "aliases": [
            {"alias": alias, "repo_id": repo_id, "cached": repo_id in cached}
            for alias, repo_id in aliases.items()
        ],
        "cache_dir": str(cache_dir),
        "local": [_local_entry(m) for m in local],
        "t5_cached": any(m.kind == "t5" and m.has_checkpoint for m in local),
    }


def _local_entry(model: LocalModel) -> dict[str, Any]:
    """Turn a `LocalModel` into JSON types."""
    return {
        "repo_id": model.repo_id,
        "kind": model.kind,
        "revisions": list(model.revisions),
        "refs": list(model.refs),
        "size_bytes": model.size_bytes,
        "has_checkpoint": model.has_checkpoint,
        "has_t5": model.has_t5,
        "path": str(model.path),
    }


def _describe_files(files: ModelFiles) -> str:
    """Format resolved model files as aligned ``label  value`` lines."""
    source = f"{files.repo_id} @ {files.revision}" if files.repo_id else str(files.root)
    rows = [
        ("model", source),
        ("config", files.config_path),
        ("checkpoint", files.checkpoint_path),
        ("t5", files.t5_dir or "not found"),
        ("tokenizer", files.tokenizer_dir or "not found"),
    ]
    return "\n".join(f"{label:<11} {value}" for label, value in rows)


def _format_report(report: dict[str, Any]) -> str:
    """Format the models report for people."""
    from latentloop_daemon.backends.sat.sources import T5_REPO, format_size

    lines = ["Built-in models (no download):"]
    lines += [f"  {b['name']:<10} {b['description']}" for b in report["builtin"]]
    lines += ["", "Known aliases:"]
    for a in report["aliases"]:
        state = "cached" if a["cached"] else f"not downloaded: latentloop download {a['alias']}"
        lines.append(f"  {a['alias']:<10} {a['repo_id']}  ({state})")
    lines += ["", f"In the local cache ({report['cache_dir']}):"]
    sat = [m for m in report["local"] if m["kind"] == "sat"]
    for m in sat:
        revision = (m["refs"] or ["?"])[0] + "@" + (m["revisions"] or ["?"])[0][:7]
        parts = ["checkpoint" if m["has_checkpoint"] else "no checkpoint"]
        parts += ["own T5"] if m["has_t5"] else []
        size = format_size(m["size_bytes"])
        lines.append(f"  {m['repo_id']}  {size}  {revision}  {', '.join(parts)}")
    if not sat:
        lines.append("  (no stable-audio-tools models)")
    t5 = "cached" if report["t5_cached"] else f"not cached: latentloop download {T5_REPO}"
    lines += ["", f"T5 text encoder ({T5_REPO}): {t5}"]
    return "\n".join(lines)
