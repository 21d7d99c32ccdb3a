"""The data stage: deterministic built-in corpus, user files with errors naming file and line."""

import json

import pytest

from slmc.errors import ConfigError
from slmc.load import load_config
from slmc.stages.data import gather
from slmc.stages.tokenizer import EOS, train_bpe


def test_builtin_corpus_is_deterministic_and_split():
    a, b = gather(load_config([]).data), gather(load_config([]).data)
    assert a.info == b.info and a.train == b.train
    assert a.info["train_chars"] > 1_000_000 and a.info["heldout_chars"] > 50_000
    assert not set(a.info["train_sources"]) & set(a.info["heldout_sources"])


def test_user_files_txt_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("hello world\n" * 50)
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({"text": f"doc {i}"}) for i in range(20)))
    cfg = load_config(["data=files", f"data.train_files=[{tmp_path}/a.txt,{tmp_path}/b.jsonl]"])
    corpus = gather(cfg.data)
    assert "hello world" in corpus.train and corpus.heldout.strip()
    assert EOS in corpus.train  # document boundaries


def test_missing_file_names_the_config_path(tmp_path):
    cfg = load_config(["data=files", f"data.train_files=[{tmp_path}/nope.txt]"])
    with pytest.raises(ConfigError) as err:
        gather(cfg.data)
    assert "data.train_files[0]" in err.value.render() and "nope.txt" in err.value.render()


def test_bad_jsonl_names_file_and_line(tmp_path):
    (tmp_path / "b.jsonl").write_text('{"text": "ok"}\n{broken\n')
    cfg = load_config(["data=files", f"data.train_files=[{tmp_path}/b.jsonl]"])
    with pytest.raises(ConfigError) as err:
        gather(cfg.data)
    assert "b.jsonl:2" in err.value.render()


def test_wrong_jsonl_field_says_which_keys_exist(tmp_path):
    (tmp_path / "b.jsonl").write_text('{"content": "ok"}\n')
    cfg = load_config(["data=files", f"data.train_files=[{tmp_path}/b.jsonl]"])
    with pytest.raises(ConfigError) as err:
        gather(cfg.data)
    assert "data.jsonl_field" in err.value.render() and "content" in err.value.render()


def test_bpe_is_deterministic_with_requested_vocab():
    text = gather(load_config([]).data).train[:200_000]
    a, b = train_bpe(text, 512), train_bpe(text, 512)
    assert a == b
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(a)
    assert tok.get_vocab_size() == 512
    assert tok.decode(tok.encode("def add(a, b):\n    return a + b").ids) == "def add(a, b):\n    return a + b"
    assert len(tok.encode(EOS).ids) == 1
