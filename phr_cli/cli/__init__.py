"""The `phr` command line: parse options, call into phr_cli, print the result.

- `app`: the Typer app, its version/main callback, and what the commands share: the
  consoles, the option types (--device, --quiet, --weights-dir, ...), `fail`, `printable`.
- one module a command, each registering it on the app: `extract`, `inspect`, `store` (a
  group: folders, rename, drop), `train`, `recommend`, `serve`, `evaluate`, `tune`.
- `present`: the rich tables and summary lines that print the commands' results.

Options take their defaults and choices from the configuration dataclasses. Heavy modules
(torch, the encoders) are imported inside the commands so that `phr --help` stays fast.
"""

# Importing the command modules registers their commands, in the order `phr --help` lists them.
from phr_cli.cli import extract, inspect, store, train, recommend, serve, evaluate, tune  # noqa: F401, I001
from phr_cli.cli.app import app

__all__ = ["app"]
