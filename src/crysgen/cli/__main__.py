"""``python -m crysgen.cli``, as before the command became a package (same as ``python -m crysgen``)."""

from __future__ import annotations

import sys

from crysgen.cli import main

if __name__ == "__main__":
    sys.exit(main())
