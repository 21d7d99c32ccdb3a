"""`run`, `bench` and `verify` for a bundle, on a device that has only the runtime deps.

Exit codes: 0 ok; 2 a refusal or bad request, printed as one line on stderr
(`error: ...`), never a traceback; 130 interrupted. `slmc run/bench/verify` call `main`.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from slmc.runtime.errors import GenerationError, SlmcRuntimeError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slmc", description="Run, benchmark or verify an slmc bundle.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="generate text, streamed to stdout")
    run.add_argument("bundle", type=Path)
    run.add_argument("--prompt", help="prompt text (default: read stdin)")
    run.add_argument("--max-new-tokens", type=int, help="tokens to generate (default: the manifest's)")
    run.add_argument("--temperature", type=float, help=">= 0; 0 is greedy; > 0 samples")
    run.add_argument("--top-k", type=int, help=">= 0; 0 is off")
    run.add_argument("--top-p", type=float, help="in (0, 1]; 1 is off")
    run.add_argument("--repetition-penalty", type=float, help="> 0; 1 is off")
    run.add_argument("--seed", type=int, help="seed for sampling (reproducible output)")
    run.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    _common(run)
    bench = sub.add_parser("bench", help="prefill latency and decode tokens/s")
    bench.add_argument("bundle", type=Path)
    bench.add_argument("--json", action="store_true", help="print exactly one JSON object")
    bench.add_argument("--prompt-tokens", type=int, default=128)
    bench.add_argument("--new-tokens", type=int, default=128)
    bench.add_argument("--runs", type=int, default=5)
    bench.add_argument("--warmup", type=int, default=1)
    bench.add_argument("--batch", type=int, default=1)
    _common(bench)
    verify = sub.add_parser("verify", help="check hashes and compatibility with this machine")
    verify.add_argument("bundle", type=Path)
    verify.add_argument("--json", action="store_true", help="print exactly one JSON object")
    verify.add_argument("--allow-foreign", action="store_true", help="skip runtime/arch/provider checks")
    return parser


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse turns the ValueError into a usage error, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _read_stdin() -> str:
    """The prompt from stdin, decoded as UTF-8 whatever the locale; bad bytes are a clear error."""
    data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read()
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GenerationError(f"stdin is not valid UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start}",
                              where="prompt", fix="convert the input to UTF-8 (e.g. iconv -t UTF-8)") from None


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-foreign", action="store_true",
                        help="run a bundle built for another runtime/arch/provider (experts)")
    parser.add_argument("--threads", type=_positive_int, help="ONNX Runtime intra-op threads >= 1 (default: ORT's)")
    parser.add_argument("--loop", choices=("auto", "numpy", "iobinding"), default="auto",
                        help="decode loop (auto: numpy on CPU, IO binding on GPU providers)")


def _run(args: argparse.Namespace) -> int:
    from slmc.runtime.bundle import load_bundle

    prompt = args.prompt if args.prompt is not None else _read_stdin()
    bundle = load_bundle(args.bundle, allow_foreign=args.allow_foreign, threads=args.threads, loop=args.loop)
    sampling = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_k": args.top_k,
                "top_p": args.top_p, "repetition_penalty": args.repetition_penalty, "seed": args.seed,
                "stop": args.stop}
    for piece in bundle.stream(prompt, **sampling):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from slmc.runtime.bench import bench

    result = bench(args.bundle, prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens, runs=args.runs,
                   batch=args.batch, warmup=args.warmup, loop=args.loop, threads=args.threads,
                   allow_foreign=args.allow_foreign)
    if args.json:
        print(json.dumps(result))
        return 0
    for key, value in result.items():
        if key != "runs_detail":
            print(f"{key:>22}: {value}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from slmc.runtime.verify import verify_bundle

    try:
        manifest = verify_bundle(args.bundle, allow_foreign=args.allow_foreign)
    except SlmcRuntimeError as exc:
        if not args.json:
            raise
        print(json.dumps({"ok": False, "bundle": str(args.bundle), "error": exc.render(),
                          "kind": type(exc).__name__}))
        return exc.exit_code
    report = {"ok": True, "bundle": str(manifest.folder), "name": manifest.name,
              "runtime": manifest.data["runtime"]["name"], "precision": manifest.data["precision"],
              "files": len(manifest.data["hashes"])}
    print(json.dumps(report) if args.json else f"ok: {manifest.folder} ({report['files']} files verified)")
    return 0


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (argparse exits 2 itself on bad arguments)."""
    args = _parser().parse_args(argv)
    handlers = {"run": _run, "bench": _bench, "verify": _verify}
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return handlers[args.command](args)
        except SlmcRuntimeError as exc:
            print(f"error: {exc.render()}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:  # e.g. `slmc run ... | head`
            return 0
