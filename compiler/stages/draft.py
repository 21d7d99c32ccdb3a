"""The draft stage (draft.method != none): compile the draft decoder as a run inside this run.

The draft's config comes from the target's (draft_config.draft_config) and goes through the
whole pipeline — its rules, plan, stages and the shared stage cache — into `<run>/draft/`,
whose bundle the package stage then ships under `bundle/draft/` (compiler/draft.py checks that
the two fit together: tokenizer, size, context, runtime, memory). A draft config the rules
refuse fails this stage with every violation, each under `draft.` in the target's terms.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..draft_config import DRAFT_RUN, draft_config
from ..errors import CheckFailed, StageError
from ..layout import LAYOUT
from .base import Results
from .progress import say, step
from .results import DraftResult


def run_draft(cfg, run_dir: Path, results: Results) -> DraftResult:
    from .. import compile_log
    from ..pipeline import compile_config

    child = draft_config(cfg, run_dir / LAYOUT.final_checkpoint)
    with step(f"compiling the draft ({cfg.draft.method}) into {DRAFT_RUN}/"), compile_log.inner():
        try:
            done = compile_config(child, quiet=True, run_dir=run_dir / DRAFT_RUN)
        except CheckFailed as exc:
            errors = [v for v in exc.violations if v.severity == "error"]
            raise StageError("the draft's config does not pass the rules: "
                             + "; ".join(f"[{v.rule}] {v.message}" for v in errors),
                             where="draft", fix="; ".join(dict.fromkeys(v.fix for v in errors if v.fix))
                             or "see `slmc check`") from None
    if done.bundle is None:
        raise StageError("the draft compile made no bundle", where="draft", fix="report this as an slmc bug")
    manifest = json.loads((done.bundle / "manifest.json").read_text(encoding="utf-8"))
    target = json.loads((run_dir / LAYOUT.final_checkpoint / "config.json").read_text(encoding="utf-8"))
    ppl = manifest["metrics"]["heldout_perplexity"]
    result = DraftResult(method=cfg.draft.method, run=DRAFT_RUN, bundle=f"{DRAFT_RUN}/{LAYOUT.bundle}",
                         parameters=manifest["model"]["parameters"],
                         num_hidden_layers=manifest["model"]["num_hidden_layers"],
                         target_num_hidden_layers=target["num_hidden_layers"],
                         heldout_ppl=ppl.get("compress", ppl.get("optimize", ppl["export"])))
    say(f"  draft: {result.figure()}")
    return result
