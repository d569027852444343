"""Logging for operators: one line per event on stderr, no secrets.

A call names the event in words and passes its fields as `extra`:

    log.info("feed polled", extra={"feed": feed.name, "feed_id": feed.id, "new": 12})

The text form reads `feed polled feed=bbc-world feed_id=3 new=12` (a value holding a
space, a quote or an equals sign is quoted, as logfmt does), and `--log-format json`
writes the same fields as one JSON object: both are made from the fields themselves,
never parsed back out of a message.
"""

from __future__ import annotations

import json
import logging.config
from datetime import UTC, datetime
from typing import Any

# What every LogRecord carries; anything else on a record came in through `extra`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The event's own fields, in the order the call gave them."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


def _logfmt(value: Any) -> str:
    text = "-" if value is None else str(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        line += "".join(f" {k}={_logfmt(v)}" for k, v in fields(record).items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="seconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update(fields(record))
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def config(level: str = "INFO", form: str = "text") -> dict[str, Any]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "text": {
                "()": TextFormatter,
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
            # trafilatura logs an ERROR for each page without an article in it; here that
            # is an answer (extract.extract's None), not a fault to look into.
            "trafilatura": {"level": "CRITICAL"},
        },
        "root": {"level": "WARNING", "handlers": ["stderr"]},
    }


def setup(level: str = "INFO", form: str = "text") -> None:
    logging.config.dictConfig(config(level, form))
