"""slmc: a compiler for the lifecycle of small language models.

Kept import-light on purpose: `slmc check` must start in well under a second,
and `slmc.runtime` must import on a device that has no torch. The Python API
(`slmc.check`, `slmc.compile`: see slmc.api) is imported on first use.
"""

__version__ = "0.1.0"

_API = ("check", "compile", "CheckResult", "CompileResult")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from . import api

        value = getattr(api, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'slmc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
