"""Task accuracy of a model: one harness, two models (the bundle here, the PyTorch checkpoint in the compiler).

`evaluate(tasks, model, ...)` scores task files (slmc.runtime.task_files) through a `TaskModel`:
- multiple choice, like lm-evaluation-harness: each choice's continuation tokens are scored by
  their summed log-probability given the prompt; `acc` takes the highest sum, `acc_norm` the
  highest sum per byte of the choice's text;
- generation: greedy continuation of the prompt (at most the task's max_new_tokens, ending at an
  EOS token or a stop string), matched against the answers.

Prompts and continuations are tokenized here, the same way for both models, so the PyTorch and
ONNX Runtime numbers differ only by what the graphs compute. `evaluate_bundle` is the device's
way: a verified bundle run by onnxruntime (no torch), with the bundle's chat template when asked.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from slmc.runtime.errors import GenerationWarning
from slmc.runtime.task_files import Record, Task, cut_at_stop, is_match, load_tasks


class TaskModel(Protocol):
    """What the harness needs of a model: teacher-forced log-probabilities and greedy decoding."""

    context: int
    eos_token_ids: Sequence[int]

    def token_logprobs(self, ids: list[int]) -> np.ndarray:
        """log p(ids[i] | ids[:i]) for i = 1 .. len(ids) - 1."""

    def greedy(self, ids: list[int], max_new_tokens: int) -> list[int]:
        """Greedy new token ids (an EOS id that ended it left out)."""


class TextCodec(Protocol):
    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...


def _split_space(prompt: str, choice: str) -> tuple[str, str]:
    """lm-evaluation-harness moves the prompt's trailing spaces onto the continuation."""
    spaces = len(prompt) - len(prompt.rstrip(" "))
    return (prompt[:-spaces], prompt[-spaces:] + choice) if spaces else (prompt, choice)


def continuation_ids(codec: TextCodec, prompt: str, choice: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids): the continuation is what encoding prompt + choice adds to
    the prompt's own encoding; when a merge crosses the boundary, the choice encoded alone."""
    prompt, choice = _split_space(prompt, choice)
    context, whole = codec.encode(prompt), codec.encode(prompt + choice)
    if whole[:len(context)] == context and len(whole) > len(context):
        return context, whole[len(context):]
    return context, codec.encode(choice)


def _choice_scores(model: TaskModel, codec: TextCodec, prompt: str, record: Record) -> tuple[int, int]:
    """(index of the most likely choice, index of the most likely per byte)."""
    sums, per_byte = [], []
    for choice in record.choices:
        context, cont = continuation_ids(codec, prompt, choice)
        ids = (context + cont)[-model.context:]
        if len(ids) <= len(cont):  # the continuation alone fills the context: score what fits
            cont = ids[1:]
        logprobs = model.token_logprobs(ids)
        total = float(np.sum(logprobs[len(logprobs) - len(cont):]))
        sums.append(total)
        per_byte.append(total / max(len(choice.encode("utf-8")), 1))
    return int(np.argmax(sums)), int(np.argmax(per_byte))


def _generate(model: TaskModel, codec: TextCodec, prompt: str, task: Task) -> str:
    new = min(task.max_new_tokens, model.context - 1)
    ids = codec.encode(prompt)[-(model.context - new):] or [0]
    text = codec.decode(model.greedy(ids, new))
    return cut_at_stop(text, task.stop)


def evaluate(tasks: Sequence[Task], model: TaskModel, codec: TextCodec, *,
             render: Callable[[str], str] | None = None, measured_with: str = "") -> dict:
    """{"tasks": {name: {"metric", "accuracy", "n", ...}}, "accuracy": the mean over tasks}.

    render: turns a record's prompt into the text the model sees (the chat template), or None.
    """
    results = {}
    for task in tasks:
        right = right_norm = 0
        for record in task.records:
            prompt = render(record.prompt) if render else record.prompt
            if task.kind == "choice":
                best, best_norm = _choice_scores(model, codec, prompt, record)
                right += best == record.answer_index
                right_norm += best_norm == record.answer_index
            else:
                right += is_match(_generate(model, codec, prompt, task), record)
        n = len(task.records)
        entry = {"kind": task.kind, "metric": task.metric, "accuracy": round(right / n, 4), "n": n,
                 "file": Path(task.path).name}
        if task.kind == "choice":
            entry["acc_norm"] = round(right_norm / n, 4)
        results[task.name] = entry
    mean = round(sum(t["accuracy"] for t in results.values()) / len(results), 4) if results else None
    return {"tasks": results, "accuracy": mean, "measured_with": measured_with, "chat": render is not None}


class BundleTaskModel:
    """A loaded bundle as a TaskModel: the session, loop and stop tokens `generate` uses."""

    def __init__(self, bundle, *, chat: bool = False) -> None:
        self.bundle = bundle
        self.context = bundle.context
        # asked in chat form, a reply ends at the template's reply end (an older bundle's eos ids lack it)
        self.extra_stops = bundle.chat_stop_ids() if chat else ()
        self.eos_token_ids = tuple(bundle.manifest.tokens["eos_token_ids"]) + self.extra_stops

    def token_logprobs(self, ids: list[int]) -> np.ndarray:
        from slmc.runtime.stepper import make_stepper

        array = np.asarray([ids], dtype=np.int64)
        positions = np.arange(len(ids), dtype=np.int64)[None]
        stepper = make_stepper(self.bundle.session, self.bundle.manifest.kv, 1, self.bundle.loop,
                               capacity=len(ids))
        logits = stepper.logits(array, np.ones_like(array), positions)[0, :-1].astype(np.float64)
        shifted = logits - logits.max(axis=-1, keepdims=True)
        logsoftmax = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        return logsoftmax[np.arange(len(ids) - 1), ids[1:]]

    def greedy(self, ids: list[int], max_new_tokens: int) -> list[int]:
        params = self.bundle.params(max_new_tokens=max_new_tokens, do_sample=False, repetition_penalty=1.0,
                                    stop_token_ids=self.extra_stops)
        generation = self.bundle.start([ids], params)
        for _ in generation:
            pass
        out = generation.completions[0].token_ids
        return out[:-1] if out and out[-1] in self.eos_token_ids else out


class Codec:
    """Encode/decode with a `tokenizers.Tokenizer`; rendered chat text already holds its special tokens."""

    def __init__(self, tokenizer, *, add_special_tokens: bool = True) -> None:
        self.tokenizer, self.add_special_tokens = tokenizer, add_special_tokens

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=self.add_special_tokens).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


CHAT_FORMATS = ("chat", "instruction")
"""Data formats trained through the chat template (an instruction record is a user and an assistant turn)."""


def manifest_says_chat(data) -> bool:
    """Whether a bundle's manifest records training data rendered with its chat template (`data.format`
    chat or instruction): its prompts are then asked as a user message through that template."""
    section = data.get("data")
    return isinstance(section, dict) and section.get("format") in CHAT_FORMATS


def evaluate_bundle(bundle_dir: str | Path, task_paths: Sequence[str | Path], *, chat: bool | None = None,
                    allow_foreign: bool = False, threads: int | None = None) -> dict:
    """Task accuracy of a verified bundle, run the way the device runs it (onnxruntime).

    chat: apply the bundle's chat template (tokenizer_config.json, checked against the manifest's
    sha256 before it is read) to each prompt as one user message; None: when the manifest says the
    run trained on chat data. Returns {"tasks": {name: {"metric", "accuracy", "n", ...}}, "accuracy"}.
    """
    from slmc.runtime.bundle import load_bundle

    tasks = load_tasks(task_paths)
    bundle = load_bundle(bundle_dir, allow_foreign=allow_foreign, threads=threads)
    if chat is None:
        chat = manifest_says_chat(bundle.manifest.data)
    render = bundle.chat_template().user_prompt if chat else None
    codec = Codec(bundle.tokenizer.tokenizer, add_special_tokens=not chat)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GenerationWarning)  # the harness fits prompts itself
        return evaluate(tasks, BundleTaskModel(bundle, chat=chat), codec, render=render,
                        measured_with="onnxruntime")
