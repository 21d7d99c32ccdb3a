"""slmc: a compiler for the lifecycle of small language models.

Kept import-light on purpose: `slmc check` must start in well under a second,
and `slmc.runtime` must import on a device that has no torch.
"""

__version__ = "0.1.0"
