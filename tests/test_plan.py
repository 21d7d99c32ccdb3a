"""The plan: ordered stages whose inputs are produced earlier; target stages stay on the target."""

import pytest

from slmc.load import load_config
from slmc.plan import Stage, make_plan
import slmc.plan as plan_module


def test_default_plan_order():
    plan = make_plan(load_config([]), "run")
    assert plan.names() == ["data", "tokenizer", "train", "export", "optimize", "package"]
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


def test_an_input_nobody_produces_is_a_plan_error(monkeypatch):
    from slmc.errors import PlanError

    broken = Stage("orphan", "host", ("nowhere.bin",), ("x",), (), "consumes what nobody makes")
    monkeypatch.setattr(plan_module, "_deploy_stages", lambda cfg: [broken])
    with pytest.raises(PlanError) as err:
        make_plan(load_config([]), "r")
    assert "orphan" in err.value.render() and "nowhere.bin" in err.value.render()


def test_plan_serialises():
    d = make_plan(load_config([]), "r").to_dict()
    assert d["stages"][0]["name"] == "data" and "consumes" in d["stages"][0]
