"""Two bundles measured side by side in one process, interleaved, on the same text.

What the regression gate (`targets.baseline`) and `slmc diff --measure` compare:

- held-out perplexity: teacher-forced windows of the same text, each bundle tokenizing it
  with its own tokenizer (`perplexity.bundle_perplexity`; comparable only when the
  tokenizers are the same file, which the caller checks);
- prefill ms and decode tokens/s from `bench.bench` at each bundle's own settings (its
  default loop and ONNX Runtime's threads), the same prompt and token counts for both,
  one run of each bundle in turn per repeat (so a machine that slows down mid-measurement
  slows both), medians over the repeats;
- peak memory: the growth of the peak resident set of a fresh process (one per bundle, the
  only part not in this process) from after its imports to after loading the bundle and
  running the benchmark's generation once (Linux /proc: VmHWM - VmRSS; None elsewhere): the
  session, ONNX Runtime's arena and setup, the KV cache;
- file size: the bytes of the files each manifest hashes.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from slmc.runtime.bench import bench
from slmc.runtime.bundle import Bundle, load_bundle
from slmc.runtime.errors import GenerationError
from slmc.runtime.perplexity import bundle_perplexity

MAX_EVAL_TOKENS = 8192
EVAL_WINDOW = 128
"""Held-out tokens scored per bundle, in windows of this many: the compiler passes its own per-stage
evaluation's numbers (stages.base), which the runtime cannot import; these are the same defaults."""
PROMPT_TOKENS = NEW_TOKENS = 64
MEMORY_MEASURE = "peak RSS growth of a fresh process loading the bundle and running one benchmark generation"


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _memory_probe(path: str, prompt_tokens: int, new_tokens: int) -> None:
    """In a fresh process: load the bundle, run the benchmark's generation once, print the peak RSS growth
    in KiB (or 'none')."""
    before = _status_kib("VmRSS")  # onnxruntime and tokenizers already imported: their cost is not the bundle's
    bench(load_bundle(path, allow_foreign=True), prompt_tokens=prompt_tokens, new_tokens=new_tokens, runs=1, warmup=0)
    peak = _status_kib("VmHWM")
    print("none" if before is None or peak is None else peak - before)


def peak_memory_mb(path: Path, prompt_tokens: int, new_tokens: int) -> float | None:
    """Peak RSS growth of a fresh process that loads the bundle and runs one benchmark generation, in MiB.

    A process of its own per bundle: in one process the first bundle would also pay ONNX Runtime's
    one-time setup, and the second would reuse heap the first freed. None where /proc is not there.
    """
    command = [sys.executable, "-m", "slmc.runtime.compare", "--memory", str(path), str(prompt_tokens), str(new_tokens)]
    probe = subprocess.run(command, capture_output=True, text=True, timeout=600)
    value = probe.stdout.strip().splitlines()[-1:] if probe.returncode == 0 else []
    if not value or not value[0].isdigit():
        return None
    return round(int(value[0]) / 1024, 1)


def files_bytes(bundle: Bundle) -> int:
    """Bytes of every file the manifest hashes (the bundle as it ships, manifest excluded)."""
    folder = bundle.manifest.folder
    return sum((folder / name).stat().st_size for name in bundle.manifest.data.get("hashes", {}))


def _lengths(bundles: list[Bundle], prompt_tokens: int, new_tokens: int) -> tuple[int, int]:
    """Prompt and new tokens that fit every bundle's context (the same for all, so speeds compare)."""
    context = min(b.context for b in bundles)
    prompt = max(1, min(prompt_tokens, context // 2))
    return prompt, max(2, min(new_tokens, context - prompt))


def measure_pair(baseline: str | Path, candidate: str | Path, text: str, *, repeats: int = 3,
                 prompt_tokens: int = PROMPT_TOKENS, new_tokens: int = NEW_TOKENS,
                 max_eval_tokens: int = MAX_EVAL_TOKENS, window: int = EVAL_WINDOW) -> dict[str, Any]:
    """{"baseline": {...}, "candidate": {...}, "settings": {...}}: each side's perplexity, prefill_ms,
    decode_tokens_per_s, peak_memory_mb and bytes (memory in a probe process per bundle, the rest here)."""
    if not text.strip():
        raise GenerationError("the held-out text is empty", where="text", fix="pass a text to score perplexity on")
    paths = {"baseline": Path(baseline), "candidate": Path(candidate)}
    loaded = {side: load_bundle(path, allow_foreign=True) for side, path in paths.items()}
    prompt, new = _lengths(list(loaded.values()), prompt_tokens, new_tokens)
    memory = {side: peak_memory_mb(path, prompt, new) for side, path in paths.items()}
    runs: dict[str, list[dict]] = {side: [] for side in loaded}
    for repeat in range(repeats):
        for side, bundle in loaded.items():  # interleaved: one run of each bundle per repeat
            runs[side].append(bench(bundle, prompt_tokens=prompt, new_tokens=new, runs=1,
                                    warmup=1 if repeat == 0 else 0))
    out: dict[str, Any] = {}
    window = min(window, *(b.context for b in loaded.values()))  # one window for both: comparable numbers
    for side, bundle in loaded.items():
        ids = bundle.tokenizer.encode(text)[:max_eval_tokens]
        out[side] = {
            "bundle": str(paths[side]),
            "precision": bundle.manifest.data.get("precision"),
            "perplexity": round(bundle_perplexity(bundle, ids, window=window), 4),
            "eval_tokens": len(ids),
            "prefill_ms": round(statistics.median(r["prefill_ms"] for r in runs[side]), 3),
            "decode_tokens_per_s": round(statistics.median(r["decode_tokens_per_s"] for r in runs[side]), 1),
            "peak_memory_mb": memory[side],
            "bytes": files_bytes(bundle),
            "provider": runs[side][0]["provider"],
            "loop": runs[side][0]["loop"],
        }
    out["settings"] = {"repeats": repeats, "prompt_tokens": prompt, "new_tokens": new, "window": window,
                       "memory": MEMORY_MEASURE if all(v is not None for v in memory.values()) else "not measurable here"}
    return out


if __name__ == "__main__":  # the memory probe: python -m slmc.runtime.compare --memory BUNDLE PROMPT NEW
    if sys.argv[1:2] != ["--memory"] or len(sys.argv) != 5:
        sys.exit("usage: python -m slmc.runtime.compare --memory BUNDLE PROMPT_TOKENS NEW_TOKENS")
    _memory_probe(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
