"""Runtime inputs: every bad request gets a clear error or a documented, tested behaviour.

Documented behaviours (runtime/generate.py, runtime/bundle.py) tested here at their
edges: an empty prompt starts from BOS; a prompt longer than the context keeps its last
`max_seq_len - 1` tokens and warns; max_new_tokens is clipped to the room left and warns
(in a batch, the room left after the longest prompt); special-token text in a prompt
encodes as those tokens. Everything else that is wrong (sampling values of the wrong type
or range, non-text prompts, invalid UTF-8) is a GenerationError, through every entry point
(generate, complete, stream, `slmc run`), and never another exception. One bundle serves
many threads at once, each request independent of the others' mistakes.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slmc.runtime import GenerationError, GenerationWarning, SlmcRuntimeError, load_bundle
from slmc.runtime import bundle as bundle_module
from slmc.runtime.cli import main as runtime_main
from slmc.runtime.errors import TokenizerError

from .conftest import child_env, count

NAN, INF = float("nan"), float("inf")
BAD_SAMPLING = [
    *({"temperature": v} for v in (-1, -1e-9, NAN, INF, -INF, "0.5", True, [1.0])),
    *({"top_p": v} for v in (0, -0.1, 1.0000001, NAN, INF, "x", True)),
    *({"top_k": v} for v in (-1, 1.5, NAN, "3", True)),
    *({"max_new_tokens": v} for v in (0, -1, 1.5, NAN, "4", True, False)),
    *({"repetition_penalty": v} for v in (0, -1, NAN, INF, "x")),
    *({"seed": v} for v in (-1, 1.5, "x", True)),
    *({"stop": v} for v in ("", [""], [None], [1], b"x", ["ok", ""])),
    *({"stop_token_ids": v} for v in (["a"], [-1], [None], 1.5, [True])),
    *({"do_sample": v} for v in ("yes", 1)),
    {"ignore_eos": "x"}, {"nucleus": 0.9}, {"top_p": 2.0, "temperature": 0.5},
]


def sampling_id(sampling: dict) -> str:
    return ",".join(f"{k}={v!r}"[:24] for k, v in sampling.items())


@pytest.mark.parametrize("sampling", BAD_SAMPLING, ids=[sampling_id(s) for s in BAD_SAMPLING])
def test_bad_sampling_values_are_refused_by_every_entry_point(bundle, sampling):
    name = next(iter(sampling))
    calls = {
        "generate": lambda: bundle.generate("ka", **sampling),
        "generate_ids": lambda: bundle.generate_ids(["ka", "lo"], **sampling),
        "complete": lambda: bundle.complete("ka", **sampling),
        "stream": lambda: list(bundle.stream("ka", **sampling)),
        "params": lambda: bundle.params(**sampling),
    }
    for entry, call in calls.items():
        count("bad prompts/requests")
        with pytest.raises(GenerationError, match=name) as caught:
            call()
        assert caught.value.where == "sampling parameters", entry


CLI_BAD = [
    (["--temperature", "-1"], "temperature"), (["--temperature", "nan"], "temperature"),
    (["--temperature", "inf"], "temperature"), (["--top-p", "0"], "top_p"), (["--top-p", "1.5"], "top_p"),
    (["--top-k", "-1"], "top_k"), (["--max-new-tokens", "0"], "max_new_tokens"), (["--seed", "-1"], "seed"),
    (["--repetition-penalty", "0"], "repetition_penalty"), (["--stop", ""], "stop"),
    # 0 or inf once converted to float32: the logits became NaN and the completion empty, exit 0
    (["--repetition-penalty", "1e-300"], "repetition_penalty"), (["--repetition-penalty", "1e39"], "repetition_penalty"),
]


@pytest.mark.parametrize("args, name", CLI_BAD, ids=[" ".join(a) for a, _ in CLI_BAD])
def test_slmc_run_refuses_bad_values_in_one_line(bundle_dir, capsys, args, name):
    count("bad prompts/requests")
    assert runtime_main(["run", str(bundle_dir), "--prompt", "ka", "--threads", "1", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and name in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("args", [["--threads", "0"], ["--threads", "-2"], ["--threads", "x"], ["--threads", "5000"],
                                  ["--max-new-tokens", "1.5"], ["--top-k", "2.5"], ["--temperature", "warm"]])
def test_slmc_run_refuses_malformed_flags_with_usage(bundle_dir, capsys, args):
    count("bad prompts/requests")
    with pytest.raises(SystemExit) as caught:
        runtime_main(["run", str(bundle_dir), "--prompt", "ka", *args])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert args[0] in err and "Traceback" not in err


@pytest.mark.parametrize("temperature", ["1e-320", "5e-324", "1e-45", "1e-30"])
def test_a_temperature_below_float32s_range_samples_like_greedy(bundle, bundle_dir, capsys, temperature):
    """1e-320 is 0 in float32: logits / temperature was 0/0 = NaN and the completion empty (exit 0).
    Tempered in float64 after subtracting the maximum, it is the limit of sampling: greedy."""
    count("bad prompts/requests")
    argv = ["run", str(bundle_dir), "--prompt", "the small model", "--max-new-tokens", "8", "--threads", "1"]
    assert runtime_main([*argv, "--temperature", temperature, "--seed", "3"]) == 0
    captured = capsys.readouterr()
    greedy = bundle.generate("the small model", max_new_tokens=8)[0]
    assert greedy and captured.out == greedy + "\n" and captured.err == ""


def test_threads_beyond_a_few_per_core_are_refused_at_once(bundle_dir, monkeypatch):
    """`--threads 5000` once hung for minutes while ONNX Runtime started its pool."""
    count("bad prompts/requests", 3)
    start = time.perf_counter()
    with pytest.raises(GenerationError, match="threads must be an integer from 1 to"):
        load_bundle(bundle_dir, threads=5000)
    assert time.perf_counter() - start < 5
    monkeypatch.setattr(bundle_module, "usable_cores", lambda: 1)
    assert bundle_module.max_threads() == bundle_module.THREADS_PER_CORE
    load_bundle(bundle_dir, threads=bundle_module.THREADS_PER_CORE)  # the limit itself is fine
    with pytest.raises(GenerationError, match=f"from 1 to {bundle_module.THREADS_PER_CORE} "):
        load_bundle(bundle_dir, threads=bundle_module.THREADS_PER_CORE + 1)


# ----------------------------------------------------------------------------- the process's own streams


def shell_run(command: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """A shell command line as a user types it (the redirections are the point)."""
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=timeout, env=child_env())


def runtime_command(*args: str) -> str:
    return " ".join(shlex.quote(a) for a in (sys.executable, "-m", "slmc.runtime", *args))


def assert_one_error_line(proc: subprocess.CompletedProcess, code: int, text: str) -> None:
    err = proc.stderr
    assert proc.returncode == code, (proc.returncode, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and text in err, err
    assert "Traceback" not in err and "Exception ignored" not in err and "panicked" not in err, err


STREAMS = [  # (what is wrong, the redirection, extra arguments, exit code, message)
    ("stdin closed", "<&-", [], 66, "stdin is closed"),
    ("stdin endless", "</dev/zero", [], 2, "the prompt on stdin is larger than 64 MiB"),
    ("stdout closed", ">&-", ["--prompt", "ka"], 73, "stdout is closed"),
    ("stdout full", ">/dev/full", ["--prompt", "ka"], 74, "the disk is full"),
]


@pytest.mark.parametrize("case", STREAMS, ids=[c[0] for c in STREAMS])
def test_closed_or_full_standard_streams_are_one_line_and_their_own_exit_code(bundle_dir, case):
    name, redirect, extra, code, message = case
    if "full" in name and not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    count("bad prompts/requests")
    command = runtime_command("run", str(bundle_dir), "--max-new-tokens", "4", "--threads", "1", *extra)
    assert_one_error_line(shell_run(f"{command} {redirect}"), code, message)


@pytest.mark.parametrize("command", ["verify", "bench"])
def test_verify_and_bench_report_a_closed_or_full_stdout_too(bundle_dir, command):
    extra = ["--prompt-tokens", "4", "--new-tokens", "2", "--runs", "1", "--threads", "1"] if command == "bench" else []
    line = runtime_command(command, str(bundle_dir), *extra)
    count("bad prompts/requests", 2)
    assert_one_error_line(shell_run(f"{line} >&-"), 73, "stdout is closed")
    if Path("/dev/full").exists():
        assert_one_error_line(shell_run(f"{line} >/dev/full"), 74, "the disk is full")


def test_a_reader_that_stops_early_is_not_an_error(bundle_dir):
    """`slmc run ... | head -c 1`: the broken pipe ends the run quietly, exit 0."""
    command = runtime_command("run", str(bundle_dir), "--prompt", "ka", "--max-new-tokens", "60", "--threads", "1")
    proc = shell_run(f"set -o pipefail; {command} | head -c 1")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


CATASTROPHIC = r"(a|a?)+$"
"""Nested repetition: Oniguruma backtracks exponentially on 'aaa...b' and stops at its retry limit."""


@pytest.fixture
def backtracking_bundle(bundle_copy, rewrite_manifest):
    """An intact bundle whose tokenizer.json splits with a catastrophically backtracking regex."""
    from tokenizers import Regex, Tokenizer, pre_tokenizers

    path = bundle_copy / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(path))
    split = pre_tokenizers.Split(Regex(CATASTROPHIC), "isolated")
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([split, tokenizer.pre_tokenizer])
    tokenizer.save(str(path))
    return rewrite_manifest(bundle_copy, lambda m: None)


def test_a_tokenizer_panic_is_a_runtime_error_and_one_line(backtracking_bundle):
    """tokenizers panics in Rust (PanicException, a BaseException, not an Exception): the library
    raises TokenizerError instead; the CLI prints one line, without Rust's panic report."""
    prompt = "a" * 50_000 + "b"
    loaded = load_bundle(backtracking_bundle, threads=1)
    assert loaded.generate("ka lo", max_new_tokens=2)  # ordinary text still works
    with pytest.raises(TokenizerError, match="retry-limit") as caught:
        loaded.generate(prompt, max_new_tokens=2)
    assert isinstance(caught.value, SlmcRuntimeError) and "tokenizer.json" in caught.value.where
    count("bad prompts/requests", 2)
    command = runtime_command("run", str(backtracking_bundle), "--max-new-tokens", "2", "--threads", "1")
    proc = subprocess.run(["bash", "-c", command], input=prompt, capture_output=True, text=True, timeout=120,
                          env=child_env(RUST_BACKTRACE="1"))
    assert_one_error_line(proc, 70, "the tokenizer failed on this input")


# ----------------------------------------------------------------------------- prompts

NOT_TEXT = [None, 5, 1.5, b"ka", bytearray(b"ka"), {"p": "ka"}, ["ka", None], ["ka", b"lo"], [["ka"]], object()]


@pytest.mark.parametrize("prompt", NOT_TEXT, ids=lambda p: type(p).__name__ + repr(p)[:10])
def test_a_prompt_that_is_not_text_is_refused(bundle, prompt):
    count("bad prompts/requests")
    with pytest.raises(GenerationError, match="prompt"):
        bundle.generate(prompt, max_new_tokens=2)
    if not isinstance(prompt, list):
        with pytest.raises(GenerationError, match="prompt"):
            list(bundle.stream(prompt, max_new_tokens=2))


@pytest.mark.parametrize("prompt", ["\udcff", "ka \udcc3\udca9 lo", "\ud800", "ok" * 10 + "\udfff"])
def test_invalid_utf8_in_a_prompt_is_refused_naming_the_byte(bundle, prompt):
    """A str with lone surrogates is what Python makes of invalid UTF-8 (argv, surrogateescape)."""
    count("bad prompts/requests")
    with pytest.raises(GenerationError, match="not valid UTF-8") as caught:
        bundle.generate(prompt, max_new_tokens=2)
    if "\udcff" in prompt:
        assert "0xff" in str(caught.value)


def test_slmc_run_reads_invalid_utf8_from_argv_and_stdin_as_a_clear_error(bundle_dir, tmp_path):
    """The real process: bad bytes on the command line and on stdin, any locale."""
    for argv, stdin in ((["--prompt", b"ka \xff\xfe lo"], b""), ([], b"ka \xc3\x28 lo")):
        for lang in ("C.UTF-8", "C"):
            command = [sys.executable.encode(), b"-m", b"slmc.runtime", b"run", str(bundle_dir).encode(),
                       b"--max-new-tokens", b"2", b"--threads", b"1",
                       *(a if isinstance(a, bytes) else a.encode() for a in argv)]
            proc = subprocess.run(command, input=stdin, capture_output=True, timeout=120,
                                  env=child_env(LANG=lang, LC_ALL=lang, PYTHONUTF8="0"))
            count("bad prompts/requests")
            err = proc.stderr.decode("utf-8", "replace")
            assert proc.returncode == 2, err
            assert "not valid UTF-8" in err and any(b in err for b in ("0xff", "0xc3")), err
            assert "Traceback" not in err


ODD_PROMPTS = [
    "", " ", "\n\n\t", "\x00" * 16, "\ufeff", "\u202e\u200b\u2028", "a\u0301" * 40, "😀" * 60, "ﷺ" * 30,
    "<s>", "</s>", "<pad>", "<s></s><pad>" * 3, "<pad>" * 400, "</s>" * 10 + "ka",
    "ka " * 2000, "x" * 100_000,
]


@pytest.mark.parametrize("prompt", ODD_PROMPTS, ids=lambda p: repr(p)[:16])
def test_odd_prompts_generate_or_warn_and_streaming_agrees(bundle, prompt):
    """Documented: special-token text encodes as the special token; a long prompt keeps its tail
    (GenerationWarning); whitespace, NUL, BOM, emoji and combining marks are just text."""
    count("bad prompts/requests")
    ids = bundle.encode(prompt)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        [done] = bundle.complete(prompt, max_new_tokens=6)
        streamed = "".join(bundle.stream(prompt, max_new_tokens=6))
    assert streamed == done.text
    assert 1 <= len(done.token_ids) <= 6
    if len(ids) > bundle.context - 1:
        assert done.prompt_ids == ids[-(bundle.context - 1):]
        assert any("kept its last" in str(w.message) for w in caught)
    elif ids:
        assert done.prompt_ids == ids
    else:
        assert done.prompt_ids == [bundle.manifest.tokens["bos_token_id"]]
    if prompt.startswith("<s></s><pad>"):
        assert ids[:3] == [1, 2, 0]  # the special tokens themselves, not their characters


@pytest.mark.parametrize("new", [1, 2, 10**9])
def test_max_new_tokens_beyond_the_room_left_is_clipped_exactly(bundle, new):
    prompt_ids = bundle.encode("ka lo mi " * 60)[: bundle.context - 3]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        generation = bundle.start([prompt_ids], bundle.params(max_new_tokens=new, ignore_eos=True))
        list(generation)
    count("bad prompts/requests")
    assert len(generation.completions[0].token_ids) == min(new, 3)
    assert any("clipped to 3" in str(w.message) for w in caught) == (new > 3)


def test_a_prompt_of_exactly_the_context_keeps_room_for_one_token(bundle):
    prompt_ids = (bundle.encode("ka lo mi " * 100) * 2)[: bundle.context]
    with pytest.warns(GenerationWarning):
        generation = bundle.start([prompt_ids], bundle.params(max_new_tokens=5, ignore_eos=True))
        list(generation)
    count("bad prompts/requests")
    assert len(generation.completions[0].prompt_ids) == bundle.context - 1
    assert len(generation.completions[0].token_ids) == 1


def test_a_batch_of_very_different_lengths(bundle):
    """Empty, one token, over the context and medium in one batch: no crash; each row's greedy
    tokens are a prefix of what it gets alone (the batch is clipped to the longest row's room)."""
    prompts = ["", "ka", "the small model runs on the device " * 60, "zé lo mi ne ru sa to vi"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        together = bundle.generate_ids(prompts, max_new_tokens=12, ignore_eos=True)
        alone = [bundle.generate_ids(p, max_new_tokens=12, ignore_eos=True)[0] for p in prompts]
    count("bad prompts/requests", len(prompts))
    messages = [str(w.message) for w in caught]
    assert any("kept its last" in m for m in messages) and any("clipped to 1" in m for m in messages)
    assert [len(t) for t in together] == [1, 1, 1, 1]
    assert all(alone_ids[: len(ids)] == ids for ids, alone_ids in zip(together, alone))
    short = bundle.generate_ids(prompts[:2] + prompts[3:], max_new_tokens=12, ignore_eos=True)
    assert short == [alone[0], alone[1], alone[3]]  # without the long prompt nothing is clipped


def test_more_prompts_than_the_batch_limit_of_mixed_lengths(bundle):
    prompts = ["", "ka", "lo mi", "the cache " * 10, "a", "zé", "ön quar."]  # 7 prompts, max_batch_size 4
    assert len(prompts) > bundle.manifest.max_batch_size
    results = bundle.generate(prompts, max_new_tokens=5)
    count("bad prompts/requests", len(prompts))
    assert len(results) == len(prompts) and all(isinstance(r, str) for r in results)
    assert bundle.generate([], max_new_tokens=5) == []  # documented: no prompts, no completions


# ----------------------------------------------------------------------------- threads


@pytest.mark.parametrize("loop", ["numpy", "iobinding"])
def test_many_threads_on_one_bundle_with_good_and_bad_requests(bundle_dir, loop):
    """Eight threads share one loaded bundle: generate, batches, streams and bad requests mixed.
    Good requests give exactly the sequential results; bad ones fail alone, with GenerationError."""
    shared = load_bundle(bundle_dir, threads=1, loop=loop)
    good = [("generate", "the small model", {}), ("generate", "ka", {"temperature": 0.8, "seed": 3}),
            ("batch", ["ka", "", "lo mi ne"], {}), ("stream", "zé lo", {"top_k": 5, "seed": 1}),
            ("generate", "x" * 3000, {}), ("stream", "", {})]
    bad = [("generate", "ka", {"temperature": -1}), ("generate", None, {}), ("stream", "\udcff", {}),
           ("batch", ["ka", 3], {})]

    def call(kind, prompt, sampling):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GenerationWarning)
            if kind == "stream":
                return "".join(shared.stream(prompt, max_new_tokens=10, **sampling))
            return shared.generate(prompt, max_new_tokens=10, **sampling)

    expected = [call(*request) for request in good]
    results, errors, crashes = {}, {}, []

    def worker(worker_id: int) -> None:
        for round_ in range(3):
            for index, request in enumerate(good + bad):
                if (index + worker_id + round_) % 2:
                    continue
                try:
                    output = call(*request)
                    results.setdefault(index, []).append(output)
                except GenerationError as exc:
                    errors.setdefault(index, []).append(exc)
                except Exception as exc:  # noqa: BLE001 - anything else is the failure under test
                    crashes.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    count("bad prompts/requests", sum(len(v) for v in errors.values()))
    assert not crashes, crashes
    assert not any(t.is_alive() for t in threads)
    for index, outputs in results.items():
        assert index < len(good), f"bad request {bad[index - len(good)]} succeeded"
        assert all(out == expected[index] for out in outputs), good[index]
    assert set(errors) == set(range(len(good), len(good) + len(bad)))


# ----------------------------------------------------------------------------- fuzzed requests


REQUEST_VALUES = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                           st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
                           st.lists(st.one_of(st.integers(-3, 500), st.text(max_size=3)), max_size=3))
REQUESTS = st.fixed_dictionaries({}, optional={k: REQUEST_VALUES for k in (
    "max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "seed", "stop", "stop_token_ids",
    "do_sample", "ignore_eos")})
PROMPTS = st.one_of(st.text(max_size=300), st.lists(st.text(max_size=40), max_size=5), st.none(), st.binary(max_size=8))


def _request_test(examples: int):
    @settings(max_examples=examples, deadline=None, database=None, derandomize=examples < 200,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(prompt=PROMPTS, sampling=REQUESTS)
    def check(bundle, prompt, sampling):
        """Any request: completions, or the runtime's own error; never another exception."""
        count("bad prompts/requests")
        if isinstance(sampling.get("max_new_tokens"), int) and not isinstance(sampling["max_new_tokens"], bool):
            sampling["max_new_tokens"] = min(sampling["max_new_tokens"], 8)  # keep each example short
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GenerationWarning)
            try:
                out = bundle.generate(prompt, **sampling)
            except SlmcRuntimeError:
                return
        assert isinstance(out, list) and all(isinstance(t, str) for t in out)

    return check


test_fuzzed_requests_get_text_or_a_runtime_error = _request_test(60)
test_fuzzed_requests_long_run = pytest.mark.slow(_request_test(2000))
