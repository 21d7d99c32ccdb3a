"""A verified bundle, ready to generate: session + tokenizer + manifest.

Thread safety: a Bundle may be shared by threads. Each generate/stream call owns its
KV cache, IO binding, sampler and text state; what calls share (the InferenceSession,
whose run() ONNX Runtime documents as thread-safe, and the tokenizer) is read-only.
Concurrent calls therefore run correctly (in parallel inside ORT), without a lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from numbers import Integral
from pathlib import Path

from slmc.runtime.draft import DraftModel, open_draft
from slmc.runtime.errors import BundleError, GenerationError
from slmc.runtime.generate import Completion, Generation, clip_new_tokens, fit_prompt
from slmc.runtime.manifest import Manifest
from slmc.runtime.sampling import SamplingParams
from slmc.runtime.session import check_io, create_session
from slmc.runtime.speculative import SpeculativeGeneration, resolve_speculative
from slmc.runtime.stepper import LOOPS
from slmc.runtime.threads import (MachineFacts, ThreadChoice, choose_threading, load_matters, machine_facts,
                                  model_bytes, usable_cores)
from slmc.runtime.tokenizer import TextTokenizer
from slmc.runtime.verify import model_load_fix, verify_bundle

_UNSET = object()  # a value not computed yet (None is a result: no reply-end token)

THREADS_PER_CORE = 4
"""ONNX Runtime's intra-op pool is sized by `threads`; past a few threads per core they only
contend (decode is one small graph per token), and thousands take minutes to start."""


def max_threads() -> int:
    return THREADS_PER_CORE * usable_cores()


def check_threads(threads: object) -> None:
    """threads is None (chosen per machine: default_threading) or an integer in [1, max_threads()]; else
    GenerationError."""
    if threads is None:
        return
    limit = max_threads()
    if not isinstance(threads, Integral) or isinstance(threads, bool) or not 1 <= threads <= limit:
        raise GenerationError(f"threads must be an integer from 1 to {limit} ({THREADS_PER_CORE} per core, "
                              f"{usable_cores()} usable cores here), got {threads!r}", where="threads",
                              fix=f"pass --threads {usable_cores()}, one per core, or leave it unset for "
                                  "slmc to choose for this machine")


class Bundle:
    """Generate text from a bundle. Build with `load_bundle`, which verifies it first."""

    def __init__(self, manifest: Manifest, *, threads: int | None = None, loop: str = "auto",
                 spinning: bool | None = None):
        if loop not in LOOPS:
            raise GenerationError(f"loop must be one of {LOOPS}, got {loop!r}", where="loop")
        check_threads(threads)
        self.manifest, self.loop = manifest, loop
        self.threading = default_threading(manifest, threads=threads, spinning=spinning)
        try:
            self.session = create_session(manifest, threads=self.threading.threads,
                                          spinning=self.threading.spinning)
        except BundleError as exc:  # ORT refused the verified file: the fix depends on why
            raise BundleError(exc.message, where=exc.where, fix=model_load_fix(exc.message)) from None
        check_io(self.session, manifest)
        self.draft = open_draft(manifest, threads=threads)
        self.tokenizer = TextTokenizer(manifest.path("tokenizer"))
        self.vocab_size = manifest.data["model"]["vocab_size"]
        self._chat_template = None  # read on first use (bundles without chat data have none)
        self._reply_end: int | None | object = _UNSET

    @property
    def context(self) -> int:
        return self.manifest.max_seq_len

    def params(self, **sampling) -> SamplingParams:
        """The manifest's generation defaults with these overrides (validated)."""
        return SamplingParams.resolve(self.manifest.generation, sampling)

    def encode(self, prompt: str) -> list[int]:
        return self.tokenizer.encode(check_prompt(prompt))

    def start(self, prompt_ids: list[list[int]], params: SamplingParams, *, track_text: bool = False,
              speculative: str = "off") -> Generation:
        """A Generation for one batch of token-id prompts (fitted to the context, warned).

        speculative: "off" (the default here, so benchmarks of this low-level call measure
        plain decoding), "auto" (prompt lookup for greedy decoding of one prompt, else off;
        the default of generate/complete/stream), "lookup" (one prompt only), "draft"
        (bundles with a draft model); slmc.runtime.speculative.
        """
        if not prompt_ids:
            raise GenerationError("no prompts given", where="prompts", fix="pass at least one prompt")
        tokens = self.manifest.tokens
        fitted = [fit_prompt(list(p), tokens["bos_token_id"], self.context) for p in prompt_ids]
        new = clip_new_tokens(params.max_new_tokens, max(len(p) for p in fitted), self.context)
        params = params if new == params.max_new_tokens else replace(params, max_new_tokens=new)
        mode = resolve_speculative(speculative, params, len(fitted), has_draft=self.draft is not None,
                                   precision=self.manifest.data["precision"])
        common = (self.session, self.manifest.kv, self.tokenizer, tokens, fitted, params)
        options = {"vocab_size": self.vocab_size, "loop": self.loop, "track_text": track_text}
        if mode == "off":
            return Generation(*common, **options)
        drafter = None
        if mode == "draft":
            draft, loop = self.draft, self.loop
            drafter = lambda prompt, capacity: DraftModel(draft, prompt, capacity, loop=loop)  # noqa: E731
        return SpeculativeGeneration(*common, **options, drafter=drafter)

    def complete(self, prompts: str | list[str], *, speculative: str = "auto", **sampling) -> list[Completion]:
        """Completions (ids, text, finish reason) for each prompt, in batches of max_batch_size."""
        if isinstance(prompts, str):
            texts = [prompts]
        elif isinstance(prompts, (list, tuple)):
            texts = list(prompts)
        else:
            raise GenerationError(f"prompts must be a str or a list of str, got {type(prompts).__name__}",
                                  where="prompts", fix="pass text, e.g. generate('Hello') or generate(['a', 'b'])")
        params = self.params(**sampling)
        encoded = [self.encode(p) for p in texts]
        results: list[Completion] = []
        size = self.manifest.max_batch_size
        has_draft = self.draft is not None
        if speculative != "auto" and resolve_speculative(speculative, params, 1, has_draft=has_draft) != "off":
            size = 1  # speculative decoding runs one prompt at a time
        for first in range(0, len(encoded), size):
            generation = self.start(encoded[first:first + size], params, speculative=speculative)
            for _ in generation:
                pass
            results += generation.completions
        return results

    def generate(self, prompts: str | list[str], *, speculative: str = "auto", **sampling) -> list[str]:
        """Generated text (prompt excluded) for each prompt; a str prompt gives a one-item list."""
        return [c.text for c in self.complete(prompts, speculative=speculative, **sampling)]

    def generate_ids(self, prompts: str | list[str], *, speculative: str = "auto", **sampling) -> list[list[int]]:
        """Generated token ids for each prompt (ending with the stop token id if one ended it)."""
        return [c.token_ids for c in self.complete(prompts, speculative=speculative, **sampling)]

    def stream(self, prompt: str, *, speculative: str = "auto", **sampling) -> Iterator[str]:
        """Text pieces as they are generated; each is complete text, and their
        concatenation equals `generate(prompt, **sampling)[0]`."""
        generation = self.start([self.encode(prompt)], self.params(**sampling), track_text=True,
                                speculative=speculative)
        for pieces in generation:
            if pieces[0]:
                yield pieces[0]

    def chat_template(self):
        """The bundle's chat template (slmc.runtime.chat), read from its verified tokenizer_config.json."""
        from slmc.runtime.chat import ChatTemplate

        if self._chat_template is None:
            self._chat_template = ChatTemplate.from_bundle(self.manifest)
        return self._chat_template

    def reply_end_token(self) -> int | None:
        """The special token the chat template ends a reply with (chatml: <|im_end|>), read once."""
        from slmc.runtime.chat import reply_end_token

        if self._reply_end is _UNSET:
            self._reply_end = reply_end_token(self.chat_template(), self.tokenizer.tokenizer)
        return self._reply_end

    def chat_stop_ids(self) -> tuple[int, ...]:
        """Stop ids a chat reply needs beyond the manifest's eos ids: the reply-end token, for a bundle
        packaged before slmc listed it among them."""
        end = self.reply_end_token()
        return (end,) if end is not None and end not in self.manifest.tokens["eos_token_ids"] else ()

    def chat_stream(self, messages, *, speculative: str = "auto", **sampling) -> Iterator[str]:
        """The assistant's reply to `messages` ([{"role", "content"}, ...]) rendered with the bundle's
        chat template (with the generation prompt), as text pieces as they are generated."""
        prompt = self.chat_template().render(messages, add_generation_prompt=True)
        # the rendered text holds its special tokens (bos, role markers): none are added again
        ids = self.tokenizer.encode(check_prompt(prompt), add_special_tokens=False)
        params = self.params(**sampling)
        extra = () if params.ignore_eos else self.chat_stop_ids()
        if extra:
            params = replace(params, stop_token_ids=(*params.stop_token_ids, *extra))
        generation = self.start([ids], params, track_text=True, speculative=speculative)
        for pieces in generation:
            if pieces[0]:
                yield pieces[0]

    def chat(self, messages, *, speculative: str = "auto", **sampling) -> str:
        """The assistant's reply to `messages`, e.g. chat([{"role": "user", "content": "Hi"}])."""
        return "".join(self.chat_stream(messages, speculative=speculative, **sampling))


def check_prompt(prompt: object) -> str:
    """The prompt if it is text a tokenizer can take; else a GenerationError saying what it is.

    A str holding lone surrogates is what Python makes of invalid UTF-8 bytes (argv, or a
    file read with errors='surrogateescape'): refused, naming the first offending byte.
    """
    if isinstance(prompt, (bytes, bytearray)):
        raise GenerationError("a prompt must be a str, got bytes", where="prompt",
                              fix="decode it first, e.g. data.decode('utf-8')")
    if not isinstance(prompt, str):
        raise GenerationError(f"a prompt must be a str, got {type(prompt).__name__}", where="prompt")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = prompt[exc.start]
        byte = f" (input byte 0x{ord(char) - 0xDC00:02x})" if 0xDC80 <= ord(char) <= 0xDCFF else ""
        raise GenerationError(f"the prompt is not valid UTF-8 text: character {exc.start} is a lone surrogate "
                              f"U+{ord(char):04X}{byte}", where="prompt",
                              fix="pass UTF-8 text (decode input bytes with errors='replace' to keep going)") from None
    return prompt


def default_threading(manifest: Manifest, *, threads: int | None = None,
                      spinning: bool | None = None) -> ThreadChoice:
    """The session's intra-op threads and spinning: explicit settings, else the manifest's
    `runtime.intra_op_threads` (the config's), else `choose_threading` for this bundle's size and
    this machine's cores and load now (docs/architecture.md, "Runtime defaults")."""
    threads_from = "requested"
    pinned = manifest.data["runtime"].get("intra_op_threads")
    if threads is None and isinstance(pinned, int) and not isinstance(pinned, bool) and 1 <= pinned <= max_threads():
        threads, threads_from = pinned, "runtime.intra_op_threads"
    size = model_bytes(manifest.path("model"))
    facts = machine_facts() if load_matters(size, threads, spinning) else MachineFacts(usable_cores(), 0.0,
                                                                                         "load not needed")
    return choose_threading(facts.physical_cores, facts.load, size, threads=threads, spinning=spinning,
                            load_source=facts.load_source, threads_from=threads_from)


def load_bundle(path: str | Path, *, allow_foreign: bool = False, threads: int | None = None,
                loop: str = "auto", spinning: bool | None = None) -> Bundle:
    """Verify the bundle at path (hashes, then compatibility unless allow_foreign) and load it.

    path: the bundle folder, or a run folder holding it in bundle/. threads: ORT intra-op
    threads, 1 to max_threads(); spinning: whether idle intra-op threads busy-wait. Either left
    None is chosen for this bundle and machine (`default_threading`; `bundle.threading` says
    what and why). loop: "auto", "numpy" or "iobinding".
    """
    check_threads(threads)  # before hashing: a bad request is refused at once
    return Bundle(verify_bundle(path, allow_foreign=allow_foreign), threads=threads, loop=loop, spinning=spinning)
