"""latency.meets_target: a warning with the bandwidth estimate."""

from __future__ import annotations

from slmc.estimate import Arch, decode_tokens_per_s
from slmc.load import load_config

RID = "latency.meets_target"


def test_no_target_no_check(check):
    assert check([], RID) == []


def test_unreachable_target_warns_with_the_estimate(check):
    overrides = ["model=small", "targets.min_decode_tokens_per_s=1000"]
    (v,) = check(overrides, RID)
    cfg = load_config(overrides)
    tps = decode_tokens_per_s(Arch.from_model(cfg.model), "fp32", 40.0, 128)[0]
    assert v.severity == "warning" and f"{tps:,.0f} tok/s" in v.message and "40 GB/s" in v.message
    assert "compress=int4" in v.fix  # ~26 MB per token at 40 GB/s clears 1000 tok/s


def test_reachable_target_passes(check):
    assert check(["model=small", "targets.min_decode_tokens_per_s=100"], RID) == []


def test_faster_device_is_suggested(check):
    (v,) = check(["model=small", "device=jetson_orin_nano", "runtime=tensorrt", "compress=fp16",
                  "targets.min_decode_tokens_per_s=5000"], RID)
    assert "device=gpu_server" in v.fix
