"""memory.fits_compile_host: the measured peak of the heaviest compile step against this machine's RAM."""

from __future__ import annotations

import pytest

from slmc.estimate import Arch, param_count
from slmc.load import load_config
from slmc.rules import compile_host

ONE_B = [  # ~1.2B parameters: fp32 weights ~4.9 GB
    "model.hidden_size=2048", "model.num_hidden_layers=22", "model.num_attention_heads=32",
    "model.num_key_value_heads=4", "model.intermediate_size=5632", "model.vocab_size=32000",
    "model.max_position_embeddings=2048",
]


@pytest.fixture
def ram(monkeypatch):
    """ram(gib): pretend the compiling machine has that much memory."""
    def set_ram(gib: float) -> None:
        monkeypatch.setattr(compile_host, "compile_host_bytes", lambda: int(gib * 2**30))
    return set_ram


def weights(overrides) -> int:
    return 4 * param_count(Arch.from_model(load_config(overrides).model))


def test_the_default_model_fits_a_small_machine(check, ram):
    ram(1)
    assert check([], "memory.fits_compile_host") == []


def test_a_1b_int8_compile_warns_on_24_gib_with_the_step_and_numbers(check, ram):
    ram(24)
    (v,) = check([*ONE_B, "compress=int8"], "memory.fits_compile_host")
    need = 7.8 * weights(ONE_B)  # optimize peaks highest for an ORT int8 compile
    assert v.severity == "warning"
    assert "optimize step" in v.message and "7.8 ×" in v.message
    assert f"peaks near {need / 2**30:.1f} GiB" in v.message and "has 24.0 GiB of RAM" in v.message
    assert f"at least {-(-need // 2**30):.0f} GiB" in v.fix
    assert "compress=int4" in v.fix


def test_the_warning_goes_away_on_a_machine_as_large_as_the_fix_says(check, ram):
    ram(24)
    (v,) = check([*ONE_B, "compress=int8"], "memory.fits_compile_host")
    gib = int(v.fix.split("at least ")[1].split(" GiB")[0])
    ram(gib)
    assert check([*ONE_B, "compress=int8"], "memory.fits_compile_host") == []


def test_tensorrt_skips_the_ort_fusion_so_the_export_decides(check, ram):
    need_export = 4.3 * weights(ONE_B)
    ram((need_export + 2**30) / 2**30)  # room for the export, not for an ORT fusion
    assert check([*ONE_B, "device=gpu_server", "runtime=tensorrt", "compress=fp16"], "memory.fits_compile_host") == []
    (v,) = check([*ONE_B, "compress=none"], "memory.fits_compile_host")
    assert "optimize step" in v.message


def test_stages_per_config():
    cfg = load_config(["compress=int4"])
    assert compile_host.compile_stages(cfg) == ["export", "optimize", "int4"]
    cfg = load_config(["device=gpu_server", "runtime=tensorrt", "compress=fp16"])
    assert compile_host.compile_stages(cfg) == ["export"]
