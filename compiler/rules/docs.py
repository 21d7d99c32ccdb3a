"""docs/rules.md, generated from the rule registry so that the catalogue's documentation cannot drift.

    python -m slmc.rules.docs > docs/rules.md

tests/rules/test_rules_doc.py fails when the committed file differs from this output.

Id, severity and "what it checks" come from each `@rule` registration and its docstring.
The config paths a rule reads are observed, not declared (a declared list would be one
more thing to keep true by hand): every rule runs over every pair of shipped group options
and the probes in `EXTRAS`, against a config that records each field the rule touches.
A path a rule reads only under a combination no probe makes is missing from its list.
"""

from __future__ import annotations

import itertools
import json
import re
import struct
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel

from ..layout import LAYOUT
from ..load import GROUPS, available_options, load_config
from ._engine import REGISTRY

EXTRAS = (
    "targets.min_decode_tokens_per_s=1e9", "runtime.build_engine_on_host=true", "compress.int8_mode=static",
    "compress.block_size=48", "compress.symmetric=false", "compress.calibration_samples=0",
    "train.parallel=fsdp", "host.num_processes=2", "host.memory_gb=0.001", "host.accelerator=cuda",
    "train.precision=fp16", "train.max_steps=0", "train.warmup_steps=100000",
    "train.lora.merge_before_export=false", "train.lora.target_modules=[nope]",
    "export.max_seq_len=100000", "export.max_batch_size=64", "generation.max_new_tokens=250",
    "runtime.opt_seq_len=100000", "model.num_attention_heads=3", "model.vocab_size=100",
    "data.tokenizer={tokenizer}", "init=pretrained init.path={odd}", "init=distill init.distill.teacher_path={odd}",
    "init=prune init.path={checkpoint} init.prune.kv_group_ratio=0.9 init.prune.keep_layers=[0,0,9]",
    "targets.baseline={text} targets.max_accuracy_drop=0.1", "targets.min_speed_ratio=0.9",
    "draft.method=prune", "draft.method=distill draft.num_hidden_layers=64", "draft.method=checkpoint",
    "draft.method=checkpoint draft.path={checkpoint}", "draft.path={checkpoint}",
)
"""Overrides that reach branches no shipped option reaches (fixes, refusals, warnings); each is
combined with every shipped option of the other groups (and of its own, unless it picks one)."""

DISK_FACTS = {
    "paths": "every path the config names (exists, file or folder, folder entries)",
    "init_config": "init.path/config.json", "init_arch": "init.path/config.json",
    "teacher_config": "init.distill.teacher_path/config.json",
    "teacher_arch": "init.distill.teacher_path/config.json",
    "tokenizer": "the student's tokenizer.json (data.tokenizer, else init.path's)",
    "teacher_tokenizer": "init.distill.teacher_path/tokenizer.json",
    "problems": "what could not be read in those files",
}
"""CheckContext fields, as the documentation names what they were read from."""


class _Recorder:
    """Stands in for a config section (or the CheckContext) and notes each field a rule reads.

    Sections come back as recorders, leaves as their values; `model_copy` (rules build
    what-if variants) returns a recorder of the copy, so reads of the variant count too.
    """

    __slots__ = ("_target", "_prefix", "_seen")

    def __init__(self, target: Any, prefix: str, seen: set[str]):
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_prefix", prefix)
        object.__setattr__(self, "_seen", seen)

    def __getattr__(self, name: str) -> Any:
        target, prefix, seen = (object.__getattribute__(self, n) for n in ("_target", "_prefix", "_seen"))
        value = getattr(target, name)
        if isinstance(value, _Recorder):  # a section a what-if copy was given
            return value
        if isinstance(target, BaseModel) and name not in type(target).model_fields:
            if name == "model_copy":
                return lambda *a, **k: _Recorder(value(*a, **k), prefix, seen)
            seen.add(prefix or "(the whole config)")  # model_dump and friends read everything below
            return value
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(value, BaseModel):
            return _Recorder(value, path, seen)
        seen.add(path)
        return value


def _write_checkpoint(folder: Path, config: dict, vocab_size: int) -> str:
    """A checkpoint folder as a check sees it: config.json, a tokenizer.json and a valid (empty) safetensors."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    header = json.dumps({"__metadata__": {"format": "pt"}}).encode()
    header += b" " * (-len(header) % 8)
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    _write_tokenizer(folder / "tokenizer.json", vocab_size)
    return str(folder)


def _write_tokenizer(path: Path, size: int) -> str:
    """A tokenizer.json as the check reads it (plain JSON: model.vocab and added_tokens)."""
    vocab = {f"t{i}": i for i in range(size - 1)}
    path.write_text(json.dumps({"model": {"vocab": vocab}, "added_tokens": [{"content": "<eos>", "id": size - 1}]}))
    return str(path)


def _probe_files(root: Path) -> dict[str, str]:
    """Files the probes name: a checkpoint shaped like the default model, an odd one, a tokenizer, a text."""
    m = load_config([]).model
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": m.hidden_size,
              "num_hidden_layers": m.num_hidden_layers, "num_attention_heads": m.num_attention_heads,
              "num_key_value_heads": m.num_key_value_heads, "intermediate_size": m.intermediate_size,
              "vocab_size": m.vocab_size, "max_position_embeddings": m.max_position_embeddings,
              "tie_word_embeddings": m.tie_word_embeddings}
    odd = {**config, "num_attention_heads": 6, "num_key_value_heads": 4, "max_position_embeddings": 64,
           "vocab_size": m.vocab_size // 2, "quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}}
    text = root / "train.txt"
    text.write_text("probe text\n")
    run = root / "run"  # a finished run folder, for init=from_run (see slmc.runs)
    run.mkdir()
    for name in (LAYOUT.config, LAYOUT.plan):
        (run / name).write_text("{}\n")
    _write_checkpoint(run / LAYOUT.final_checkpoint, config, m.vocab_size)
    return {"checkpoint": _write_checkpoint(root / "ckpt", config, m.vocab_size), "run": str(run),
            "odd": _write_checkpoint(root / "odd", odd, m.vocab_size * 2),
            "tokenizer": _write_tokenizer(root / "tokenizer.json", m.vocab_size + 7), "text": str(text)}


def _option_overrides(group: str, option: str, files: dict[str, str]) -> list[str]:
    """`group=option` with the paths that option needs to get past data.paths_exist."""
    needs = {("init", "pretrained"): f"init.path={files['checkpoint']}",
             ("init", "prune"): f"init.path={files['checkpoint']}",
             ("init", "distill"): f"init.distill.teacher_path={files['checkpoint']}",
             ("init", "from_run"): f"init.run={files['run']}",
             ("data", "files"): f"data.train_files=[{files['text']}]"}
    return [f"{group}={option}", *([needs[(group, option)]] if (group, option) in needs else [])]


def _configs(files: dict[str, str]) -> Iterator[Any]:
    """Every pair of shipped options (sections swapped into one base), then each extra with every option."""
    base = load_config([])
    options = {(g, o): load_config(_option_overrides(g, o, files)) for g in GROUPS for o in available_options(g)}
    for (g1, o1), (g2, o2) in itertools.combinations(options, 2):
        if g1 != g2:
            yield base.model_copy(update={g1: getattr(options[g1, o1], g1), g2: getattr(options[g2, o2], g2)})
    for extra in EXTRAS:
        overrides = extra.format(**files).split(" ")
        section = overrides[0].split(".", 1)[0].split("=", 1)[0]
        picks_option = overrides[0].startswith(f"{section}=")
        with_extra = _load(overrides)
        yield with_extra
        for (g, o), option in options.items():
            if g != section:
                yield with_extra.model_copy(update={g: getattr(option, g)})
            elif not picks_option:
                yield _load([*_option_overrides(g, o, files), *overrides])


def _load(overrides: list[str]) -> Any:
    try:
        return load_config(overrides)
    except Exception as exc:  # a probe that stopped composing would silently shrink the "reads" lists
        raise RuntimeError(f"compiler/rules/docs.py: the probe {overrides} no longer composes ({exc}); "
                           "change it in EXTRAS") from exc


@dataclass
class Seen:
    """What one rule did over all probe configs."""

    paths: set[str] = field(default_factory=set)      # config fields it read
    facts: set[str] = field(default_factory=set)      # CheckContext fields it read
    severities: set[str] = field(default_factory=set)  # of the violations it yielded


def observe() -> dict[str, Seen]:
    """rule id -> what it read and yielded over every probe config."""
    from . import catalogue  # noqa: F401  (importing registers the rules)
    from .context import CheckContext

    seen: dict[str, Seen] = {rid: Seen() for rid in REGISTRY.rules}
    with tempfile.TemporaryDirectory(prefix="slmc-rules-doc-") as tmp:
        for cfg in _configs(_probe_files(Path(tmp))):
            ctx = CheckContext.from_config(cfg)
            for rid, r in REGISTRY.rules.items():
                s = seen[rid]
                try:
                    found = list(r.check(r, _Recorder(cfg, "", s.paths), _Recorder(ctx, "", s.facts)) or ())
                except Exception as exc:  # the documentation must not silently lose a rule
                    raise RuntimeError(f"rule {rid} failed while being documented: {exc!r}") from exc
                s.severities.update(v.severity for v in found)
    return seen


def _leaf_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every leaf field of a schema section, as config paths."""
    out = set()
    for name, info in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        sub = info.annotation
        out |= _leaf_paths(sub, path) if isinstance(sub, type) and issubclass(sub, BaseModel) else {path}
    return out


def _shown_paths(paths: set[str]) -> list[str]:
    """Sorted paths, a section whose every field is read shown once as `section.*`."""
    from ..schema import SlmcConfig

    shown = set(paths)
    for name, info in SlmcConfig.model_fields.items():
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            leaves = _leaf_paths(sub, name)
            if len(leaves) > 1 and leaves <= shown:
                shown = (shown - leaves) | {f"{name}.*"}
    return sorted(shown)


def _severity(registered: str, seen: set[str]) -> str:
    other = seen - {registered}
    return f"{registered}, or {' / '.join(sorted(other))} in some cases" if other else registered


def _first_sentence(doc: str) -> str:
    text = " ".join(doc.split())
    end = re.search(r"(?<!e\.g)(?<!i\.e)\. (?=[A-Z])", text)
    return text if end is None else text[: end.start() + 1]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


HEADER = """\
# The rule catalogue

<!-- Generated by `python -m slmc.rules.docs > docs/rules.md` from compiler/rules/*.py;
     do not edit by hand (tests/rules/test_rules_doc.py compares this file with the generator). -->

`slmc check` and `slmc compile` run every rule below on the composed config and the files
it names, before anything expensive runs, and report every violation at once. A violation
carries the rule id, its severity, the config paths involved, a message and a fix
(`slmc check --json` prints them as `{"ok": ..., "violations": [{"rule", "severity", "paths",
"message", "fix"}]}`). Any `error` makes `slmc check` and `slmc compile` exit 2 before a stage
runs; a `warning` is printed and recorded in `plan.json`. A rule never raises: a rule that
crashes becomes an error naming it, so it cannot hide the others.

"Reads" lists the config paths the rule was seen to read when the generator ran it over every
pair of shipped options and a set of probes (compiler/rules/docs.py); a rule reads a path only
when the branch it takes needs it. "Files" lists what it reads from disk through the check
context (compiler/rules/context.py). How to add a rule: docs/architecture.md.
"""


def render() -> str:
    """The whole of docs/rules.md."""
    seen = observe()
    by_module: dict[str, list] = defaultdict(list)
    for rid in sorted(REGISTRY.rules):
        r = REGISTRY.rules[rid]
        by_module[r.check.__module__].append(r)
    lines = [HEADER, "| rule | severity | what it checks |", "|---|---|---|"]
    for rid in sorted(REGISTRY.rules):
        r = REGISTRY.rules[rid]
        severity = _severity(r.severity, seen[rid].severities)
        lines.append(f"| [`{rid}`](#{rid.replace('.', '')}) | {severity} | {_cell(_first_sentence(r.doc))} |")
    for module in sorted(by_module):
        mod = sys.modules[module]
        source = f"compiler/rules/{module.rsplit('.', 1)[-1]}.py"
        lines += ["", f"## {source}", "", " ".join((mod.__doc__ or "").split())]
        for r in by_module[module]:
            s = seen[r.id]
            files = sorted({DISK_FACTS.get(f, f"CheckContext.{f}") for f in s.facts})
            reads = ", ".join(f"`{p}`" for p in _shown_paths(s.paths)) or "no config field"
            lines += ["", f"### `{r.id}`", "", f"**{_severity(r.severity, s.severities)}** — {' '.join(r.doc.split())}",
                      "", f"- reads: {reads}"]
            if files:
                lines.append(f"- files: {'; '.join(files)}")
            lines.append(f"- defined by `{r.check.__name__}` in {source}")
    return "\n".join(lines) + "\n"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
