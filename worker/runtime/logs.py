"""Process-wide logging set-up for Orch processes (called at process start, never on import)."""

from __future__ import annotations

import logging
import os


def configure(process: str, level: str | None = None) -> None:
    lvl = (level or os.environ.get("ORCH_LOG_LEVEL", "INFO")).upper()
    logging.basicConfig(
        level=lvl,
        format=f"%(asctime)s %(levelname)s {process}[%(process)d] %(name)s: %(message)s",
        force=True,
    )
    # Dramatiq logs every consumer restart at INFO and every message at DEBUG.
    logging.getLogger("dramatiq").setLevel(max(logging.getLevelName(lvl), logging.WARNING))
