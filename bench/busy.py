"""A background busy process: one CPU-bound Python loop, the "machine doing other work" of the
--busy condition (issue 13: a phone or a Jetson also runs a camera pipeline).

Started before a busy cell's systems and stopped (by its own pid) after them, so idle and busy
cells alternate inside every round and drift falls on both alike.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

BUSY_CODE = "import os, sys\nparent = int(sys.argv[1])\nwhile os.getppid() == parent:\n    pass\n"
"""CPU-bound until its parent is gone: a harness killed before its `finally` leaves no spinner behind."""


@contextlib.contextmanager
def busy_process(enabled: bool = True) -> Iterator[int | None]:
    """Run one CPU-bound process for the duration of the block; yields its pid (None if disabled)."""
    if not enabled:
        yield None
        return
    # the parent's pid as an argument: a parent killed while the child starts up is still noticed
    proc = subprocess.Popen([sys.executable, "-c", BUSY_CODE, str(os.getpid())], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()
