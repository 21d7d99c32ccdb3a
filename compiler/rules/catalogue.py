"""Importing this module registers every rule of the catalogue (DESIGN.md §4)."""

from . import (  # noqa: F401  (imported for their @rule registrations)
    arch,
    checkpoint,
    data,
    distill,
    latency,
    lora,
    memory,
    precision,
    prune,
    qat,
    quant,
    runtime,
    shape,
    training,
    trt,
)
