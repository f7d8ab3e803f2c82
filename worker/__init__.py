"""imgmod: moderate whole image archives through Alibaba Cloud Image Moderation 2.0.

``celery -A worker worker`` finds the Celery app as ``worker.app``; it is imported lazily so that
the CLI and the pure modules don't pay for Celery on every start.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        from worker.app import app

        return app
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
