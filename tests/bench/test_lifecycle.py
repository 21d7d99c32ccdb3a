"""bench/lifecycle.py's plumbing, without compiling: every row's overrides compose and pass the
rules, a run folder is read as the table needs it, and the report renders (the real run is
`python bench/lifecycle.py`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import lifecycle  # noqa: E402

TINY_LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 128,
              "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
              "intermediate_size": 384, "vocab_size": 4096, "max_position_embeddings": 512,
              "tie_word_embeddings": True}


def checkpoint(folder: Path, **config) -> Path:
    """A checkpoint folder as the rules see it: config.json, a (real) tokenizer.json, weights."""
    from tokenizers import Tokenizer, models

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({**TINY_LLAMA, **config}))
    vocab = {f"t{i}": i for i in range(4095)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    tokenizer.add_special_tokens(["<|endoftext|>"])
    tokenizer.save(str(folder / "tokenizer.json"))
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"model.norm.weight": np.ones(4, dtype=np.float32)}, str(folder / "model.safetensors"))  # headers are checked
    return folder


def test_every_row_composes_and_passes_the_rules(tmp_path):
    from slmc.load import load_config
    from slmc.rules._engine import run_rules

    base = checkpoint(tmp_path / "base")
    pruned = checkpoint(tmp_path / "pruned", num_hidden_layers=2, intermediate_size=192)
    shape = lifecycle.student_shape(pruned)
    assert shape == ("model.hidden_size=128", "model.num_hidden_layers=2", "model.num_attention_heads=4",
                     "model.num_key_value_heads=2", "model.intermediate_size=192")
    rows = [lifecycle.base_row(200), lifecycle.pruned_row(base, 60), *lifecycle.later_rows(base, shape, 200, 60)]
    assert len({r.name for r in rows}) == len(rows) == 9
    for row in rows:
        cfg = load_config([*row.overrides, f"out_dir={tmp_path / 'out'}"])
        errors = [v for v in run_rules(cfg) if v.severity == "error"]
        assert not errors, (row.name, [v.message for v in errors])
    precisions = {r.name: load_config(list(r.overrides)).compress.precision for r in rows}
    assert precisions["QAT int8"] == precisions["PTQ int8"] == precisions["finetune + PTQ int8"] == "int8"
    assert precisions["PTQ int4"] == "int4" and precisions["LoRA"] == "fp32"


def fake_run(run_dir: Path) -> Path:
    """A run folder with what read_row reads: manifest, metrics.jsonl, checkpoint, data, tokenizer."""
    from safetensors.numpy import save_file

    (run_dir / "checkpoint").mkdir(parents=True)
    save_file({"a": np.zeros((4, 8), np.float32), "b": np.zeros(3, np.float32)},
              str(run_dir / "checkpoint" / "model.safetensors"))
    for rel, text in (("data/heldout.txt", "held out"), ("tokenizer/tokenizer.json", "{}"), ("bundle/model.onnx", "x" * 10)):
        (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / rel).write_text(text)
    manifest = {"precision": "int8", "hashes": {"model.onnx": "0"},
                "metrics": {"stage_seconds": {"train": 5.0}, "compress": {"format": "MatMulInteger"}}}
    (run_dir / "bundle" / "manifest.json").write_text(json.dumps(manifest))
    records = [{"step": 1, "loss": 5.0},
               {"event": "stage_eval", "stage": "train", "heldout_ppl": 40.0, "heldout_tokens": 8192},
               {"event": "stage_eval", "stage": "optimize", "heldout_ppl": 40.1, "heldout_tokens": 8192},
               {"event": "stage_eval", "stage": "compress", "heldout_ppl": 41.0, "heldout_tokens": 8192}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run_dir


def test_a_run_folder_is_read_into_a_row(tmp_path):
    row = lifecycle.Row("PTQ int8", "base, int8", ("compress=int8",))
    got = lifecycle.read_row(row, {"run_dir": fake_run(tmp_path / "run"), "seconds": 12.5})
    assert got["parameters"] == 35 and got["bundle_bytes"] == 10 and got["wall_s"] == 12.5
    assert (got["heldout_ppl"], got["heldout_ppl_stage"], got["checkpoint_ppl"]) == (41.0, "compress", 40.0)
    assert got["heldout_tokens"] == 8192 and got["prune_ppl"] is None


def result(rows: list[dict], sweep: dict | None) -> dict:
    return {"started": "2026-01-01 00:00", "machine": {"cpu": "cpu", "cpus_available": 2}, "loadavg_start": [1.0],
            "loadavg_end": [2.0], "total_s": 600.0, "rows": rows, "eval_set": lifecycle.check_same_eval_set(rows),
            "settings": {"base_steps": 200, "student_steps": 200, "adapt_steps": 60, "sweep_steps": 20},
            "sweep": sweep}


def test_the_report_has_a_row_per_model_and_the_sweep(tmp_path):
    row = lifecycle.read_row(lifecycle.Row("PTQ int8", "base, int8", ()), {"run_dir": fake_run(tmp_path / "r"), "seconds": 9.0})
    pruned = {**row, "name": "pruned + recovered", "prune_ppl": {"heldout_ppl_before": 40.0, "heldout_ppl": 90.0}}
    sweep = {"command": "slmc compile -m ...", "points": [{}] * 6, "train_steps": 20, "independent_over_shared": 2.5,
             "shared": {"seconds": 100.0, "bundles": ["a"] * 6, "train_runs": 1},
             "independent": {"total_s": 250.0, "points": [{}] * 6}}
    text = lifecycle.markdown(result([row, pruned], sweep))
    assert "| PTQ int8 | base, int8 | 0.00M | int8 | 41.00 | 40.00 | 0.00 | 9 (5) |" in text
    assert "the same text (yes) and tokenizer (yes)" in text
    assert "40.00 (base) → 90.00 (pruned, before recovery) → 40.00 (recovered)" in text
    assert "| one `slmc compile -m`, shared stage cache | 100 | 6 | 1 |" in text and "2.5×" in text
    assert "Sweep: skipped" in lifecycle.markdown(result([row], None))


def test_a_different_heldout_text_is_flagged():
    rows = [{"heldout_sha256": "a", "tokenizer_sha256": "t", "heldout_tokens": 8192},
            {"heldout_sha256": "b", "tokenizer_sha256": "t", "heldout_tokens": 8192}]
    check = lifecycle.check_same_eval_set(rows)
    assert not check["same_heldout_text"] and check["same_tokenizer"]


@pytest.mark.parametrize("argv", [[], ["--skip-sweep", "--base-steps", "5"]])
def test_arguments(argv):
    args = lifecycle.parse_args(argv)
    assert args.adapt_steps == 60 and args.skip_sweep == ("--skip-sweep" in argv)
