"""Task files: small local JSONL evaluation sets, read and validated (docs/tasks.md).

One JSON object per line. A file holds one kind of task:

- generation: `{"prompt": str, "answer": str | [str, ...], "match"?: "exact" | "contains" | "regex"}`;
  the model continues the prompt greedily and the record is right when its text matches an answer
  (exact: equal after stripping surrounding whitespace; contains: the answer occurs in it; regex:
  `re.search(answer, text)`).
- multiple choice: `{"prompt": str, "choices": [str, ...], "answer": int | str}` (the index of the
  right choice, or its text); scored like lm-evaluation-harness: the choice whose continuation
  tokens have the highest summed log-probability given the prompt is the model's answer.

An optional first line `{"task": {...}}` sets the file's defaults: `name` (default: the file's
stem), `match` (default "exact"), `max_new_tokens` (default 16) and `stop` (strings that end a
generation, default none). A record's own `match` overrides the file's.

Shared by the compiler (its `slmc check` rule and the PyTorch scorer) and the runtime (the
ONNX Runtime scorer): plain Python, no dependency.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from slmc.runtime.errors import SlmcRuntimeError

MATCHES = ("exact", "contains", "regex")
DEFAULT_MAX_NEW_TOKENS = 16
MAX_NEW_TOKENS_LIMIT = 512
MAX_TASK_BYTES = 64 * 1024 * 1024
_SETTINGS = {"name", "match", "max_new_tokens", "stop"}
_GENERATION_KEYS = {"prompt", "answer", "match"}
_CHOICE_KEYS = {"prompt", "choices", "answer"}


class TaskFileError(SlmcRuntimeError):
    """A task file is missing, unreadable or not in the task format; names the file and line."""


@dataclass(frozen=True)
class Record:
    line: int
    prompt: str
    answers: tuple[str, ...] = ()      # generation: any of these is right
    match: str = "exact"               # generation
    choices: tuple[str, ...] = ()      # multiple choice
    answer_index: int = -1             # multiple choice


@dataclass(frozen=True)
class Task:
    name: str
    path: str
    kind: str                          # "generation" or "choice"
    records: tuple[Record, ...]
    match: str = "exact"
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    stop: tuple[str, ...] = field(default_factory=tuple)

    @property
    def metric(self) -> str:
        """What accuracy means for this task: "acc" (multiple choice) or the match rule(s) used."""
        if self.kind == "choice":
            return "acc"
        used = sorted({r.match for r in self.records})
        return used[0] if len(used) == 1 else "+".join(used)


def _fail(path: str, line: int | None, message: str, fix: str) -> TaskFileError:
    where = f"{path}:{line}" if line else path
    return TaskFileError(message, where=where, fix=fix)


_FIX = "see docs/tasks.md for the task file format"


def _text(value, what: str, path: str, line: int, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise _fail(path, line, f"{what} must be a non-empty string, got {value!r}"[:300], _FIX)
    return value


def _settings(data: dict, path: str) -> dict:
    settings = data.get("task")
    if not isinstance(settings, dict) or set(data) != {"task"}:
        raise _fail(path, 1, "a header line holds only {\"task\": {...}}", _FIX)
    unknown = sorted(set(settings) - _SETTINGS)
    if unknown:
        raise _fail(path, 1, f"unknown task setting(s) {unknown}; known: {sorted(_SETTINGS)}", _FIX)
    out = {}
    if "name" in settings:
        out["name"] = _text(settings["name"], "task.name", path, 1)
    if "match" in settings:
        out["match"] = _match(settings["match"], path, 1)
    if "max_new_tokens" in settings:
        n = settings["max_new_tokens"]
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_NEW_TOKENS_LIMIT:
            raise _fail(path, 1, f"task.max_new_tokens must be an integer from 1 to {MAX_NEW_TOKENS_LIMIT}, "
                                 f"got {n!r}", _FIX)
        out["max_new_tokens"] = n
    if "stop" in settings:
        stop = settings["stop"]
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            raise _fail(path, 1, f"task.stop must be a list of non-empty strings, got {stop!r}"[:300], _FIX)
        out["stop"] = tuple(stop)
    return out


def _match(value, path: str, line: int) -> str:
    if value not in MATCHES:
        raise _fail(path, line, f"match must be one of {list(MATCHES)}, got {value!r}"[:300], _FIX)
    return value


def _generation(data: dict, path: str, line: int, default_match: str) -> Record:
    unknown = sorted(set(data) - _GENERATION_KEYS)
    if unknown:
        raise _fail(path, line, f"unknown field(s) {unknown} in a generation record; known: "
                                f"{sorted(_GENERATION_KEYS)}", _FIX)
    prompt = _text(data.get("prompt"), "prompt", path, line)
    answer = data.get("answer")
    answers = answer if isinstance(answer, list) else [answer]
    if not answers:
        raise _fail(path, line, "answer is an empty list", "give at least one right answer")
    answers = tuple(_text(a, "answer", path, line) for a in answers)
    match = _match(data.get("match", default_match), path, line)
    if match == "regex":
        for pattern in answers:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise _fail(path, line, f"answer {pattern!r} is not a valid regular expression ({exc})",
                            "escape it, or use match 'exact' or 'contains'") from None
    return Record(line=line, prompt=prompt, answers=answers, match=match)


def _choice(data: dict, path: str, line: int) -> Record:
    unknown = sorted(set(data) - _CHOICE_KEYS)
    if unknown:
        raise _fail(path, line, f"unknown field(s) {unknown} in a multiple-choice record; known: "
                                f"{sorted(_CHOICE_KEYS)}", _FIX)
    prompt = _text(data.get("prompt"), "prompt", path, line)
    choices = data.get("choices")
    if not isinstance(choices, list) or len(choices) < 2:
        raise _fail(path, line, f"choices must be a list of at least 2 strings, got {choices!r}"[:300], _FIX)
    choices = tuple(_text(c, "each choice", path, line) for c in choices)
    if len(set(choices)) != len(choices):
        raise _fail(path, line, "choices repeat a choice", "make every choice distinct")
    answer = data.get("answer")
    if isinstance(answer, bool) or not isinstance(answer, (int, str)):
        raise _fail(path, line, f"answer must be the right choice's index or text, got {answer!r}"[:300], _FIX)
    if isinstance(answer, int):
        if not 0 <= answer < len(choices):
            raise _fail(path, line, f"answer index {answer} is outside choices (0 to {len(choices) - 1})", _FIX)
        index = answer
    elif answer in choices:
        index = choices.index(answer)
    else:
        raise _fail(path, line, f"answer {answer!r} is not one of the choices"[:300],
                    "give the right choice's text exactly, or its index")
    return Record(line=line, prompt=prompt, choices=choices, answer_index=index)


def load_task(path: str | Path) -> Task:
    """Read and validate one task file; a TaskFileError names the file and line of the first problem."""
    name = str(path)
    file = Path(path).expanduser()
    if not file.is_file():
        raise _fail(name, None, "no such task file" if not file.exists() else "not a file",
                    "correct the path in eval.tasks (relative paths are from where slmc runs)")
    if file.stat().st_size > MAX_TASK_BYTES:
        raise _fail(name, None, f"larger than {MAX_TASK_BYTES // 2**20} MiB", "split it; task files are small")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(name, None, f"not UTF-8 text (byte {exc.start})", "save it as UTF-8 JSON lines") from None
    settings: dict = {}
    records: list[Record] = []
    kind = None
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise _fail(name, number, f"not a JSON object ({exc})", "one JSON object per line") from None
        if not isinstance(data, dict):
            raise _fail(name, number, f"not a JSON object (a {type(data).__name__})", "one JSON object per line")
        if "task" in data:
            if records or settings:
                raise _fail(name, number, "a {\"task\": ...} header may only be the first line", _FIX)
            settings = _settings(data, name)
            continue
        this = "choice" if "choices" in data else "generation"
        if kind is not None and this != kind:
            raise _fail(name, number, f"a {this} record in a file of {kind} records",
                        "keep generation and multiple-choice records in separate files")
        kind = this
        records.append(_choice(data, name, number) if this == "choice"
                       else _generation(data, name, number, settings.get("match", "exact")))
    if not records:
        raise _fail(name, None, "holds no records", "add one JSON object per line (docs/tasks.md)")
    return Task(name=settings.get("name", file.stem), path=name, kind=kind or "generation",
                records=tuple(records), match=settings.get("match", "exact"),
                max_new_tokens=settings.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS),
                stop=settings.get("stop", ()))


def load_tasks(paths) -> list[Task]:
    """Every task file, validated; two files with the same task name are refused."""
    tasks = [load_task(p) for p in paths]
    seen: dict[str, str] = {}
    for task in tasks:
        if task.name in seen:
            raise _fail(task.path, None, f"task name {task.name!r} is also the name of {seen[task.name]}",
                        "rename one file or set {\"task\": {\"name\": ...}} on its first line")
        seen[task.name] = task.path
    return tasks


def is_match(text: str, record: Record) -> bool:
    """Whether a generated text answers a generation record."""
    if record.match == "exact":
        return any(text.strip() == a.strip() for a in record.answers)
    if record.match == "contains":
        return any(a in text for a in record.answers)
    return any(re.search(a, text) for a in record.answers)


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """The text up to the first stop string (the stop string left out)."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]
