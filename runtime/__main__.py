"""`python -m slmc.runtime run|bench|verify BUNDLE ...` on a device without the compiler."""

import sys

from slmc.runtime.cli import main

if __name__ == "__main__":
    sys.exit(main())
