"""The plan: ordered stages whose inputs are produced earlier; target stages stay on the target."""

import pytest

from slmc.load import load_config
from slmc.plan import make_plan
from slmc.stages.base import MODEL, Stage, StageResult
from slmc.stages.registry import STAGES


def test_default_plan_order():
    plan = make_plan(load_config([]), "run")
    assert plan.names() == ["data", "tokenizer", "tokenize", "train", "export", "optimize", "package"]
    assert all(s.runs_on == "host" for s in plan.stages)


def test_tensorrt_plan_builds_the_engine_on_the_target():
    plan = make_plan(load_config(["device=jetson_orin_nano", "runtime=tensorrt", "compress=int8"]), "run")
    assert plan.names()[-1] == "build_engine" and plan.stage("build_engine").runs_on == "target"
    assert "prepare_tensorrt" in plan.names() and "optimize" not in plan.names()


def test_compress_stage_only_when_compressing():
    assert "compress" not in make_plan(load_config([]), "r").names()
    assert "compress" in make_plan(load_config(["compress=int4"]), "r").names()


def test_prune_stage_feeds_training():
    plan = make_plan(load_config(["init=prune", "init.path=/ckpt"]), "r")
    assert plan.names().index("prune") < plan.names().index("train")
    assert "/ckpt" in plan.external_inputs


def orphan(consumes: tuple[str, ...]) -> Stage:
    return Stage("orphan", StageResult, run=None, describe=lambda cfg: "consumes what nobody makes",
                 consumes=lambda cfg: consumes, produces=lambda cfg: ("x",))


def test_an_input_nobody_produces_is_a_plan_error():
    from slmc.errors import PlanError

    with pytest.raises(PlanError) as err:
        make_plan(load_config([]), "r", stages=(*STAGES[:2], orphan(("nowhere.bin",))))
    assert "orphan" in err.value.render() and "nowhere.bin" in err.value.render()
    with pytest.raises(PlanError, match="needs an ONNX model"):  # MODEL before any deploy stage
        make_plan(load_config([]), "r", stages=(orphan((MODEL,)),))


def test_each_deploy_stage_consumes_the_model_the_previous_one_wrote():
    plan = make_plan(load_config(["compress=int4"]), "r")
    chain = [plan.stage(name) for name in ("export", "optimize", "compress", "package")]
    for before, after in zip(chain, chain[1:]):
        assert after.consumes[0] == before.stage.model_out == before.produces[0]
    trt = make_plan(load_config(["device=jetson_orin_nano", "runtime=tensorrt", "compress=int8"]), "r")
    assert trt.stage("compress").consumes[0] == trt.stage("prepare_tensorrt").produces[0]


def test_every_planned_stage_is_the_registry_object():
    plan = make_plan(load_config(["init=prune", "init.path=/ckpt", "compress=int8"]), "r")
    assert all(step.stage is next(s for s in STAGES if s.name == step.name) for step in plan.stages)
    assert [s.name for s in STAGES if s.name in plan.names()] == plan.names()  # registry order


def test_an_unset_input_path_is_named():
    """A config with rule errors is never planned by compile; planned anyway, the plan names the key."""
    from slmc.errors import PlanError

    with pytest.raises(PlanError) as err:
        make_plan(load_config(["init=pretrained", "train=finetune"]), "r")
    assert err.value.where == "init.path" and "bug" not in err.value.render()


def test_the_cache_key_covers_what_changes_a_stage():
    """Sections a stage's output depends on, and the inputs it reads, are in its key."""
    plan = make_plan(load_config(["init=pretrained", "init.path=/ckpt", "train=finetune", "compress=int4"]), "r")
    assert "/ckpt" in plan.stage("tokenizer").consumes  # the checkpoint's tokenizer is reused
    for name in ("export", "optimize", "compress"):  # each measures held-out perplexity
        assert {"data/heldout.txt", "tokenizer/tokenizer.json"} <= set(plan.stage(name).consumes), name
    assert "device" in plan.stage("compress").depends_on_config  # block_size=auto picks per device
    assert "device" not in make_plan(load_config(["compress=int8"]), "r").stage("compress").depends_on_config


def test_plan_serialises():
    d = make_plan(load_config([]), "r").to_dict()
    assert d["stages"][0]["name"] == "data" and "consumes" in d["stages"][0]
    assert set(d["stages"][0]) == {"name", "runs_on", "consumes", "produces", "depends_on_config", "description"}
    assert set(d) == {"run_name", "stages", "external_inputs", "rules_checked", "warnings", "provenance"}
    assert d["provenance"]["checkpoints"] == {}  # init=scratch reads no checkpoint
    lineage = d["provenance"]["lineage"]  # ... and has no parent run: version 1, from scratch
    assert lineage["parent"] is None and lineage["version"] == "1" and lineage["init"]["kind"] == "scratch"
