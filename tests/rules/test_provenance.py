"""provenance.environment_values: a value read from the environment is named before it ships."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from slmc.rules.provenance import environment_sources

SECRET = "s3cr3t-t0ken-value"
RULE = "provenance.environment_values"


@pytest.fixture(autouse=True)
def secret(monkeypatch):
    monkeypatch.setenv("SLMC_TEST_SECRET", SECRET)


def test_run_name_from_the_environment_warns_that_it_ships(check):
    (v,) = check(["run_name=${oc.env:SLMC_TEST_SECRET}"], RULE)
    assert v.severity == "warning" and v.paths == ("run_name",)
    assert "$SLMC_TEST_SECRET" in v.message and "manifest.json" in v.message and "README.md" in v.message
    assert SECRET not in v.message + v.fix  # the warning names the variable, never its value


def test_host_name_and_values_that_reference_it_are_followed(check):
    found = check(["host.name=${oc.env:SLMC_TEST_SECRET}", "device.isa=${host.name}"], RULE)
    assert {v.paths for v in found} == {("host.name",), ("device.isa",)}
    by_key = {v.paths[0]: v.message for v in found}
    assert "run folder's config.yaml" in by_key["host.name"] and "bundle's manifest.json" in by_key["device.isa"]


def test_literal_values_and_local_paths_do_not_warn(check, tmp_path, monkeypatch):
    monkeypatch.setenv("SLMC_TEST_OUT", str(tmp_path))
    assert check(["run_name=plain", "host.name=builder"], RULE) == []
    assert check(["out_dir=${oc.env:SLMC_TEST_OUT}/runs"], RULE) == []
    assert check([], RULE) == []


def test_environment_sources_reads_the_unresolved_config():
    raw = {
        "run_name": "run-${oc.env:A}-${oc.env:'B',default}",
        "host": {"name": "${.label}", "label": "${oc.env:C}", "other": "${oc.select:run_name,x}"},
        "device": {"isa": "${host.name}", "name": "cpu", "arch": "${oc.decode:${oc.env:D}}"},
        "list": ["${host}", "plain"],
        "chain": {"a": "${chain.b}", "b": "${chain.c}", "c": "${oc.env:E}"},
    }
    assert environment_sources(raw) == {
        "chain.a": ("E",), "chain.b": ("E",), "chain.c": ("E",),
        "device.arch": ("D",), "device.isa": ("C",),
        "host.label": ("C",), "host.name": ("C",), "host.other": ("A", "B"),
        "list[0]": ("A", "B", "C"), "run_name": ("A", "B"),
    }


def test_slmc_check_prints_the_warning_and_exits_0(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "SLMC_TEST_SECRET": SECRET, "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "slmc.cli", "check", "--json", "run_name=${oc.env:SLMC_TEST_SECRET}"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [v["rule"] for v in report["violations"]] == [RULE] and SECRET not in proc.stdout
