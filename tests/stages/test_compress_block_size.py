"""compress.block_size=auto: the largest int4 block within tolerance of the smallest block's perplexity."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from slmc.load import load_config
from slmc.rules._facts import estimate_block_size, int4_block_sizes
from slmc.stages.deploy import _tune_block_size


@dataclass(frozen=True)
class FakeReport:
    block_size: int
    bytes_after: int = 0


def _write_model(path: Path, fill: float, external: bool) -> None:
    weight = numpy_helper.from_array(np.full((64, 64), fill, np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 64])], [weight])
    model = helper.make_model(graph)
    if external:
        onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".data", size_threshold=0)
    else:
        onnx.save(model, str(path))


def _attempts(ppl_by_block: dict[int, float], external: bool):
    calls: list[int] = []

    def attempt(block: int, path: Path):
        calls.append(block)
        _write_model(path, float(block), external)
        return FakeReport(block), ppl_by_block[block]

    return attempt, calls


@pytest.mark.parametrize("external", [False, True])
@pytest.mark.parametrize("ppl, kept, tried", [
    ({32: 100.0, 64: 100.5, 128: 100.9}, 128, [32, 128]),   # 128 within 1%: kept, 64 never quantized
    ({32: 100.0, 64: 100.5, 128: 103.0}, 64, [32, 128, 64]),
    ({32: 100.0, 64: 102.0, 128: 104.0}, 32, [32, 128, 64]),  # none within: the smallest
])
def test_keeps_the_largest_block_within_tolerance(tmp_path, external, ppl, kept, tried):
    out = tmp_path / "model.onnx"
    attempt, calls = _attempts(ppl, external)
    report, chosen_ppl, trials = _tune_block_size(attempt, [128, 64, 32], 0.01, out)
    assert calls == tried
    assert report.block_size == kept and chosen_ppl == ppl[kept]
    assert [t["block_size"] for t in trials if t["kept"]] == [kept]
    # out holds the kept candidate's weights, loadable from its own place; the candidates are gone
    weights = numpy_helper.to_array(onnx.load(str(out)).graph.initializer[0])
    assert float(weights[0, 0]) == float(kept)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["model.onnx", "model.onnx.data"] if external
                                                          else ["model.onnx"])
    assert report.bytes_after == sum(p.stat().st_size for p in tmp_path.iterdir())


def test_zero_tolerance_keeps_a_larger_block_only_when_it_is_no_worse(tmp_path):
    attempt, _ = _attempts({32: 100.0, 64: 99.0, 128: 100.01}, False)
    report, _, _ = _tune_block_size(attempt, [128, 64, 32], 0.0, tmp_path / "model.onnx")
    assert report.block_size == 64


def test_block_size_candidates_follow_the_device_unless_set():
    cpu = load_config(["compress=int4", "device=cpu"])
    assert cpu.compress.block_size == "auto"
    assert int4_block_sizes(cpu) == [128, 64, 32] and estimate_block_size(cpu) == 32
    assert int4_block_sizes(load_config(["compress=int4", "device=mobile_arm64"])) == [32]
    fixed = load_config(["compress=int4", "device=cpu", "compress.block_size=64"])
    assert int4_block_sizes(fixed) == [64] and estimate_block_size(fixed) == 64


def test_device_block_sizes_must_be_powers_of_two():
    from slmc.errors import SlmcError

    with pytest.raises(SlmcError) as err:
        load_config(["device.int4_block_sizes=[48,32]"])
    assert "device.int4_block_sizes" in err.value.render()


def test_kquant_and_gptq_keep_only_blocks_that_halve_evenly(tmp_path):
    from slmc.errors import StageError
    from slmc.stages.deploy import even_block_sizes

    path = tmp_path / "model.onnx"
    _write_model(path, 1.0, external=False)  # one 64x64 MatMul: 64 and 128 give one block per column
    assert even_block_sizes(path, [128, 64, 32, 16], "kquant") == [32, 16]
    with pytest.raises(StageError) as err:
        even_block_sizes(path, [128, 64], "gptq")
    assert "compress.block_size" in err.value.render() and "odd number of blocks" in err.value.render()
