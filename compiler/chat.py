"""Chat and instruction examples: records to messages, the chat-template catalogue, rendering.

A template is rendered by slmc.render (jinja2's ImmutableSandboxedEnvironment), configured as
transformers renders chat templates (trim_blocks, lstrip_blocks, loopcontrols,
raise_exception), so a checkpoint's own template gives the text its tokenizer expects.
Not transformers' apply_chat_template: it needs a loaded PreTrainedTokenizer (the
tokenizer trained here does not exist yet when the data is read) and it returns assistant
masks only for the few templates with {% generation %} markers. The target spans come
from rendering prefixes instead, which works for every template whose rendering of a
conversation starts with the rendering of its earlier turns (all of the catalogue's and
the common checkpoint templates); one that does not is refused with its name.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError

ROLES = ("system", "user", "assistant")

CATALOGUE: dict[str, tuple[str, tuple[str, ...]]] = {
    # name: (template, special tokens it writes). Role tokens of zephyr are built from the role.
    "chatml": (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
        ("<|im_start|>", "<|im_end|>"),
    ),
    "llama3": (
        "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
        " + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
        ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
    ),
    "zephyr": (
        "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}",
        ("<|system|>", "<|user|>", "<|assistant|>"),
    ),
}
DEFAULT_TEMPLATE = "chatml"
"""What data.chat_template=auto uses for a tokenizer trained here (a checkpoint brings its own)."""


@dataclass(frozen=True)
class ChatTemplate:
    name: str                      # a catalogue name, or "checkpoint"
    source: str                    # the Jinja text
    special_tokens: tuple[str, ...]  # tokens the template writes that the tokenizer must hold


def resolve_template(setting: str, checkpoint_template: str | None) -> ChatTemplate | None:
    """The template data.chat_template names: a catalogue entry, or (auto) the checkpoint's, else chatml
    when there is no checkpoint template. None: auto with a reused tokenizer that has none."""
    if setting != "auto":
        if setting not in CATALOGUE:
            raise ConfigError(f"no chat template named {setting!r}", where="data.chat_template",
                              fix=f"choose auto or one of {', '.join(CATALOGUE)}")
        return ChatTemplate(setting, *CATALOGUE[setting])
    if checkpoint_template:
        return ChatTemplate("checkpoint", checkpoint_template, ())
    return None


def template_of(tokenizer_config: dict) -> str | None:
    """The chat template a tokenizer_config.json holds (a string, or HF's list of named templates)."""
    found = tokenizer_config.get("chat_template")
    if isinstance(found, list):  # [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in found if isinstance(t, dict)}
        found = named.get("default") or next(iter(named.values()), None)
    return found if isinstance(found, str) and found.strip() else None


def to_messages(record: dict, name: str, data) -> list[dict]:
    """The record as a list of {role, content}; a ConfigError naming the record and the field otherwise."""
    messages = _messages(record, name, data)
    for m in messages:
        try:
            m["content"].encode("utf-8")
        except UnicodeEncodeError as exc:  # JSON may escape half of a UTF-16 pair ("\ud800"): no character
            raise ConfigError(f"{name}: a {m['role']} message holds a lone surrogate \\u{ord(m['content'][exc.start]):04x}, "
                              "which is not text", where="data.train_files",
                              fix="escape characters outside the BMP as a full surrogate pair, or write them as UTF-8") from None
    return messages


def _messages(record: dict, name: str, data) -> list[dict]:
    if data.format == "chat":
        messages = record.get(data.messages_field)
        if not isinstance(messages, list) or not messages:
            raise ConfigError(f"{name}: no non-empty list in field {data.messages_field!r} (keys: {sorted(record)[:8]})",
                              where="data.messages_field", fix="set data.messages_field to the field holding the messages")
        out = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in ROLES:
                raise ConfigError(f"{name}: message {i} is not {{role: system|user|assistant, content: text}} ({str(m)[:80]})",
                                  where="data.messages_field", fix="give each message a role among system, user, "
                                  "assistant and a string content")
            out.append({"role": m["role"], "content": m["content"]})
        if not any(m["role"] == "assistant" for m in out):
            raise ConfigError(f"{name}: no assistant message: nothing to train on", where="data.messages_field",
                              fix="every conversation needs at least one assistant message")
        return out
    prompt, response = record.get(data.prompt_field), record.get(data.response_field)
    for field, value in ((data.prompt_field, prompt), (data.response_field, response)):
        if not isinstance(value, str):
            where = "data.prompt_field" if field == data.prompt_field else "data.response_field"
            raise ConfigError(f"{name}: no string field {field!r} (keys: {sorted(record)[:8]})", where=where,
                              fix=f"set {where} to the field that holds it")
    extra = record.get(data.input_field) if data.input_field else None
    if isinstance(extra, str) and extra.strip():
        prompt = f"{prompt}\n\n{extra}"
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    system = record.get(data.system_field) if data.system_field else None
    if isinstance(system, str) and system.strip():
        messages.insert(0, {"role": "system", "content": system})
    return messages


def render(template: ChatTemplate, messages: list[dict], tokens: dict, *, generation_prompt: bool = False) -> str:
    from .render import ChatTemplateError, render_chat  # the one module that builds Jinja environments

    try:
        return render_chat(template.source, messages=messages, add_generation_prompt=generation_prompt,
                           bos_token=tokens.get("bos") or "", eos_token=tokens.get("eos") or "")
    except ChatTemplateError as exc:
        raise ConfigError(f"the {template.name} chat template failed: {exc}", where="data.chat_template",
                          fix="choose a catalogue template (data.chat_template=chatml)") from None


def render_with_targets(template: ChatTemplate, messages: list[dict], tokens: dict,
                        name: str) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns (content and end
    tokens, trailing whitespace excluded): the text loss_on=assistant trains on."""
    full = render(template, messages, tokens)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render(template, messages[:i], tokens, generation_prompt=True)
        upto = render(template, messages[: i + 1], tokens)
        if not (upto.startswith(before) and full.startswith(upto)):
            raise ConfigError(f"{name}: the {template.name} chat template does not render a conversation as its turns "
                              "one after another, so the assistant tokens cannot be found", where="data.chat_template",
                              fix="choose a catalogue template (data.chat_template=chatml), or data.loss_on=all")
        end = len(upto.rstrip())
        if end > len(before):
            spans.append((len(before), end))
    return full, spans
