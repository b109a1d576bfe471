"""``python -m fastoptim``: see :mod:`fastoptim.cli`."""

import sys

from fastoptim.cli import main

if __name__ == "__main__":
    sys.exit(main())
