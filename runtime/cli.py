"""`run`, `bench` and `verify` for a bundle, on a device that has only the runtime deps.

Every failure is one line on stderr (`error: ...`), never a traceback, and its own exit
code (slmc.runtime.errors lists them): 0 ok, 2 a refusal or bad request, 66 no prompt to
read (stdin closed), 70 the tokenizer library failed on the input, 73 stdout closed,
74 writing stdout failed (disk full), 130 interrupted. `slmc run/bench/verify` call `main`.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from slmc.runtime.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    GenerationError,
    InputError,
    OutputClosed,
    OutputError,
    SlmcRuntimeError,
)

SPECULATIVE = ("auto", "off", "lookup", "draft")  # slmc.runtime.speculative.MODES, without importing ORT here
BUNDLE_HELP = "the bundle folder, or a run folder (generated/<run>) that holds it in bundle/"
MAX_STDIN_BYTES = 64 * 1024 * 1024
"""A prompt keeps only its last max_seq_len - 1 tokens anyway; reading stdin without a bound
would fill memory when it never ends (`< /dev/zero`, a stuck producer)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slmc", description="Run, benchmark or verify an slmc bundle.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="generate text, streamed to stdout",
                         description="Generate text from a verified bundle, streamed to stdout.")
    run.add_argument("bundle", type=Path, help=BUNDLE_HELP)
    run.add_argument("--prompt", help="prompt text (default: read stdin as UTF-8)")
    run.add_argument("--max-new-tokens", type=int,
                     help="tokens to generate, >= 1 (default: the manifest's); clipped to the context left")
    run.add_argument("--temperature", type=float,
                     help=">= 0; 0 is greedy; > 0 samples (the smaller, the closer to greedy)")
    run.add_argument("--top-k", type=int, help="sample among the k most likely tokens, >= 0; 0 is off")
    run.add_argument("--top-p", type=float, help="sample from the smallest set holding this probability, "
                                                 "in (0, 1]; 1 is off")
    run.add_argument("--repetition-penalty", type=float,
                     help="> 1 discourages tokens already seen, < 1 favours them; 1 is off "
                          "(within float32's normal range, 1.2e-38 to 3.4e38)")
    run.add_argument("--seed", type=int, help="seed for sampling, >= 0 (the same seed gives the same text)")
    run.add_argument("--stop", action="append", default=None,
                     help="end generation at this text, which is left out (repeatable)")
    run.add_argument("--chat", action="store_true",
                     help="apply the bundle's chat template: the prompt is a user message (without --prompt "
                          "on a terminal: a conversation, one message per line, an empty line ends it)")
    run.add_argument("--system", help="with --chat: a system message before the user's")
    run.add_argument("--speculative", choices=SPECULATIVE, default="auto",
                     help="speculative decoding: lookup drafts tokens from the prompt and the text so far and "
                          "checks them in one model call (greedy: the same tokens); auto is lookup for greedy "
                          "decoding (except int8 bundles), off for sampling; draft needs a bundle with a draft model "
                          "(default: auto)")
    run.add_argument("--verbose", action="store_true",
                     help="print the session's threads and spinning, and why, to stderr")
    _common(run)
    bench = sub.add_parser("bench", help="prefill latency and decode tokens/s",
                           description="Time prefill and decode on this machine (greedy, eos ignored); "
                                       "values are medians over the timed runs.")
    bench.add_argument("bundle", type=Path, help=BUNDLE_HELP)
    bench.add_argument("--json", action="store_true", help="print exactly one JSON object")
    bench.add_argument("--prompt-tokens", type=int, default=128,
                       help="prompt length in tokens, random ordinary ids (default: %(default)s)")
    bench.add_argument("--new-tokens", type=int, default=128,
                       help="tokens generated per run, >= 2 (default: %(default)s)")
    bench.add_argument("--runs", type=int, default=5, help="timed runs; results are medians (default: %(default)s)")
    bench.add_argument("--warmup", type=int, default=1,
                       help="untimed runs before them, >= 0 (default: %(default)s)")
    bench.add_argument("--batch", type=int, default=1, help="prompts decoded together (default: %(default)s)")
    bench.add_argument("--speculative", choices=SPECULATIVE, default="off",
                       help="also decode with this speculative mode and report acceptance rate, tokens per "
                            "target call and speedup over plain decoding, batch 1 only (default: %(default)s)")
    bench.add_argument("--prompt", help="prompt text instead of random ids (lookup needs text it can copy from)")
    _common(bench)
    verify = sub.add_parser("verify", help="check hashes and compatibility with this machine",
                            description="Check the manifest's checksum, every file's sha256, that nothing "
                                        "else is in the bundle, and that it runs on this machine.")
    verify.add_argument("bundle", type=Path, help=BUNDLE_HELP)
    verify.add_argument("--json", action="store_true", help="print exactly one JSON object")
    verify.add_argument("--allow-foreign", action="store_true",
                        help="skip the runtime/arch/provider checks (never the hashes)")
    return parser


def _threads(text: str) -> int:
    """argparse type: an integer in [1, max_threads()] (argparse turns the error into usage, exit 2)."""
    from slmc.runtime.bundle import check_threads

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    try:
        check_threads(value)
    except GenerationError as exc:
        raise argparse.ArgumentTypeError(f"{exc.message} ({exc.fix})") from None
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-foreign", action="store_true",
                        help="run a bundle built for another runtime/arch/provider (experts; never skips the hashes)")
    parser.add_argument("--threads", type=_threads,
                        help="ONNX Runtime intra-op threads, 1 to 4 per usable CPU core (default: chosen for "
                             "this bundle and machine; --verbose says what and why)")
    parser.add_argument("--spinning", choices=("on", "off"),
                        help="whether idle intra-op threads busy-wait (default: on only with a core to spare)")
    parser.add_argument("--loop", choices=("auto", "numpy", "iobinding"), default="auto",
                        help="decode loop (auto: numpy on CPU, IO binding on GPU providers)")


def _spinning(args: argparse.Namespace) -> bool | None:
    return None if args.spinning is None else args.spinning == "on"


def _read_stdin() -> str:
    """The prompt from stdin, decoded as UTF-8 whatever the locale; bad bytes are a clear error."""
    stdin = sys.stdin
    if stdin is None:  # started with fd 0 closed (`<&-`)
        raise InputError("no prompt: --prompt was not given and stdin is closed",
                         fix="pass --prompt TEXT, or pipe the prompt in (echo TEXT | slmc run BUNDLE)")
    try:
        data = (stdin.buffer if hasattr(stdin, "buffer") else stdin).read(MAX_STDIN_BYTES + 1)
    except OSError as exc:
        raise InputError(f"cannot read the prompt from stdin ({exc.strerror or exc})",
                         fix="pass --prompt TEXT, or redirect stdin from a readable file") from None
    if len(data) > MAX_STDIN_BYTES:
        raise GenerationError(f"the prompt on stdin is larger than {MAX_STDIN_BYTES // 2**20} MiB", where="prompt",
                              fix="pass the end of the text that matters (only the last max_seq_len - 1 tokens "
                                  "are used), e.g. tail -c 100000 FILE | slmc run BUNDLE")
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GenerationError(f"stdin is not valid UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start}",
                              where="prompt", fix="convert the input to UTF-8 (e.g. iconv -t UTF-8)") from None


def _write(text: str) -> None:
    """Write to stdout now; a closed or failing stdout is an OutputError (a broken pipe passes through)."""
    out = sys.stdout
    if out is None:
        raise _closed()
    try:
        out.write(text)
        out.flush()
    except BrokenPipeError:
        raise
    except (OSError, ValueError) as exc:  # ValueError: the stream object was closed
        if isinstance(exc, ValueError) or exc.errno == errno.EBADF:
            raise _closed() from None
        reason = "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "an I/O error"
        raise OutputError(f"cannot write to stdout: {reason} ({exc.strerror or exc})",
                          fix="free space where stdout goes, or redirect it elsewhere (> FILE)") from None


def _closed() -> OutputClosed:
    return OutputClosed("stdout is closed: there is nowhere to write the result",
                        fix="redirect stdout to a file or to /dev/null (> FILE) instead of closing it (>&-)")


def _discard_stdout() -> None:
    """After stdout failed, point fd 1 at /dev/null: what is still buffered can never be written,
    and Python's final flush would otherwise print "Exception ignored ..." and exit 120.

    Only for the process's own stdout (not a capture or a caller's stream)."""
    out = sys.stdout
    if out is None or out is not sys.__stdout__:
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, out.fileno())
        os.close(null)
    except (OSError, ValueError):
        pass


def _run(args: argparse.Namespace) -> int:
    from slmc.runtime.bundle import load_bundle

    if args.system is not None and not args.chat:
        raise GenerationError("--system needs --chat", where="--system", fix="add --chat")
    interactive = args.chat and args.prompt is None and sys.stdin is not None and sys.stdin.isatty()
    prompt = args.prompt if args.prompt is not None or interactive else _read_stdin()
    bundle = load_bundle(args.bundle, allow_foreign=args.allow_foreign, threads=args.threads, loop=args.loop,
                         spinning=_spinning(args))
    if args.verbose:
        choice = bundle.threading
        print(f"slmc: {choice.threads} intra-op thread(s), spinning {'on' if choice.spinning else 'off'}: "
              f"{choice.reason}", file=sys.stderr, flush=True)
    sampling = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_k": args.top_k,
                "top_p": args.top_p, "repetition_penalty": args.repetition_penalty, "seed": args.seed,
                "stop": args.stop}
    if not args.chat:
        for piece in bundle.stream(prompt, speculative=args.speculative, **sampling):
            _write(piece)
        _write("\n")
        return EXIT_OK
    bundle.chat_template()  # a bundle without a template is refused before any input is read
    messages = [] if args.system is None else [{"role": "system", "content": args.system}]
    while True:
        if interactive:
            _write("> ")
            prompt = sys.stdin.readline().rstrip("\n")
            if not prompt.strip():
                return EXIT_OK
        messages.append({"role": "user", "content": prompt})
        reply = []
        for piece in bundle.chat_stream(messages, speculative=args.speculative, **sampling):
            reply.append(piece)
            _write(piece)
        _write("\n")
        if not interactive:
            return EXIT_OK
        messages.append({"role": "assistant", "content": "".join(reply)})


def _bench(args: argparse.Namespace) -> int:
    from slmc.runtime.bench import bench

    result = bench(args.bundle, prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens, runs=args.runs,
                   batch=args.batch, warmup=args.warmup, loop=args.loop, threads=args.threads,
                   spinning=_spinning(args),
                   allow_foreign=args.allow_foreign, speculative=args.speculative, prompt=args.prompt)
    if args.json:
        _write(json.dumps(result) + "\n")
        return EXIT_OK
    shown = {key: value for key, value in result.items() if key not in ("runs_detail", "speculative")}
    _write("".join(f"{key:>22}: {value}\n" for key, value in shown.items()))
    for key, value in result.get("speculative", {}).items():
        if key != "runs_detail":
            _write(f"{'speculative.' + key:>38}: {value}\n")
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from slmc.runtime.verify import verify_bundle

    try:
        manifest = verify_bundle(args.bundle, allow_foreign=args.allow_foreign)
    except SlmcRuntimeError as exc:
        if not args.json:
            raise
        _write(json.dumps({"ok": False, "bundle": str(args.bundle), "error": exc.render(),
                           "kind": type(exc).__name__}) + "\n")
        return exc.exit_code
    report = {"ok": True, "bundle": str(manifest.folder), "name": manifest.name,
              "runtime": manifest.data["runtime"]["name"], "precision": manifest.data["precision"],
              "files": len(manifest.data["hashes"])}
    _write((json.dumps(report) if args.json else f"ok: {manifest.folder} ({report['files']} files verified)") + "\n")
    return EXIT_OK


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    _error_line(f"warning: {message}")


def _error_line(text: str) -> None:
    if sys.stderr is not None:  # with stderr closed too, the exit code is all that is left
        print(text, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (argparse exits 2 itself on bad arguments)."""
    from slmc.runtime.tokenizer import quiet_panics

    args = _parser().parse_args(argv)
    handlers = {"run": _run, "bench": _bench, "verify": _verify}
    with warnings.catch_warnings(), quiet_panics():
        warnings.showwarning = _show_warning
        try:
            if sys.stdout is None:  # started with fd 1 closed (`>&-`): refuse before any work
                raise _closed()
            return handlers[args.command](args)
        except SlmcRuntimeError as exc:
            if isinstance(exc, OutputError):
                _discard_stdout()
            _error_line(f"error: {exc.render()}")
            return exc.exit_code
        except KeyboardInterrupt:
            _error_line("interrupted")
            return EXIT_INTERRUPTED
        except BrokenPipeError:  # e.g. `slmc run ... | head`: the reader has all it wanted
            _discard_stdout()
            return EXIT_OK
