"""check_parity: the exported graph matches PyTorch, and a wrong graph is caught."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from slmc.export.parity import ParityReport, check_parity, left_padded_positions


@pytest.fixture(scope="module")
def report(tiny_llama_dir, tiny_llama_export) -> ParityReport:
    return check_parity(tiny_llama_dir, tiny_llama_export.onnx_path)


def test_all_cases_match_pytorch(report):
    assert set(report.cases) == {"prefill", "decode_with_past", "left_padded_batch"}
    assert all(value < 1e-4 for value in report.cases.values()), report.cases
    assert report.greedy_identical and len(report.greedy_torch) == 8
    assert report.tolerance == 1e-3 and report.ok


def test_report_serialises_and_describes_itself(report):
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is True and data["cases"] == report.cases
    text = report.describe()
    worst = max(report.cases, key=report.cases.get)
    assert "passed" in text and f"'{worst}'" in text and "identical" in text


def test_a_graph_of_other_weights_fails(checkpoint_factory, tiny_llama_export):
    other = checkpoint_factory("llama", seed=1)
    result = check_parity(other, tiny_llama_export.onnx_path, greedy_steps=4)
    assert not result.ok
    assert min(result.cases.values()) > 1e-2
    assert "FAILED" in result.describe()


def test_describe_names_a_non_finite_case_as_the_worst():
    report = ParityReport(
        cases={"prefill": 1e-6, "decode_with_past": math.nan, "left_padded_batch": 5e-2},
        greedy_identical=False, tolerance=1e-3, ok=False, greedy_torch=[1, 2], greedy_onnx=[1, 3],
    )
    text = report.describe()
    assert "'decode_with_past'" in text and "[1, 2]" in text and "[1, 3]" in text


def test_left_padded_positions_follow_hugging_face():
    mask = np.array([[1, 1, 1, 1], [0, 0, 1, 1]])
    np.testing.assert_array_equal(left_padded_positions(mask), [[0, 1, 2, 3], [0, 0, 0, 1]])
