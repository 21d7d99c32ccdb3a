"""Config fuzzing: hostile override sets give a passing check or exit 2 naming a config path.

Hypothesis draws override sets from every leaf of the schema and every config group:
valid and invalid options, wrong types, unknown keys, negative/zero/huge numbers,
NaN/inf, empty and very long strings, odd unicode, Hydra syntax fragments. Each set
goes through `slmc check --json` in-process. The property: exit code 0 with no error,
or 2 with every error naming a config path; never an exception, never a rule crash,
never longer than a watchdog. A set that passes must also plan and render a train.py
that parses. The default run draws a few dozen sets; `-m slow` draws thousands.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import signal
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from slmc.cli import main
from slmc.load import GROUPS, available_options, load_config, run_name
from slmc.schema import SlmcConfig

from .conftest import count

WATCHDOG_S = 30
"""One check may take this long at most (a cold Hydra compose on a busy machine is ~1 s)."""


def leaves(model: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    """{dotted path: annotation} of every leaf field of the schema."""
    found = {}
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            found.update(leaves(ann, f"{prefix}{name}."))
        else:
            found[f"{prefix}{name}"] = ann
    return found


LEAVES = leaves(SlmcConfig)
OPTIONS = {group: available_options(group) for group in GROUPS}

# Rules whose work grows with a number from the config hang on huge values (reported;
# see test_known_bug_* below). The fuzz keeps those values out until they are fixed.
HANGS_ON_HUGE = {"model.hidden_size", "model.num_attention_heads", "train.batch_size"}
HUGE = 10**6

# Fragments that mean something to Hydra's override grammar or to OmegaConf.
HYDRA_FRAGMENTS = [
    "", " ", "null", "???", "~", "true", "False", "0x10", "1_000", "1e400", "-0", "NaN", "-nan", "Infinity",
    "${oc.env:HOME}", "${oc.env:SLMC_NO_SUCH_VAR}", "${now:%Y}", "${train.lr}", "${missing.key}", "${",
    "${hydra:job.name}", "[1,2", "[]", "[[]]", "{a: 1}", "{}", "'unterminated", '"', "\\", "a,b", "a=b",
    "choice(1,2)", "range(1,3)", "interval(0,1)", "glob(*)", "'${oc.env:HOME}'", "\\'", "%", "@", "#",
]
ODD_TEXT = [
    "x" * 300, "é" * 300, "\u202egnp.exe", "\u200b", "\ufeffbom", "😀" * 50, "a\u0301" * 20, "\u2028", "ﬁ",
    "../../x", "/etc/passwd", "C:\\Windows", "~/x", "con", "a b", "'quoted'", '"dq"', "tab\tsep", "new\nline",
]


def numbers() -> st.SearchStrategy[str]:
    return st.one_of(
        st.integers(min_value=-(2**70), max_value=2**70).map(str),
        st.sampled_from(["0", "-1", "1", "2", "3", "17", "2147483648", str(2**63), str(2**64 + 1)]),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.sampled_from(["nan", "inf", "-inf", "1e308", "5e-324", "-0.0", "0.5", "1.0", "1e-9"]),
    )


def texts() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(HYDRA_FRAGMENTS + ODD_TEXT), st.text(max_size=40))


def lists() -> st.SearchStrategy[str]:
    item = st.one_of(numbers(), st.sampled_from(["a", "q_proj", "''", "null", "[]"]), st.text(max_size=8))
    return st.lists(item, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]")


def valid_like(annotation: Any) -> st.SearchStrategy[str]:
    """Values of roughly the right type: the fuzz should also reach the rules, not only the schema."""
    origin = get_origin(annotation)
    if origin is Literal:
        return st.sampled_from([str(a).lower() if isinstance(a, bool) else str(a) for a in get_args(annotation)])
    if annotation is bool:
        return st.sampled_from(["true", "false"])
    if annotation in (int, int | None):
        return st.integers(min_value=-2, max_value=5000).map(str)
    if annotation in (float, float | None):
        return st.floats(min_value=-1, max_value=1e4, allow_nan=False).map(repr)
    return st.just("x")


@st.composite
def leaf_override(draw) -> str:
    path = draw(st.sampled_from(sorted(LEAVES)))
    value = draw(st.one_of(valid_like(LEAVES[path]), numbers(), texts(), lists()))
    return f"{path}={value}"


@st.composite
def group_override(draw) -> str:
    group = draw(st.sampled_from(GROUPS))
    option = draw(st.one_of(st.sampled_from(OPTIONS[group]), texts()))
    return f"{group}={option}"


@st.composite
def unknown_override(draw) -> str:
    prefix = draw(st.sampled_from(["", "+", "++", "~"]))
    section = draw(st.sampled_from(["", *GROUPS, "export.", "generation.", "host.", "hydra."]))
    key = draw(st.sampled_from(["max_stepz", "nope", "a.b.c", "1", "name", "lr", "__class__", "é"]))
    sep = "." if section and not section.endswith(".") else ""
    value = draw(st.one_of(st.just(""), numbers(), texts()))
    return f"{prefix}{section}{sep}{key}" + ("" if prefix == "~" and value == "" else f"={value}")


OVERRIDE = st.one_of(leaf_override(), leaf_override(), group_override(), unknown_override(), texts())
OVERRIDE_SETS = st.lists(OVERRIDE, min_size=1, max_size=4).filter(lambda xs: not any(x.startswith("-") for x in xs))


def _huge(override: str) -> bool:
    key, _, value = override.partition("=")
    if key.lstrip("+~") not in HANGS_ON_HUGE:
        return False
    with contextlib.suppress(ValueError, OverflowError):
        return abs(float(value)) >= HUGE
    return False


class Hang(Exception):
    pass


@contextlib.contextmanager
def watchdog(seconds: int):
    def fire(*_):
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def check_json(overrides: list[str], seconds: int = WATCHDOG_S) -> tuple[int, dict]:
    """`slmc check --json OVERRIDES` in-process; (exit code, the one JSON document it printed)."""
    out, err = io.StringIO(), io.StringIO()
    with watchdog(seconds), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["check", "--json", *overrides])
    return code, json.loads(out.getvalue())


def assert_outcome(overrides: list[str]) -> int:
    """The property every override set must satisfy; returns the exit code."""
    code, payload = check_json(overrides)
    assert code in (0, 2), (overrides, code)
    errors = [v for v in payload["violations"] if v["severity"] == "error"]
    if code == 0:
        assert payload["ok"] and not errors, overrides
        assert_renders(overrides)
        return code
    assert payload["ok"] is False and errors, (overrides, payload)
    for violation in errors:
        assert "rule crashed" not in violation["message"], (overrides, violation)
        assert names_a_path(violation, overrides), (overrides, violation)
        assert violation["message"].strip() and violation["fix"].strip(), (overrides, violation)
    return code


def names_a_path(violation: dict, overrides: list[str]) -> bool:
    """Paths given; or, for an override with no key at all (e.g. '=5'), the message quotes it."""
    if violation["paths"]:
        return all(p.strip() for p in violation["paths"])
    keyless = [o for o in overrides if not o.split("=", 1)[0].lstrip("+~").strip()]
    return any(f"override {o!r}" in violation["message"] for o in keyless)


def assert_renders(overrides: list[str]) -> None:
    """A config that passes the check plans and renders a train.py that parses, and a safe run folder name."""
    from slmc.pipeline import Checked, render
    from slmc.plan import make_plan

    cfg = load_config(overrides)
    name = run_name(cfg)
    assert "/" not in name and ".." not in name and name == Path(name).name
    files = render(Checked(cfg, (), make_plan(cfg, name), Path("/nonexistent") / name))
    ast.parse(files["train.py"])
    json.loads(files["plan.json"])


def fuzz_settings(examples: int):
    return settings(max_examples=examples, deadline=None, derandomize=examples < 1000, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@fuzz_settings(60)
@given(OVERRIDE_SETS)
def test_fuzzed_overrides_check_or_exit_2_naming_a_path(overrides):
    assume(not any(_huge(o) for o in overrides))
    count("config fuzz cases (default)")
    assert_outcome(overrides)


@pytest.mark.slow
@fuzz_settings(3000)
@given(OVERRIDE_SETS)
def test_fuzzed_overrides_long_run(overrides):
    assume(not any(_huge(o) for o in overrides))
    count("config fuzz cases (slow)")
    assert_outcome(overrides)


# Hand-picked cases: each once broke the property (fixed in compiler/load.py) or guards a class.
REGRESSIONS = [
    ["train=null"],                     # Hydra raised a bare ValueError: a traceback
    ["device=" + "x" * 300],            # ... or an OSError (file name too long)
    ["device=[[]]"], ["seed=1", "train=[a,b]"],  # ... or a TypeError / a list of options
    ["model.name=../../escaped"],       # the derived run folder escaped out_dir
    ["device.name=/abs/path"],          # ... or nested folders under it
    ["model.name="],                    # a run folder named '-scratch-...'
    ["run_name=../x"], ["run_name=/tmp/x"], ["run_name=a/b"], ["run_name=.."], ["run_name="],
    ["train.max_stepz=1"], ["+foo=1"], ["~train"], ["device=nope"], ["train.lr=nan"], ["seed=-5"],
    ["export.max_seq_len=9223372036854775807"], ["model.vocab_size=9223372036854775807"],
    ["train.betas=[1,2,3]"], ["model.hidden_size=0"], ["host.num_processes=0"],
    ["train.lr=${oc.env:SLMC_NO_SUCH_VAR}"], ["train.lr=${hydra:job.name}"], ["a=["],
]


@pytest.mark.parametrize("overrides", REGRESSIONS, ids=lambda o: " ".join(o)[:40])
def test_hostile_overrides_regressions(overrides):
    count("config fuzz cases (default)")
    assert assert_outcome(overrides) == 2


@pytest.mark.parametrize("overrides, path", [
    (["model.name=../../escaped"], "model.name"),
    (["device.name=/abs/path"], "device.name"),
    (["run_name=../x"], "run_name"),
    (["train.max_steps=abc"], "train.max_steps"),
    (["train.max_stepz=1"], "train.max_stepz"),
    (["device=nope"], "device"),
])
def test_the_error_names_the_offending_path(overrides, path):
    code, payload = check_json(overrides)
    assert code == 2
    assert path in payload["violations"][0]["paths"]


def test_cli_subprocess_never_prints_a_traceback(tmp_path):
    """The real entry point, cold, on a few hostile sets at once (check and compile --plan-only)."""
    from .conftest import run_slmc

    cases = [["train=null"], ["model.name=../../x"], ["train.lr=${oc.env:SLMC_NO_SUCH_VAR}"], ["a=["]]
    for overrides in cases:
        for command in (["check"], ["compile", "--plan-only", f"out_dir={tmp_path / 'out'}"]):
            proc = run_slmc(*command, *overrides, cwd=tmp_path, timeout=120)
            count("config fuzz cases (default)")
            assert proc.returncode == 2, (overrides, proc.stdout, proc.stderr)
            assert "Traceback" not in proc.stderr + proc.stdout and "slmc:" in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "x").exists()


# ----------------------------------------------------------------------------- known bugs
# Reported to the lead (files outside this suite's remit). strict=True: when the bug is
# fixed these tests XPASS and fail, so the marker and HANGS_ON_HUGE get removed.

@pytest.mark.parametrize("override", ["model.hidden_size=1000000007", "model.num_attention_heads=1000000007",
                                      "train.batch_size=1000000007"])
def test_known_bug_huge_numbers_do_not_hang_the_rules(override):
    code, payload = check_json([override], seconds=1)
    assert not any("rule crashed" in v["message"] for v in payload["violations"])


@pytest.mark.parametrize("override", ["train.lr=inf", "generation.temperature=inf", "model.rope_theta=inf",
                                      "device.memory_gb=inf", "export.parity_tolerance=inf"])
def test_known_bug_infinite_numbers_are_refused(override):
    code, payload = check_json([override])
    assert code == 2 and override.split("=")[0] in payload["violations"][0]["paths"]


def test_the_fuzz_reaches_every_leaf_and_group():
    assert HANGS_ON_HUGE <= set(LEAVES)  # a renamed field would silently widen the exclusion
    assert len(LEAVES) > 80 and all(OPTIONS[g] for g in GROUPS)
