"""Bundle integrity: a tampered, incomplete or foreign bundle is refused, naming the file.

Systematic over the fixture bundle (tests/fixtures/bundle.py): a flipped byte at several
places in every hashed file, every file deleted, every kind of unexpected file a loader
could pick up, every malformed schema_version, through `verify_bundle` and through the
`slmc verify` / `slmc run` commands, with and without --allow-foreign (which overrides
compatibility, never integrity). A bundle for another runtime, machine or ORT version is
refused with the reason. Forged manifests (edited and re-hashed) never crash the runtime.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slmc.cli import main as slmc_main
from slmc.runtime import BundleError, IncompatibleBundle, SlmcRuntimeError, load_bundle, verify_bundle
from slmc.runtime.manifest import MANIFEST_NAME

from tests.fixtures.bundle import write_manifest

from .conftest import count


def hashed_files(bundle: Path) -> list[str]:
    return sorted(json.loads((bundle / MANIFEST_NAME).read_text())["hashes"])


def flip_positions(size: int, seed: int, extra: int = 3) -> list[int]:
    """First, middle and last byte, plus a few seeded random ones."""
    rng = random.Random(seed)
    return sorted({0, size // 2, size - 1, *(rng.randrange(size) for _ in range(extra))})


def slmc(capsys, *args: str) -> tuple[int, str]:
    """`slmc ARGS` in-process through the compiler's entry point; (exit code, stderr)."""
    capsys.readouterr()
    code = slmc_main(list(args))
    return code, capsys.readouterr().err


def assert_refused(bundle: Path, name: str, capsys, *, commands: bool = True) -> None:
    """verify_bundle, allow_foreign or not, and (optionally) `slmc verify` and `slmc run` refuse naming `name`."""
    for allow_foreign in (False, True):
        with pytest.raises(BundleError, match=name.replace(".", r"\.")) as caught:
            verify_bundle(bundle, allow_foreign=allow_foreign)
        assert not isinstance(caught.value, IncompatibleBundle)
    if commands:
        for argv in (["verify", str(bundle)], ["run", str(bundle), "--prompt", "ka", "--max-new-tokens", "1"],
                     ["run", str(bundle), "--prompt", "ka", "--allow-foreign"]):
            code, err = slmc(capsys, *argv)
            assert code == 2 and name in err and err.startswith("error: ") and "Traceback" not in err, (argv, err)


# ----------------------------------------------------------------------------- flipped bytes


def test_a_flipped_byte_anywhere_in_any_hashed_file_is_refused_naming_it(bundle_copy, capsys):
    files = hashed_files(bundle_copy)
    assert {"model.onnx", "tokenizer.json", "README.md"} <= set(files)
    for index, name in enumerate(files):
        path = bundle_copy / name
        original = path.read_bytes()
        for n, position in enumerate(flip_positions(len(original), seed=index)):
            for mask in (0x01, 0x80):
                data = bytearray(original)
                data[position] ^= mask
                path.write_bytes(bytes(data))
                count("tamper cases")
                assert_refused(bundle_copy, f"{name}: sha256 does not match", capsys, commands=n == 0 and mask == 1)
        path.write_bytes(original)
    verify_bundle(bundle_copy)  # restored: the refusals came from the flips alone


def test_a_truncated_emptied_or_grown_file_is_refused(bundle_copy, capsys):
    for name in hashed_files(bundle_copy):
        path = bundle_copy / name
        original = path.read_bytes()
        for changed in (original[:-1], b"", original + b"\n", original + b"\x00" * 4096):
            path.write_bytes(changed)
            count("tamper cases")
            assert_refused(bundle_copy, f"{name}: sha256 does not match", capsys, commands=False)
        path.write_bytes(original)


def manifest_flips(bundle: Path, positions: list[int]):
    """(position, outcome) for a flip of each position of manifest.json: 'refused' or 'accepted'."""
    path = bundle / MANIFEST_NAME
    original = path.read_bytes()
    for position in positions:
        data = bytearray(original)
        data[position] ^= 0x01
        path.write_bytes(bytes(data))
        count("tamper cases")
        try:
            verify_bundle(bundle, allow_foreign=True)
            yield position, "accepted"
        except BundleError as exc:
            assert MANIFEST_NAME in str(exc) or "sha256" in str(exc) or "hashes" in str(exc), str(exc)
            yield position, "refused"
    path.write_bytes(original)


def test_flipped_bytes_in_the_manifest_are_all_refused(bundle_copy):
    """Never a crash, never accepted: flips in structure, keys and types break the JSON or the
    schema; a flip inside a plain value (a digit of a limit, a letter of the name) breaks
    manifest_sha256, the manifest's checksum of itself."""
    size = (bundle_copy / MANIFEST_NAME).stat().st_size
    outcomes = dict(manifest_flips(bundle_copy, flip_positions(size, seed=7, extra=60)))
    assert set(outcomes.values()) == {"refused"}, sorted(p for p, o in outcomes.items() if o == "accepted")


@pytest.mark.slow
def test_every_byte_of_the_manifest_flipped(bundle_copy):
    size = (bundle_copy / MANIFEST_NAME).stat().st_size
    outcomes = dict(manifest_flips(bundle_copy, list(range(size))))
    accepted = sorted(p for p, o in outcomes.items() if o == "accepted")
    print(f"manifest.json: {len(accepted)} of {size} single-byte flips go unnoticed")
    assert len(outcomes) == size and accepted == []


@pytest.mark.parametrize("old, new", [('"max_seq_len": 160', '"max_seq_len": 960'),
                                      ('"eos_token_ids": [\n      2', '"eos_token_ids": [\n      3'),
                                      ('"max_new_tokens": 16', '"max_new_tokens": 17'),
                                      ('"name": "tiny"', '"name": "tinz"'),
                                      ('"metrics": {}', '"metrics": {"x": 1}')])
def test_a_changed_manifest_value_is_refused_naming_the_manifest(bundle_copy, capsys, old, new):
    """Values the schema cannot judge (a limit, an eos id, a default, free-form metrics) are
    covered by manifest_sha256: refused, allow_foreign or not, by verify and run alike."""
    path = bundle_copy / MANIFEST_NAME
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    count("tamper cases")
    assert_refused(bundle_copy, f"manifest_sha256 does not match the content of {MANIFEST_NAME}", capsys,
                   commands=old.startswith('"max_seq_len"'))


# ----------------------------------------------------------------------------- deleted and unexpected files


def test_every_deleted_file_is_refused_naming_it(bundle_copy, capsys):
    for name in hashed_files(bundle_copy):
        original = (bundle_copy / name).read_bytes()
        (bundle_copy / name).unlink()
        count("tamper cases")
        assert_refused(bundle_copy, f"{name}: listed in hashes but missing", capsys)
        (bundle_copy / name).write_bytes(original)
    shutil.move(bundle_copy / MANIFEST_NAME, bundle_copy.parent / "saved.json")
    count("tamper cases")
    assert_refused(bundle_copy, "manifest.json is missing", capsys)


# Files some loader would pick up if they appeared: ORT's external data, tokenizer side files
# transformers/ORT GenAI read, a TensorRT engine in an ORT bundle, Python and native code.
LOADABLE = [
    "model.onnx.data", "model.onnx_data", "model.data", "genai_config.json", "added_tokens.json",
    "special_tokens_map.json", "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja",
    "model.engine", "timing.cache", "sub/model.onnx", "libcustom_ops.so", "custom_ops.dll",
    "sitecustomize.py", "usercustomize.py", "x.pth", "__init__.py", "manifest.json.bak", ".hidden",
    "MANIFEST.JSON", "model.onnx ", "é.onnx",
]


def test_every_unexpected_loadable_file_is_refused_naming_it(bundle_copy, capsys):
    for name in LOADABLE:
        path = bundle_copy / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"\x00payload")
        count("tamper cases")
        assert_refused(bundle_copy, f"{name}: unexpected file", capsys, commands=name in LOADABLE[:3])
        path.unlink()
    verify_bundle(bundle_copy)


def test_links_and_folders_in_place_of_files_are_refused(bundle_copy, capsys):
    model = bundle_copy / "model.onnx"
    original = model.read_bytes()
    outside = bundle_copy.parent / "model-outside.onnx"
    outside.write_bytes(original)  # identical bytes: only the link itself is wrong
    model.unlink()
    os.symlink(outside, model)
    count("tamper cases")
    with pytest.raises(BundleError, match="symbolic links"):
        verify_bundle(bundle_copy, allow_foreign=True)
    model.unlink()
    model.mkdir()
    count("tamper cases")
    assert_refused(bundle_copy, "model.onnx: listed in hashes but missing", capsys, commands=False)
    model.rmdir()
    model.write_bytes(original)
    (bundle_copy / "empty-folder").mkdir()  # holds nothing a loader could read: ignored
    verify_bundle(bundle_copy)


# ----------------------------------------------------------------------------- schema version and manifest text


SCHEMA_VERSIONS = [0, 2, -1, 10**100, "1", 1.5, None, [], {}, "one", 1.0, True]


@pytest.mark.parametrize("version", SCHEMA_VERSIONS, ids=repr)
def test_any_other_schema_version_is_refused_naming_it(bundle_copy, capsys, version):
    path = bundle_copy / MANIFEST_NAME
    data = json.loads(path.read_text())
    data["schema_version"] = version
    path.write_text(json.dumps(data))
    count("tamper cases")
    assert_refused(bundle_copy, "schema_version", capsys, commands=version == 2)


def test_a_missing_schema_version_or_format_is_refused(bundle_copy, capsys):
    path = bundle_copy / MANIFEST_NAME
    original = json.loads(path.read_text())
    for key, value in (("schema_version", None), ("format", None), ("format", "slmc-bundle-2")):
        data = dict(original)
        if value is None:
            del data[key]
        else:
            data[key] = value
        path.write_text(json.dumps(data))
        count("tamper cases")
        assert_refused(bundle_copy, key if key == "format" else "schema_version", capsys, commands=False)


@pytest.mark.parametrize("text", [b"", b"null", b"[]", b"\xff\xfe{}", b"{" * 100_000, b"[" * 200_000 + b"]" * 200_000,
                                  b'{"schema_version": 1e999}', b'{"schema_version": NaN}', b"\x00" * 64],
                         ids=["empty", "null", "list", "utf16", "open-braces", "deep", "inf", "nan", "nul"])
def test_unreadable_manifests_are_refused_without_a_traceback(bundle_copy, capsys, text):
    (bundle_copy / MANIFEST_NAME).write_bytes(text)
    count("tamper cases")
    assert_refused(bundle_copy, MANIFEST_NAME, capsys, commands=False)
    code, err = slmc(capsys, "verify", str(bundle_copy))
    assert code == 2 and "Traceback" not in err


# ----------------------------------------------------------------------------- foreign bundles

FOREIGN = {
    "tensorrt": (lambda m: m["runtime"].update(name="tensorrt"), "build the engine on the device"),
    "arch": (lambda m: m["device"].update(arch="riscv64"), "targets arch riscv64"),
    "onnxruntime": (lambda m: m["runtime"].update(min_onnxruntime="99.0"), "older than runtime.min_onnxruntime 99.0"),
    "provider": (lambda m: m["runtime"].update(execution_provider="NoSuchExecutionProvider"),
                 "NoSuchExecutionProvider is not available"),
}


@pytest.mark.parametrize("kind", sorted(FOREIGN))
def test_a_foreign_bundle_is_refused_with_the_reason_unless_overridden(bundle_copy, rewrite_manifest, capsys, kind):
    edit, reason = FOREIGN[kind]
    rewrite_manifest(bundle_copy, edit)  # a legitimate bundle, compiled for somewhere else
    count("tamper cases")
    with pytest.raises(IncompatibleBundle, match=reason):
        verify_bundle(bundle_copy)
    for argv in (["verify", str(bundle_copy)], ["run", str(bundle_copy), "--prompt", "ka", "--max-new-tokens", "2"]):
        code, err = slmc(capsys, *argv)
        assert code == 2 and reason in err and "--allow-foreign" in err, (argv, err)
    code, _ = slmc(capsys, "verify", str(bundle_copy), "--allow-foreign")
    assert code == 0
    code, _ = slmc(capsys, "run", str(bundle_copy), "--prompt", "ka", "--max-new-tokens", "2", "--allow-foreign",
                   "--threads", "1")
    assert code == 0


def test_a_model_for_a_newer_onnxruntime_is_refused_when_loaded(bundle_copy, rewrite_manifest, capsys):
    """An opset this ONNX Runtime does not implement: a BundleError naming the model, not a crash."""
    import onnx

    path = bundle_copy / "model.onnx"
    model = onnx.load(str(path))
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = 99
    onnx.save(model, str(path))
    rewrite_manifest(bundle_copy, lambda m: None)  # re-hashed: intact, just too new
    count("tamper cases")
    with pytest.raises(BundleError, match="ONNX Runtime cannot load the model") as caught:
        load_bundle(bundle_copy, threads=1)
    assert "model.onnx" in str(caught.value)
    code, err = slmc(capsys, "run", str(bundle_copy), "--prompt", "ka")
    assert code == 2 and "cannot load the model" in err


# ----------------------------------------------------------------------------- forged manifests


def leaf_paths(data, prefix=()):
    if isinstance(data, dict):
        for key, value in data.items():
            yield from leaf_paths(value, (*prefix, key))
    elif isinstance(data, list) and data and not isinstance(data[0], dict):
        yield prefix
        yield from ((*prefix, i) for i in range(len(data)))
    else:
        yield prefix


HOSTILE_VALUES = st.one_of(
    st.sampled_from([None, True, False, 0, -1, 1, 2**63, -(2**63), 1e308, float("nan"), float("inf"), 0.5, "",
                     "x", "{layer}", "{0}", "{x}", "{layer.__class__}", "../model.onnx", "/etc/passwd", [], [None],
                     ["a"], {}, {"a": 1}, "model.onnx", "float64", "int4"]),
    st.integers(), st.text(max_size=12),
)


@st.composite
def forgeries(draw, manifest: dict):
    paths = [p for p in leaf_paths(manifest) if p and p[0] not in ("hashes", "schema_version", "format")]
    edits = draw(st.lists(st.tuples(st.sampled_from(paths), HOSTILE_VALUES), min_size=1, max_size=3))
    return edits


def apply(manifest: dict, edits) -> dict:
    data = json.loads(json.dumps(manifest))
    for path, value in edits:
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return data


def assert_forgery_never_crashes(bundle: Path, pristine: dict, edits) -> None:
    """A manifest edited and re-hashed (a forged bundle): loading and generating either work or
    raise the runtime's own error; any other exception is a crash."""
    forged = apply(pristine, edits)
    forged.pop("hashes", None)
    write_manifest(bundle, forged)
    count("tamper cases")
    try:
        loaded = load_bundle(bundle, allow_foreign=True, threads=1)
        loaded.generate(["ka", ""], max_new_tokens=2)
    except SlmcRuntimeError:
        pass


@pytest.fixture
def forgery_bundle(bundle_dir, tmp_path):
    folder = Path(shutil.copytree(bundle_dir, tmp_path / "forged"))
    return folder, json.loads((folder / MANIFEST_NAME).read_text())


FORGED = [  # each once crashed the runtime with a non-runtime exception (fixed in runtime/manifest.py, verify.py)
    [(("kv_cache", "num_key_value_heads"), -1)], [(("kv_cache", "num_key_value_heads"), 2**63)],
    [(("kv_cache", "num_layers"), 2**62)], [(("kv_cache", "past_key"), "{0}")], [(("kv_cache", "past_key"), "{x}")],
    [(("kv_cache", "past_value"), "{layer.__class__}")], [(("tokens", "eos_token_ids"), ["a"])],
    [(("tokens", "eos_token_ids"), [None])], [(("tokens", "pad_token_id"), -5)], [(("limits", "max_seq_len"), 1)],
    [(("limits", "max_batch_size"), 0)], [(("files", "extra"), [])], [(("files", "extra"), {"a": 1})],
]


@pytest.mark.parametrize("edits", FORGED, ids=lambda e: f"{'.'.join(e[0][0])}={e[0][1]!r}"[:40])
def test_forged_manifest_regressions_are_refused(forgery_bundle, edits):
    folder, pristine = forgery_bundle
    forged = apply(pristine, edits)
    forged.pop("hashes")
    write_manifest(folder, forged)
    count("tamper cases")
    with pytest.raises(BundleError, match=".".join(edits[0][0][:1])):
        load_bundle(folder, allow_foreign=True, threads=1)


def _forgery_test(examples: int):
    def run(forgery_bundle):
        folder, pristine = forgery_bundle

        @settings(max_examples=examples, deadline=None, database=None, derandomize=examples < 200,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
        @given(forgeries(pristine))
        def check(edits):
            assert_forgery_never_crashes(folder, pristine, edits)

        check()

    return run


test_forged_manifests_never_crash_the_runtime = _forgery_test(40)
test_forged_manifests_long_run = pytest.mark.slow(_forgery_test(600))
