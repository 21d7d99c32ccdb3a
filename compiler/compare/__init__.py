"""Comparing two bundles or run folders: the regression gate (`targets.baseline`) and `slmc diff`.

The measurements themselves (perplexity, speed, memory, both bundles in one process) are
`slmc.runtime.compare`'s, so a device can rerun them without the compiler.
"""
