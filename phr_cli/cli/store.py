"""`phr store`: the folders a store's posts came from: list them, re-root one, drop one."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from phr_cli.cli import present
from phr_cli.cli.app import DEFAULT_STORE, app, err, fail, out, printable
from phr_cli.errors import PhrError

store_app = typer.Typer(help="List, re-root (after moving the videos) or drop the folders a store's posts came from.",
                        no_args_is_help=True)
app.add_typer(store_app, name="store")

StoreOption = Annotated[Path, typer.Option("--store", help="The HDF5 feature store.")]


@store_app.command("folders")
def folders(
    store: StoreOption = DEFAULT_STORE,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Each folder the store's posts came from: its posts, their statuses, whether it is still there."""
    from phr_cli.data.folders import list_folders

    try:
        found = list_folders(store)
    except PhrError as error:
        fail(str(error))
    if as_json:
        print(json.dumps([asdict(each) for each in found], indent=2, ensure_ascii=False))
        return
    present.show_folders(store, found)


@store_app.command("rename")
def rename(
    old: Annotated[Path, typer.Argument(help="The folder as the store records it (it may be gone).")],
    new: Annotated[Path, typer.Argument(help="The folder the videos are in now.")],
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Re-root OLD's posts at NEW, e.g. after moving the videos; the posts and their ids stay as they are."""
    from phr_cli.data.folders import folder_name, rename_folder

    try:
        edit = rename_folder(store, old, new)
    except PhrError as error:
        fail(str(error))
    out.print(f"{edit.posts} posts of {printable(folder_name(old))} now under {printable(folder_name(new))} "
              f"in {printable(store)}", highlight=False, soft_wrap=True)
    if edit.files_not_found:
        err.print(f"[yellow]warning:[/] {edit.files_not_found} of their files are not under "
                  f"{printable(folder_name(new))}", highlight=False, soft_wrap=True)


@store_app.command("drop")
def drop(
    folder: Annotated[Path, typer.Argument(help="The folder as the store records it (`phr store folders`).")],
    store: StoreOption = DEFAULT_STORE,
) -> None:
    """Remove FOLDER's posts from the store, and the videos no other post uses."""
    from phr_cli.data.folders import drop_folder, folder_name

    try:
        edit = drop_folder(store, folder)
    except PhrError as error:
        fail(str(error))
    out.print(f"dropped {edit.posts} posts and {edit.videos} videos of {printable(folder_name(folder))} "
              f"from {printable(store)}", highlight=False, soft_wrap=True)
