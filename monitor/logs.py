"""Logging for operators: one line per event on stderr, key=value pairs, no secrets.

Messages read "event words key=value key=value"; `--log-format json` turns each into a
JSON object with the same keys, for log shippers.
"""

from __future__ import annotations

import json
import logging.config
import re
from datetime import UTC, datetime
from typing import Any

_FIELD = re.compile(r"(?:^|\s)([a-z_]+)=")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        marks = list(_FIELD.finditer(message))
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="seconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": message[: marks[0].start()].strip() if marks else message,
        }
        for mark, following in zip(marks, [*marks[1:], None], strict=True):
            end = following.start() if following else len(message)
            entry[mark.group(1)] = message[mark.end() : end].strip()
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def config(level: str = "INFO", form: str = "text") -> dict[str, Any]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "text": {
                "format": "%(asctime)s %(levelname)s %(name)s: %(message)s",
                "datefmt": "%Y-%m-%dT%H:%M:%S%z",
            },
            "json": {"()": JsonFormatter},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": form,
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


def setup(level: str = "INFO", form: str = "text") -> None:
    logging.config.dictConfig(config(level, form))
