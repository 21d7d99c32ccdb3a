"""Task accuracy at compile time: the fp32 checkpoint (PyTorch) and the bundle (slmc.runtime).

Both run the one harness of `slmc.runtime.tasks` on the same task files, tokenized the same
way; the checkpoint through a PyTorch model behind the harness's `TaskModel`, the bundle the way
a device runs it (`evaluate_bundle`: a verified bundle, onnxruntime). The package stage calls
`measure` on the staged bundle before it is published, so `compress.max_accuracy_drop` can
refuse a bundle that lost too much accuracy: the bundle folder is then never written.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import StageError
from ..layout import LAYOUT
from .progress import step

BUILTIN_TASKS = Path(__file__).resolve().parent.parent / "data" / "tasks" / "stdlib_completion.jsonl"
"""The task file shipped with the built-in data (Python standard-library phrases)."""


def task_paths(cfg) -> list[str]:
    """The task files a compile evaluates: eval.tasks, or with eval.tasks=null the data's own
    (the shipped standard-library task for data=builtin, none for data=files)."""
    if cfg.eval.tasks is not None:
        return list(cfg.eval.tasks)
    return [str(BUILTIN_TASKS)] if cfg.data.kind == "builtin" else []


def uses_chat(cfg) -> bool:
    """Prompts go through the chat template when the run trains on text rendered with it (data.format
    chat or instruction), as the bundle's harness decides from its manifest."""
    from ..runtime.tasks import CHAT_FORMATS

    return getattr(cfg.data, "format", "text") in CHAT_FORMATS


class TorchTaskModel:
    """A Hugging Face causal LM behind the harness's TaskModel (full recompute: task prompts are short)."""

    def __init__(self, model, context: int, eos_token_ids) -> None:
        self.model, self.context, self.eos_token_ids = model, context, tuple(eos_token_ids)

    def _logits(self, ids: list[int]):
        import torch

        with torch.no_grad():
            return self.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()

    def token_logprobs(self, ids: list[int]) -> np.ndarray:
        import torch

        logprobs = torch.log_softmax(self._logits(ids)[:-1].double(), dim=-1)
        return logprobs[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].numpy()

    def greedy(self, ids: list[int], max_new_tokens: int) -> list[int]:
        ids, new = list(ids), []
        for _ in range(max_new_tokens):
            token = int(self._logits(ids)[-1].argmax())
            if token in self.eos_token_ids:
                break
            ids.append(token)
            new.append(token)
        return new


def evaluate_checkpoint(run_dir: Path, paths: list[str], *, chat: bool, context: int) -> dict:
    """The harness on the run's fp32 checkpoint, with the run's tokenizer (and chat template)."""
    from tokenizers import Tokenizer

    from ..export.onnx_export import load_checkpoint
    from ..runtime.chat import ChatTemplate
    from ..runtime.task_files import load_tasks
    from ..runtime.tasks import Codec, evaluate
    from .stop_tokens import stop_token_ids

    tasks = load_tasks(paths)
    checkpoint = run_dir / LAYOUT.final_checkpoint
    eos_ids = stop_token_ids(run_dir)  # the ids the bundle stops on: both are judged alike
    render = ChatTemplate.from_file(run_dir / LAYOUT.tokenizer_config).user_prompt if chat else None
    codec = Codec(Tokenizer.from_file(str(run_dir / LAYOUT.tokenizer)), add_special_tokens=not chat)
    model = load_checkpoint(checkpoint)
    with _threads_for(model):
        return evaluate(tasks, TorchTaskModel(model, context, eos_ids), codec, render=render, measured_with="torch")


SMALL_MODEL_PARAMS = 20_000_000
"""Below this, task prompts (tens of tokens) make each op too small to share among threads."""


@contextmanager
def _threads_for(model):
    """One intra-op thread for a small model: measured on the default tiny model on a loaded 2-core
    machine, its task evaluation took 54 s with PyTorch's 2 threads (spinning OpenMP workers
    contending with other processes) and 1.4 s with one."""
    import torch

    saved = torch.get_num_threads()
    small = sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMS
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small:
            torch.set_num_threads(saved)


def measure(cfg, run_dir: Path, bundle_dir: Path) -> dict | None:
    """Task accuracy of the checkpoint and of the bundle at `bundle_dir` (None without task files),
    and the drop between them; fails the compile past compress.max_accuracy_drop."""
    from ..runtime.task_files import TaskFileError
    from ..runtime.tasks import evaluate_bundle

    paths = task_paths(cfg)
    if not paths:
        return None
    chat = uses_chat(cfg)
    try:
        with step(f"task accuracy of {LAYOUT.final_checkpoint}/ ({len(paths)} task file(s), PyTorch)"):
            checkpoint = evaluate_checkpoint(run_dir, paths, chat=chat, context=cfg.export.max_seq_len)
        with step(f"task accuracy of the bundle ({cfg.compress.precision}, slmc.runtime)"):
            bundle = evaluate_bundle(bundle_dir, paths, chat=chat, allow_foreign=True)
    except TaskFileError as exc:
        raise StageError(exc.message, where=exc.where, fix=exc.fix) from None
    drop = round(checkpoint["accuracy"] - bundle["accuracy"], 4)
    gate = cfg.compress.max_accuracy_drop
    if gate is not None and drop > gate:
        worst = ", ".join(f"{name} {checkpoint['tasks'][name]['accuracy']:.1%} -> {t['accuracy']:.1%}"
                          for name, t in bundle["tasks"].items())
        raise StageError(
            f"task accuracy fell {drop:.1%} ({checkpoint['accuracy']:.1%} -> {bundle['accuracy']:.1%}; {worst}) "
            f"after {cfg.compress.precision}, over the gate compress.max_accuracy_drop={gate:g} by {drop - gate:.1%}",
            where="compress.max_accuracy_drop",
            fix="raise the gate, train longer, or use a gentler precision (int8 before int4)")
    return {"checkpoint": checkpoint, "bundle": bundle, "accuracy_drop": drop,
            "max_accuracy_drop": gate, "precision": cfg.compress.precision}
