"""Shared test setup: small thread counts so tests behave on a 2-core machine, and the fixture
plugins that several folders share (tests/fixtures/)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ("tests.fixtures.bundle", "tests.fixtures.checkpoints")
