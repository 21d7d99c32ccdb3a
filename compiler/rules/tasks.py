"""Task-evaluation rules: eval.tasks names valid task files; the accuracy gate has tasks to measure."""

from __future__ import annotations

from ._engine import rule


@rule("eval.task_files")
def task_files(rule, cfg, ctx):
    """Every file in eval.tasks exists and is a valid task file (generation or multiple-choice JSON lines, docs/tasks.md); the first problem of each file is named with its line."""
    from ..runtime.task_files import TaskFileError, load_task

    names: dict[str, str] = {}
    for i, path in enumerate(cfg.eval.tasks or []):
        try:
            task = load_task(path)
        except TaskFileError as exc:
            yield rule.violation((f"eval.tasks[{i}]",), f"{exc.where}: {exc.message}", exc.fix or "")
            continue
        if task.name in names:
            yield rule.violation((f"eval.tasks[{i}]",),
                                 f"{path}: task name {task.name!r} is also the name of {names[task.name]}",
                                 "rename one file or set {\"task\": {\"name\": ...}} on its first line")
        names[task.name] = path


@rule("eval.accuracy_gate_needs_tasks", "warning")
def accuracy_gate_needs_tasks(rule, cfg, ctx):
    """compress.max_accuracy_drop is set but no task file will be evaluated (eval.tasks=[] or data=files without eval.tasks): the gate checks nothing."""
    if cfg.compress.max_accuracy_drop is None:
        return
    if cfg.eval.tasks or (cfg.eval.tasks is None and cfg.data.kind == "builtin"):
        return
    yield rule.violation(("compress.max_accuracy_drop", "eval.tasks"),
                         "compress.max_accuracy_drop is set, but there are no task files to measure accuracy on",
                         "list task files in eval.tasks=[path/to/task.jsonl] (docs/tasks.md), or drop the gate")
