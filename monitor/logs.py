"""Logging for operators: one line per event on stderr, key=value pairs, no secrets."""

from __future__ import annotations

import logging.config
from typing import Any


def config(level: str = "INFO") -> dict[str, Any]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "line": {
                "format": "%(asctime)s %(levelname)s %(name)s: %(message)s",
                "datefmt": "%Y-%m-%dT%H:%M:%S%z",
            },
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "line",
                "stream": "ext://sys.stderr",
            },
        },
        "loggers": {
            "monitor": {"level": level},
            # slack-sdk logs request bodies at DEBUG; keep it quiet so tokens never leak.
            "slack_sdk": {"level": "WARNING"},
            "httpx": {"level": "WARNING"},
            "apscheduler": {"level": "WARNING"},
        },
        "root": {"level": "WARNING", "handlers": ["stderr"]},
    }


def setup(level: str = "INFO") -> None:
    logging.config.dictConfig(config(level))
