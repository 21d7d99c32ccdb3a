"""eval.task_files and eval.accuracy_gate_needs_tasks."""

from __future__ import annotations

import json


def test_missing_and_invalid_task_files_are_named_with_their_line(check, tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"prompt": "a", "choices": ["x", "y"], "answer": 0}) + "\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "a", "answer": "b"}) + "\n" + json.dumps({"prompt": "a"}) + "\n")
    missing = tmp_path / "missing.jsonl"
    found = check([f"eval.tasks=[{good},{bad},{missing}]"], "eval.task_files")
    assert [v.paths for v in found] == [("eval.tasks[1]",), ("eval.tasks[2]",)]
    assert f"{bad}:2" in found[0].message and "answer" in found[0].message and found[0].severity == "error"
    assert "no such task file" in found[1].message and "eval.tasks" in found[1].fix
    assert check([f"eval.tasks=[{good}]"], "eval.task_files") == []
    assert check([], "eval.task_files") == []  # the default: the shipped task file, not checked here


def test_duplicate_task_names_are_refused(check, tmp_path):
    a, b = tmp_path / "a" / "t.jsonl", tmp_path / "b" / "t.jsonl"
    for path in (a, b):
        path.parent.mkdir()
        path.write_text(json.dumps({"prompt": "a", "answer": "b"}) + "\n")
    (v,) = check([f"eval.tasks=[{a},{b}]"], "eval.task_files")
    assert "also the name of" in v.message and v.paths == ("eval.tasks[1]",)


def test_an_accuracy_gate_without_tasks_warns(check, tmp_path):
    (v,) = check(["compress.max_accuracy_drop=0.05", "eval.tasks=[]"], "eval.accuracy_gate_needs_tasks")
    assert v.severity == "warning" and "eval.tasks" in v.fix
    # data=builtin brings its own task file; no gate, nothing to say
    assert check(["compress.max_accuracy_drop=0.05"], "eval.accuracy_gate_needs_tasks") == []
    assert check(["eval.tasks=[]"], "eval.accuracy_gate_needs_tasks") == []
