"""Chat templates in slmc.runtime: minijinja renders published templates exactly as transformers'
apply_chat_template does; a bundle's template is read only from its verified tokenizer_config.json;
`Bundle.chat` and `slmc run --chat` apply it."""

from __future__ import annotations

import json

import pytest

from slmc.runtime.chat import ChatTemplate
from slmc.runtime.errors import BundleError, GenerationError

CHATML = (  # Qwen2.5's shape: a default system message, role markers
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if message.role == 'user' or (message.role == 'system' and not loop.first) "
    "or message.role == 'assistant' %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
LLAMA3 = (  # Llama 3 Instruct's: bos_token, trim, header ids
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim "
    "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
ZEPHYR = (  # Zephyr's markers with Mistral's alternation check: raise_exception, .strip(), eos_token
    "{% if messages[0]['role'] == 'system' %}{% set offset = 1 %}{% else %}{% set offset = 0 %}{% endif %}"
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == offset) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'].strip() + eos_token + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
TOJSON = (  # templates that serialise messages (tool-calling ones) use transformers' tojson
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] | tojson }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
SPECIALS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
CONVERSATION = [
    {"role": "system", "content": "You answer in one word."},
    {"role": "user", "content": "  Où est le café <b>? \n"},
    {"role": "assistant", "content": "Là-bas."},
    {"role": "user", "content": "Und dann?"},
]


@pytest.fixture(scope="module")
def hf_tokenizer():
    from transformers import PreTrainedTokenizerFast

    from tests.fixtures.bundle import build_tokenizer

    return PreTrainedTokenizerFast(tokenizer_object=build_tokenizer(), **SPECIALS)


@pytest.mark.parametrize("template", [CHATML, LLAMA3, ZEPHYR, TOJSON], ids=["chatml", "llama3", "zephyr", "tojson"])
@pytest.mark.parametrize("messages", [CONVERSATION, CONVERSATION[1:2]], ids=["conversation", "one_user_message"])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_minijinja_renders_as_transformers(hf_tokenizer, template, messages, add_generation_prompt):
    expected = hf_tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                                add_generation_prompt=add_generation_prompt)
    rendered = ChatTemplate(template, SPECIALS).render(messages, add_generation_prompt=add_generation_prompt)
    assert rendered == expected
    assert "Und dann?" in rendered or messages is not CONVERSATION


PHI3 = (  # Phi-3-mini's shape: role markers, <|end|> after every turn, eos_token after a finished conversation
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)
GEMMA3 = (  # Gemma 3's shape: the assistant is "model", <end_of_turn> ends each turn
    "{{ bos_token }}{% for message in messages %}{% set role = 'model' if message['role'] == 'assistant' "
    "else message['role'] %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)


@pytest.mark.parametrize(("template", "end"), [(CHATML, "<|im_end|>"), (LLAMA3, "<|eot_id|>"), (ZEPHYR, "</s>"),
                                               (PHI3, "<|end|>\n</s>"), (GEMMA3, "<end_of_turn>")])
def test_reply_end_is_what_the_template_writes_after_a_reply(template, end):
    assert ChatTemplate(template, SPECIALS).reply_end() == end


def test_reply_end_is_empty_when_the_template_refuses_a_lone_reply():
    only_users = "{% for m in messages %}{% if m['role'] != 'user' %}{{ raise_exception('users only') }}{% endif %}{% endfor %}"
    assert ChatTemplate(only_users, SPECIALS).reply_end() == ""
    assert ChatTemplate("{% for m in messages %}{{ m.content | no_such_filter }}{% endfor %}").reply_end() == ""


def test_raise_exception_refuses_the_messages_with_the_templates_words(hf_tokenizer):
    bad = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(Exception, match="must alternate"):
        hf_tokenizer.apply_chat_template(bad, chat_template=ZEPHYR, tokenize=False)
    with pytest.raises(GenerationError, match="must alternate"):
        ChatTemplate(ZEPHYR, SPECIALS).render(bad)


def test_malformed_messages_and_a_runaway_template_are_errors():
    template = ChatTemplate(CHATML)
    for bad in ([], "hi", [{"role": "user"}], [{"content": "x"}], [{"role": "user", "content": 3}]):
        with pytest.raises(GenerationError, match="messages"):
            template.render(bad)
    with pytest.raises(BundleError, match="failed to render"):  # fuel: a template cannot loop forever
        ChatTemplate("{% for i in range(5000) %}{% for j in range(5000) %}{% endfor %}{% endfor %}").render(
            [{"role": "user", "content": "x"}])


def with_template(folder, rewrite_manifest, template, **manifest_extra):
    config = json.loads((folder / "tokenizer_config.json").read_text())
    if template is None:
        config.pop("chat_template", None)
    else:
        config["chat_template"] = template
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return rewrite_manifest(folder, lambda data: data.update(manifest_extra))


def test_bundle_chat_renders_the_verified_template_and_generates(bundle_copy, rewrite_manifest):
    from slmc.runtime import load_bundle

    bundle = load_bundle(with_template(bundle_copy, rewrite_manifest, ZEPHYR), threads=1)
    messages = [{"role": "user", "content": "the small model"}]
    prompt = ChatTemplate(ZEPHYR, SPECIALS).render(messages)
    assert prompt.startswith("<s><|user|>\nthe small model</s>\n<|assistant|>")
    reply = bundle.chat(messages, max_new_tokens=6)
    ids = bundle.tokenizer.encode(prompt, add_special_tokens=False)
    assert ids[0] == 1 and ids.count(2) == 1  # the template's <s> and </s> are the special tokens themselves
    generation = bundle.start([ids], bundle.params(max_new_tokens=6))
    for _ in generation:
        pass
    assert reply == generation.completions[0].text
    assert "".join(bundle.chat_stream(messages, max_new_tokens=6)) == reply


def test_a_template_changed_after_verification_is_never_rendered(bundle_copy, rewrite_manifest):
    from slmc.runtime import load_bundle

    bundle = load_bundle(with_template(bundle_copy, rewrite_manifest, CHATML), threads=1)
    config = json.loads((bundle_copy / "tokenizer_config.json").read_text())
    config["chat_template"] = "{{ raise_exception('injected') }}"
    (bundle_copy / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="sha256 does not match"):
        bundle.chat([{"role": "user", "content": "x"}])


def test_a_bundle_without_a_template_says_so(bundle_copy, rewrite_manifest):
    from slmc.runtime import load_bundle

    bundle = load_bundle(with_template(bundle_copy, rewrite_manifest, None), threads=1)
    with pytest.raises(BundleError, match="no chat_template"):
        bundle.chat([{"role": "user", "content": "x"}])


def test_slmc_run_chat_prints_the_reply(bundle_copy, rewrite_manifest, capsys):
    from slmc.runtime import load_bundle
    from slmc.runtime.cli import main

    folder = with_template(bundle_copy, rewrite_manifest, CHATML)
    expected = load_bundle(folder, threads=1).chat(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "the device"}], max_new_tokens=5)
    code = main(["run", str(folder), "--chat", "--system", "Be brief.", "--prompt", "the device",
                 "--max-new-tokens", "5", "--threads", "1"])
    assert code == 0 and capsys.readouterr().out == expected + "\n"
    assert main(["run", str(folder), "--system", "x", "--prompt", "y"]) == 2
    assert "--system needs --chat" in capsys.readouterr().err


def test_task_evaluation_asks_through_the_template(bundle_copy, rewrite_manifest, tmp_path):
    """chat=None follows the manifest's data.format; a template that refuses shows it is applied."""
    from slmc.runtime.tasks import evaluate_bundle

    task = tmp_path / "t.jsonl"
    task.write_text(json.dumps({"prompt": "the small", "choices": ["model", "cache"], "answer": 0}) + "\n")
    refusing = "{{ raise_exception('asked through the template') }}"
    plain = with_template(bundle_copy, rewrite_manifest, refusing)
    assert evaluate_bundle(plain, [task], threads=1)["chat"] is False  # text data: prompts as they are
    with pytest.raises(GenerationError, match="asked through the template"):
        evaluate_bundle(plain, [task], chat=True, threads=1)
    chat = with_template(bundle_copy, rewrite_manifest, CHATML, data={"format": "chat"})
    result = evaluate_bundle(chat, [task], threads=1)
    assert result["chat"] is True and result["tasks"]["t"]["n"] == 1
    # instruction records are trained as user/assistant turns through the template: asked the same way
    instruction = with_template(bundle_copy, rewrite_manifest, refusing, data={"format": "instruction"})
    with pytest.raises(GenerationError, match="asked through the template"):
        evaluate_bundle(instruction, [task], threads=1)


def test_a_bundle_without_the_reply_end_among_its_eos_ids_still_stops_there(bundle_copy, rewrite_manifest,
                                                                            monkeypatch):
    """Bundles packaged before the reply end joined tokens.eos_token_ids: chat stops at it anyway."""
    from slmc.runtime import load_bundle

    ends_with_pad = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '<pad>' }}{% endfor %}"
                     "{% if add_generation_prompt %}assistant: {% endif %}")
    bundle = load_bundle(with_template(bundle_copy, rewrite_manifest, ends_with_pad), threads=1)
    assert bundle.reply_end_token() == 0  # <pad>, a special token; the manifest's eos ids are [2]
    seen = []
    monkeypatch.setattr(bundle, "start", lambda ids, params, **kw: seen.append(params) or iter(()))
    messages = [{"role": "user", "content": "the small model"}]
    bundle.chat(messages)
    bundle.chat(messages, stop_token_ids=[7])
    bundle.chat(messages, ignore_eos=True)  # benchmarks: no stop at all
    assert [p.stop_token_ids for p in seen] == [(0,), (7, 0), ()]
    # the task harness, asking in chat form, stops there too; asking plain prompts it does not
    from slmc.runtime.tasks import BundleTaskModel

    assert BundleTaskModel(bundle, chat=True).eos_token_ids == (2, 0)
    assert BundleTaskModel(bundle).eos_token_ids == (2,)


def test_reply_end_token_is_none_when_the_end_is_plain_text(bundle_copy, rewrite_manifest):
    from slmc.runtime import load_bundle

    plain = "{% for m in messages %}{{ m['content'] + '\\n###' }}{% endfor %}"
    assert load_bundle(with_template(bundle_copy, rewrite_manifest, plain), threads=1).reply_end_token() is None
