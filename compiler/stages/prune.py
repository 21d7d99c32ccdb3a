"""The prune stage (init=prune): derive a smaller model from a local checkpoint.

Structured pruning removes whole decoder layers, whole KV groups (a KV head
with the query heads that read it) and MLP channels, ranked by a real
importance score (prune_importance), for every family of `slmc.families` along
the axes the family declares. The kept counts come from
`slmc.estimate.prune_arch`, the same function the rule
`prune.keeps_divisibility` uses, and the result is checked against it: the
rule and the stage cannot disagree about the pruned shapes (nor about how many
kept layers slide, where a family mixes sliding and full attention).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from .. import families, writer
from ..errors import ConfigError, StageError
from ..estimate import Arch, PrunePlan, param_count, prune_arch
from ..layout import LAYOUT
from ..rules.prune import MLP_MULTIPLE, refused_axes
from .base import EVAL_WINDOW, Results
from .progress import step
from .prune_build import build_pruned, pruned_config
from .prune_importance import (
    Heads, Importance, activation_importance, calibration_windows, magnitude_importance, select,
)
from .results import PruneReport, PruneResult

CALIBRATION_CHARS = 1_000_000
"""Calibration windows are drawn from the first this-many characters of the training text."""


# -- the core -----------------------------------------------------------------


def prune_model(model, tokens: np.ndarray | None, prune_cfg, *, seed: int):
    """(pruned fp32 model, PruneReport). `tokens`: calibration token ids (needed for importance=activation)."""
    plan = plan_for(model.config.to_dict(), prune_cfg)
    src = Arch.from_hf_config(model.config.to_dict())
    importance = _importance(model, tokens, prune_cfg.importance, seed)
    selection = select(importance, plan, prune_cfg.keep_layers, src.layer_types)
    arch = _arch_of(src, selection, prune_cfg, plan.arch)
    pruned = build_pruned(model, selection, arch)
    _check_against_plan(pruned, arch)
    report = PruneReport(
        importance=prune_cfg.importance, calibration_tokens=importance.calibration_tokens,
        params_before=_params(model), params_after=_params(pruned), kept_layers=list(selection.layers),
        dropped_layers=[i for i in range(len(importance.layers)) if i not in selection.layers],
        kv_groups_kept=[list(g) for g in selection.groups],
        kv_heads=(Heads.of(model.config).num_kv_heads, plan.arch.num_key_value_heads),
        mlp_width=(model.config.intermediate_size, plan.arch.intermediate_size),
        layer_importance=[round(float(x), 6) for x in importance.layers], arch=arch.shapes(),
    )
    return pruned, report


def _arch_of(src: Arch, selection, prune_cfg, planned: Arch) -> Arch:
    """prune_arch of the layers importance picked: the plan's, with the kept layers' own kinds in order.

    The plan placed stand-in layers of the same kinds; a different count of sliding layers
    would mean the stage built what the rule did not check.
    """
    arch = prune_arch(src, layer_ratio=prune_cfg.layer_ratio, kv_group_ratio=prune_cfg.kv_group_ratio,
                      mlp_ratio=prune_cfg.mlp_ratio, keep_layers=list(selection.layers), mlp_multiple=MLP_MULTIPLE).arch
    if arch is None or replace(arch, layer_types=planned.layer_types) != planned \
            or arch.sliding_layers != planned.sliding_layers:
        raise StageError(f"the kept layers {list(selection.layers)} give {arch and arch.shapes()} with "
                         f"{arch and arch.sliding_layers} sliding layers; prune_arch predicted {planned.shapes()} with "
                         f"{planned.sliding_layers}: this is a bug in slmc", where="prune",
                         fix="report it with the run folder")
    return arch


def plan_for(hf_config: dict, prune_cfg) -> PrunePlan:
    """prune_arch on a checkpoint's config (with the rule's MLP multiple), checked to build in transformers.

    Everything a person can fix fails here, before any weights are loaded, as a
    ConfigError naming the config path.
    """
    try:
        family = families.for_config(hf_config)
    except (families.UnsupportedArchitecture, TypeError) as exc:
        raise ConfigError(f"cannot prune this checkpoint: {exc}", where="init.path",
                          fix=f"prune a checkpoint of a supported family ({families.supported_text()})") from None
    try:
        src = Arch.from_hf_config(hf_config)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise ConfigError(f"the checkpoint's config.json lacks a usable architecture field ({exc!r})",
                          where="init.path", fix=f"prune a {family.name} checkpoint saved by save_pretrained") from None
    for path, message, fix in refused_axes(src, prune_cfg):
        raise ConfigError(message, where=path, fix=fix)
    plan = prune_arch(src, layer_ratio=prune_cfg.layer_ratio, kv_group_ratio=prune_cfg.kv_group_ratio,
                      mlp_ratio=prune_cfg.mlp_ratio, keep_layers=prune_cfg.keep_layers, mlp_multiple=MLP_MULTIPLE)
    if plan.problems:
        raise ConfigError("; ".join(plan.problems), where="init.prune.keep_layers",
                          fix=f"list unique indices in 0..{src.num_hidden_layers - 1}")
    if plan.arch is None:
        raise ConfigError(plan.group_problem or "KV groups cannot be pruned", where="init.path",
                          fix="prune a checkpoint whose query heads split evenly over its KV heads")
    pruned_config(hf_config, plan.arch, plan.kept_layers)  # raises if transformers refuses the shapes
    return plan


def _importance(model, tokens, kind: str, seed: int) -> Importance:
    if kind == "magnitude":
        return magnitude_importance(model)
    if tokens is None or np.asarray(tokens).size < 2:
        raise StageError("importance=activation needs calibration tokens (at least 2)", where="init.prune.importance",
                         fix="provide training text, or set init.prune.importance=magnitude")
    max_window = getattr(model.config, "max_position_embeddings", None) or 128
    return activation_importance(model, calibration_windows(tokens, max_window, seed))


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _check_against_plan(pruned, expected: Arch) -> None:
    """The stage's shapes and parameter count must be what prune_arch (and so the rule) predicted."""
    got = Arch.from_hf_config(pruned.config.to_dict())
    if got != expected or _params(pruned) != param_count(expected):
        raise StageError(
            f"pruned model ({got.shapes()}, {_params(pruned):,} params) differs from prune_arch's prediction "
            f"({expected.shapes()}, {param_count(expected):,} params); this is a bug in slmc",
            where="prune", fix="report it with the run folder")


# -- the stage ----------------------------------------------------------------


def run_prune(cfg, run_dir: Path, results: Results) -> PruneResult:
    """Load init.path, prune it, measure held-out perplexity before/after, publish run_dir/init/."""
    from .deploy import heldout_tokens

    source = _source_dir(_local_source(cfg, run_dir))
    expected = plan_for(_read_config(source), cfg.init.prune).arch  # what the rule predicted; fails fast
    activation = cfg.init.prune.importance == "activation"
    _require_inputs(run_dir, (LAYOUT.tokenizer, LAYOUT.heldout_text) + ((LAYOUT.train_text,) if activation else ()))
    with step(f"loading {source}"):
        model = _load(source)
    tokens = calibration_tokens(run_dir) if activation else None
    heldout = heldout_tokens(run_dir)
    for ids, what in ((tokens, LAYOUT.train_text), (heldout, LAYOUT.heldout_text)):
        _check_vocab(ids, model.config.vocab_size, what)
    window = min(EVAL_WINDOW, cfg.export.max_seq_len)
    with step(f"held-out perplexity of the source model ({len(heldout):,} tokens, PyTorch)"):
        ppl_before = _perplexity(model, heldout, window)
    with step(f"pruning by {cfg.init.prune.importance} importance"):
        pruned, report = prune_model(model, tokens, cfg.init.prune, seed=cfg.seed)
    with step(f"held-out perplexity of the pruned model ({len(heldout):,} tokens, PyTorch)"):
        ppl_after = _perplexity(pruned, heldout, window)
    out = save(pruned, run_dir, expected)
    return PruneResult(**asdict(report), source=str(source), checkpoint=str(out), heldout_ppl_before=ppl_before,
                       heldout_ppl_after=ppl_after)


def _local_source(cfg, run_dir: Path) -> str | None:
    """init.path as a local folder with its weights: a Hub id is read from huggingface_hub's cache,
    fetched (safetensors only) at the commit the plan resolved, like the train stage does."""
    if not cfg.init.path:
        return None
    from .checkpoints import fetch_weights, resolved

    return str(fetch_weights(resolved(cfg, run_dir, "init.path")))


def _source_dir(path: str | None) -> Path:
    if not path:
        raise ConfigError("init=prune needs the checkpoint to prune", where="init.path",
                          fix="set init.path=/path/to/a/local/hugging_face/folder")
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{folder} is not a Hugging Face checkpoint folder (no config.json)", where="init.path",
                          fix="point init.path at a folder written by save_pretrained (config.json + safetensors)")
    return folder


def _require_inputs(run_dir: Path, relatives: tuple[str, ...]) -> None:
    missing = [rel for rel in relatives if not (run_dir / rel).is_file()]
    if missing:
        raise StageError(f"missing {', '.join(missing)} in {run_dir}", where="prune",
                         fix="the data and tokenizer stages run before prune; rerun the compile")


def _read_config(folder: Path) -> dict:
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{folder}/config.json is not readable JSON ({exc})", where="init.path",
                          fix="point init.path at a folder written by save_pretrained") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{folder}/config.json is not a JSON object", where="init.path",
                          fix="point init.path at a folder written by save_pretrained")
    return data


def _load(folder: Path):
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"cannot load the checkpoint at {folder}: {exc}", where="init.path",
                          fix="point init.path at a complete checkpoint folder written by save_pretrained") from None
    return model.eval()


def calibration_tokens(run_dir: Path) -> np.ndarray:
    """Token ids of the start of the training text (the data and tokenizer stages ran before)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(run_dir / LAYOUT.tokenizer))
    with open(run_dir / LAYOUT.train_text, encoding="utf-8") as handle:
        text = handle.read(CALIBRATION_CHARS)
    return np.asarray(tokenizer.encode(text).ids, dtype=np.int64)


def _check_vocab(ids: np.ndarray | None, vocab_size: int, what: str) -> None:
    if ids is not None and ids.size and int(ids.max()) >= vocab_size:
        raise StageError(f"{what} holds token id {int(ids.max())} but the checkpoint's vocab_size is {vocab_size}",
                         where="data.tokenizer", fix="use the checkpoint's own tokenizer (leave data.tokenizer unset)")


def _shape(a: Arch) -> tuple:
    """The numbers pruning changes or must keep (defaults such as max positions aside)."""
    return (a.hidden_size, a.num_hidden_layers, a.num_attention_heads, a.num_key_value_heads,
            a.intermediate_size, a.head_dim, a.vocab_size, a.tie_word_embeddings)


def _perplexity(model, tokens: np.ndarray, window: int) -> float:
    from ..export.perplexity import torch_perplexity

    return torch_perplexity(model, tokens, window=window)


def save(pruned, run_dir: Path, expected: Arch) -> Path:
    """run_dir/init/: safetensors + config.json + the run's tokenizer files, published atomically.

    The saved config.json is read back and checked against `expected` (prune_arch on
    the source's config.json, as the rule computed it) before the folder is renamed
    into place.
    """
    with writer.staged_dir(run_dir, LAYOUT.init_checkpoint) as tmp:
        pruned.save_pretrained(str(tmp))
        for name in ("tokenizer.json", "tokenizer_config.json"):
            if (run_dir / LAYOUT.tokenizer_dir / name).is_file():
                shutil.copy2(run_dir / LAYOUT.tokenizer_dir / name, tmp / name)
        saved = Arch.from_hf_config(_read_config(tmp))
        if _shape(saved) != _shape(expected):
            raise StageError(f"saved config ({saved.shapes()}) differs from the rule's prediction "
                             f"({expected.shapes()}); this is a bug in slmc", where="prune",
                             fix="report it with the run folder")
    return run_dir / LAYOUT.init_checkpoint
