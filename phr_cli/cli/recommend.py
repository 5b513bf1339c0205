"""`phr recommend`: ranked hashtags for new clips, personalised to a user."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from phr_cli.cli import present
from phr_cli.cli.app import (
    DEFAULT_CHECKPOINT,
    DEFAULT_DEVICE,
    DeviceOption,
    WeightsDirOption,
    app,
    check_device,
    err,
    fail,
    printable,
    quiet_libraries,
)
from phr_cli.errors import PhrError


@app.command()
def recommend(
    clips: Annotated[list[Path], typer.Argument(help="Video files, or folders of videos.")],
    user: Annotated[str | None, typer.Option(
        "--user", "-u", help="Who posts the clip (as in the training posts).")] = None,
    caption: Annotated[str, typer.Option(
        "--caption", help="The clip's description; its hashtags are never suggested.")] = "",
    top: Annotated[int, typer.Option("--top", "-k", min=1, max=10_000, help="How many hashtags.")] = 10,
    checkpoint: Annotated[Path, typer.Option(
        "--checkpoint", help="Checkpoint from `phr train`.")] = DEFAULT_CHECKPOINT,
    store: Annotated[Path | None, typer.Option(
        "--store", help="Store whose features are reused for known clips (default: the one the checkpoint was "
        "trained on).")] = None,
    exclude_used: Annotated[bool, typer.Option(
        "--exclude-used", help="Leave out hashtags the user has used before.")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print JSON only (each suggestion with its reasons).")] = False,
    explain: Annotated[bool, typer.Option("--explain", help="Say why each hashtag was suggested.")] = False,
    device: DeviceOption = DEFAULT_DEVICE,
    weights_dir: WeightsDirOption = None,
) -> None:
    """Rank hashtags for new clips, personalised to --user."""
    from phr_cli.data.posts import find_videos
    from phr_cli.devices import resolve_device
    from phr_cli.serving.recommend import Recommender, check_clips

    check_device(device)
    paths: list[Path] = []
    for clip in clips:
        paths.extend(find_videos(clip) if clip.is_dir() else [clip])
    if not paths:
        fail(f"no video files found in {', '.join(map(str, clips))}")
    if not checkpoint.is_file():
        fail(f"{printable(checkpoint)}: no checkpoint; run `phr train --checkpoint {printable(checkpoint)}` first")
    if not caption:  # with a caption, a missing clip is ranked from its text (README)
        try:
            check_clips(paths)  # before the encoders load: a mistyped name fails in a second
        except PhrError as error:
            fail(str(error))
    quiet_libraries()
    try:
        recommender = Recommender(checkpoint, resolve_device(device), weights_dir, store)
        results = recommender.recommend(paths, user, caption, top, exclude_used, explain or as_json)
    except PhrError as error:
        fail(str(error))
    ranked = [result for result in results if not result.error]
    if ranked and not ranked[0].personalised:
        who = f"user {user!r} has no training posts" if user else "no --user given"
        close = recommender.closest_users(user) if user else []
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        err.print(f"{printable(who)}{printable(hint)}: content-based ranking for an average user", highlight=False,
                  soft_wrap=True)
    if recommender.random_weights:
        err.print("note: visual/acoustic encoders use random weights, as the training store did",
                  highlight=False)
    # Asked for and lost (no store, another store): said once, not a line a clip.
    lost = (explain or as_json) and recommender.explain_problem
    unexplained = f"no explanations: {recommender.explain_problem}" if lost else ""
    if unexplained:
        err.print(f"[yellow]warning:[/] {printable(unexplained)}", highlight=False, soft_wrap=True)
    if as_json:
        print(json.dumps([r.to_dict() for r in results], indent=2, ensure_ascii=False))
    else:
        present.show_recommendations(results, user, explain)
    present.show_clip_problems(results, shown=unexplained)
    if len(ranked) < len(results):
        raise typer.Exit(1)
