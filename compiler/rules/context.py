"""Facts the rules need from local files, read once, cheaply, without torch.

`CheckContext.from_config(cfg)` looks at the paths a config names: the init
checkpoint's and the teacher's config.json, the tokenizer.json files (their
vocabularies read as plain JSON, not through transformers), and whether each
named path exists with the files it should hold. Nothing here raises for a
missing or malformed file: it is recorded in `problems` (config path -> why) and
the rules decide what that means. Rules stay pure functions of (cfg, ctx).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from ..estimate import Arch, prune_arch

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

    @classmethod
    def from_config(cls, cfg: Any) -> "CheckContext":
        paths: dict[str, PathFacts] = {}
        problems: dict[str, str] = {}
        for key, value in named_paths(cfg).items():
            paths[key] = _path_facts(value)
        init_cfg = init_arch = teacher_cfg = teacher_arch = None
        if "init.path" in paths:
            init_cfg, init_arch = _read_checkpoint_config(paths["init.path"], "init.path", problems)
        if "init.distill.teacher_path" in paths:
            teacher_cfg, teacher_arch = _read_checkpoint_config(
                paths["init.distill.teacher_path"], "init.distill.teacher_path", problems
            )
        tok = None
        if cfg.data.tokenizer:
            tok = _read_tokenizer(Path(cfg.data.tokenizer), "data.tokenizer", problems)
        elif "init.path" in paths and (Path(paths["init.path"].path) / "tokenizer.json").is_file():
            tok = _read_tokenizer(Path(paths["init.path"].path) / "tokenizer.json", "init.path", problems)
        teacher_tok = None
        if "init.distill.teacher_path" in paths:
            tpath = Path(paths["init.distill.teacher_path"].path) / "tokenizer.json"
            if tpath.is_file():
                teacher_tok = _read_tokenizer(tpath, "init.distill.teacher_path", problems)
        return cls(paths, init_cfg, init_arch, teacher_cfg, teacher_arch, tok, teacher_tok, problems)


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


def _read_json(path: Path, key: str, problems: dict[str, str]) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.setdefault(key, f"{path} does not exist")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.setdefault(key, f"{path} is not readable JSON ({type(exc).__name__}: {exc})")
    return None


def _read_checkpoint_config(facts: PathFacts, key: str, problems: dict[str, str]):
    if not facts.is_dir:
        return None, None
    raw = _read_json(Path(facts.path) / "config.json", key, problems)
    if not isinstance(raw, dict):
        if raw is not None:
            problems.setdefault(key, f"{facts.path}/config.json is not a JSON object")
        return None, None
    try:
        return raw, Arch.from_hf_config(raw)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        problems.setdefault(key, f"{facts.path}/config.json lacks a usable architecture field ({exc!r})")
        return raw, None


def _read_tokenizer(path: Path, key: str, problems: dict[str, str]) -> TokenizerFacts | None:
    raw = _read_json(path, key, problems)
    if raw is None:
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
