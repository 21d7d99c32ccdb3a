"""The scoring harness: lm-evaluation-harness's multiple-choice rule, greedy generation tasks, and the
same numbers from the bundle (onnxruntime, slmc.runtime) and from its PyTorch checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest

from slmc.runtime.task_files import load_task, load_tasks
from slmc.runtime.tasks import BundleTaskModel, Codec, continuation_ids, evaluate, evaluate_bundle
from tests.fixtures.bundle import CONTEXT


class ScriptedModel:
    """A TaskModel whose next-token log-probability is a fixed table: the harness's arithmetic is checked
    against sums computed by hand."""

    context = 64
    eos_token_ids = (2,)

    def __init__(self, logprob_of: dict[int, float], greedy_ids: list[int] | None = None):
        self.logprob_of, self.greedy_ids = logprob_of, greedy_ids or []

    def token_logprobs(self, ids):
        return np.array([self.logprob_of.get(t, -10.0) for t in ids[1:]])

    def greedy(self, ids, max_new_tokens):
        return self.greedy_ids[:max_new_tokens]


class CharCodec:
    """One token per character (its code point): continuation boundaries are easy to see."""

    def encode(self, text):
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


def write(tmp_path, name, lines):
    path = tmp_path / name
    path.write_text("".join(json.dumps(l) + "\n" for l in lines), encoding="utf-8")
    return path


def test_choice_with_the_highest_summed_logprob_wins_and_acc_norm_divides_by_bytes(tmp_path):
    path = write(tmp_path, "mc.jsonl", [{"prompt": "q:", "choices": ["aaa", "b"], "answer": 1}])
    # sums: aaa = 3 x -1 = -3, b = -2.5 -> acc picks b; per byte: aaa = -1, b = -2.5 -> acc_norm picks aaa
    model = ScriptedModel({ord("a"): -1.0, ord("b"): -2.5})
    entry = evaluate([load_task(path)], model, CharCodec())["tasks"]["mc"]
    assert (entry["accuracy"], entry["acc_norm"], entry["n"], entry["metric"]) == (1.0, 0.0, 1, "acc")
    model.logprob_of[ord("b")] = -3.5  # aaa wins both ways
    entry = evaluate([load_task(path)], model, CharCodec())["tasks"]["mc"]
    assert (entry["accuracy"], entry["acc_norm"]) == (0.0, 0.0)
    model.logprob_of[ord("b")] = -0.5  # b wins both ways
    entry = evaluate([load_task(path)], model, CharCodec())["tasks"]["mc"]
    assert (entry["accuracy"], entry["acc_norm"]) == (1.0, 1.0)


def test_trailing_prompt_space_moves_onto_the_continuation():
    context, cont = continuation_ids(CharCodec(), "x = ", "1")
    assert CharCodec().decode(context) == "x =" and CharCodec().decode(cont) == " 1"


def test_generation_tasks_use_greedy_text_cut_at_stop_and_the_match_rule(tmp_path):
    path = write(tmp_path, "gen.jsonl", [{"task": {"match": "exact", "stop": ["\n"], "max_new_tokens": 8}},
                                         {"prompt": "a", "answer": "42"}, {"prompt": "b", "answer": "4"},
                                         {"prompt": "c", "answer": "2\n", "match": "contains"}])
    model = ScriptedModel({}, greedy_ids=[ord(c) for c in "42\nmore"])
    entry = evaluate([load_task(path)], model, CharCodec())["tasks"]["gen"]
    # "42" after the cut: exact 42 right, exact 4 wrong; contains "2\n" wrong (the stop string is cut)
    assert (entry["accuracy"], entry["metric"], entry["kind"]) == (pytest.approx(1 / 3, abs=1e-4), "contains+exact",
                                                                   "generation")


def test_mean_accuracy_over_tasks(tmp_path):
    a = write(tmp_path, "a.jsonl", [{"prompt": "p", "answer": "x"}])
    b = write(tmp_path, "b.jsonl", [{"prompt": "p", "answer": "y"}, {"prompt": "p", "answer": "y"}])
    out = evaluate(load_tasks([a, b]), ScriptedModel({}, greedy_ids=[ord("x")]), CharCodec())
    assert out["tasks"]["a"]["accuracy"] == 1.0 and out["tasks"]["b"]["accuracy"] == 0.0
    assert out["accuracy"] == 0.5  # the mean over tasks, not over records


@pytest.fixture(scope="module")
def fixture_tasks(tmp_path_factory):
    """A choice task and a generation task in the fixture tokenizer's made-up words."""
    from tests.fixtures.bundle import training_lines

    lines = [line for line in training_lines(80) if len(line) >= 30]
    root = tmp_path_factory.mktemp("tasks")
    choice = write(root, "choice.jsonl", [
        {"prompt": line[: len(line) // 2], "choices": [line[len(line) // 2:], "the device", "a cache."],
         "answer": i % 3 and 0} for i, line in enumerate(lines[:12])])
    generation = write(root, "gen.jsonl", [{"task": {"max_new_tokens": 6, "match": "contains"}}] + [
        {"prompt": line[:20], "answer": line[20:23]} for line in lines[12:20]])
    return [choice, generation]


def test_bundle_and_pytorch_checkpoint_score_alike(built, fixture_tasks):
    """The device's numbers (onnxruntime through slmc.runtime) equal the checkpoint's (PyTorch)."""
    from tokenizers import Tokenizer

    from slmc.export.onnx_export import load_checkpoint
    from slmc.runtime import load_bundle
    from slmc.stages.task_eval import TorchTaskModel

    bundle_dir, checkpoint = built
    bundle = load_bundle(bundle_dir, threads=1)
    torch_model = TorchTaskModel(load_checkpoint(checkpoint), CONTEXT, [2])
    ort_model = BundleTaskModel(bundle)
    ids = bundle.tokenizer.encode("the small model runs on the device")
    np.testing.assert_allclose(ort_model.token_logprobs(ids), torch_model.token_logprobs(ids), atol=1e-4)
    assert ort_model.greedy(ids, 8) == torch_model.greedy(ids, 8)

    tasks = load_tasks(fixture_tasks)
    codec = Codec(Tokenizer.from_file(str(bundle_dir / "tokenizer.json")))
    from_torch = evaluate(tasks, torch_model, codec, measured_with="torch")
    from_bundle = evaluate_bundle(bundle_dir, fixture_tasks, threads=1)
    assert from_bundle["measured_with"] == "onnxruntime" and from_bundle["chat"] is False
    for name in ("choice", "gen"):
        assert from_bundle["tasks"][name]["accuracy"] == from_torch["tasks"][name]["accuracy"]
        assert from_bundle["tasks"][name]["n"] == len(tasks[0 if name == "choice" else 1].records)
    assert from_bundle["tasks"]["choice"]["acc_norm"] == from_torch["tasks"]["choice"]["acc_norm"]
