"""``python -m crysgen``."""

from __future__ import annotations

import sys

from crysgen.cli import main

sys.exit(main())
