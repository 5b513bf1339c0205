"""`phr serve`: suggestions over HTTP."""

from __future__ import annotations

from pathlib import Path

import typer

from phr_cli.cli.app import (
    DEFAULT_CHECKPOINT,
    DeviceOption,
    WeightsDirOption,
    app,
    check_device,
    err,
    fail,
    quiet_libraries,
)
from phr_cli.errors import PhrError


@app.command()
def serve(
    checkpoint: Path = typer.Option(DEFAULT_CHECKPOINT, "--checkpoint", help="Checkpoint from `phr train`."),
    store: Path | None = typer.Option(None, "--store", help="Store the checkpoint was trained on (default: "
                                         "the one it records); its features and posts explain suggestions."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; beyond loopback needs --token."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    token: str | None = typer.Option(None, "--token", envvar="PHR_TOKEN",
                                        help="Bearer token every request must carry."),
    media_root: Path | None = typer.Option(None, "--media-root", help="Serve JSON `path` requests for "
                                              "files under this folder (off by default)."),
    max_upload_mb: float = typer.Option(100.0, "--max-upload-mb", help="Largest upload accepted, in MiB."),
    decode_workers: int = typer.Option(2, "--decode-workers", min=0, help="Decoding processes."),
    file_timeout: float = typer.Option(30.0, "--file-timeout", help="Seconds of decoding a clip gets."),
    batch_window_ms: float = typer.Option(10.0, "--batch-window-ms", help="How long a clip waits for "
                                          "others to share its encoder batch."),
    device: str = DeviceOption,
    weights_dir: Path | None = WeightsDirOption,
) -> None:
    """Serve suggestions over HTTP (POST /recommend, GET /health, GET /users/ID; docs at /docs)."""
    import logging

    from phr_cli.devices import resolve_device
    from phr_cli.serving.recommend import Recommender
    from phr_cli.serving.serve import ServeOptions, run

    check_device(device)
    if not checkpoint.is_file():
        fail(f"{checkpoint}: no checkpoint; run `phr train --checkpoint {checkpoint}` first")
    quiet_libraries()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        options = ServeOptions(host=host, port=port, token=token, media_root=media_root,
                               max_upload_bytes=int(max_upload_mb * (1 << 20)), decode_workers=decode_workers,
                               file_timeout=file_timeout, batch_window=batch_window_ms / 1000)
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
