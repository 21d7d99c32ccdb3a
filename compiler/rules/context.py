"""Facts the rules need from local files, read once, cheaply, without torch.

`CheckContext.from_config(cfg)` looks at the paths a config names: the init
checkpoint and the teacher (`slmc.checkpoint.inspect_checkpoint`: config.json,
tokenizer files and safetensors headers, validated; a Hub id is resolved first),
the tokenizer.json files (their vocabularies read as plain JSON, not through
transformers), and whether each named local path exists with the files it should
hold. Nothing here raises for a missing or malformed file: a checkpoint's
problems are its `findings` (reported by the rules in `checkpoint.py`), other
files' are recorded in `problems` (config path -> why), and the rules decide what
that means. Rules stay pure functions of (cfg, ctx).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from ..checkpoint import BadFile, CheckpointFacts, MAX_TOKENIZER_BYTES, inspect_checkpoint, read_json
from ..estimate import Arch, prune_arch
from ..hub import parse_hub_id

CHECKPOINT_KEYS = ("init.path", "init.distill.teacher_path")

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


@dataclass(frozen=True)
class PathFacts:
    """What is at a path a config names."""

    path: str
    exists: bool
    is_dir: bool
    names: frozenset[str] = frozenset()  # entries of the folder (top level), for checkpoints

    def has_weights(self) -> bool:
        return any(n in WEIGHT_FILES or n.endswith(".safetensors") for n in self.names)


@dataclass(frozen=True)
class TokenizerFacts:
    """A tokenizer.json's vocabulary: token -> id, added tokens included."""

    path: str
    vocab: Mapping[str, int]

    @property
    def size(self) -> int:
        """Rows an embedding needs: highest id + 1."""
        return max(self.vocab.values(), default=-1) + 1


@dataclass(frozen=True)
class CheckContext:
    """Facts from disk, keyed by the config path that named them."""

    paths: Mapping[str, PathFacts] = field(default_factory=dict)
    init_config: Mapping[str, Any] | None = None      # init.path/config.json
    init_arch: Arch | None = None
    teacher_config: Mapping[str, Any] | None = None   # init.distill.teacher_path/config.json
    teacher_arch: Arch | None = None
    tokenizer: TokenizerFacts | None = None           # the student's: data.tokenizer, else init.path's
    teacher_tokenizer: TokenizerFacts | None = None
    problems: Mapping[str, str] = field(default_factory=dict)
    checkpoints: Mapping[str, CheckpointFacts] = field(default_factory=dict)  # "init.path" / teacher -> facts

    @classmethod
    def from_config(cls, cfg: Any) -> "CheckContext":
        paths: dict[str, PathFacts] = {}
        problems: dict[str, str] = {}
        checkpoints: dict[str, CheckpointFacts] = {}
        for key, value in named_paths(cfg).items():
            if key in CHECKPOINT_KEYS:
                checkpoints[key] = inspect_checkpoint(value)
                if parse_hub_id(value) is not None:
                    continue  # a Hub id is no local path: the checkpoint rules report on it
            elif key.startswith(("data.train_files", "data.heldout_files")) and parse_hub_id(value) is not None:
                continue  # a Hub dataset id: data.records_valid samples it when cached
            paths[key] = _path_facts(value)
        init, teacher = checkpoints.get("init.path"), checkpoints.get("init.distill.teacher_path")
        tok = None
        if cfg.data.tokenizer:
            tok = _read_tokenizer(Path(cfg.data.tokenizer), "data.tokenizer", problems)
        elif init is not None and init.folder is not None and (init.folder / "tokenizer.json").is_file():
            tok = _read_tokenizer(init.folder / "tokenizer.json", "init.path", problems)
        teacher_tok = None
        if teacher is not None and teacher.folder is not None and (teacher.folder / "tokenizer.json").is_file():
            teacher_tok = _read_tokenizer(teacher.folder / "tokenizer.json", "init.distill.teacher_path", problems)
        return cls(
            paths, init.config if init else None, init.arch if init else None, teacher.config if teacher else None,
            teacher.arch if teacher else None, tok, teacher_tok, problems, checkpoints,
        )


def ensure_context(cfg: Any, ctx: CheckContext | None) -> CheckContext:
    """The context a rule was given, or one built from the config's files when none was.

    Built contexts are memoized on what they read (the named paths with the size
    and mtime of each file involved), so the rules of one check share one read of
    a large tokenizer.json, and a file changed on disk is read again.
    """
    if ctx is not None:
        return ctx
    key = _context_key(cfg)
    hit = _BUILT.get(key)
    if hit is None:
        hit = CheckContext.from_config(cfg)
        _BUILT[key] = hit
        while len(_BUILT) > 8:
            _BUILT.pop(next(iter(_BUILT)))
    return hit


_BUILT: dict[tuple, CheckContext] = {}


def _context_key(cfg: Any) -> tuple:
    """What a built context depends on; a folder's mtime changes when files are added to or removed from it."""
    named = named_paths(cfg)
    files = [Path(v).expanduser() for v in named.values()]
    for key in ("init.path", "init.distill.teacher_path"):
        if key in named:
            files += [Path(named[key]).expanduser() / n for n in ("config.json", "tokenizer.json")]
    stats = []
    for f in files:
        try:
            st = f.stat()
            stats.append((str(f), st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            stats.append((str(f), None))
    return (cfg.init.kind, cfg.data.kind, cfg.data.tokenizer, tuple(sorted(named.items())), tuple(stats))


def named_paths(cfg: Any) -> dict[str, str]:
    """Every local path the config uses, keyed by its config path (unused ones left out)."""
    out: dict[str, str] = {}
    if cfg.init.kind in ("pretrained", "prune") and cfg.init.path:
        out["init.path"] = cfg.init.path
    if cfg.init.kind == "distill" and cfg.init.distill.teacher_path:
        out["init.distill.teacher_path"] = cfg.init.distill.teacher_path
    if cfg.data.kind == "files":
        out.update({f"data.train_files[{i}]": p for i, p in enumerate(cfg.data.train_files)})
    out.update({f"data.heldout_files[{i}]": p for i, p in enumerate(cfg.data.heldout_files)})
    if cfg.data.tokenizer:
        out["data.tokenizer"] = cfg.data.tokenizer
    return out


def _path_facts(value: str) -> PathFacts:
    p = Path(value).expanduser()
    try:
        is_dir = p.is_dir()
        names = frozenset(c.name for c in p.iterdir()) if is_dir else frozenset()
        return PathFacts(str(p), p.exists(), is_dir, names)
    except OSError:
        return PathFacts(str(p), False, False)


def _read_tokenizer(path: Path, key: str, problems: dict[str, str]) -> TokenizerFacts | None:
    try:
        raw = read_json(path, MAX_TOKENIZER_BYTES)
    except BadFile as exc:
        problems.setdefault(key, f"{path} {exc}")
        return None
    try:
        return TokenizerFacts(str(path), tokenizer_vocab(raw))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        problems.setdefault(key, f"{path} is not a tokenizers tokenizer.json ({exc!r})")
        return None


def tokenizer_vocab(raw: Mapping[str, Any]) -> dict[str, int]:
    """token -> id from a `tokenizers` JSON: model.vocab (dict, or Unigram's [token, score] list) + added_tokens."""
    model_vocab = raw["model"]["vocab"]
    if isinstance(model_vocab, dict):
        vocab = {str(t): int(i) for t, i in model_vocab.items()}
    else:
        vocab = {str(entry[0]): i for i, entry in enumerate(model_vocab)}
    for added in raw.get("added_tokens") or ():
        vocab[str(added["content"])] = int(added["id"])
    return vocab


# -- derived facts ------------------------------------------------------------


@dataclass(frozen=True)
class DeployedArch:
    """The architecture that is trained and exported, and where it comes from."""

    arch: Arch | None
    source: str  # a config path: "model", "init.path", "init.prune"


def deployed_arch(cfg: Any, ctx: CheckContext) -> DeployedArch:
    """scratch/distill: the `model` group; pretrained: the checkpoint; prune: the pruned checkpoint."""
    kind = cfg.init.kind
    if kind == "pretrained":
        return DeployedArch(ctx.init_arch, "init.path")
    if kind == "prune":
        if ctx.init_arch is None:
            return DeployedArch(None, "init.prune")
        p = cfg.init.prune
        plan = prune_arch(
            ctx.init_arch, layer_ratio=p.layer_ratio, kv_group_ratio=p.kv_group_ratio,
            mlp_ratio=p.mlp_ratio, keep_layers=p.keep_layers,
        )
        return DeployedArch(plan.arch if not plan.problems else None, "init.prune")
    return DeployedArch(Arch.from_model(cfg.model), "model")


@lru_cache(maxsize=None)
def shipped_options(group: str) -> dict[str, dict]:
    """The shipped options of a config group as plain dicts (for fixes such as 'or device=...')."""
    import yaml

    from ..load import conf_dir

    out = {}
    for path in sorted((conf_dir() / group).glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        data.pop("defaults", None)
        out[path.stem] = data
    return out
