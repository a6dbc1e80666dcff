"""Structured logging: one line per record, ``key=value`` pairs after a short message."""

from __future__ import annotations

import logging
import sys

FORMAT = "ts=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s"


def configure_logging(level: str = "info") -> None:
    """Route xdrec's loggers to stderr; quiet the chattiest libraries."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "faust", "mode", "transformers", "httpx", "faiss"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
