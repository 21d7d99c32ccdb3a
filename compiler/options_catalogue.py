"""`slmc devices` and `slmc explain`: the config options on offer and the schema's field docs.

(compiler/rules/catalogue.py is the rule catalogue; this one lists config options.)
"""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any, Literal, Sequence, Union, get_args, get_origin

from pydantic_core import to_jsonable_python
from rich.markup import escape
from rich.table import Table

from .console import console
from .errors import ConfigError
from .load import GROUPS, available_options, compose_raw
from .schema import DeviceConfig, SlmcConfig


def load_devices(extra_dirs: Sequence[Path] = ()) -> list[DeviceConfig]:
    """Every device profile as it composes (schema defaults under the file), yours included."""
    return [DeviceConfig.model_validate(compose_raw([f"device={name}"], extra_dirs)["device"])
            for name in available_options("device", extra_dirs)]


def print_devices(*, as_json: bool = False, extra_dirs: Sequence[Path] = ()) -> int:
    devices = load_devices(extra_dirs)
    if as_json:
        print(json.dumps([d.model_dump() for d in devices], indent=2))
        return 0
    table = Table(title="slmc device profiles (conf/device/" + (" and --config-dir" if extra_dirs else "") + ")")
    for column in ("device", "compute", "memory", "bandwidth", "precisions", "runtimes", "engine build"):
        table.add_column(column)
    for d in devices:
        compute = d.isa + (f" (sm {d.compute_capability})" if d.compute_capability else "")
        memory = f"{d.memory_gb:g} GB × {d.usable_memory_fraction:.0%} usable"
        runtimes = ", ".join(r if r != "tensorrt" else f"tensorrt {d.tensorrt_version}" for r in d.runtimes)
        table.add_row(*(escape(text) for text in (d.name, compute, memory, f"{d.memory_bandwidth_gbps:g} GB/s",
                                                  ", ".join(d.precisions), runtimes, d.engine_build)))
    console().print(table)
    return 0


def print_explain(group: str | None, extra_dirs: Sequence[Path] = ()) -> int:
    sections = {name: field.annotation for name, field in SlmcConfig.model_fields.items()}
    if group is None:
        console().print("config sections: " + ", ".join(sections))
        console().print("groups with options: " + ", ".join(
            f"{g} ({', '.join(available_options(g, extra_dirs))})" for g in GROUPS))
        return 0
    model = sections.get(group)
    if model is None or not hasattr(model, "model_fields"):
        raise ConfigError(f"no config section named {group!r}", where="explain",
                          fix=f"choose one of {', '.join(k for k, v in sections.items() if hasattr(v, 'model_fields'))}")
    table = Table(title=f"{group}: {(model.__doc__ or '').strip()}")
    for column in ("field", "type", "default", "meaning"):
        table.add_column(column)
    for name, field in model.model_fields.items():
        default = "required" if field.is_required() else \
            json.dumps(to_jsonable_python(field.get_default(call_default_factory=True)))  # as YAML reads it
        kind = type_label(field.annotation) + _constraints(field.metadata)
        table.add_row(name, escape(kind), escape(default), escape(" ".join((field.description or "").split())))
    if group in GROUPS:
        table.caption = f"options: {', '.join(available_options(group, extra_dirs))}"
    console().print(table)
    return 0


_NONE = type(None)
_SYMBOLS = {"gt": ">", "ge": "≥", "lt": "<", "le": "≤", "min_length": "length ≥", "max_length": "length ≤"}


def type_label(annotation: Any) -> str:
    """A type as a person reads it: `int (≥ 16) | auto`, `list[int8 | int4]`, `str | null`."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " | ".join(str(a).lower() if isinstance(a, bool) else str(a) for a in args)
    if origin is Union or origin is types.UnionType:
        return " | ".join("null" if a is _NONE else type_label(a) for a in args)
    if hasattr(annotation, "__metadata__"):  # Annotated[T, constraints...]
        metadata = [m for item in annotation.__metadata__ for m in getattr(item, "metadata", [item])]
        return type_label(args[0]) + _constraints(metadata)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_label(a) for a in args)}]"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _constraints(metadata: list) -> str:
    """annotated_types bounds (Gt(0), Ge(16), ...) as ` (> 0, ≤ 1)`."""
    shown = [f"{symbol} {getattr(item, attr):g}" if isinstance(getattr(item, attr), float)
             else f"{symbol} {getattr(item, attr)}"
             for item in metadata for attr, symbol in _SYMBOLS.items() if getattr(item, attr, None) is not None]
    return f" ({', '.join(shown)})" if shown else ""
