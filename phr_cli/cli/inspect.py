"""`phr inspect`: what a store, checkpoint or manifest holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from phr_cli.cli import present
from phr_cli.cli.app import DEFAULT_STORE, app, fail
from phr_cli.errors import PhrError


@app.command()
def inspect(
    path: Annotated[Path | None, typer.Argument(
        help="A feature store, a checkpoint, a `phr tune` study (.tune.db or .tune.json) or a posts.csv / "
        "posts.jsonl manifest (default: --store).")] = None,
    store: Annotated[Path, typer.Option(
        "--store", help="The HDF5 feature store (when no PATH is given).")] = DEFAULT_STORE,
    failures: Annotated[bool, typer.Option("--failures", help="List only the files that failed.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Rows a list shows (files, users, hashtags).")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Show what a store, checkpoint or manifest holds: files with status and reason, users, hashtags."""
    from phr_cli.serving.inspection import inspect_path

    target = path or store
    try:
        summary = inspect_path(target, limit, failures)
    except PhrError as error:
        fail(str(error))
    if as_json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    present.show_inspection(summary)
