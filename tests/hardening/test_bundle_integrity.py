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
import re
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slmc.cli import main as slmc_main
from slmc.runtime import BundleError, IncompatibleBundle, SlmcRuntimeError, load_bundle, verify_bundle
from slmc.runtime.manifest import MANIFEST_NAME

from tests.fixtures.bundle import write_manifest

from .conftest import child_env, count


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
        with pytest.raises(BundleError, match=re.escape(name)) as caught:
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


# ----------------------------------------------------------------------------- links, FIFOs, devices (issue 15)


def verify_in_child(bundle: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """`python -m slmc.runtime verify BUNDLE` in a child: a read that blocks (a FIFO) or never
    ends (/dev/zero) fails the test by its timeout instead of hanging the suite."""
    return subprocess.run([sys.executable, "-m", "slmc.runtime", "verify", str(bundle), *args], capture_output=True,
                          text=True, timeout=timeout, env=child_env())


def assert_one_line_refusal(proc: subprocess.CompletedProcess, text: str) -> None:
    assert proc.returncode == 2 and text in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def outside_fifo(folder: Path) -> Path:
    """A FIFO outside the bundle: opening it for reading blocks until a writer comes, so
    reaching it through a link proves the link was followed."""
    fifo = folder / "outside.fifo"
    os.mkfifo(fifo)
    return fifo


def test_a_manifest_that_is_a_fifo_is_refused_without_blocking(bundle_copy, capsys):
    manifest = bundle_copy / MANIFEST_NAME
    manifest.unlink()
    os.mkfifo(manifest)
    count("tamper cases")
    assert_one_line_refusal(verify_in_child(bundle_copy), "manifest.json: a FIFO, not a regular file")
    assert_refused(bundle_copy, "manifest.json: a FIFO, not a regular file", capsys)


@pytest.mark.parametrize("target", ["/dev/zero", "/etc/passwd", "outside-copy", "outside-fifo"])
def test_a_manifest_that_is_a_link_is_refused_before_anything_is_read(bundle_copy, capsys, target):
    """A link to /dev/zero once grew memory without end, one to /etc/passwd was opened; a
    link to an exact copy of the real manifest is refused too: only the link is wrong."""
    manifest = bundle_copy / MANIFEST_NAME
    if target == "outside-copy":
        target = bundle_copy.parent / "manifest-copy.json"
        shutil.copyfile(manifest, target)
    elif target == "outside-fifo":
        target = outside_fifo(bundle_copy.parent)
    elif not Path(target).exists():
        pytest.skip(f"{target} does not exist here")
    manifest.unlink()
    os.symlink(target, manifest)
    count("tamper cases")
    assert_one_line_refusal(verify_in_child(bundle_copy, "--allow-foreign"), "manifest.json: a symbolic link")
    assert_refused(bundle_copy, "manifest.json: a symbolic link, not a regular file", capsys,
                   commands=target == "/dev/zero")


def test_a_huge_manifest_is_refused_by_its_size_alone(bundle_copy):
    """A sparse 9 GiB manifest.json: refused from its size, before a byte is read."""
    with open(bundle_copy / MANIFEST_NAME, "r+b") as handle:
        handle.truncate(9 * 1024**3)
    count("tamper cases")
    proc = verify_in_child(bundle_copy, timeout=30)
    assert_one_line_refusal(proc, "manifest.json: too large")


def _make_socket(path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
    finally:
        sock.close()


def _make_device(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers


SPECIAL = {
    "FIFO": os.mkfifo,
    "socket": _make_socket,
    "character device": _make_device,
    "symbolic link": lambda path: os.symlink(path.parent.parent, path),  # a link to a folder
}


@pytest.mark.parametrize("name", ["x", "sub/deeper/x", "model.onnx"], ids=["unlisted", "nested", "listed"])
@pytest.mark.parametrize("kind", sorted(SPECIAL))
def test_fifos_sockets_devices_and_links_anywhere_are_refused(bundle_copy, capsys, kind, name):
    """`mkfifo bundle/x` once verified as ok: nothing but regular files and folders may be in a
    bundle, listed in the hashes or not, at any depth."""
    path = bundle_copy / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    if kind == "socket" and len(str(path)) > 100:
        pytest.skip("AF_UNIX socket paths are limited to ~104 bytes")
    try:
        SPECIAL[kind](path)
    except PermissionError:
        pytest.skip(f"this user may not create a {kind}")
    count("tamper cases")
    assert_refused(bundle_copy, f"not allowed in a bundle: {name} ({kind})", capsys, commands=name == "x")
    assert_one_line_refusal(verify_in_child(bundle_copy), f"{name} ({kind})")


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
    assert "needs a newer onnxruntime" in caught.value.fix and "upgrade onnxruntime" in caught.value.fix
    code, err = slmc(capsys, "run", str(bundle_copy), "--prompt", "ka")
    assert code == 2 and "cannot load the model" in err


def repackaged_model(bundle: Path, rewrite_manifest, edit) -> None:
    """Edit model.onnx with the onnx library and re-hash: an intact bundle whose graph is hostile."""
    import onnx

    path = bundle / "model.onnx"
    model = onnx.load(str(path))
    edit(model)
    onnx.save(model, str(path))
    rewrite_manifest(bundle, lambda m: None)


def point_weights_at(location: str):
    """An edit: the largest initializer's bytes are to be read from `location` (ONNX external data)."""
    import onnx

    def edit(model) -> None:
        tensor = max(model.graph.initializer, key=lambda t: len(t.raw_data))
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", "0"), ("length", "64")):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value

    return edit


MISLEADING = "re-export the model with an onnxruntime version"  # the fix every load failure once got


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/hostname", "sub/../../outside.bin"])
def test_weights_outside_the_bundle_are_refused_with_a_fix_for_that(bundle_copy, rewrite_manifest, capsys, location):
    (bundle_copy.parent / "outside.bin").write_bytes(b"\x00" * 4096)
    repackaged_model(bundle_copy, rewrite_manifest, point_weights_at(location))
    count("tamper cases")
    with pytest.raises(BundleError, match="cannot load the model") as caught:
        load_bundle(bundle_copy, threads=1)
    assert "outside the bundle folder" in caught.value.fix and "do not use this bundle" in caught.value.fix
    code, err = slmc(capsys, "run", str(bundle_copy), "--prompt", "ka", "--threads", "1")
    assert code == 2 and "external-data path" in err and MISLEADING not in err and "newer" not in err
    assert err.count("\n") == 1


def test_a_custom_operator_is_refused_with_a_fix_for_custom_operators(bundle_copy, rewrite_manifest, capsys):
    from onnx import helper

    def edit(model) -> None:
        model.graph.node[0].domain, model.graph.node[0].op_type = "com.example.evil", "Steal"
        model.opset_import.append(helper.make_opsetid("com.example.evil", 1))

    repackaged_model(bundle_copy, rewrite_manifest, edit)
    count("tamper cases")
    code, err = slmc(capsys, "run", str(bundle_copy), "--prompt", "ka", "--threads", "1")
    assert code == 2 and "custom operator com.example.evil:Steal" in err
    assert MISLEADING not in err and "newer" not in err and err.count("\n") == 1


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
