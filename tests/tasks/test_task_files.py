"""Task files: the format (docs/tasks.md), and errors that name the file and the line."""

from __future__ import annotations

import json

import pytest

from slmc.runtime.task_files import TaskFileError, cut_at_stop, is_match, load_task, load_tasks


def write(tmp_path, lines, name="t.jsonl"):
    path = tmp_path / name
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines), encoding="utf-8")
    return path


def error(path) -> TaskFileError:
    with pytest.raises(TaskFileError) as err:
        load_task(path)
    return err.value


def test_multiple_choice_answers_by_index_or_text(tmp_path):
    task = load_task(write(tmp_path, [{"prompt": "a", "choices": ["x", "y"], "answer": 1},
                                      {"prompt": "b", "choices": ["x", "y", "z"], "answer": "z"}]))
    assert (task.name, task.kind, task.metric) == ("t", "choice", "acc")
    assert [r.answer_index for r in task.records] == [1, 2]
    assert [r.line for r in task.records] == [1, 2]


def test_header_sets_name_match_and_generation_limits(tmp_path):
    task = load_task(write(tmp_path, [
        {"task": {"name": "capitals", "match": "contains", "max_new_tokens": 4, "stop": ["\n"]}},
        {"prompt": "France:", "answer": "Paris"},
        {"prompt": "Italy:", "answer": ["Rome", "Roma"], "match": "exact"},
        "",  # blank lines are skipped, line numbers still count them
        {"prompt": "Spain:", "answer": "Ma[dD]rid", "match": "regex"},
    ]))
    assert (task.name, task.kind, task.max_new_tokens, task.stop) == ("capitals", "generation", 4, ("\n",))
    assert [r.match for r in task.records] == ["contains", "exact", "regex"]
    assert [r.line for r in task.records] == [2, 3, 5]
    assert task.metric == "contains+exact+regex"


@pytest.mark.parametrize("lines, line, words", [
    (["{not json"], 1, "not a JSON object"),
    ([{"prompt": "a", "answer": "b"}, [1, 2]], 2, "not a JSON object (a list)"),
    ([{"prompt": "", "answer": "b"}], 1, "prompt must be a non-empty string"),
    ([{"prompt": "a"}], 1, "answer must be a non-empty string"),
    ([{"prompt": "a", "answer": "b", "match": "fuzzy"}], 1, "match must be one of"),
    ([{"prompt": "a", "answer": "(", "match": "regex"}], 1, "not a valid regular expression"),
    ([{"prompt": "a", "answer": "b", "extra": 1}], 1, "unknown field(s) ['extra']"),
    ([{"prompt": "a", "choices": ["x"], "answer": 0}], 1, "at least 2"),
    ([{"prompt": "a", "choices": ["x", "x"], "answer": 0}], 1, "repeat"),
    ([{"prompt": "a", "choices": ["x", "y"], "answer": 2}], 1, "outside choices"),
    ([{"prompt": "a", "choices": ["x", "y"], "answer": "z"}], 1, "not one of the choices"),
    ([{"prompt": "a", "choices": ["x", "y"], "answer": True}], 1, "index or text"),
    ([{"prompt": "a", "answer": "b"}, {"prompt": "a", "choices": ["x", "y"], "answer": 0}], 2,
     "a choice record in a file of generation records"),
    ([{"prompt": "a", "answer": "b"}, {"task": {"name": "late"}}], 2, "may only be the first line"),
    ([{"task": {"nme": "x"}}, {"prompt": "a", "answer": "b"}], 1, "unknown task setting(s) ['nme']"),
    ([{"task": {"max_new_tokens": 0}}, {"prompt": "a", "answer": "b"}], 1, "max_new_tokens"),
])
def test_bad_records_name_file_and_line(tmp_path, lines, line, words):
    path = write(tmp_path, lines)
    err = error(path)
    assert err.where == f"{path}:{line}"
    assert words in err.message
    assert err.fix


def test_missing_empty_and_non_utf8_files(tmp_path):
    assert "no such task file" in error(tmp_path / "absent.jsonl").message
    assert "holds no records" in error(write(tmp_path, [""])).message
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"prompt": "caf\xe9", "answer": "x"}\n')
    assert "not UTF-8" in error(bad).message


def test_two_files_with_one_task_name_are_refused(tmp_path):
    a = write(tmp_path, [{"prompt": "a", "answer": "b"}], "a.jsonl")
    b = write(tmp_path, [{"task": {"name": "a"}}, {"prompt": "a", "answer": "b"}], "b.jsonl")
    with pytest.raises(TaskFileError, match="also the name of"):
        load_tasks([a, b])


def test_matching_rules(tmp_path):
    task = load_task(write(tmp_path, [{"prompt": "p", "answer": "42"},
                                      {"prompt": "p", "answer": "42", "match": "contains"},
                                      {"prompt": "p", "answer": r"^\s*4\d\b", "match": "regex"}]))
    exact, contains, regex = task.records
    assert is_match("  42\n", exact) and not is_match("42 and more", exact)
    assert is_match("it is 42.", contains) and not is_match("4 2", contains)
    assert is_match(" 43 apples", regex) and not is_match("x 43", regex)
    assert cut_at_stop("42\nnext line", ("\n",)) == "42"
    assert cut_at_stop("a.b;c", (";", ".")) == "a"
    assert cut_at_stop("abc", ()) == "abc"


def test_the_shipped_builtin_task_file_is_valid():
    from slmc.stages.task_eval import BUILTIN_TASKS

    task = load_task(BUILTIN_TASKS)
    assert task.kind == "choice" and len(task.records) >= 20
    # the right answer is not always in the same place (a constant-index bug would not pass)
    assert len({r.answer_index for r in task.records}) > 1
