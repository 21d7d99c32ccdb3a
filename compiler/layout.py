"""Where each artifact lives inside a run folder.

Paths are relative to the run folder so a run folder can be moved or shared:
the generated train.py resolves them against its own location.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath


@dataclass(frozen=True)
class RunLayout:
    config: str = "config.yaml"
    plan: str = "plan.json"
    train_script: str = "train.py"
    report: str = "report.md"
    train_text: str = "data/train.txt"
    heldout_text: str = "data/heldout.txt"
    data_info: str = "data/data.json"
    train_records: str = "data/train.jsonl"      # data.format chat/instruction: {"source", "messages"} per line
    heldout_records: str = "data/heldout.jsonl"
    train_tokens: str = "data/train.tokens.safetensors"      # the tokenize stage: rows train.py reads
    heldout_tokens: str = "data/heldout.tokens.safetensors"
    tokenizer_dir: str = "tokenizer"
    tokenizer: str = "tokenizer/tokenizer.json"
    tokenizer_config: str = "tokenizer/tokenizer_config.json"
    init_checkpoint: str = "init"            # produced by prune (or a copy-free pointer for pretrained)
    checkpoints: str = "checkpoints"         # resumable step-N folders written by train.py
    final_checkpoint: str = "checkpoint"     # Hugging Face folder: safetensors + config.json + tokenizer.json
    metrics: str = "metrics.jsonl"
    work: str = "work"                       # export / compress intermediates
    export_model: str = "work/export/model.onnx"
    tensorrt_model: str = "work/tensorrt/model.onnx"
    optimized_model: str = "work/optimize/model.onnx"
    compressed_model: str = "work/compress/model.onnx"
    bundle: str = "bundle"
    lock: str = ".slmc.lock"                 # held by the compile writing this folder (one at a time)
    train_log: str = "train.log"             # train.py's output when the compile is quiet (Python API)
    compile_log: str = "compile.log"         # what the console showed during the last compile (stage timings too)
    launch_slurm: str = "launch_slurm.sh"    # sbatch + torchrun multi-node launcher (host.nodes > 1)
    tensorboard: str = "tensorboard"         # train.tracking=tensorboard: event files
    mlruns: str = "mlruns"                   # train.tracking=mlflow: the file store

    def all_paths(self) -> dict[str, PurePosixPath]:
        return {k: PurePosixPath(v) for k, v in self.__dict__.items()}


LAYOUT = RunLayout()
