"""The bundle's stop ids: config.json's eos, generation_config.json's (Phi-3's <|end|>, Gemma 3's
<end_of_turn>) and the chat template's reply end, each once; bad ids name the file."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from slmc.errors import StageError
from slmc.layout import LAYOUT
from slmc.stages.stop_tokens import reply_end_id, stop_token_ids

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
PLAIN_END = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n### end\\n' }}{% endfor %}"
             "{% if add_generation_prompt %}assistant: {% endif %}")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|end|>"]


def _run(tmp_path, *, eos=0, generation_eos=None, template=None):
    """A run folder as the train and tokenizer stages leave it (only the files stop_token_ids reads)."""
    run = tmp_path / "run"
    checkpoint = run / LAYOUT.final_checkpoint
    checkpoint.mkdir(parents=True)
    (checkpoint / "config.json").write_text(json.dumps({"model_type": "llama", "eos_token_id": eos}))
    if generation_eos is not None:
        (checkpoint / "generation_config.json").write_text(json.dumps({"eos_token_id": generation_eos}))
    vocab = {token: i for i, token in enumerate(["[UNK]", "###", "end", "user", "assistant", ":"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(SPECIAL)  # ids 6, 7, 8, 9
    (run / LAYOUT.tokenizer).parent.mkdir(parents=True)
    tok.save(str(run / LAYOUT.tokenizer))
    config = {"eos_token": "<|endoftext|>", **({"chat_template": template} if template else {})}
    (run / LAYOUT.tokenizer_config).write_text(json.dumps(config))
    return run, tok


def test_a_text_run_stops_on_the_checkpoints_eos(tmp_path):
    run, _ = _run(tmp_path, eos=6)
    assert stop_token_ids(run) == [6]
    assert reply_end_id(run) is None  # no chat template


def test_generation_config_adds_the_end_of_turn_of_instruct_checkpoints(tmp_path):
    # Phi-3-mini-instruct: config.json 32000 (<|endoftext|>), generation_config [32000, 32001, 32007]
    run, tok = _run(tmp_path, eos=6, generation_eos=[6, 9])
    assert stop_token_ids(run) == [6, tok.token_to_id("<|end|>")]
    run2, _ = _run(tmp_path / "b", eos=[6, 9], generation_eos=9)  # lists and single ids alike, each once
    assert stop_token_ids(run2) == [6, 9]


def test_a_chat_run_stops_at_its_templates_reply_end(tmp_path):
    run, tok = _run(tmp_path, eos=6, template=CHATML)
    im_end = tok.token_to_id("<|im_end|>")
    assert reply_end_id(run) == im_end
    assert stop_token_ids(run) == [6, im_end]


def test_a_reply_end_that_is_not_a_special_token_adds_nothing(tmp_path):
    run, _ = _run(tmp_path, eos=6, template=PLAIN_END)  # "### end": ordinary text, no single id to stop on
    assert reply_end_id(run) is None and stop_token_ids(run) == [6]


@pytest.mark.parametrize("bad", ["2", -1, [6, "x"], True])
def test_a_bad_eos_id_names_the_file(tmp_path, bad):
    run, _ = _run(tmp_path, eos=6, generation_eos=bad)
    with pytest.raises(StageError) as err:
        stop_token_ids(run)
    assert "generation_config.json: eos_token_id" in err.value.render()


def test_a_checkpoint_without_config_is_an_error_naming_it(tmp_path):
    run, _ = _run(tmp_path)
    (run / LAYOUT.final_checkpoint / "config.json").unlink()
    with pytest.raises(StageError) as err:
        stop_token_ids(run)
    assert "config.json" in err.value.render() and "--no-cache" in err.value.render()
