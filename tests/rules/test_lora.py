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
