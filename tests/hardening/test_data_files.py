"""Hostile training text: every file the data stage cannot use is refused before training,
naming the file and line, with exit 2 (a config error), never "stage 'data' failed" (exit 1).

What the first 64 KiB of a file shows is refused by `slmc check` (rule data.files_are_text);
what lies further is refused by the data stage, which runs before the tokenizer and training.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from slmc.errors import ConfigError
from slmc.stages.data import SAMPLE_BYTES, read_documents

from .conftest import TINY, count, run_slmc

GOOD_LINE = b'{"text": "the small model runs on the device"}\n'
FILLER = GOOD_LINE * (SAMPLE_BYTES // len(GOOD_LINE) + 10)  # pushes what follows past the check's sample
FILLER_LINES = FILLER.count(b"\n")

HOSTILE = {  # name -> (file name, bytes, where the error points, what it says)
    "lone surrogate": ("s.jsonl", FILLER + b'{"text": "a \\ud800 b"}\n', FILLER_LINES + 1, "lone surrogate \\ud800"),
    "deep JSON": ("d.jsonl", FILLER + b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", FILLER_LINES + 1,
                  "nested deeper"),
    "NUL bytes": ("n.txt", b"plain text\n" * 8000 + b"\x00" * 64, 8001, "a NUL byte"),
    "broken record": ("b.jsonl", FILLER + b'{"text": "x"\n', FILLER_LINES + 1, "invalid JSON"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_the_data_stage_names_file_and_line(tmp_path, case):
    name, data, line, message = HOSTILE[case]
    path = tmp_path / name
    path.write_bytes(data)
    count("hostile data files")
    with pytest.raises(ConfigError) as caught:
        read_documents([str(path)], "text", "data.train_files")
    assert f"{path}:{line}: " in caught.value.message and message in caught.value.message
    assert caught.value.where == "data.train_files[0]" and caught.value.exit_code == 2


def compile_with(tmp_path: Path, path: Path):
    out = tmp_path / "out"
    proc = run_slmc("compile", *TINY, "data=files", f"data.train_files=[{path}]", f"out_dir={out}",
                    "run_name=hostile", cwd=tmp_path, timeout=300)
    return proc, out / "hostile"


@pytest.mark.parametrize("case", ["lone surrogate", "deep JSON"])
def test_compile_stops_at_the_data_stage_with_exit_2_before_training(tmp_path, case):
    """Past the check's sample, so only the data stage sees it: exit 2, file:line, nothing trained."""
    name, data, line, message = HOSTILE[case]
    path = tmp_path / name
    path.write_bytes(data)
    count("hostile data files")
    proc, run = compile_with(tmp_path, path)
    assert proc.returncode == 2, proc.stderr
    assert f"{path}:{line}: " in proc.stderr and message in proc.stderr
    assert "stage 'data' failed" not in proc.stderr and "Traceback" not in proc.stderr
    assert not (run / "metrics.jsonl").exists() and not (run / "checkpoint").exists()


def test_a_nul_only_file_is_refused_by_check_before_anything_runs(tmp_path):
    """It once trained for a minute, then failed with "train_text has 2 tokens"."""
    path = tmp_path / "zeros.txt"
    path.write_bytes(b"\x00" * 100_000)
    count("hostile data files")
    proc, run = compile_with(tmp_path, path)
    assert proc.returncode == 2 and "data.files_are_text" in proc.stdout + proc.stderr
    assert f"{path}:1: a NUL byte" in proc.stdout + proc.stderr
    assert not run.exists()


def test_json_lines_end_at_newlines_only(tmp_path):
    """U+2028 and U+0085 are legal raw inside a JSON string; str.splitlines() split records there."""
    path = tmp_path / "sep.jsonl"
    path.write_text('{"text": "one\u2028two"}\n{"text": "three\u0085four"}\n{"text": 5}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"sep\.jsonl:3: no string field"):
        read_documents([str(path)], "text", "data.train_files")
    path.write_text('{"text": "one\u2028two"}\n{"text": "three\u0085four"}\n', encoding="utf-8")
    assert [text for _, text in read_documents([str(path)], "text", "data.train_files")] == \
        ["one\u2028two", "three\u0085four"]
