"""One module per system under test; each exposes `measure(spec) -> dict`.

Modules are imported lazily by name (bench/worker.py), in a fresh process per
measurement, so one system's imports never weigh on another's memory or time.
"""

SYSTEMS = ("slmc_bundle", "torch_eager", "ort_genai", "optimum_ort", "torch_cuda")
