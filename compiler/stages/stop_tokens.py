"""The token ids that end a reply in the bundle: every id the checkpoint or its chat template ends with.

config.json's eos_token_id alone misses the end of a chat turn for many of the models users
bring: Phi-3/4-mini list <|end|> and Gemma 3 <end_of_turn> only in generation_config.json
(which transformers' generate stops on), and a model fine-tuned here on chat data learns to end
each reply with its template's end token (<|im_end|> for chatml on a base Qwen2.5 or a tokenizer
trained here), which is not its tokenizer's eos. A bundle that stopped on config.json's id only
would talk on past its turn, into the next user message, in slmc.runtime and ORT GenAI alike.

Order: config.json's ids first (the first is the pad fallback), then generation_config.json's,
then the chat template's reply end; each once. The package stage writes them to the manifest
(tokens.eos_token_ids, and from there genai_config.json and the README) and the task
evaluation of the checkpoint stops on the same ids, so the checkpoint and the bundle are judged
alike.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import StageError
from ..layout import LAYOUT


def stop_token_ids(run_dir: Path) -> list[int]:
    checkpoint = run_dir / LAYOUT.final_checkpoint
    found = [*_eos_ids(checkpoint / "config.json", required=True),
             *_eos_ids(checkpoint / "generation_config.json", required=False)]
    end = reply_end_id(run_dir)
    if end is not None:
        found.append(end)
    return list(dict.fromkeys(found))


def reply_end_id(run_dir: Path) -> int | None:
    """The special token the run's chat template writes after an assistant reply; None without a
    template, or when that text does not begin with a special token of the tokenizer (then there is
    no single id to stop on, and the checkpoint's eos ids are all the bundle has)."""
    from tokenizers import Tokenizer

    from ..runtime.chat import ChatTemplate, reply_end_token
    from ..runtime.errors import BundleError

    config_path = run_dir / LAYOUT.tokenizer_config
    if not config_path.is_file():
        return None
    try:
        template = ChatTemplate.from_file(config_path)
    except BundleError:  # no chat_template: a text run
        return None
    return reply_end_token(template, Tokenizer.from_file(str(run_dir / LAYOUT.tokenizer)))


def _eos_ids(path: Path, *, required: bool) -> list[int]:
    """eos_token_id of a Hugging Face config file (an id, a list of ids, or null)."""
    if not path.is_file():
        if required:
            raise StageError("the trained checkpoint has no config.json", where=str(path),
                             fix="rerun the train stage (slmc compile --no-cache)")
        return []
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id")
    except (ValueError, UnicodeDecodeError, AttributeError) as exc:
        raise StageError(f"is not a JSON object ({exc})", where=str(path),
                         fix="rerun the train stage, or repair the checkpoint's file") from None
    ids = [] if value is None else value if isinstance(value, list) else [value]
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise StageError(f"eos_token_id {value!r} is not a token id or a list of token ids", where=f"{path}: eos_token_id",
                         fix="set eos_token_id to an integer id (or a list of them)")
    return ids
