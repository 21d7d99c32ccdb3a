"""Small chat and instruction fixtures written into tmp_path, and a fast compile of model=tiny."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TOPICS = ("the sea", "a cat", "bread", "rain", "a bicycle", "the moon", "tea", "a clock")

# A compile that trains 3 steps on rows of 65 tokens: the pipeline, not the model, is under test.
FAST = ("model.vocab_size=512", "train.max_steps=3", "train.batch_size=2", "train.seq_len=64", "train.eval_every=3",
        "train.save_every=3", "train.warmup_steps=1", "train.eval_batches=1", "export.max_seq_len=128",
        "generation.max_new_tokens=8", "train.precision=fp32")


def conversation(i: int) -> dict:
    topic = TOPICS[i % len(TOPICS)]
    messages = [{"role": "user", "content": f"Tell me about {topic}, please ({i})."},
                {"role": "assistant", "content": f"Here is a short note about {topic}: it is fine."}]
    if i % 3 == 0:
        messages.insert(0, {"role": "system", "content": "You are brief."})
        messages += [{"role": "user", "content": "More?"}, {"role": "assistant", "content": f"No more on {topic}."}]
    return {"messages": messages}


def instruction(i: int) -> dict:
    topic = TOPICS[i % len(TOPICS)]
    record = {"instruction": f"Describe {topic} in one line.", "output": f"{topic.capitalize()} is nice ({i})."}
    if i % 2:
        record["input"] = f"Context {i}"
    return record


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def chat_jsonl(tmp_path) -> Path:
    return write_jsonl(tmp_path / "chat.jsonl", [conversation(i) for i in range(60)])


@pytest.fixture
def instruction_jsonl(tmp_path) -> Path:
    return write_jsonl(tmp_path / "alpaca.jsonl", [instruction(i) for i in range(60)])
