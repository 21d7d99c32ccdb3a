"""No code injection through config values.

Every hostile string below is placed in every config field that reaches a generated
file. Python files must parse to the same syntax tree as with a harmless value (only
string constants differ) and give the value back exactly; shell scripts pass `bash -n`
and, run with a fake trtexec, hand the value over as one argument without executing
anything; YAML and JSON give the value back even to an unsafe YAML loader; Markdown
keeps it on one line. Templates render only in the strict sandbox, and run names or
config names cannot move the run folder out of out_dir.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml
from jinja2 import StrictUndefined, UndefinedError, meta
from jinja2.sandbox import SandboxedEnvironment

from slmc.errors import ConfigError
from slmc.load import load_config
from slmc.render import environment, render_template
from slmc.render_train import render_train_script

from .conftest import count, run_slmc

PWNED = "PWNED"
HOSTILE = [
    "", "a'b", 'a"b', "'''", '"""', "x'''\"\"\"y", "\\", "trailing\\", "\\'", '\\"', "\\n (backslash n)",
    "new\nline", "cr\rreturn", "crlf\r\n", "tab\t", "nul\x00byte", "\x1b[31mansi", "line\u2028sep", "para\u2029sep",
    "nel\x85", "\ufeffbom", "{{ 7*7 }}", "{% for x in range(3) %}x{% endfor %}", "{# comment #}", "{{ raw }}{% raw %}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}", "${oc.env:HOME}",
    f"__import__('os').system('touch {PWNED}')",
    f"'); __import__('os').system('touch {PWNED}'); ('",
    f'"""); __import__("os").system("touch {PWNED}"); ("""',
    f"\n__import__('os').system('touch {PWNED}')\n#",
    f"$(touch {PWNED})", f"`touch {PWNED}`", f"; touch {PWNED} #", f"' ; touch {PWNED} ; '", f'" ; touch {PWNED} ; "',
    "$HOME", "${HOME}", "*", "-rf", "--help",
    "```\nrm -rf /\n```", "# heading", "<script>alert(1)</script>", "| a | b |", "[x](javascript:alert(1))",
    "😀 ünï©ødé \u202eevil", "x" * 10000,
]
SHELL_SAFE = [s for s in HOSTILE if "\x00" not in s]  # a shell word (an argv item) cannot hold NUL


def ids(values):
    return [f"{i}:{v[:12]!r}" for i, v in enumerate(values)]


# ----------------------------------------------------------------------------- Python


class _Blank(ast.NodeTransformer):
    """Every string constant becomes '' (what may differ between two renders of one template)."""

    def visit_Constant(self, node: ast.Constant):
        return ast.Constant("") if isinstance(node.value, str) else node


def shape(source: str) -> str:
    return ast.dump(_Blank().visit(ast.parse(source)))


def split(text: str, start: str, end: str) -> tuple[str, str, str]:
    """(before, section, after): the section is where config values are placed."""
    a, b = text.index(start), text.index(end)
    return text[:a], text[a:b], text[b:]


def same_code(text: str, benign: str, start: str, end: str) -> bool:
    """Outside the value section the file is byte-identical to a harmless render; inside,
    only string constants differ (so the value cannot have become code or comments)."""
    before, section, after = split(text, start, end)
    b_before, b_section, b_after = split(benign, start, end)
    return before == b_before and after == b_after and shape(section) == shape(b_section)


TRAIN_SECTION = ("SEED = ", "# Plumbing")


def config_section(text: str) -> dict:
    """Execute train.py's CONFIG block (literals only) and return its names."""
    section = split(text, *TRAIN_SECTION)[1].rsplit("\n# ====", 1)[0]
    namespace: dict = {}
    exec(compile(section, "<config>", "exec"), namespace)
    return namespace


def with_values(cfg, *, path=None, teacher=None, modules=None):
    init = cfg.init
    if path is not None:
        init = init.model_copy(update={"path": path})
    if teacher is not None:
        init = init.model_copy(update={"distill": init.distill.model_copy(update={"teacher_path": teacher})})
    train = cfg.train
    if modules is not None:
        train = train.model_copy(update={"lora": train.lora.model_copy(update={"target_modules": modules})})
    return cfg.model_copy(update={"init": init, "train": train})


TRAIN_PY_FIELDS = {
    # field -> (base overrides, how to place the value, where it lands in CONFIG, what it becomes there)
    "init.path": (["train=finetune", "init=pretrained", "init.path=/p"],
                  lambda cfg, v: with_values(cfg, path=v), lambda ns: ns["INIT"]["path"],
                  lambda v: os.path.abspath(os.path.expanduser(v))),
    "init.distill.teacher_path": (["init=distill", "init.distill.teacher_path=/t"],
                                  lambda cfg, v: with_values(cfg, teacher=v), lambda ns: ns["DISTILL"]["teacher_path"],
                                  lambda v: os.path.abspath(os.path.expanduser(v))),
    "train.lora.target_modules": (["train=lora", "init=pretrained", "init.path=/p"],
                                  lambda cfg, v: with_values(cfg, modules=[v, "q_proj"]),
                                  lambda ns: ns["LORA"]["target_modules"], lambda v: [v, "q_proj"]),
}


@pytest.mark.parametrize("field", sorted(TRAIN_PY_FIELDS))
def test_train_py_keeps_every_hostile_value_a_literal(field, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base, place, read, expected = TRAIN_PY_FIELDS[field]
    cfg = load_config(base)
    benign = render_train_script(place(cfg, "harmless"))
    for value in HOSTILE:
        count("injection strings")
        if not value and field.endswith("path"):
            with pytest.raises(ConfigError, match=field):  # no folder named: refused, not rendered
                render_train_script(place(cfg, value))
            continue
        text = render_train_script(place(cfg, value))
        assert same_code(text, benign, *TRAIN_SECTION), f"{field}={value!r} changed the script's code"
        assert read(config_section(text)) == expected(value), field
    assert not (tmp_path / PWNED).exists()


# ----------------------------------------------------------------------------- YAML / JSON

STRING_FIELDS = [
    ("host", "name"), ("device", "name"), ("device", "description"), ("device", "isa"), ("model", "name"),
    ("init", "name"), ("init", "path"), ("train", "name"), ("compress", "name"), ("data", "name"),
    ("data", "jsonl_field"), ("data", "tokenizer"),
]


def hostile_everywhere(cfg, value: str):
    """Every free-text field of the config set to value (bypassing the loader, as a library caller could)."""
    sections = {}
    for section, key in STRING_FIELDS:
        current = sections.get(section, getattr(cfg, section))
        sections[section] = current.model_copy(update={key: value})
    sections["data"] = sections["data"].model_copy(update={"train_files": [value], "heldout_files": [value, "b"]})
    sections["init"] = sections["init"].model_copy(
        update={"distill": sections["init"].distill.model_copy(update={"teacher_path": value})})
    return cfg.model_copy(update=sections)


def assert_round_trips(cfg, value: str) -> None:
    from slmc.pipeline import Checked, render, resolved_config_yaml
    from slmc.plan import make_plan

    cfg = hostile_everywhere(cfg, value)
    text = resolved_config_yaml(cfg)
    data = cfg.model_dump(mode="json")
    assert yaml.safe_load(text) == data, value
    assert yaml.unsafe_load(text) == data, value  # no tag or anchor got in, even for a loader that would obey one
    files = render(Checked(cfg, (), make_plan(cfg, "run"), Path("/nonexistent/run")))
    assert json.loads(files["plan.json"])["external_inputs"][:3] == [value, value, "b"], value


def test_config_yaml_and_plan_json_give_every_value_back():
    cfg = load_config(["data=files", "data.train_files=[a]"])
    for value in HOSTILE:
        if "\x85" in value:
            continue  # the known bug below
        count("injection strings")
        assert_round_trips(cfg, value)


def test_config_yaml_keeps_a_nel_character():
    assert_round_trips(load_config(["data=files", "data.train_files=[a]"]), "nel\x85")


# ----------------------------------------------------------------------------- shell and build_engine.py


@pytest.fixture(scope="module")
def engine_contexts():
    """The real contexts build_engine.sh.j2 / build_engine.py.j2 get, captured from render_build_engine."""
    import slmc.export.trt_build_script as build_engine
    from slmc.export.trt_profile import trt_profile

    inputs = [{"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"]},
              {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "total_sequence"]},
              {"name": "position_ids", "dtype": "int64", "shape": ["batch", "sequence"]},
              {"name": "past_key_values.0.key", "dtype": "float16", "shape": ["batch", 2, "past_sequence", 16]},
              {"name": "past_key_values.0.value", "dtype": "float16", "shape": ["batch", 2, "past_sequence", 16]}]
    captured = {}

    def spy(name, context):
        captured[name] = dict(context)
        return render_template(name, context)

    original = build_engine.render_template
    build_engine.render_template = spy
    try:
        profile = trt_profile(inputs, max_seq_len=64, max_batch_size=1, opt_seq_len=None)
        build_engine.render_build_engine(profile=profile, precision="fp16", trt_version="10.3", workspace_mib=256)
    finally:
        build_engine.render_template = original
    return captured


FAKE_TRTEXEC = """#!/usr/bin/env bash
if [[ $# -eq 1 && $1 == --help ]]; then echo '&&&& RUNNING TensorRT.trtexec [TensorRT v100300]'; exit 0; fi
printf '%s\\0' "$@" > "$FAKE_ARGS"
printf engine > model.engine
"""


def test_build_engine_sh_hands_each_hostile_value_over_as_one_word(engine_contexts, tmp_path):
    """bash -n, then the script itself run with a fake trtexec: arguments arrive intact, nothing runs."""
    fake = tmp_path / "trtexec"
    fake.write_text(FAKE_TRTEXEC)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    base = engine_contexts["build_engine.sh.j2"]
    for i, value in enumerate(SHELL_SAFE):
        folder = tmp_path / f"b{i}"
        folder.mkdir()
        args = [value, *base["trtexec_args"], value]
        context = {**base, "trt_version": value, "precision": value, "trtexec_args": args}
        script = folder / "build_engine.sh"
        script.write_text(render_template("build_engine.sh.j2", context))
        count("injection strings")
        subprocess.run(["bash", "-n", str(script)], check=True, capture_output=True)
        env = {**os.environ, "TRTEXEC": str(fake), "FAKE_ARGS": str(folder / "args.bin"),
               "SLMC_ALLOW_TRT_VERSION_MISMATCH": "1"}
        proc = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, (value, proc.stderr)
        assert (folder / "args.bin").read_bytes().decode().split("\0")[:-1] == args, value
        assert not list(tmp_path.rglob(PWNED)) and not list(Path.cwd().glob(PWNED))


def test_build_engine_py_keeps_every_hostile_value_a_literal(engine_contexts):
    base = engine_contexts["build_engine.py.j2"]
    benign = render_template("build_engine.py.j2", base)
    section = ("PINNED_TRT_VERSION =", "\ndef check_version")
    for value in HOSTILE:
        profile = {f"{value}{i}": shapes for i, shapes in enumerate(base["profile"].values())}
        flags = [value] * len(base["builder_flags"])
        context = {**base, "trt_version": value, "precision": value, "onnx_file": value, "engine_file": value,
                   "timing_cache_file": value, "builder_flags": flags, "profile": profile}
        text = render_template("build_engine.py.j2", context)
        count("injection strings")
        assert same_code(text, benign, *section), value
        namespace: dict = {}
        exec(compile(split(text, *section)[1], "<constants>", "exec"), namespace)
        assert namespace["PINNED_TRT_VERSION"] == value and namespace["ENGINE_FILE"] == value
        assert namespace["PROFILE"] == profile and namespace["BUILDER_FLAGS"] == flags


def test_a_hostile_tensorrt_version_never_reaches_a_script(engine_contexts):
    """Upstream of the templates, render_build_engine pins only a major.minor it has operator tables for."""
    from slmc.export.trt_build_script import render_build_engine

    profile = engine_contexts["build_engine.py.j2"]["profile"]
    refused = 0
    for version in HOSTILE + ["10.3\n", " 10.3 ", "10.3.0.30; x", "10.3.$(x)", "10.3.0`x`"]:
        count("injection strings")
        try:
            scripts = render_build_engine(profile={k: [tuple(s) for s in v] for k, v in profile.items()},
                                          precision="fp16", trt_version=version, workspace_mib=256)
        except ConfigError:
            refused += 1
            continue
        assert re.search(r"^PINNED_TRT_VERSION=\d+\.\d+$", scripts["build_engine.sh"], re.M), version
    assert refused >= len(HOSTILE)


# ----------------------------------------------------------------------------- Markdown


def readme_manifest(**changes) -> dict:
    manifest = {
        "name": "run", "device": {"name": "cpu", "isa": "AVX2", "arch": "x86_64"},
        "runtime": {"name": "ort", "version": "1.20", "execution_provider": "CPUExecutionProvider"},
        "precision": "fp32",
        "model": {"architecture": "llama", "parameters": 1000},
        "limits": {"max_seq_len": 64, "max_batch_size": 1},
        "io": {"inputs": [{"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"]}],
               "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", "sequence", 8]}]},
        "kv_cache": {"layout": "bhsd", "num_layers": 1, "num_key_value_heads": 1, "head_dim": 8, "dtype": "float32"},
        "tokens": {"eos_token_ids": [2]},
        "metrics": {"heldout_perplexity": {"export": 1.5},
                    "parity": {"stage": "optimize", "precision": "fp32", "greedy": {"agree": 64, "tokens": 64},
                               "top1_agreement": 1.0, "max_abs_logit_diff": 1e-6, "note": None},
                    "export_parity": {"cases": {"prefill": 1e-6}, "greedy_identical": True}},
        "provenance": {"versions": {"slmc": "0.1.0"}, "config_sha256": "0" * 64, "seed": 0, "created": "now"},
    }
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        manifest[section][key] = value
    return manifest


README_FREE_TEXT = ["device__name", "device__isa", "runtime__version"]


def structure(lines: list[str]) -> list[str]:
    return [line for line in lines if line.lstrip().startswith(("```", "<", "#", "|", "-", "*", "["))]


def test_bundle_readme_keeps_hostile_text_on_its_line():
    """A value cannot open a code fence, heading, HTML block or table row in the consumer's README."""
    from slmc.render import markdown_text

    context = {"files": ["README.md", "model.onnx"], "draft": None, "max_draft_tokens": 4}
    benign = render_template("bundle_README.md.j2", {**context, "m": readme_manifest()}).splitlines()
    for value in HOSTILE:
        for field in README_FREE_TEXT:
            lines = render_template("bundle_README.md.j2",
                                    {**context, "m": readme_manifest(**{field: value})}).splitlines()
            count("injection strings")
            assert len(lines) == len(benign), (field, value)
            changed = [new for old, new in zip(benign, lines) if old != new]
            assert all(markdown_text(value) in line for line in changed), (field, value)
            # Fences, HTML, headings, table rows and list items are exactly the template's own.
            assert structure(lines) == structure(benign), (field, value)


def test_markdown_filter_flattens_and_escapes():
    from slmc.render import markdown_text

    assert markdown_text("a\nb\r\nc\u2028d\x00e") == "a b  c d e"
    assert markdown_text("```x```") == "\\`\\`\\`x\\`\\`\\`"
    assert markdown_text("<b>|[x]*\\") == "\\<b\\>\\|\\[x\\]\\*\\\\"
    assert markdown_text("jetson_orin_nano AVX-512, sm87") == "jetson_orin_nano AVX-512, sm87"


# ----------------------------------------------------------------------------- sandbox


def _templates() -> list[str]:
    from importlib import resources

    root = resources.files("slmc.templates")
    top = [p.name for p in root.iterdir() if p.name.endswith(".j2")]
    parts = [f"train/{p.name}" for p in root.joinpath("train").iterdir() if p.name.endswith(".j2")]
    return sorted(top + parts)


@pytest.fixture(scope="module")
def template_contexts(engine_contexts, tmp_path_factory):
    """Real contexts of the templates a compile renders (captured from a --plan-only compile)."""
    import slmc.render as render_module

    captured = dict(engine_contexts)
    captured["bundle_README.md.j2"] = {"files": ["README.md"], "m": readme_manifest(), "draft": None,
                                       "max_draft_tokens": 4}
    original = render_module.render_template

    def spy(name, context):
        captured[name] = dict(context)
        return original(name, context)

    from unittest import mock

    from slmc.pipeline import compile_config

    out = tmp_path_factory.mktemp("plan")
    with mock.patch("slmc.recipes.render_template", spy), \
            mock.patch.object(render_module, "render_template", spy):
        compile_config(load_config([f"out_dir={out}"]), plan_only=True)
    return captured


def test_every_template_renders_only_in_the_strict_sandbox():
    env = environment()
    assert isinstance(env, SandboxedEnvironment) and env.undefined is StrictUndefined and not env.autoescape
    assert _templates(), "no templates found"
    from importlib import resources

    for name in _templates():
        source = resources.files("slmc.templates").joinpath(name).read_text(encoding="utf-8")
        if not meta.find_undeclared_variables(env.parse(source)):  # plain text (a recipe part with no values)
            assert render_template(name, {}) == source
            continue
        with pytest.raises(UndefinedError):
            render_template(name, {})
        with pytest.raises(jinja2.exceptions.SecurityError):
            env.from_string("{{ x.__class__.__mro__ }}").render(x="")


def test_a_missing_value_is_an_error_in_every_template_never_blank(template_contexts):
    """Drop each name a template mentions from its real context: rendering fails naming it, or,
    when the name sits in a branch this context does not take, the output does not change."""
    from importlib import resources

    assert {"train/header.py.j2", "train/loop.py.j2", "build_engine.sh.j2", "build_engine.py.j2", "bundle_README.md.j2"} <= set(template_contexts)
    failed = 0
    for name, context in sorted(template_contexts.items()):
        source = resources.files("slmc.templates").joinpath(name).read_text(encoding="utf-8")
        full = render_template(name, context)
        for key in sorted(meta.find_undeclared_variables(environment().parse(source))):
            try:
                text = render_template(name, {k: v for k, v in context.items() if k != key})
            except UndefinedError as exc:
                assert key in str(exc)
                failed += 1
                continue
            assert text == full, f"{name} rendered without {key!r}: a missing value became blank"
    assert failed >= 20


def test_only_the_renderer_builds_a_jinja_environment():
    root = Path(__file__).resolve().parents[2] / "compiler"
    users = sorted(str(p.relative_to(root)) for p in root.rglob("*.py")
                   if re.search(r"^\s*(from|import) jinja2", p.read_text(encoding="utf-8"), re.M))
    assert users == ["render.py"]


# ----------------------------------------------------------------------------- run folder


ESCAPES = [
    ("run_name", "../escaped"), ("run_name", "/tmp/escaped-abs"), ("run_name", "a/b"), ("run_name", ".."),
    ("run_name", "."), ("run_name", "~"), ("run_name", "-rf"), ("run_name", "x" * 200), ("run_name", "é"),
    ("model.name", "../../escaped"), ("device.name", "/tmp/escaped-abs"), ("train.name", ".."),
    ("compress.name", "a/../../b"), ("runtime.name", "../x"),
]


@pytest.mark.parametrize("key, value", ESCAPES, ids=[f"{k}={v[:14]}" for k, v in ESCAPES])
def test_config_names_cannot_move_the_run_folder(key, value, tmp_path, snapshot):
    """In-process --plan-only compile: refused with the path named; nothing written anywhere."""
    from slmc.cli import main

    out = tmp_path / "deep" / "out"
    before = snapshot(tmp_path)
    count("injection strings")
    code = main(["compile", "--plan-only", f"out_dir={out}", f"{key}='{value}'"])
    assert code == 2
    assert snapshot(tmp_path) == before and not out.exists()
    assert not Path("/tmp/escaped-abs").exists()


def test_a_nul_byte_in_an_output_path_is_refused_not_a_crash(tmp_path):
    from slmc.errors import OutputPathError
    from slmc.writer import prepare_run_dir, write_text

    count("injection strings", 2)
    with pytest.raises(OutputPathError, match="NUL"):
        prepare_run_dir(tmp_path / "out\x00dir" / "run")
    with pytest.raises(OutputPathError, match="NUL"):
        write_text(tmp_path, "a\x00b.txt", "x")
    assert list(tmp_path.iterdir()) == []


def hydra_quote(value: str) -> str:
    """A Hydra override value that composes to exactly `value` (no interpolation inside).

    In Hydra's quoted strings a backslash is an escape only before a quote or at the end.
    """
    doubled = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value)
    return "'" + doubled.replace("'", "\\'") + "'"


def test_hydra_quoting_gives_every_value_back():
    """What a user types on the command line reaches the config exactly (interpolations aside)."""
    from slmc.load import compose_raw

    keys = ["host.name", "device.description", "device.isa", "data.jsonl_field", "init.path", "data.tokenizer"]
    values = [v for v in HOSTILE if "${" not in v and "\x00" not in v]
    for first in range(0, len(values), len(keys)):
        chunk = values[first:first + len(keys)]
        raw = compose_raw([f"{k}={hydra_quote(v)}" for k, v in zip(keys, chunk)])
        for key, value in zip(keys, chunk):
            section, name = key.split(".")
            assert raw[section][name] == value, (key, value)


def test_cli_hostile_checkpoint_path_reaches_train_py_as_a_literal(tmp_path):
    """Through the real command line and Hydra's quoting: a checkpoint folder with a hostile name."""
    from tests.fixtures.bundle import build_checkpoint, build_tokenizer

    folder = tmp_path / f"ck '''\"\"\" $(touch {PWNED}) `touch {PWNED}` {{{{7*7}}}} \\ \n end"
    folder.mkdir()
    tokenizer = build_tokenizer(vocab_size=300)
    build_checkpoint(folder, tokenizer.get_vocab_size(), 160)
    tokenizer.save(str(folder / "tokenizer.json"))
    quoted = hydra_quote(str(folder))
    out = tmp_path / "out"
    proc = run_slmc("compile", "--plan-only", "init=pretrained", "train=finetune", f"init.path={quoted}",
                    "export.max_seq_len=128", "generation.max_new_tokens=32", f"out_dir={out}", cwd=tmp_path)
    count("injection strings")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run,) = out.iterdir()
    text = (run / "train.py").read_text(encoding="utf-8")
    assert config_section(text)["INIT"]["path"] == str(folder)
    assert yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))["init"]["path"] == str(folder)
    assert str(folder) in json.loads((run / "plan.json").read_text())["external_inputs"]
    assert not list(tmp_path.rglob(PWNED))
    shutil.rmtree(folder)
