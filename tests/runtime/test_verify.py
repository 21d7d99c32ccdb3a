"""Integrity (never overridable) and compatibility (allow_foreign) checks of a bundle."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from slmc.runtime import BundleError, GenerationWarning, IncompatibleBundle, load_bundle, verify_bundle
from slmc.runtime.manifest import (
    CHECKSUM_KEY,
    MANIFEST_NAME,
    hash_folder,
    manifest_checksum,
    manifest_json,
    sha256_file,
    with_hashes,
)
from slmc.runtime.verify import model_load_fix, normalize_arch, version_tuple

BUNDLE_FILES = ["model.onnx", "tokenizer.json", "tokenizer_config.json", "README.md"]


def test_pristine_bundle_verifies(bundle_dir):
    manifest = verify_bundle(bundle_dir)
    assert manifest.name == "tiny"
    assert sorted(manifest.data["hashes"]) == sorted(BUNDLE_FILES)
    assert manifest.kv.past[:2] == ("past_key_values.0.key", "past_key_values.0.value")


@pytest.mark.parametrize("name", BUNDLE_FILES)
def test_one_flipped_byte_in_any_file_is_refused_naming_it(bundle_copy, name):
    path = bundle_copy / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"{name}: sha256 does not match"):
        verify_bundle(bundle_copy)
    with pytest.raises(BundleError, match=name):
        verify_bundle(bundle_copy, allow_foreign=True)  # integrity is never overridable


def test_deleted_file_is_refused_naming_it(bundle_copy):
    (bundle_copy / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="tokenizer.json: listed in hashes but missing"):
        verify_bundle(bundle_copy)


@pytest.mark.parametrize("name", ["extra.onnx", "sub/model.onnx.data", ".hidden"])
def test_unexpected_file_is_refused_naming_it(bundle_copy, name):
    (bundle_copy / name).parent.mkdir(exist_ok=True)
    (bundle_copy / name).write_bytes(b"x")
    with pytest.raises(BundleError, match=f"{name}: unexpected file"):
        verify_bundle(bundle_copy)


def test_symlink_is_refused(bundle_copy):
    os.symlink(bundle_copy / "README.md", bundle_copy / "link.md")
    with pytest.raises(BundleError, match="symbolic links"):
        verify_bundle(bundle_copy)


def test_all_problems_are_reported_at_once(bundle_copy):
    (bundle_copy / "README.md").write_text("changed")
    (bundle_copy / "notes.txt").write_text("new")
    with pytest.raises(BundleError) as caught:
        verify_bundle(bundle_copy)
    assert "README.md" in str(caught.value) and "notes.txt" in str(caught.value)


def edit(folder, change, rehash=False):
    """Change the manifest as a re-packaging would: its own checksum is stamped again (and,
    with rehash, the file hashes too), so only the change itself is under test."""
    data = json.loads((folder / MANIFEST_NAME).read_text())
    change(data)
    if rehash:
        data = with_hashes(folder, data)
    (folder / MANIFEST_NAME).write_text(manifest_json(data))


def test_unknown_schema_version_is_refused(bundle_copy):
    edit(bundle_copy, lambda m: m.update(schema_version=2))
    with pytest.raises(BundleError, match="newer than this runtime: its manifest has schema_version 2"):
        verify_bundle(bundle_copy)


@pytest.mark.parametrize("path, value, message", [
    (("kv_cache", "num_layers"), None, "missing key 'kv_cache.num_layers'"),
    (("limits", "max_seq_len"), "160", "'limits.max_seq_len' is '160', expected int"),
    (("runtime", "name"), "onnx", "'runtime.name' is 'onnx', expected one of"),
    (("generation", "do_sample"), 1, "'generation.do_sample' is 1, expected bool"),
    (("model", "vocab_size"), True, "'model.vocab_size' is True, expected int"),
])
def test_schema_problems_name_the_key(bundle_copy, path, value, message):
    def change(m):
        section, key = path
        if value is None:
            del m[section][key]
        else:
            m[section][key] = value

    edit(bundle_copy, change)
    with pytest.raises(BundleError, match=message.replace("(", r"\(").replace(")", r"\)")):
        verify_bundle(bundle_copy)


def test_unreadable_manifest_and_missing_folder(bundle_copy, tmp_path):
    (bundle_copy / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(BundleError, match="unreadable manifest"):
        verify_bundle(bundle_copy)
    (bundle_copy / MANIFEST_NAME).unlink()
    with pytest.raises(BundleError, match="manifest.json is missing"):
        verify_bundle(bundle_copy)
    with pytest.raises(BundleError, match="not a bundle folder"):
        verify_bundle(tmp_path / "nowhere")


def test_unsafe_path_in_hashes_is_refused(bundle_copy):
    edit(bundle_copy, lambda m: m["hashes"].update({"../escape": "0" * 64}))
    with pytest.raises(BundleError, match="unsafe path"):
        verify_bundle(bundle_copy)


def test_tensorrt_bundle_needs_allow_foreign(bundle_copy):
    edit(bundle_copy, lambda m: m["runtime"].update(name="tensorrt"))
    with pytest.raises(IncompatibleBundle, match="build the engine on the device with build_engine.sh"):
        verify_bundle(bundle_copy)
    assert verify_bundle(bundle_copy, allow_foreign=True).data["runtime"]["name"] == "tensorrt"
    assert load_bundle(bundle_copy, allow_foreign=True, threads=1).generate("ka", max_new_tokens=3)


def test_other_arch_is_refused_and_any_is_accepted(bundle_copy):
    edit(bundle_copy, lambda m: m["device"].update(arch="riscv64"))
    with pytest.raises(IncompatibleBundle, match="targets arch riscv64"):
        verify_bundle(bundle_copy)
    edit(bundle_copy, lambda m: m["device"].update(arch="any"))
    verify_bundle(bundle_copy)


def test_too_old_onnxruntime_is_refused(bundle_copy):
    edit(bundle_copy, lambda m: m["runtime"].update(min_onnxruntime="99.1"))
    with pytest.raises(IncompatibleBundle, match="older than runtime.min_onnxruntime 99.1"):
        verify_bundle(bundle_copy)


def test_missing_execution_provider_is_refused_or_falls_back_to_cpu(bundle_copy):
    edit(bundle_copy, lambda m: m["runtime"].update(execution_provider="NoSuchExecutionProvider"))
    with pytest.raises(IncompatibleBundle, match="NoSuchExecutionProvider is not available"):
        verify_bundle(bundle_copy)
    with pytest.warns(GenerationWarning, match="running on CPUExecutionProvider"):
        bundle = load_bundle(bundle_copy, allow_foreign=True, threads=1)
    assert bundle.session.get_providers() == ["CPUExecutionProvider"]


def test_model_io_must_match_the_manifest(bundle_copy, rewrite_manifest):
    rewrite_manifest(bundle_copy, lambda m: m["kv_cache"].update(past_key="past.{layer}.k"))
    with pytest.raises(BundleError, match="missing input past.0.k"):
        load_bundle(bundle_copy)


def test_hash_folder_covers_every_file_but_the_manifest(bundle_copy):
    (bundle_copy / "sub").mkdir()
    (bundle_copy / "sub" / "weights.bin").write_bytes(b"\x00" * 10)
    hashes = hash_folder(bundle_copy)
    assert MANIFEST_NAME not in hashes
    assert hashes["sub/weights.bin"] == sha256_file(bundle_copy / "sub" / "weights.bin")
    assert set(hashes) == set(BUNDLE_FILES) | {"sub/weights.bin"}
    assert with_hashes(bundle_copy, {"name": "x"}) == {"name": "x", "hashes": hashes}


def test_version_and_arch_helpers():
    assert version_tuple("1.32.0") > version_tuple("1.20") > version_tuple("1.9.1")
    assert version_tuple("1.21.0rc1") == (1, 21, 0)
    assert normalize_arch("AMD64") == normalize_arch("x86_64") == "x86_64"
    assert normalize_arch("arm64") == normalize_arch("aarch64")


def test_logits_width_must_match_vocab_size(bundle_copy, rewrite_manifest):
    rewrite_manifest(bundle_copy, lambda m: m["model"].update(vocab_size=500))
    with pytest.raises(BundleError, match="logits have 384 entries, model.vocab_size is 500"):
        load_bundle(bundle_copy)


# ----------------------------------------------------------------------------- manifest.json's own checksum


def test_manifest_carries_a_checksum_of_itself(bundle_dir):
    data = json.loads((bundle_dir / MANIFEST_NAME).read_text())
    assert list(data)[-1] == CHECKSUM_KEY
    assert data[CHECKSUM_KEY] == manifest_checksum(data)
    assert manifest_checksum(data) == manifest_checksum({k: v for k, v in data.items() if k != CHECKSUM_KEY})


def test_the_checksum_covers_data_not_layout(bundle_copy):
    """Re-indented, keys reordered: the same data, still intact. One changed value: refused."""
    data = json.loads((bundle_copy / MANIFEST_NAME).read_text())
    reordered = {key: data[key] for key in reversed(list(data))}
    (bundle_copy / MANIFEST_NAME).write_text(json.dumps(reordered, separators=(",", ":"), ensure_ascii=True))
    verify_bundle(bundle_copy)
    reordered["limits"] = {**reordered["limits"], "max_batch_size": 3}
    (bundle_copy / MANIFEST_NAME).write_text(json.dumps(reordered))
    with pytest.raises(BundleError, match="manifest_sha256 does not match the content of manifest.json"):
        verify_bundle(bundle_copy)


@pytest.mark.parametrize("section", ["name", "device", "runtime", "model", "files", "io", "kv_cache", "limits",
                                     "tokens", "generation", "metrics", "provenance", "hashes", "(top level)"])
def test_an_edit_anywhere_without_restamping_is_refused(bundle_copy, section):
    """An unknown key the schema ignores, or a changed string, in every section: the checksum catches it."""
    path = bundle_copy / MANIFEST_NAME
    data = json.loads(path.read_text())
    if section == "(top level)":
        data["note"] = "added by hand"
    elif isinstance(data[section], dict):
        data[section]["note"] = "added by hand"
    else:
        data[section] += "-edited"
    path.write_text(json.dumps(data, indent=2))
    for allow_foreign in (False, True):
        with pytest.raises(BundleError, match=f"{CHECKSUM_KEY} does not match") as caught:
            verify_bundle(bundle_copy, allow_foreign=allow_foreign)
        assert not isinstance(caught.value, IncompatibleBundle)
        assert "never edit manifest.json" in caught.value.fix


@pytest.mark.parametrize("recorded", [None, "", "0" * 64, 0, ["x"]], ids=repr)
def test_a_missing_or_malformed_checksum_is_refused(bundle_copy, recorded):
    path = bundle_copy / MANIFEST_NAME
    data = json.loads(path.read_text())
    if recorded is None:
        del data[CHECKSUM_KEY]
    else:
        data[CHECKSUM_KEY] = recorded
    path.write_text(json.dumps(data))
    message = f"no {CHECKSUM_KEY} in manifest.json" if recorded is None else f"{CHECKSUM_KEY} does not match"
    with pytest.raises(BundleError, match=message):
        verify_bundle(bundle_copy, allow_foreign=True)


def test_an_edit_is_reported_with_what_else_it_broke(bundle_copy):
    """Every problem at once: the broken checksum first, then the schema problem the edit made."""
    path = bundle_copy / MANIFEST_NAME
    data = json.loads(path.read_text())
    data["limits"]["max_seq_len"] = "160"
    path.write_text(json.dumps(data))
    with pytest.raises(BundleError) as caught:
        verify_bundle(bundle_copy)
    message = caught.value.message
    assert message.index(CHECKSUM_KEY) < message.index("'limits.max_seq_len' is '160'")


def test_manifest_json_stamps_a_fresh_checksum():
    stale = {"name": "x", "limits": {"max_seq_len": 8}, CHECKSUM_KEY: "stale"}
    text = manifest_json(stale)
    written = json.loads(text)
    assert written[CHECKSUM_KEY] == manifest_checksum({"name": "x", "limits": {"max_seq_len": 8}}) != "stale"
    assert text == manifest_json(written) and text.endswith("\n")  # deterministic, idempotent
    assert manifest_checksum({"a": 1, "b": "é"}) == manifest_checksum({"b": "é", "a": 1})
    assert manifest_checksum({"a": 1}) != manifest_checksum({"a": 1.0})  # an int and a float are different values


def test_a_run_folder_stands_for_its_bundle(bundle_dir, tmp_path):
    run = tmp_path / "generated" / "run-1"
    shutil.copytree(bundle_dir, run / "bundle")
    (run / "config.yaml").write_text("seed: 0\n")
    assert verify_bundle(run).folder == (run / "bundle").resolve()
    assert load_bundle(run, threads=1).manifest.folder == (run / "bundle").resolve()
    shutil.copyfile(bundle_dir / MANIFEST_NAME, run / MANIFEST_NAME)  # a manifest of its own: the folder itself
    with pytest.raises(BundleError, match="bundle/tokenizer.json: unexpected file"):
        verify_bundle(run)


def test_hashing_refuses_what_is_not_a_regular_file(bundle_copy):
    """The package stage hashes with the same walk: a FIFO is never packaged (nor read)."""
    os.mkfifo(bundle_copy / "pipe")
    with pytest.raises(BundleError, match=r"pipe \(FIFO\)"):
        hash_folder(bundle_copy)
    with pytest.raises(BundleError, match="a FIFO, not a regular file"):
        sha256_file(bundle_copy / "pipe")


# What ONNX Runtime 1.32 says (first line) for each kind of model it refuses.
ORT_REFUSALS = {
    "escape": 'External data path validation failed for initializer: w. Error: External data path escapes model '
              'directory. External data path: "../secret.bin"',
    "absolute": "External data path validation failed for initializer: w. Error: tensorprotoutils.cc:592 "
                "ValidateExternalDataPathFromDir Absolute path not allowed for external data location",
    "custom": "Load model from m.onnx failed:Fatal error: com.evil:Steal(-1) is not a registered function/op",
    "contrib": "Fatal error: com.microsoft:Nope(-1) is not a registered function/op",
    "unknown": 'This is an invalid model. In Node, ("n", NoSuchOp, "", -1) : Error No Op registered for NoSuchOp '
               "with domain_version of 18",
    "opset": "ONNX Runtime only *guarantees* support for models stamped with official released onnx opset "
             "versions. Opset 99 is under development",
    "ir": "Unsupported model IR version: 99, max supported IR version: 14",
    "protobuf": "Failed to load model because protobuf parsing failed.",
}


@pytest.mark.parametrize("kind, fix", [
    ("escape", "outside the bundle folder"), ("absolute", "outside the bundle folder"),
    ("custom", "custom operator com.evil:Steal"), ("contrib", "does not implement the operator Nope"),
    ("unknown", "does not implement the operator NoSuchOp"), ("opset", "needs a newer onnxruntime"),
    ("ir", "needs a newer onnxruntime"), ("protobuf", "not a valid ONNX file"),
])
def test_each_model_refusal_gets_the_fix_for_its_cause(kind, fix):
    text = model_load_fix(ORT_REFUSALS[kind])
    assert fix in text
    assert ("newer onnxruntime" in text) == (kind in ("opset", "ir"))
