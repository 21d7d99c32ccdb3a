"""memory.fits_device and memory.fits_training_host, both ways, with the numbers in the messages."""

from __future__ import annotations

from slmc.estimate import Arch, deploy_memory, fmt_bytes, trt_build_bytes, weight_bytes
from slmc.load import load_config

LLAMA_7B = [
    "model.hidden_size=4096", "model.num_hidden_layers=32", "model.num_attention_heads=32",
    "model.num_key_value_heads=32", "model.intermediate_size=11008", "model.vocab_size=32000",
    "model.max_position_embeddings=4096",
]
ONE_B = [  # ~1.2B parameters: fp32 ~4.9 GB, fp16 ~2.5 GB
    "model.hidden_size=2048", "model.num_hidden_layers=22", "model.num_attention_heads=32",
    "model.num_key_value_heads=4", "model.intermediate_size=5632", "model.vocab_size=32000",
    "model.max_position_embeddings=2048",
]


def test_shipped_tiny_fits_every_device(check):
    for device in ("cpu", "mobile_arm64", "jetson_orin_nano"):
        assert check([f"device={device}"], "memory.fits_device") == []


def test_7b_fp32_on_orin_nano_is_rejected_with_numbers_and_fixes(check):
    overrides = ["device=jetson_orin_nano", "runtime=tensorrt", *LLAMA_7B]
    (v,) = check(overrides, "memory.fits_device")
    cfg = load_config(overrides)
    need = deploy_memory(Arch.from_model(cfg.model), "fp32", 256, 1, on_cuda=True, workspace_mib=1024, tensorrt=True)
    assert v.severity == "error"
    assert fmt_bytes(need.total) in v.message and "4.8 GB usable" in v.message
    assert "device=jetson_agx_orin" in v.fix  # 7B int8 (~7 GB) still exceeds the Nano: only a bigger device helps
    assert "compress=" not in v.fix


def test_a_smaller_precision_that_fits_is_suggested(check):
    overrides = ["device=mobile_arm64", *ONE_B]  # 2.4 GB usable; ORT quantizes the embedding too
    (v,) = check(overrides, "memory.fits_device")
    arch = Arch.from_model(load_config(overrides).model)
    int8 = deploy_memory(arch, "int8", 256, 1, on_cuda=False, quantize_embedding=True).total
    assert int8 < 2.4e9
    assert v.fix.startswith(f"use compress=int8 (needs {fmt_bytes(int8)})")
    assert check([*overrides, "compress=int8"], "memory.fits_device") == []


def test_long_kv_cache_suggests_a_shorter_max_seq_len(check):
    overrides = ["device=mobile_arm64", *ONE_B, "compress=int4", "export.max_seq_len=2048", "export.max_batch_size=8"]
    (v,) = check(overrides, "memory.fits_device")
    assert "KV cache" in v.message and "× batch 8" in v.message
    assert "export.max_seq_len=" in v.fix and "export.max_batch_size=1" in v.fix


def test_default_training_fits_the_default_host(check):
    assert check(["model=small"], "memory.fits_training_host") == []


def test_training_over_host_memory_names_parts_and_a_batch_that_fits(check):
    (v,) = check(["model=small", "host.memory_gb=1.5", "train.batch_size=64"], "memory.fits_training_host")
    assert "AdamW" in v.message and "activations" in v.message and "> host.memory_gb 1.5 GB" in v.message
    assert "train.batch_size=" in v.fix and "train.grad_accum_steps=" in v.fix
    batch = int(v.fix.split("train.batch_size=")[1].split()[0])
    assert 1 <= batch < 64
    fixed = ["model=small", "host.memory_gb=1.5", f"train.batch_size={batch}"]
    assert check(fixed, "memory.fits_training_host") == []


def test_cpu_processes_share_host_memory(check):
    base = ["model=small", "host.memory_gb=3"]
    assert check(base, "memory.fits_training_host") == []
    (v,) = check([*base, "host.num_processes=4"], "memory.fits_training_host")
    assert "× 4 processes" in v.message and "host.num_processes=1" in v.fix


def test_no_training_means_no_training_memory(check):
    assert check(["model=small", "host.memory_gb=0.1", "train=none"], "memory.fits_training_host") == []


def test_finetune_of_a_big_checkpoint_suggests_lora(check, make_checkpoint):
    ckpt = make_checkpoint(hidden_size=2048, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                           intermediate_size=5632, vocab_size=32000, tokenizer_size=32000)
    overrides = ["init=pretrained", f"init.path={ckpt}", "train=finetune", "host.memory_gb=16", "train.batch_size=1"]
    (v,) = check(overrides, "memory.fits_training_host")
    assert "train=lora (needs" in v.fix
    assert check([*overrides[:-2], "host.memory_gb=16", "train=lora", "train.batch_size=1"], "memory.fits_training_host") == []


def test_distillation_counts_the_teacher(check, make_checkpoint):
    teacher = make_checkpoint("teacher", hidden_size=2048, num_hidden_layers=22, num_attention_heads=32,
                              num_key_value_heads=4, intermediate_size=5632, vocab_size=4096)
    overrides = ["init=distill", f"init.distill.teacher_path={teacher}", "host.memory_gb=4"]
    (v,) = check(overrides, "memory.fits_training_host")
    assert "teacher" in v.message
    assert check([*overrides[:-1], "host.memory_gb=16"], "memory.fits_training_host") == []


def test_engine_build_on_the_device_must_fit_too(check):
    """1.2B fp16 runs in 4.8 GB, but the build holds fp32 ONNX weights and fp16 engine weights at once."""
    overrides = ["device=jetson_orin_nano", "runtime=tensorrt", *ONE_B, "compress=fp16"]
    cfg = load_config(overrides)
    arch = Arch.from_model(cfg.model)
    assert deploy_memory(arch, "fp16", 256, 1, on_cuda=True, workspace_mib=1024, tensorrt=True).total < 4.8e9
    (v,) = check(overrides, "memory.fits_device")
    assert v.message.startswith("building the TensorRT engine on jetson_orin_nano needs")
    assert fmt_bytes(trt_build_bytes(arch, "fp16", 1024)) in v.message and v.fix.startswith("use compress=int8")
    assert check([*overrides, "runtime.build_engine_on_host=true"], "memory.fits_device") == []


def test_a_large_tensorrt_workspace_is_named_in_the_fix(check):
    half_b = ["model.hidden_size=1536", "model.num_hidden_layers=16", "model.num_attention_heads=12",
              "model.num_key_value_heads=4", "model.intermediate_size=4096", "model.vocab_size=32000"]
    overrides = ["device=jetson_orin_nano", "runtime=tensorrt", *half_b, "compress=fp16", "runtime.workspace_mib=2500"]
    (v,) = check(overrides, "memory.fits_device")
    assert "workspace 2500 MiB" in v.message and "set runtime.workspace_mib=256" in v.fix
    assert check([*overrides[:-1], "runtime.workspace_mib=1024"], "memory.fits_device") == []


def test_ort_int8_and_int4_quantize_the_embedding_table(check):
    arch = Arch.from_model(load_config(["model=small"]).model)
    table = arch.vocab_size * arch.hidden_size
    assert weight_bytes(arch, "int8").embedding - weight_bytes(arch, "int8", quantize_embedding=True).embedding == 3 * table


def test_fsdp_shards_the_training_state_and_is_offered_when_it_fits(check):
    """One GPU per process (cuda): FSDP keeps 1/N of weights, grads and AdamW in each."""
    base = ["model=small", "host.accelerator=cuda", "host.num_processes=4", "train.batch_size=1",
            "train.seq_len=64"]
    for memory_gb in (0.7, 0.8, 0.9, 1.0, 1.1):  # the first budget DDP misses and FSDP meets (runtime ~0.54 GB)
        found = check([*base, f"host.memory_gb={memory_gb}"], "memory.fits_training_host")
        if found and "train.parallel=fsdp" in found[0].fix:
            break
    else:
        raise AssertionError("no budget where only FSDP fits")
    (v,) = found
    assert check([*base, f"host.memory_gb={memory_gb}", "train.parallel=fsdp"], "memory.fits_training_host") == []
    sharded = check([*base, "host.memory_gb=0.05", "train.parallel=fsdp"], "memory.fits_training_host")
    assert "FSDP keeps 1/4 of weights, grads and AdamW per process" in sharded[0].message
    assert "train.parallel=fsdp" not in sharded[0].fix  # already sharded: not offered again


def test_fsdp_is_not_offered_for_lora(check):
    base = ["model=small", "host.accelerator=cuda", "host.num_processes=4", "train=lora", "host.memory_gb=0.05"]
    (v,) = check(base, "memory.fits_training_host")
    assert "train.parallel=fsdp" not in v.fix


GEMMA3_1B = dict(  # google/gemma-3-1b-pt's published shape: qk-norm, 4 norms per layer, 262k tied vocab
    model_type="gemma3_text", architectures=["Gemma3ForCausalLM"], hidden_size=1152, num_hidden_layers=26,
    num_attention_heads=4, num_key_value_heads=1, head_dim=256, intermediate_size=6912, vocab_size=262144,
    max_position_embeddings=32768, sliding_window=512, tie_word_embeddings=True, query_pre_attn_scalar=256,
)


def test_deployed_memory_uses_the_checkpoints_family(check, make_checkpoint):
    """The checkpoint's real architecture, not the model group: Gemma 3 1B (~1.0B params) overflows a
    phone at fp32 and the message's weights are its family's count."""
    ckpt = make_checkpoint("gemma", **GEMMA3_1B)
    overrides = ["device=mobile_arm64", "init=pretrained", f"init.path={ckpt}", "train=none"]
    (v,) = check(overrides, "memory.fits_device")
    arch = Arch.from_hf_config(GEMMA3_1B)
    assert arch.family == "gemma3"
    assert f"weights at fp32 {fmt_bytes(weight_bytes(arch, 'fp32').total)}" in v.message
    assert v.paths[0] == "init.path"


def test_a_mixture_of_experts_is_not_sized_as_a_dense_model(check, make_checkpoint):
    moe = make_checkpoint("moe", model_type="olmoe", num_experts=64, num_experts_per_tok=8)
    overrides = ["device=mobile_arm64", "init=pretrained", f"init.path={moe}", "train=finetune"]
    assert check(overrides, "memory.fits_device") == [] and check(overrides, "memory.fits_training_host") == []
    (v,) = check(overrides, "checkpoint.architecture_supported")
    assert "mixture of experts (num_experts=64)" in v.message


def test_fsdp_shards_over_every_node_s_processes():
    from slmc.rules.memory import _shards

    assert _shards(load_config(["train.parallel=fsdp", "host.nodes=2", "host.num_processes=2"])) == 4
    assert _shards(load_config(["train.parallel=fsdp", "host.nodes=3"])) == 3
    assert _shards(load_config(["train.parallel=ddp", "host.nodes=3"])) == 1
