"""`phr serve`: suggestions over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from phr_cli.cli.app import (
    DEFAULT_CHECKPOINT,
    DEFAULT_DEVICE,
    DeviceOption,
    WeightsDirOption,
    app,
    check_device,
    err,
    fail,
    finite,
    quiet_libraries,
)
from phr_cli.errors import PhrError
from phr_cli.serving.options import MAX_BATCH_WINDOW, ServeOptions, token_problem

MIB = 1 << 20  # --max-upload-mb's unit
MS = 1000  # --batch-window-ms's unit


def _usable_token(token: str | None) -> str | None:
    problem = token_problem(token)
    if problem:
        raise typer.BadParameter(problem)
    return token


@app.command()
def serve(
    checkpoint: Annotated[Path, typer.Option(
        "--checkpoint", help="Checkpoint from `phr train`.")] = DEFAULT_CHECKPOINT,
    store: Annotated[Path | None, typer.Option(
        "--store", help="Store the checkpoint was trained on (default: the one it records); its features and "
        "posts explain suggestions.")] = None,
    host: Annotated[str, typer.Option(
        "--host", help="Address to listen on; beyond loopback needs --token.")] = ServeOptions.host,
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = ServeOptions.port,
    token: Annotated[str | None, typer.Option(
        "--token", envvar="PHR_TOKEN", callback=_usable_token,
        help="Bearer token every request but /health/live must carry.")] = ServeOptions.token,
    media_root: Annotated[Path | None, typer.Option(
        "--media-root", help="Serve JSON `path` requests for files under this folder (off by default).")
    ] = ServeOptions.media_root,
    max_upload_mb: Annotated[float, typer.Option(
        "--max-upload-mb", callback=finite(0, inclusive=False), help="Largest upload accepted, in MiB.")
    ] = ServeOptions.max_upload_bytes / MIB,
    decode_workers: Annotated[int, typer.Option(
        "--decode-workers", min=0, help="Decoding processes.")] = ServeOptions.decode_workers,
    file_timeout: Annotated[float, typer.Option(
        "--file-timeout", callback=finite(0, inclusive=False), help="Seconds of decoding a clip gets.")
    ] = ServeOptions.file_timeout,
    batch_window_ms: Annotated[float, typer.Option(
        "--batch-window-ms", callback=finite(0, maximum=MAX_BATCH_WINDOW * MS),
        help="How long a clip waits for others to share its encoder batch.")
    ] = ServeOptions.batch_window * MS,
    journal: Annotated[str | None, typer.Option(
        "--journal", metavar="PATH|URL", help="Where POST /posts records published posts, replayed on start: a file "
        "(SQLite), or a postgresql:// URL that replicas share [default: beside the checkpoint, NAME.journal.db]")
    ] = ServeOptions.journal,
    device: DeviceOption = DEFAULT_DEVICE,
    weights_dir: WeightsDirOption = None,
) -> None:
    """Serve suggestions over HTTP (POST /recommend, POST /posts, GET /users/ID, /health/live, /health/ready;
    docs at /docs)."""
    import logging

    from phr_cli.devices import resolve_device
    from phr_cli.serving.recommend import Recommender
    from phr_cli.serving.serve import run

    check_device(device)
    if not checkpoint.is_file():
        fail(f"{checkpoint}: no checkpoint; run `phr train --checkpoint {checkpoint}` first")
    quiet_libraries()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        options = ServeOptions(host=host, port=port, token=token, media_root=media_root,
                               max_upload_bytes=int(max_upload_mb * MIB), decode_workers=decode_workers,
                               file_timeout=file_timeout, batch_window=batch_window_ms / MS, journal=journal)
        with err.status("loading the checkpoint, encoders and store…"):
            recommender = Recommender(checkpoint, resolve_device(device), weights_dir, store)
            recommender.load_store(explain=True)
    except PhrError as error:
        fail(str(error))
    if recommender.random_weights:
        err.print("note: visual/acoustic encoders use random weights, as the training store did", highlight=False)
    if recommender.explain_problem:
        err.print(f"note: suggestions come without reasons: {recommender.explain_problem}", highlight=False)
    run(recommender, options, checkpoint)
