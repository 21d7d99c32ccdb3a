"""Build every system's artifact from one set of weights, or reuse it when its source is unchanged.

slmc trains (or initializes) the checkpoint and compiles its bundles (fp32/int8/int4,
sharing the checkpoint through the stage cache); PyTorch eager, the ORT GenAI model
builder and Optimum's exporter all start from that same Hugging Face folder.
Builder/exporter outputs carry a stamp (the checkpoint's sha256 and the settings)
and are rebuilt when it no longer matches.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAMP = "bench-stamp.json"

# Model presets: slmc overrides. tiny trains briefly; small/large keep their initial
# (random) weights: a speed benchmark needs the shapes, not a good model.
MODELS: dict[str, list[str]] = {
    "tiny": ["model=tiny", "train.max_steps=60"],
    "small": ["model=small", "train=none"],
    "large": ["model=small", "train=none", "model.name=large", "model.hidden_size=768", "model.num_hidden_layers=12",
              "model.num_attention_heads=12", "model.num_key_value_heads=4", "model.intermediate_size=2816"],
}
# Real sizes: a published config.json (slmc.families.published) at full depth with random weights,
# written once by bench/stage_costs.py's checkpoint stage into WORK/checkpoints/<shape>; slmc compiles it
# with init=pretrained train=none. The name is the harness's model name and the published key.
REAL_SHAPES = ("smollm2-135m", "qwen2.5-0.5b")
CHECKPOINTS = "checkpoints"
for _shape in REAL_SHAPES:
    MODELS[_shape] = ["init=pretrained", "train=none"]  # + init.path=<the checkpoint folder>, see model_overrides
COMPRESS = {"fp32": "none", "int8": "int8", "int4": "int4"}
# ORT GenAI builder's own defaults for int4 on CPU (quant_config.py in onnxruntime-genai 0.18: block 32,
# symmetric, accuracy level 4 for -e cpu), spelled out so a change of its defaults cannot move the baseline.
GENAI_INT4_OPTIONS = ["accuracy_level=4", "block_size=32", "is_symmetric=true"]
OPTIMUM_REQUIREMENTS = ["optimum-onnx[onnxruntime]", "torch==2.13.0"]


class Unavailable(Exception):
    """A system cannot be prepared here; the message says why (it goes into the results)."""


def _run(cmd: list[str], log: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    log.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "COLUMNS": "400", **(env or {})})
    log.write_text(f"$ {' '.join(map(str, cmd))}\n{done.stdout}\n--- stderr ---\n{done.stderr}")
    return done


def _tail(done: subprocess.CompletedProcess) -> str:
    lines = [l for l in (done.stderr + done.stdout).strip().splitlines() if l.strip()]
    return " | ".join(lines[-3:])[-500:] or f"exit {done.returncode}"


def model_overrides(model: str, work: Path) -> list[str]:
    """slmc's overrides for one bench model; a real shape also names its checkpoint folder."""
    if model in REAL_SHAPES:
        return [*MODELS[model], f"init.path={(work / CHECKPOINTS / model).resolve()}"]
    return list(MODELS[model])


def real_checkpoint(model: str, work: Path, threads: int = 2) -> Path:
    """The random-weight checkpoint of a published shape at full depth, built once and cached.

    Built in a fresh process by bench/stage_costs.py's checkpoint stage (transformers, seed 0,
    byte-level tokenizer), so this process never imports torch and the weights are the ones the
    stage-cost results measured. A folder without its stamp (an interrupted build) is rebuilt.
    """
    from slmc.families.published import PUBLISHED

    folder = work / CHECKPOINTS / model
    stamp = {"shape": model, "config": PUBLISHED[model], "seed": 0}
    if _fresh(folder, stamp) and (folder / "model.safetensors").is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    spec_path = work / CHECKPOINTS / f"{model}.spec.json"
    result_path = spec_path.with_suffix(".result.json")
    spec_path.write_text(json.dumps({"config": PUBLISHED[model], "checkpoint": str(folder), "threads": threads,
                                     "result_path": str(result_path)}))
    done = _run([sys.executable, str(ROOT / "bench" / "stage_costs.py"), "--stage", "checkpoint", str(spec_path)],
                work / "logs" / f"checkpoint-{model}.log")
    if done.returncode != 0 or not (folder / "model.safetensors").is_file():
        raise Unavailable(f"building the {model} checkpoint failed: {_tail(done)}")
    (folder / STAMP).write_text(json.dumps(stamp))
    return folder


INT4_BLOCK_ENV = "SLMC_BENCH_INT4_BLOCK"
"""Set by run.py --int4-block: int4 compiles pin compress.block_size instead of searching (block_size=auto
quantizes and evaluates every candidate block, minutes each at real size)."""


def _compress_overrides(precision: str) -> list[str]:
    block = os.environ.get(INT4_BLOCK_ENV) if precision == "int4" else None
    return [f"compress={COMPRESS[precision]}"] + ([f"compress.block_size={block}"] if block else [])


def _slmc_compile(model: str, precision: str, work: Path, *flags: str,
                  out_dir: Path | None = None) -> subprocess.CompletedProcess:
    slmc = Path(sys.executable).parent / "slmc"
    base = [str(slmc)] if slmc.exists() else [sys.executable, "-m", "slmc.cli"]
    cmd = [*base, "compile", *flags, *model_overrides(model, work), *_compress_overrides(precision),
           f"out_dir={out_dir or work / 'generated'}"]
    tag = "plan" if "--plan-only" in flags else "compile"
    return _run(cmd, work / "logs" / f"{tag}-{model}-{precision}.log")


def _run_folder(done: subprocess.CompletedProcess) -> Path | None:
    found = [line.split("run folder:", 1)[1].strip() for line in done.stdout.splitlines() if "run folder:" in line]
    return Path(found[-1]) if found else None


def slmc_bundle(model: str, precision: str, work: Path, mode: str = "reuse",
                out_dir: Path | None = None) -> tuple[Path, str]:
    """The run folder of `slmc compile` for one model and precision, and how its bundle was obtained.

    mode "reuse": keep a complete bundle already in the run folder (found by --plan-only);
    "rebuild": compile through slmc's stage cache; "fresh": compile with --no-cache.
    A cached compile whose restored export lost its external-data file (model.onnx.data,
    models > ~100 MB; the compile fails, or publishes a bundle that cannot load) is retried
    once with --no-cache.
    """
    if model in REAL_SHAPES:
        real_checkpoint(model, work)
    if mode == "reuse":
        folder = _run_folder(_slmc_compile(model, precision, work, "--plan-only", out_dir=out_dir))
        if folder and (folder / "bundle" / "manifest.json").is_file() and _loadable(folder):
            return folder, "reused the bundle already in the run folder"
    flags = ["--no-cache"] if mode == "fresh" else []
    done = _slmc_compile(model, precision, work, *flags, out_dir=out_dir)
    how = "compiled (--no-cache)" if mode == "fresh" else "compiled (stage cache)"
    folder = _run_folder(done)
    broken = done.returncode != 0 and "should be stored in" in done.stdout + done.stderr
    broken = broken or (done.returncode == 0 and folder is not None and not _loadable(folder))
    if broken and mode != "fresh":
        done = _slmc_compile(model, precision, work, "--no-cache", out_dir=out_dir)
        folder = _run_folder(done)
        how = ("compiled with --no-cache: through the stage cache the export lost its model.onnx.data "
               "(compile failed, or the bundle was published without it)")
    if done.returncode != 0:
        raise Unavailable(f"slmc compile failed: {_tail(done)}")
    if not folder or not (folder / "bundle" / "manifest.json").is_file() or not _loadable(folder):
        raise Unavailable(f"slmc compile left no complete bundle (see {work / 'logs'})")
    return folder, how


def _loadable(folder: Path) -> bool:
    """The bundle's model file has every external-data file it names (slmc's verify does not check this)."""
    from bench.graphs import missing_external_data

    model = folder / "bundle" / "model.onnx"
    return model.is_file() and not missing_external_data(model)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fresh(out: Path, stamp: dict) -> bool:
    path = out / STAMP
    return path.is_file() and json.loads(path.read_text()) == stamp


def genai_model(checkpoint: Path, precision: str, out: Path, work: Path, block_size: int | None = None) -> Path:
    """ORT GenAI's model builder on the checkpoint folder (-e cpu); reused while the stamp matches.

    int4 takes the builder's CPU defaults (GENAI_INT4_OPTIONS), or `block_size` instead of its 32.
    """
    options = GENAI_INT4_OPTIONS if precision == "int4" else []
    if block_size is not None:
        options = [o for o in options if not o.startswith("block_size=")] + [f"block_size={block_size}"]
    stamp = {"checkpoint": sha256(checkpoint / "model.safetensors"), "precision": precision, "options": options}
    if _fresh(out, stamp):
        return out
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(checkpoint), "-o", str(out),
           "-p", precision, "-e", "cpu", "-c", str(work / "genai-cache")]
    if options:
        cmd += ["--extra_options", *options]
    done = _run(cmd, work / "logs" / f"genai-{out.name}.log")
    if done.returncode != 0 or not (out / "genai_config.json").is_file():
        raise Unavailable(f"ORT GenAI builder failed: {_tail(done)}")
    (out / STAMP).write_text(json.dumps(stamp))
    return out


def optimum_python(work: Path) -> Path:
    """The Optimum venv's interpreter, created and installed on first use (bench/.work/optimum-venv)."""
    venv = work / "optimum-venv"
    python = venv / "bin" / "python"
    marker = venv / "bench-installed.json"
    if marker.is_file() and python.exists():
        return python
    shutil.rmtree(venv, ignore_errors=True)
    log = work / "logs" / "optimum-install.log"
    done = _run(["python3", "-m", "venv", str(venv)], log)
    if done.returncode != 0:
        raise Unavailable(f"python3 -m venv failed: {_tail(done)}")
    # torch first, alone: pip then takes the CPU wheel on disk (PIP_FIND_LINKS) instead of a CUDA build.
    for requirement in (["torch==2.13.0"], OPTIMUM_REQUIREMENTS):
        done = _run([str(python), "-m", "pip", "install", "-q", *requirement], log)
        if done.returncode != 0:
            raise Unavailable(f"pip install {' '.join(requirement)} failed: {_tail(done)}")
    marker.write_text(json.dumps({"requirements": OPTIMUM_REQUIREMENTS}))
    return python


def optimum_model(python: Path, checkpoint: Path, out: Path, work: Path) -> Path:
    """`optimum-cli export onnx --task text-generation-with-past` inside the Optimum venv."""
    stamp = {"checkpoint": sha256(checkpoint / "model.safetensors"), "task": "text-generation-with-past"}
    if _fresh(out, stamp):
        return out
    shutil.rmtree(out, ignore_errors=True)
    cli = python.parent / "optimum-cli"
    done = _run([str(cli), "export", "onnx", "--model", str(checkpoint), "--task", "text-generation-with-past",
                 str(out)], work / "logs" / f"optimum-{out.name}.log")
    if done.returncode != 0 or not (out / "model.onnx").is_file():
        raise Unavailable(f"optimum-cli export failed: {_tail(done)}")
    (out / STAMP).write_text(json.dumps(stamp))
    return out
