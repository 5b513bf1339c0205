"""`phr serve`'s log lines: plain text for a terminal, or one JSON object per line for a log
collector (`--log-format json`: time, level, logger, message, and a request's own fields).

One `logging.config.dictConfig` dictionary serves both the command and uvicorn, which applies
it again in each worker process (`--workers`), so that every process writes the same format.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

from phr_cli.choices import Choice


class CurrentStderr(logging.StreamHandler):
    """A handler that writes to whatever `sys.stderr` is when a line is written, not the one it
    was made with: a test runner (or anything else) that swaps stderr and closes its own must
    not leave the process logging into a closed file."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass


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
        "handlers": {"stderr": {"class": "phr_cli.serving.logs.CurrentStderr", "formatter": "phr"}},
        "root": {"level": "INFO", "handlers": ["stderr"]},
        # uvicorn's own loggers keep their level but write through the root's handler.
        "loggers": {name: {"handlers": [], "propagate": True} for name in ("uvicorn", "uvicorn.error")},
    }
