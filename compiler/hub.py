"""Hub ids in `init.path` and `init.distill.teacher_path`, resolved with huggingface_hub.

`org/name` or `org/name@revision` that names no local path is a Hub model. huggingface_hub
does all of the work: its cache (HF_HOME / HF_HUB_CACHE), HF_HUB_OFFLINE, and the token of
its own login or HF_TOKEN (slmc never reads, passes or stores a token). `slmc check`
fetches the config and tokenizer files only; the compile fetches the safetensors weights.
The resolved commit sha comes back with every snapshot so that a run records exactly
which revision it compiled.

huggingface_hub is imported inside the functions: a local path must not pay for it on the
cold `slmc check` path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import SlmcError

_HUB_ID = re.compile(
    r"^(?P<repo>[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95})(?:@(?P<rev>[A-Za-z0-9._/-]{1,200}))?$"
)
_COMMIT = re.compile(r"^[0-9a-f]{40}$")

CHECK_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json")
"""What `slmc check` fetches: everything it validates, and no weights."""

WEIGHT_FILES = ("*.safetensors", "model.safetensors.index.json")
"""What the compile fetches on top: safetensors only (pickles are never downloaded)."""


class HubError(SlmcError):
    """A Hub id that huggingface_hub could not resolve; the message says why, the fix what to do."""


@dataclass(frozen=True)
class HubRef:
    """A Hub model and the revision asked for (None: the default branch)."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.repo_id if self.revision is None else f"{self.repo_id}@{self.revision}"


@dataclass(frozen=True)
class HubSnapshot:
    """A resolved revision in the local cache."""

    ref: HubRef
    folder: Path
    """The cache's snapshot folder (snapshots/<commit>): a checkpoint folder like any other."""
    commit: str
    """The resolved commit sha: what provenance records."""
    files: frozenset[str] | None
    """Every file of the repo at `commit` when huggingface_hub knows the listing (online, or cached)."""


def parse_hub_id(value: str | None) -> HubRef | None:
    """The Hub model `value` names, or None when it is a local path (existing, absolute, relative
    with ./ or ~, or not shaped org/name[@revision])."""
    if not value or value.startswith((".", "/", "~")) or ".." in value:
        return None
    match = _HUB_ID.match(value)
    if match is None:
        return None
    try:
        if Path(value).expanduser().exists():
            return None  # a local folder wins over a Hub id of the same spelling
    except (OSError, ValueError):
        return None
    return HubRef(match["repo"], match["rev"])


def fetch_check_files(ref: HubRef, cache_dir: str | Path | None = None) -> HubSnapshot:
    """config.json and the tokenizer files of `ref` (from the cache, or downloaded), no weights."""
    return _download(ref, CHECK_FILES, cache_dir, progress=False)


def fetch_weights(ref: HubRef, cache_dir: str | Path | None = None) -> HubSnapshot:
    """The whole checkpoint the compile needs: the check files plus safetensors weights, with
    huggingface_hub's progress bars. Refuses a revision that has no safetensors."""
    snap = _download(ref, CHECK_FILES + WEIGHT_FILES, cache_dir, progress=True)
    if not any(p.name.endswith(".safetensors") for p in snap.folder.iterdir()):
        raise HubError(
            f"{ref} (commit {snap.commit}) has no safetensors weights"
            + (" (only pickle files such as pytorch_model.bin)" if snap.files and _has_pickle(snap.files) else ""),
            fix="use a revision that ships model.safetensors, or convert the checkpoint and point init.path at "
                "the converted local folder",
        )
    return snap


def cached_config(ref: HubRef, cache_dir: str | Path | None = None) -> Path | None:
    """config.json of `ref` if the cache already holds it; never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(ref.repo_id, "config.json", cache_dir=cache_dir, revision=ref.revision)
    except (ValueError, OSError):
        return None
    return Path(found) if isinstance(found, str) else None


def hub_offline() -> bool:
    """huggingface_hub's own answer (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    from huggingface_hub import constants

    return constants.is_offline_mode()


def _has_pickle(files: frozenset[str]) -> bool:
    return any(f.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl")) for f in files)


def _download(ref: HubRef, patterns: tuple[str, ...], cache_dir, *, progress: bool) -> HubSnapshot:
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if not progress:
        disable_progress_bars()
    try:
        folder = Path(snapshot_download(ref.repo_id, revision=ref.revision, allow_patterns=list(patterns),
                                        cache_dir=cache_dir))
    except Exception as exc:  # huggingface_hub raises a dozen types; each becomes one message with a fix
        raise _explain(ref, exc) from None
    finally:
        if not progress and not was_disabled:
            enable_progress_bars()
    if not _COMMIT.match(folder.name):  # the cache layout names a snapshot by its commit
        raise HubError(f"{ref} resolved to {folder}, which is not a cache snapshot folder",
                       fix="clear this repo from the Hub cache (`hf cache delete`) and retry")
    return HubSnapshot(ref, folder, folder.name, _listing(ref, folder.name, cache_dir))


def _listing(ref: HubRef, commit: str, cache_dir) -> frozenset[str] | None:
    from huggingface_hub import get_cached_repo_tree
    from huggingface_hub.errors import CachedRepoTreeNotFoundError

    try:
        return frozenset(f.path for f in get_cached_repo_tree(ref.repo_id, revision=commit, cache_dir=cache_dir))
    except (CachedRepoTreeNotFoundError, OSError, ValueError):
        return None


def _explain(ref: HubRef, exc: Exception) -> HubError:
    from huggingface_hub.errors import (
        GatedRepoError, HFValidationError, IncompleteSnapshotError, LocalEntryNotFoundError,
        RepositoryNotFoundError, RevisionNotFoundError,
    )

    offline = hub_offline()
    fetch = f"hf download {ref.repo_id}" + (f" --revision {ref.revision}" if ref.revision else "")
    if isinstance(exc, HFValidationError):
        return HubError(f"{str(ref)!r} is not a valid Hub id ({exc})",
                        fix="use org/name or org/name@revision, or an existing local folder")
    if isinstance(exc, GatedRepoError):
        return HubError(f"{ref} is gated: its license must be accepted with a logged-in account",
                        fix=f"accept the terms on https://huggingface.co/{ref.repo_id}, then `hf auth login` "
                            "(or set HF_TOKEN)")
    if isinstance(exc, RevisionNotFoundError):
        return HubError(f"{ref.repo_id} has no revision {ref.revision!r}",
                        fix="use a branch, tag or commit sha that exists (see the repo's commit history)")
    if isinstance(exc, RepositoryNotFoundError):
        return HubError(f"{ref.repo_id} is not a model on the Hub, or it is private",
                        fix="check the spelling (org/name), or log in with `hf auth login` for a private repo")
    if isinstance(exc, IncompleteSnapshotError):
        return HubError(f"the Hub cache holds only part of {ref} and the Hub cannot be reached",
                        fix=f"rerun with network access (unset HF_HUB_OFFLINE), or `{fetch}` where there is one")
    if isinstance(exc, LocalEntryNotFoundError):
        why = "HF_HUB_OFFLINE is set" if offline else "the Hub cannot be reached"
        return HubError(f"{ref} is not in the Hub cache ({_cache_dir_text()}) and {why}",
                        fix=f"`{fetch}` on a machine with network access into the same HF_HOME"
                            + (", or unset HF_HUB_OFFLINE" if offline else ""))
    return HubError(f"cannot resolve {ref} on the Hub: {type(exc).__name__}: {exc}",
                    fix="check the network and the Hub id, or download it and point init.path at the local folder")


def _cache_dir_text() -> str:
    from huggingface_hub import constants

    return f"HF_HUB_CACHE={constants.HF_HUB_CACHE}"
