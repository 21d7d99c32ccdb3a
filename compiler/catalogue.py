"""`slmc devices` and `slmc explain`: the shipped options and the schema's field docs."""

from __future__ import annotations

import json
from typing import get_args

import yaml
from rich.table import Table

from .console import console
from .errors import ConfigError
from .load import GROUPS, available_options, conf_dir
from .schema import DeviceConfig, SlmcConfig


def load_devices() -> list[DeviceConfig]:
    devices = []
    for name in available_options("device"):
        path = conf_dir() / "device" / f"{name}.yaml"
        devices.append(DeviceConfig.model_validate(yaml.safe_load(path.read_text())))
    return devices


def print_devices(*, as_json: bool = False) -> int:
    devices = load_devices()
    if as_json:
        print(json.dumps([d.model_dump() for d in devices], indent=2))
        return 0
    table = Table(title="slmc device profiles (conf/device/)")
    for column in ("device", "compute", "memory", "bandwidth", "precisions", "runtimes", "engine build"):
        table.add_column(column)
    for d in devices:
        compute = d.isa + (f" (sm {d.compute_capability})" if d.compute_capability else "")
        memory = f"{d.memory_gb:g} GB × {d.usable_memory_fraction:.0%} usable"
        runtimes = ", ".join(r if r != "tensorrt" else f"tensorrt {d.tensorrt_version}" for r in d.runtimes)
        table.add_row(d.name, compute, memory, f"{d.memory_bandwidth_gbps:g} GB/s", ", ".join(d.precisions),
                      runtimes, d.engine_build)
    console().print(table)
    return 0


def print_explain(group: str | None) -> int:
    sections = {name: field.annotation for name, field in SlmcConfig.model_fields.items()}
    if group is None:
        console().print("config sections: " + ", ".join(sections))
        console().print("groups with options: " + ", ".join(f"{g} ({', '.join(available_options(g))})" for g in GROUPS))
        return 0
    model = sections.get(group)
    if model is None or not hasattr(model, "model_fields"):
        raise ConfigError(f"no config section named {group!r}", where="explain",
                          fix=f"choose one of {', '.join(k for k, v in sections.items() if hasattr(v, 'model_fields'))}")
    table = Table(title=f"{group}: {(model.__doc__ or '').strip()}")
    for column in ("field", "type", "default", "meaning"):
        table.add_column(column)
    for name, field in model.model_fields.items():
        default = "required" if field.is_required() else repr(field.default)
        kind = getattr(field.annotation, "__name__", None) or str(field.annotation).replace("typing.", "")
        if get_args(field.annotation) and "Literal" in str(field.annotation):
            kind = " | ".join(map(str, get_args(field.annotation)))
        table.add_row(name, kind, default, field.description or "")
    console().print(table)
    return 0
