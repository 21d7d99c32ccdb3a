"""Draft rules: a `draft` section (speculative decoding) must make a decoder that can serve the target.

The draft is compiled after the target is trained, so what can be known now is checked now: the
runtime that runs both, what each method needs, that the draft is smaller than the target, that
a checkpoint draft shares the target's tokenizer, and that both models with their KV caches fit
the device. The package stage checks the compiled pair again from their manifests (compiler/draft.py).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from slmc.runtime.manifest import sha256_file

from ..draft_config import student_layers
from ..estimate import Arch, fmt_bytes, param_count, prune_arch
from ._engine import rule
from ._facts import usable_bytes
from .context import deployed_arch, ensure_context
from .memory import deploy_need


@rule("draft.runtime_ort")
def runtime_ort(rule, cfg, ctx):
    """A draft decoder is run by slmc.runtime (and ONNX Runtime GenAI) on ONNX Runtime: a TensorRT bundle carries none."""
    if cfg.draft.method != "none" and cfg.runtime.name != "ort":
        yield rule.violation(("draft.method", "runtime.name"),
                             f"draft.method={cfg.draft.method} needs runtime=ort: speculative decoding with a draft "
                             f"model runs in slmc.runtime on ONNX Runtime, not in a {cfg.runtime.name} engine",
                             "set runtime=ort, or draft.method=none (prompt lookup needs no draft)")


@rule("draft.method_inputs")
def method_inputs(rule, cfg, ctx):
    """draft.method=checkpoint names a local checkpoint folder in draft.path; distill trains (draft.train_steps > 0); draft.path is only read by checkpoint."""
    d = cfg.draft
    if d.method == "checkpoint":
        folder = Path(d.path).expanduser() if d.path else None
        if folder is None:
            yield rule.violation(("draft.path",), "draft.method=checkpoint needs draft.path",
                                 "set draft.path=/path/to/a/smaller/checkpoint with the target's tokenizer")
        elif not (folder / "config.json").is_file():
            yield rule.violation(("draft.path",), f"draft.path {folder} is not a checkpoint folder (no config.json)",
                                 "give a local Hugging Face checkpoint folder (config.json, *.safetensors, "
                                 "tokenizer.json)")
    elif d.path:
        yield rule.violation(("draft.path", "draft.method"),
                             f"draft.path is set but draft.method={d.method} does not read it",
                             "set draft.method=checkpoint to use that checkpoint, or unset draft.path", "warning")
    if d.method == "distill" and d.train_steps == 0:
        yield rule.violation(("draft.train_steps", "draft.method"),
                             "draft.method=distill trains the draft from scratch, but draft.train_steps is 0",
                             "set draft.train_steps (e.g. 200), or draft.method=prune")


@rule("draft.smaller_than_target")
def smaller_than_target(rule, cfg, ctx):
    """The draft has fewer parameters than the target (else it cannot make decoding faster): prune ratios below 1, a shallower distilled student."""
    shapes = _shapes(cfg, ctx)
    if shapes is None:
        return
    target, draft, problems = shapes
    if draft is None:
        yield rule.violation(("draft.prune",), "draft.prune does not give a valid pruned shape of the target: "
                             + "; ".join(problems), "keep layer indices within the target's depth and ratios in (0, 1]")
        return
    if param_count(draft) >= param_count(target):
        path = "draft.prune" if cfg.draft.method == "prune" else "draft.num_hidden_layers"
        yield rule.violation((path,), f"the draft would have {param_count(draft):,} parameters, not fewer than the "
                             f"target's {param_count(target):,}: it would not make decoding faster",
                             "keep fewer layers (draft.prune.layer_ratio=0.5, or draft.num_hidden_layers below the "
                             f"target's {target.num_hidden_layers})")


@rule("draft.tokenizer_shared")
def tokenizer_shared(rule, cfg, ctx):
    """A checkpoint draft's tokenizer.json is the target's, byte for byte: the two models must read and write the same token ids."""
    if cfg.draft.method != "checkpoint" or not cfg.draft.path:
        return
    from ..stages.tokenizer import tokenizer_source

    draft_tok = Path(cfg.draft.path).expanduser() / "tokenizer.json"
    if not draft_tok.is_file():
        yield rule.violation(("draft.path",), f"{draft_tok} does not exist: the draft's tokenizer cannot be compared",
                             "give a checkpoint folder that holds tokenizer.json")
        return
    source = tokenizer_source(cfg)
    if source is None:
        yield rule.violation(("draft.method", "init.kind"),
                             "this run trains its own tokenizer, which no existing checkpoint can share",
                             "use draft.method=prune or draft.method=distill (they derive the draft from this run)")
        return
    target_tok = Path(source[0]).expanduser()
    target_tok = target_tok / "tokenizer.json" if target_tok.is_dir() else target_tok
    if target_tok.is_file() and sha256_file(target_tok) != sha256_file(draft_tok):
        yield rule.violation(("draft.path", source[1]),
                             f"the draft's tokenizer.json ({draft_tok}) differs from the target's ({target_tok})",
                             "choose a draft checkpoint of the same model family and tokenizer (e.g. a smaller "
                             "size of the same release), or derive one with draft.method=prune")


@rule("draft.fits_device")
def fits_device(rule, cfg, ctx):
    """Target and draft together — weights at the deployed precision, each one's KV cache and runtime memory — fit the device's usable memory."""
    shapes = _shapes(cfg, ctx)
    if shapes is None or shapes[1] is None:
        return  # draft.smaller_than_target says why a pruned shape is invalid
    target, draft, _ = shapes
    seq, batch, precision = cfg.export.max_seq_len, cfg.export.max_batch_size, cfg.compress.precision
    need_target = deploy_need(cfg, target, precision, seq, batch)
    need_draft = deploy_need(cfg, draft, precision, seq, batch)
    usable = usable_bytes(cfg.device)
    if need_target <= usable < need_target + need_draft:
        yield rule.violation(("draft.method", "device.memory_gb"),
                             f"the target needs {fmt_bytes(need_target)} and the draft {fmt_bytes(need_draft)}; "
                             f"together they exceed {cfg.device.name}'s {fmt_bytes(usable)} usable",
                             "make the draft smaller (draft.prune.layer_ratio, draft.num_hidden_layers), or set "
                             "draft.method=none and use prompt lookup (no second model)")


def _shapes(cfg, ctx) -> tuple[Arch, Arch | None, list[str]] | None:
    """(target, draft, problems) as the draft stage will make them (prune plan, or the shallower
    student): draft None with the pruning problems when the plan is invalid; None when the draft's
    shape is not derived from the target (no draft, a checkpoint draft) or the target's is unknown."""
    if cfg.draft.method not in ("prune", "distill"):
        return None
    target = deployed_arch(cfg, ensure_context(cfg, ctx)).arch
    if target is None:
        return None
    if cfg.draft.method == "distill":
        return target, replace(target, num_hidden_layers=student_layers(cfg, target.num_hidden_layers),
                               layer_types=None), []
    p = cfg.draft.prune
    plan = prune_arch(target, layer_ratio=p.layer_ratio, kv_group_ratio=p.kv_group_ratio, mlp_ratio=p.mlp_ratio,
                      keep_layers=p.keep_layers)
    return target, (None if plan.problems else plan.arch), list(plan.problems)
