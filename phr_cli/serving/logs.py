"""`phr serve`'s log lines: plain text for a terminal, or one JSON object per line for a log
collector (`--log-format json`: time, level, logger, message, and a request's own fields).

One `logging.config.dictConfig` dictionary serves both the command and uvicorn, which applies
it again in each worker process (`--workers`), so that every process writes the same format.
"""

from __future__ import annotations

from typing import Any

from phr_cli.choices import Choice


class LogFormat(Choice):
    text = "text"
    json = "json"


TEXT_FORMAT = "%(asctime)s %(name)s %(message)s"
# uvicorn's colour copy of its message (an `extra` field): the JSON object has the plain one.
NOT_LOGGED = ("color_message",)


def logging_config(log_format: LogFormat | str) -> dict[str, Any]:
    """The dictConfig of every phr serve process: INFO and above on stderr, in `log_format`."""
    if LogFormat(log_format) is LogFormat.json:
        from pythonjsonlogger.core import RESERVED_ATTRS

        formatter = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": ["levelname", "name", "message"],
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": "time",  # ISO 8601 in UTC, first in the object
            "reserved_attrs": [*RESERVED_ATTRS, *NOT_LOGGED],
        }
    else:
        formatter = {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"phr": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "phr", "stream": "ext://sys.stderr"}},
        "root": {"level": "INFO", "handlers": ["stderr"]},
        # uvicorn's own loggers keep their level but write through the root's handler.
        "loggers": {name: {"handlers": [], "propagate": True} for name in ("uvicorn", "uvicorn.error")},
    }
