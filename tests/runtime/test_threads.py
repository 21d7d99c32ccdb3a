"""The default intra-op threads and spinning (slmc.runtime.threads), table by table, and how a
bundle, the manifest's runtime.intra_op_threads and the CLI flags reach it."""

from __future__ import annotations

import pytest

from slmc.runtime.bundle import default_threading, load_bundle
from slmc.runtime.cli import main
from slmc.runtime.verify import verify_bundle
from slmc.runtime.threads import SMALL_MODEL_BYTES, SPIN_LOAD_SLACK, choose_threading, load_matters, machine_facts, model_bytes

MIB = 2**20
BIG = 500 * MIB  # a SmolLM2-135M fp32 bundle
TINY = 5 * MIB

# (physical cores, load, model bytes, explicit threads, explicit spinning) -> (threads, spinning, reason has)
CASES = [
    # small weights: one thread, whatever the machine
    ((2, 0.0, TINY, None, None), (1, False, "too little work per op")),
    ((16, 0.0, SMALL_MODEL_BYTES - 1, None, None), (1, False, "no pool")),
    # big weights, idle: every core, spinning (ORT's own default on an idle machine)
    ((2, 0.0, BIG, None, None), (2, True, "leaves each of the 2 threads a core")),
    ((4, 0.1, BIG, None, None), (4, True, "leaves each of the 4 threads a core")),
    ((8, 0.0, SMALL_MODEL_BYTES, None, None), (8, True, "8 threads")),
    # a little load: still every core, but no spinning into the core someone else uses
    ((2, 0.4, BIG, None, None), (2, False, "share the 2 cores")),
    # a busy process on a 2-core machine (issue 13's slow case): one thread, never spinning
    ((2, 1.0, BIG, None, None), (1, False, "leaves 1.0 free")),
    ((2, 1.4, BIG, None, None), (1, False, "no pool")),
    # more load than cores: still one thread
    ((2, 7.5, BIG, None, None), (1, False, "leaves 0.0 free")),
    # a big machine partly busy: the free cores, and spinning since a core stays idle
    ((16, 4.0, BIG, 8, None), (8, True, "8 threads (requested)")),
    ((16, 9.7, BIG, None, None), (6, True, "6 threads")),
    ((16, 9.7, BIG, 7, None), (7, False, "share the 16 cores")),
    # explicit settings always win
    ((2, 1.0, BIG, 2, None), (2, False, "2 threads (requested)")),
    ((2, 0.0, BIG, 2, None), (2, True, "2 threads (requested)")),
    ((2, 0.0, TINY, 2, True), (2, True, "spinning on requested")),
    ((2, 7.0, BIG, None, True), (1, True, "spinning on requested")),
    ((4, 0.0, BIG, None, False), (4, False, "spinning off requested")),
]


@pytest.mark.parametrize(("given", "expected"), CASES, ids=[str(c[0]) for c in CASES])
def test_choose_threading_table(given, expected):
    cores, load, size, threads, spinning = given
    choice = choose_threading(cores, load, size, threads=threads, spinning=spinning)
    assert (choice.threads, choice.spinning) == expected[:2], choice.reason
    assert expected[2] in choice.reason


def test_never_more_threads_than_cores_and_never_spinning_into_a_full_machine():
    for cores in (1, 2, 4, 8, 32):
        for load in (0.0, 0.3, 0.9, 1.0, 2.5, cores - 0.5, cores, 3.0 * cores):
            for size in (0, TINY, BIG, 4 * 2**30):
                choice = choose_threading(cores, max(load, 0.0), size)
                assert 1 <= choice.threads <= cores
                if choice.spinning:  # every thread has a core the load leaves free
                    assert cores - load + SPIN_LOAD_SLACK >= choice.threads


def test_load_is_sampled_only_when_the_choice_depends_on_it():
    for cores in (1, 2, 8):
        for size in (0, TINY, BIG):
            for threads in (None, 1, 2, 4):
                for spinning in (None, True, False):
                    made = [choose_threading(cores, load, size, threads=threads, spinning=spinning)
                            for load in (0.0, 0.5, 1.0, 3.0, 20.0)]
                    choices = {(c.threads, c.spinning) for c in made}
                    if not load_matters(size, threads, spinning):
                        assert len(choices) == 1, (cores, size, threads, spinning, choices)
    assert load_matters(BIG) and not load_matters(TINY) and not load_matters(BIG, threads=1)


@pytest.mark.parametrize("bad", [dict(physical_cores=0, load=0.0, model_bytes=1),
                                 dict(physical_cores=2, load=-1.0, model_bytes=1),
                                 dict(physical_cores=2, load=float("nan"), model_bytes=1),
                                 dict(physical_cores=2, load=0.0, model_bytes=-1)])
def test_bad_inputs_are_refused(bad):
    with pytest.raises(ValueError):
        choose_threading(**bad)


def test_machine_facts_are_sane():
    facts = machine_facts(sample_s=0.01)
    assert facts.physical_cores >= 1 and facts.load >= 0 and facts.load_source in ("cpu use", "loadavg")


def test_model_bytes_counts_external_data(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"x" * 10)
    (tmp_path / "model.onnx.data").write_bytes(b"y" * 30)
    (tmp_path / "tokenizer.json").write_bytes(b"z" * 99)
    assert model_bytes(tmp_path / "model.onnx") == 40


def test_a_bundle_records_its_choice_and_explicit_settings_win(bundle_dir):
    chosen = load_bundle(bundle_dir)
    assert chosen.threading.threads == 1 and not chosen.threading.spinning  # the fixture bundle is tiny
    assert "too little work per op" in chosen.threading.reason
    pinned = load_bundle(bundle_dir, threads=2, spinning=True)
    assert (pinned.threading.threads, pinned.threading.spinning) == (2, True)
    assert pinned.session.get_session_options().intra_op_num_threads == 2
    entries = pinned.session.get_session_options().get_session_config_entry
    assert entries("session.intra_op.allow_spinning") == "1" and entries("session.inter_op.allow_spinning") == "1"
    assert chosen.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_runtime_intra_op_threads_in_the_manifest_pins_the_count(bundle_copy, rewrite_manifest):
    rewrite_manifest(bundle_copy, lambda data: data["runtime"].update(intra_op_threads=2))
    manifest = verify_bundle(bundle_copy)
    choice = default_threading(manifest)
    assert choice.threads == 2 and "runtime.intra_op_threads" in choice.reason
    assert default_threading(manifest, threads=1).threads == 1  # --threads still wins


def test_run_verbose_says_what_was_chosen_and_why(bundle_dir, capsys):
    assert main(["run", str(bundle_dir), "--prompt", "ka", "--max-new-tokens", "3", "--verbose",
                 "--spinning", "off"]) == 0
    err = capsys.readouterr().err
    assert "1 intra-op thread(s), spinning off" in err and "spinning off requested" in err
