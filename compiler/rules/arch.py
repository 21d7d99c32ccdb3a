"""Architecture rules: attention shapes that the family's decoder (and RoPE) can be built with.

They check the architecture that is built: the `model` group for init=scratch
and init=distill, the checkpoint's config.json for init=pretrained. The pruned
architecture of init=prune is checked by prune.keeps_divisibility.
"""

from __future__ import annotations

from ..estimate import Arch
from ._engine import rule
from .context import ensure_context


def _checked(cfg, ctx) -> tuple[Arch, dict[str, str]] | None:
    """The architecture and the config path of each of its fields, or None when not known here."""
    if cfg.init.kind in ("scratch", "distill"):
        names = ("hidden_size", "num_attention_heads", "num_key_value_heads")
        return Arch.from_model(cfg.model), {n: f"model.{n}" for n in names}
    if cfg.init.kind == "pretrained":
        ctx = ensure_context(cfg, ctx)
        if ctx.init_arch is not None:
            return ctx.init_arch, {n: "init.path" for n in ("hidden_size", "num_attention_heads", "num_key_value_heads")}
    return None


def _divisors(n: int) -> list[int]:
    """Divisors in O(sqrt n): a fuzzed hidden_size of 1e9 must not stall `slmc check`."""
    small = [k for k in range(1, int(n ** 0.5) + 1) if n % k == 0]
    return sorted(set(small + [n // k for k in small]))


def arch_problems(a: Arch) -> dict[str, str]:
    """rule id -> what is wrong, for an architecture; empty when it can be built."""
    out = {}
    # Some config classes (Llama, Gemma 3) refuse hidden_size % heads != 0 even with an explicit
    # head_dim; the others accept it when head_dim is given.
    if (not a.head_dim_explicit or a.spec.heads_divide_hidden) and a.hidden_size % a.num_attention_heads:
        out["arch.heads_divide_hidden"] = (
            f"hidden_size {a.hidden_size} is not divisible by num_attention_heads {a.num_attention_heads}"
        )
    if a.num_key_value_heads > a.num_attention_heads or a.num_attention_heads % a.num_key_value_heads:
        out["arch.kv_heads_divide_heads"] = (
            f"num_attention_heads {a.num_attention_heads} is not a multiple of num_key_value_heads "
            f"{a.num_key_value_heads} (each KV head must serve a whole group of query heads)"
        )
    if a.rotary_dim % 2:
        what = (f"head_dim {a.head_dim}" if a.rotary_dim == a.head_dim else
                f"the rotary dim {a.rotary_dim} (partial_rotary_factor {a.partial_rotary_factor:g} of head_dim {a.head_dim})")
        out["arch.rope_head_dim_even"] = f"{what} is odd; RoPE rotates pairs of channels"
    return out


@rule("arch.heads_divide_hidden")
def heads_divide_hidden(rule, cfg, ctx):
    """hidden_size is a multiple of num_attention_heads (head_dim = hidden_size / heads is whole)."""
    got = _checked(cfg, ctx)
    if got is None or "arch.heads_divide_hidden" not in arch_problems(got[0]):
        return
    a, where = got
    near = [h for h in _divisors(a.hidden_size) if h % a.num_key_value_heads == 0 and (a.hidden_size // h) % 2 == 0]
    best = sorted(near, key=lambda h: abs(h - a.num_attention_heads))[:3]
    fix = ", ".join(f"num_attention_heads={h} (head_dim {a.hidden_size // h})" for h in best)
    yield rule.violation(
        (where["hidden_size"], where["num_attention_heads"]),
        arch_problems(a)["arch.heads_divide_hidden"],
        f"use {fix}" if fix and where["hidden_size"].startswith("model.") else "use a checkpoint with a valid config",
    )


@rule("arch.kv_heads_divide_heads")
def kv_heads_divide_heads(rule, cfg, ctx):
    """num_attention_heads is a multiple of num_key_value_heads (GQA groups are whole; MQA is 1)."""
    got = _checked(cfg, ctx)
    if got is None or "arch.kv_heads_divide_heads" not in arch_problems(got[0]):
        return
    a, where = got
    options = [k for k in _divisors(a.num_attention_heads) if k <= a.num_key_value_heads] or [1]
    fix = f"model.num_key_value_heads={options[-1]} (divisors of {a.num_attention_heads}: {_divisors(a.num_attention_heads)})"
    yield rule.violation(
        (where["num_attention_heads"], where["num_key_value_heads"]),
        arch_problems(a)["arch.kv_heads_divide_heads"],
        f"set {fix}" if where["num_key_value_heads"].startswith("model.") else "use a checkpoint with a valid config",
    )


@rule("arch.rope_head_dim_even")
def rope_head_dim_even(rule, cfg, ctx):
    """head_dim is even: rotary position embeddings rotate channel pairs."""
    got = _checked(cfg, ctx)
    if got is None:
        return
    a, where = got
    if "arch.heads_divide_hidden" in arch_problems(a) or "arch.rope_head_dim_even" not in arch_problems(a):
        return  # head_dim is not whole: heads_divide_hidden already says so
    even = [h for h in _divisors(a.hidden_size) if (a.hidden_size // h) % 2 == 0 and h % a.num_key_value_heads == 0]
    fix = f"model.num_attention_heads={min(even, key=lambda h: abs(h - a.num_attention_heads))}" if even else "an even head_dim"
    yield rule.violation(
        (where["hidden_size"], where["num_attention_heads"]),
        arch_problems(a)["arch.rope_head_dim_even"]
        + ("" if a.head_dim_explicit else f" (hidden_size {a.hidden_size} / num_attention_heads {a.num_attention_heads})"),
        f"use {fix}" if where["hidden_size"].startswith("model.") else "use a checkpoint with a valid config",
    )
