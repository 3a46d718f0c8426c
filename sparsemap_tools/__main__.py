"""``python -m sparsemap_tools``: the same command line as ``sparsemap-tools``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
