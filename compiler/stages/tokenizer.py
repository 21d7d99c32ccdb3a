"""The tokenizer stage: reuse a given tokenizer or train a byte-level BPE locally.

Byte-level BPE (GPT-2 style) covers any UTF-8 text with no unknown token, and
`tokenizers` trains one on a few MB in seconds, so no hub download is needed.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError
from ..hub import parse_hub_id

EOS = "<|endoftext|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = (EOS, PAD)


def train_bpe(text: str, vocab_size: int) -> str:
    """A byte-level BPE tokenizer trained on `text`, as tokenizer.json text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Train on lines in a fixed order; the trainer is deterministic for a fixed input.
    tok.train_from_iterator(text.splitlines(keepends=True), trainer=trainer)
    return tok.to_str(pretty=True)


def tokenizer_config(tokenizer_json: str, max_length: int, chat_template: str | list | None = None) -> str:
    """tokenizer_config.json so transformers' AutoTokenizer and ORT GenAI load the folder; a reused
    checkpoint's chat template is kept (transformers reads it from the `chat_template` key)."""
    vocab = json.loads(tokenizer_json)["model"]["vocab"]
    eos = EOS if EOS in vocab else None
    pad = PAD if PAD in vocab else eos
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_length,
        "bos_token": eos,
        "eos_token": eos,
        "pad_token": pad,
        "unk_token": None,
        "clean_up_tokenization_spaces": False,
    }
    if chat_template:
        config["chat_template"] = chat_template
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def tokenizer_source(cfg) -> tuple[str, str] | None:
    """(path, config path) of the tokenizer a run reuses; None when it trains its own.

    data.tokenizer wins; else a checkpoint's own (pretrained, prune), or the teacher's for
    distill (the student shares it: rule distill.tokenizer_shared). A checkpoint named by a
    Hub id is read from its cache snapshot (config and tokenizer files, no weights), whose
    path names the commit: the stage cache then tells two revisions apart.
    """
    if cfg.data.tokenizer:
        return cfg.data.tokenizer, "data.tokenizer"
    from .checkpoints import named_checkpoints, resolve

    for key, value in named_checkpoints(cfg).items():
        return (value if parse_hub_id(value) is None else resolve(key, value).folder), key
    return None


def existing_tokenizer(path: str, where: str) -> str:
    """tokenizer.json text from a file, or from a checkpoint folder that holds one."""
    p = Path(path).expanduser()
    candidate = p / "tokenizer.json" if p.is_dir() else p
    if not candidate.is_file():
        raise ConfigError(f"no tokenizer.json at {p}", where=where,
                          fix="give a tokenizer.json file or a folder containing one")
    text = candidate.read_text(encoding="utf-8")
    try:
        json.loads(text)["model"]
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{candidate} is not a `tokenizers` tokenizer.json", where=where,
                          fix="save the tokenizer with tokenizer.save('tokenizer.json')") from None
    return text


def source_chat_template(path: str) -> str | list | None:
    """The `chat_template` of the tokenizer_config.json beside a reused tokenizer (a checkpoint or an
    slmc run's final checkpoint), or None when there is none."""
    from ..checkpoint import BadFile, read_json

    p = Path(path).expanduser()
    try:
        config = read_json((p if p.is_dir() else p.parent) / "tokenizer_config.json")
    except BadFile:
        return None
    template = config.get("chat_template") if isinstance(config, dict) else None
    return template if isinstance(template, (str, list)) and template else None
