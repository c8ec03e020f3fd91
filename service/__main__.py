"""``python -m service``: same as the ``smartscheduler-realtime`` console script."""

from __future__ import annotations

from service.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
