"""Importing this module registers every rule of the catalogue (docs/rules.md lists them)."""

from . import (  # noqa: F401  (imported for their @rule registrations)
    arch,
    baseline,
    checkpoint,
    data,
    data_format,
    distill,
    latency,
    lora,
    memory,
    precision,
    provenance,
    prune,
    qat,
    quant,
    runtime,
    scaleout,
    shape,
    tasks,
    training,
    trt,
)
