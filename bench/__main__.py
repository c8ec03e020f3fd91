"""``python -m bench``: run the fan-out benchmark (see ``bench.cli``)."""

from __future__ import annotations

import sys

from bench.cli import main

sys.exit(main())
