"""Chat templates: a bundle's `chat_template` (tokenizer_config.json) rendered with minijinja.

A chat template is Jinja source that came with a model, so it is code from outside: it is
rendered by MiniJinja (a Rust engine with no access to Python objects beyond the data passed
in, and a fuel limit so a template cannot loop forever), never by jinja2, and only from a file
whose sha256 matches the verified manifest, read once and checked at the moment it is read.

The environment matches transformers' `apply_chat_template` (trim_blocks, lstrip_blocks, a
`tojson` that keeps non-ASCII text, `raise_exception`, `strftime_now`, the special tokens as
variables) so a template renders to the same text here as in training (tests/runtime/test_chat.py
checks published templates against transformers).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from slmc.runtime.errors import BundleError, GenerationError

CONFIG_NAME = "tokenizer_config.json"
FUEL = 5_000_000
"""Instructions a render may execute: published templates use a few thousand per message."""
MAX_CONFIG_BYTES = 16 * 1024 * 1024
ROLES_FIX = "pass messages as [{'role': 'user', 'content': '...'}, ...]"
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")


class TemplateRaised(Exception):
    """`raise_exception(...)` called by a template (it refuses the conversation)."""


def _raise_exception(message: str):
    raise TemplateRaised(message)


def _tojson(value: Any, indent: int | None = None, separators=None, sort_keys: bool = False) -> str:
    # transformers' own tojson filter: plain json.dumps, non-ASCII kept (minijinja's HTML-escapes)
    return json.dumps(value, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return dt.datetime.now().strftime(fmt)


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: text, or an AddedToken dict with "content"."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


class ChatTemplate:
    """One chat template and the special tokens it may name, ready to render messages."""

    def __init__(self, source: str, special_tokens: Mapping[str, str] | None = None, *, where: str = CONFIG_NAME):
        from minijinja import Environment

        self.source, self.where = source, where
        self.special_tokens = dict(special_tokens or {})
        self._env = Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False,
                                undefined_behavior="lenient", fuel=FUEL, pycompat=True,
                                auto_escape_callback=lambda name: False,
                                filters={"tojson": _tojson},
                                globals={"raise_exception": _raise_exception, "strftime_now": _strftime_now})

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, where: str = CONFIG_NAME) -> ChatTemplate:
        template = config.get("chat_template")
        if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default")
        if not isinstance(template, str) or not template.strip():
            raise BundleError("has no chat_template", where=where,
                              fix="compile with data.format=chat (the bundle then ships the template), "
                                  "or run without --chat")
        tokens = {k: t for k in SPECIAL_TOKENS if (t := _token_text(config.get(k))) is not None}
        return cls(template, tokens, where=where)

    @classmethod
    def from_file(cls, path: str | Path, *, sha256: str | None = None) -> ChatTemplate:
        """From a tokenizer_config.json; with sha256, its bytes must have that hash (checked as read)."""
        from slmc.runtime.manifest import read_bounded

        data = read_bounded(path, MAX_CONFIG_BYTES)
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise BundleError("sha256 does not match the manifest (modified since the bundle was verified)",
                              where=str(path), fix="re-package the bundle with slmc; never edit a bundle's files")
        try:
            config = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise BundleError(f"is not JSON ({exc})", where=str(path), fix="re-package the bundle") from None
        if not isinstance(config, dict):
            raise BundleError("is not a JSON object", where=str(path), fix="re-package the bundle")
        return cls.from_config(config, where=str(path))

    @classmethod
    def from_bundle(cls, manifest) -> ChatTemplate:
        """The verified bundle's template: tokenizer_config.json must be listed in the manifest's hashes."""
        expected = manifest.data["hashes"].get(CONFIG_NAME)
        if expected is None:
            raise BundleError(f"{CONFIG_NAME} is not among the bundle's hashed files", where=str(manifest.folder),
                              fix="re-package the bundle with slmc (it ships tokenizer_config.json)")
        return cls.from_file(manifest.folder / CONFIG_NAME, sha256=expected)

    def render(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True,
               **extra: Any) -> str:
        """The conversation as the model's prompt text (as transformers' apply_chat_template(tokenize=False))."""
        from minijinja import TemplateError

        checked = check_messages(messages)
        context = {**self.special_tokens, **extra, "messages": checked, "add_generation_prompt": add_generation_prompt}
        try:
            return self._env.render_str(self.source, **context)
        except TemplateRaised as exc:
            raise GenerationError(f"the chat template refused the messages: {exc}", where="messages",
                                  fix="follow the roles and order the model's template expects") from None
        except TemplateError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, TemplateRaised):
                raise GenerationError(f"the chat template refused the messages: {cause}", where="messages",
                                      fix="follow the roles and order the model's template expects") from None
            raise BundleError(f"the chat template failed to render: {exc.message}", where=self.where,
                              fix="check the template (it must be valid Jinja)") from None

    def reply_end(self) -> str:
        """What the template writes after an assistant reply (chatml: "<|im_end|>"; trailing whitespace
        cut): the text a model trained on it emits when its turn is over, so where generation must stop.
        Empty when the template does not show a reply's text as given, refuses a user/assistant pair
        or cannot be rendered here (then rendering a chat fails too, and says why)."""
        probe = "slmc-reply-probe"
        conversation = [{"role": "user", "content": "slmc-prompt-probe"}, {"role": "assistant", "content": probe}]
        try:
            whole = self.render(conversation, add_generation_prompt=False).rstrip()
        except (GenerationError, BundleError):
            return ""
        at = whole.rfind(probe)
        return whole[at + len(probe):].strip() if at >= 0 else ""

    def user_prompt(self, text: str) -> str:
        """One user message, followed by the generation prompt: how a task prompt is asked in chat form."""
        return self.render([{"role": "user", "content": text}], add_generation_prompt=True)


def reply_end_token(template: ChatTemplate, tokenizer) -> int | None:
    """The special token a reply ends with under `template` (its `reply_end` text's first token, for
    a `tokenizers.Tokenizer`): the id a chat model trained on the template emits when its turn is
    over. None when there is no such text or it does not start with a special token."""
    end = template.reply_end()
    if not end:
        return None
    ids = tokenizer.encode(end, add_special_tokens=False).ids
    special = {i for i, token in tokenizer.get_added_tokens_decoder().items() if token.special}
    return ids[0] if ids and ids[0] in special else None


def check_messages(messages: object) -> list[dict]:
    """A list of {"role": str, "content": str} dicts (other keys kept); else a GenerationError."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise GenerationError("messages must be a non-empty list of {'role', 'content'} dicts", where="messages",
                              fix=ROLES_FIX)
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str) \
                or not isinstance(message.get("content"), str):
            raise GenerationError(f"message {i} is not a {{'role': str, 'content': str}} dict", where="messages",
                                  fix=ROLES_FIX)
        out.append(dict(message))
    return out
