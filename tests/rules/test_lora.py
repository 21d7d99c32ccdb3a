"""lora.merged_before_export, lora.base_not_quantized_for_merge, lora.targets_exist."""

from __future__ import annotations


def test_unmerged_adapters_are_rejected(check):
    (v,) = check(["train=lora", "train.lora.merge_before_export=false"], "lora.merged_before_export")
    assert v.fix == "set train.lora.merge_before_export=true"
    assert check(["train=lora"], "lora.merged_before_export") == []
    assert check(["train=pretrain", "train.lora.merge_before_export=false"], "lora.merged_before_export") == []


def test_quantized_base_cannot_be_merged(check, make_checkpoint):
    q = make_checkpoint("q", tokenizer_size=4096, quantization_config={"quant_method": "bitsandbytes", "load_in_4bit": True})
    (v,) = check(["init=pretrained", f"init.path={q}", "train=lora"], "lora.base_not_quantized_for_merge")
    assert "bitsandbytes" in v.message and "4-bit" in v.message
    plain = make_checkpoint("plain", tokenizer_size=4096)
    assert check(["init=pretrained", f"init.path={plain}", "train=lora"], "lora.base_not_quantized_for_merge") == []
    assert check(["init=pretrained", f"init.path={q}", "train=finetune"], "lora.base_not_quantized_for_merge") == []


def test_unknown_target_modules_are_rejected(check):
    (v,) = check(["train=lora", "train.lora.target_modules=[q_proj,c_attn]"], "lora.targets_exist")
    assert "c_attn" in v.message and "gate_proj" in v.fix
    assert check(["train=lora", "train.lora.target_modules=[all-linear]"], "lora.targets_exist") == []
    assert check(["train=lora", "train.lora.target_modules=[]"], "lora.targets_exist")


def test_target_modules_follow_the_checkpoints_family(check, make_checkpoint):
    phi3 = make_checkpoint("phi3", tokenizer_size=4096, model_type="phi3", architectures=["Phi3ForCausalLM"])
    base = ["init=pretrained", f"init.path={phi3}", "train=lora"]
    assert check(base, "lora.targets_exist") == []  # the default q/k/v/o land on qkv_proj and o_proj
    assert check([*base, "train.lora.target_modules=[qkv_proj,gate_up_proj]"], "lora.targets_exist") == []
    (v,) = check([*base, "train.lora.target_modules=[q_proj,o_proj]"], "lora.targets_exist")
    assert v.severity == "warning" and "q_proj is part of qkv_proj" in v.message
    (v,) = check(["train=lora", "train.lora.target_modules=[qkv_proj]"], "lora.targets_exist")  # scratch llama
    assert v.severity == "error" and "for a llama decoder" in v.message and "qkv_proj" not in v.fix
