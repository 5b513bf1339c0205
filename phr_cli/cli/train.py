"""`phr train`: the store's posts -> a checkpoint (with `--nproc`, under torchrun)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from typer._click.core import ParameterSource

from phr_cli.choices import Choice
from phr_cli.cli import present
from phr_cli.cli.app import (
    DEFAULT_CHECKPOINT,
    DEFAULT_STORE,
    SEED_MAX,
    DeviceOption,
    JournalOption,
    QuietOption,
    SplitBy,
    app,
    check_device,
    choices,
    err,
    fail,
    finite,
    out,
    printable,
    take_journal,
)
from phr_cli.errors import ConfigError, PhrError
from phr_cli.model.config import (
    EvidenceConfig,
    Fusion,
    ItemIdConfig,
    ModelConfig,
    NetworkConfig,
    Variant,
    VideoMessages,
)
from phr_cli.training.config import TrainConfig

# --variant: the default model's attention variants (Variant) and "paper", the paper's network
# alone (ModelConfig.paper: no self-loop, no evidence, no item IDs, unless a part is asked for).
PAPER = "paper"
if TYPE_CHECKING:
    from phr_cli.training.train import StoreTraining

    TrainVariant = Choice
else:
    TrainVariant = choices("TrainVariant", [Variant.FULL, PAPER, *(v for v in Variant if v is not Variant.FULL)])
DEFAULT_VARIANT = TrainVariant(NetworkConfig.variant)


def without_option(arguments: list[str], name: str) -> list[str]:
    """`arguments` less `name VALUE` / `name=VALUE`."""
    kept, skip = [], False
    for argument in arguments:
        if skip:
            skip = False
        elif argument == name:
            skip = True
        elif not argument.startswith(name + "="):
            kept.append(argument)
    return kept


@app.command()
def train(
    ctx: typer.Context,
    store: Annotated[Path, typer.Option("--store", help="Feature store written by `phr extract`.")] = DEFAULT_STORE,
    checkpoint: Annotated[Path, typer.Option(
        "--checkpoint", help="Checkpoint to write (and resume).")] = DEFAULT_CHECKPOINT,
    device: DeviceOption = TrainConfig.device,
    dim: Annotated[int, typer.Option(min=1, help="Latent dimension.")] = NetworkConfig.dim,
    layers: Annotated[int, typer.Option(min=1, help="Stacked propagation layers.")] = NetworkConfig.layers,
    fusion: Annotated[Fusion, typer.Option(help="concat (Eq. 7) or sum (Eq. 8).")] = NetworkConfig.fusion,
    variant: Annotated[TrainVariant, typer.Option(
        help="full (phr's default model: GCN-PHR with the count evidence, item IDs and the self-loop), paper "
        "(the paper's equations only), or an attention ablation of the default: no_attention (Variant-I), "
        "no_user_guidance (Variant-II), no_hashtag_guidance (Variant-III).")] = DEFAULT_VARIANT,
    content_only: Annotated[bool, typer.Option(
        "--content-only", help="Drop graph messages (ablation).")] = not NetworkConfig.propagate,
    residual: Annotated[bool | None, typer.Option(
        "--residual/--no-residual", help="Keep each node's own embedding beside its messages (a self-loop); "
        "default on, off for --variant paper.")] = None,
    evidence: Annotated[bool | None, typer.Option(
        "--evidence/--no-evidence", help="The learned count prior (user, item, popularity, similar items); "
        "default on, off for paper.")] = None,
    item_ids: Annotated[bool | None, typer.Option(
        "--item-ids/--no-item-ids", help="ID embeddings for items seen in training; default on, off for "
        "paper.")] = None,
    item_id_dropout: Annotated[float | None, typer.Option(
        "--item-id-dropout", callback=finite(0, maximum=1), help="Share of training posts scored without their "
        "item's ID and history; default: the share of validation posts with a new item.")] = ItemIdConfig.dropout,
    neighbours: Annotated[int, typer.Option(
        min=1, help="Content neighbours of the similar-items evidence.")] = EvidenceConfig.neighbours,
    recency: Annotated[bool, typer.Option(
        "--recency/--no-recency", help="Weigh the user's past hashtags by how recent they are, beside their "
        "counts (an evidence term).")] = EvidenceConfig.recency,
    similar_posts: Annotated[bool, typer.Option(
        "--similar-posts/--no-similar-posts", help="Weigh the user's past hashtags by how alike their items' "
        "tags are to this item's (an evidence term).")] = EvidenceConfig.similar_posts,
    factors: Annotated[bool, typer.Option(
        "--factors/--no-factors", help="Fit PITF once the model is trained and add its score as one more "
        "calibrated part (with the evidence).")] = ModelConfig.factors,
    rerank: Annotated[bool, typer.Option(
        "--rerank/--no-rerank", help="Re-rank each post's leading hashtags with gradient-boosted trees fitted "
        "on the validation posts (with the evidence; kept only if held-out validation P@5 rises).")
    ] = TrainConfig.rerank,
    hard_negatives: Annotated[float, typer.Option(
        "--hard-negatives", callback=finite(0, maximum=1), help="Share of negatives drawn from the user's and the "
        "item's own hashtags.")] = TrainConfig.hard_negatives,
    video_messages: Annotated[VideoMessages, typer.Option(
        "--video-messages", help="mean (default: Eq. 6's sum divided by the node's number of groups) or sum "
        "(Eq. 6 as printed).")] = NetworkConfig.video_messages,
    epochs: Annotated[int, typer.Option(
        min=1, help="Maximum epochs; above a finished run's, it continues that run (patience counted afresh).")
    ] = TrainConfig.epochs,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", min=1, help="BPR triples per step.")] = TrainConfig.batch_size,
    lr: Annotated[float, typer.Option(
        callback=finite(0, inclusive=False), help="Adam learning rate.")] = TrainConfig.lr,
    l2: Annotated[float, typer.Option(
        callback=finite(0), help="λ of Eq. 11 on the batch's ID embeddings.")] = TrainConfig.l2,
    weight_decay: Annotated[float, typer.Option(
        "--weight-decay", callback=finite(0), help="Adam weight decay (the paper's code used 0.1).")
    ] = TrainConfig.weight_decay,
    negatives: Annotated[int, typer.Option(min=1, help="Negative hashtags per positive.")] = TrainConfig.negatives,
    patience: Annotated[int, typer.Option(
        min=1, help="Epochs without validation gain before stopping.")] = TrainConfig.patience,
    seed: Annotated[int, typer.Option(
        min=0, max=SEED_MAX, help="Seed of the split, initialisation and sampling.")] = TrainConfig.seed,
    seeds: Annotated[str | None, typer.Option(
        "--seeds", metavar="LIST|N", help="One checkpoint per seed, each its own split and initialisation: seeds "
        "(0,1,2) or a count (3: seeds 0, 1, 2). Seed 0 writes --checkpoint, seed N NAME.seedN.pt beside it.")
    ] = None,
    split_by: Annotated[SplitBy, typer.Option(
        "--split-by", help="post: random posts; item: whole videos held out; time: the latest posts held out "
        "(every post needs a time).")] = SplitBy.post,
    resume: Annotated[bool, typer.Option("--resume/--restart", help="Continue an interrupted checkpoint.")] = True,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace a finished checkpoint trained with other settings (refused without it).")
    ] = False,
    warm_start: Annotated[Path | None, typer.Option(
        "--warm-start", metavar="OLD.pt", help="Begin from this checkpoint of the same model configuration, "
        "trained on an earlier state of the store: its users', hashtags' and items' rows carried over by name "
        "(new ones initialised afresh), its other learned weights whole; statistics fitted on this store.")
    ] = None,
    nproc: Annotated[int, typer.Option(
        "--nproc", min=1, help="Training processes on this machine (torchrun, DistributedDataParallel: gloo on "
        "CPU, NCCL with one GPU each).")] = 1,
    refresh: Annotated[bool, typer.Option(
        "--refresh", help="Do not train: fold the posts the store gained since the checkpoint was trained (and "
        "--journal's) into its counts, in place, in seconds; the network stays as trained.")] = False,
    journal: JournalOption = None,
    quiet: QuietOption = False,
) -> None:
    """Train GCN-PHR on the store's posts (8:1:1 split) and write a checkpoint."""
    if refresh and warm_start is not None:  # a refresh trains nothing to start warm
        fail("--refresh folds posts into --checkpoint without training, --warm-start trains: give one", code=2)
    if refresh:
        _refresh(checkpoint, store, journal)
        return
    if nproc > 1:
        from phr_cli.training.distributed import launch

        arguments = sys.argv[sys.argv.index("train") + 1:]
        raise typer.Exit(launch(nproc, ["train", *without_option(arguments, "--nproc")]))
    from phr_cli.training.distributed import launched_rank

    other_rank = launched_rank() != 0  # under torchrun only rank 0 reports; errors print on every rank
    out.quiet = other_rank
    check_device(device)

    try:
        paper = variant == PAPER  # the paper's network alone, unless a part is asked for
        network = NetworkConfig(dim=dim, layers=layers, fusion=fusion,
                                variant=Variant.FULL if paper else Variant(variant.value), propagate=not content_only,
                                video_messages=video_messages, residual=residual if residual is not None else not paper)
        model_config = ModelConfig(
            network,
            EvidenceConfig(evidence if evidence is not None else not paper, neighbours, recency, similar_posts),
            ItemIdConfig(item_ids if item_ids is not None else not paper, item_id_dropout),
            factors=factors)
        config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, l2=l2,
                             weight_decay=weight_decay, negatives=negatives, patience=patience,
                             seed=seed, device=device, hard_negatives=hard_negatives, rerank=rerank)
        runs = [(checkpoint, config)] if seeds is None else _seed_runs(
            checkpoint, config, seeds, seed_given=ctx.get_parameter_source("seed") is ParameterSource.COMMANDLINE)
    except PhrError as error:
        fail(str(error), code=2)
    if journal is not None and not other_rank:
        take_journal(journal, store)
    for path, run_config in runs:  # with --seeds, one a seed
        if not other_rank:
            err.print(f"training on {printable(store)}; checkpoint {printable(path)}", highlight=False)
        outcome = _run(store, path, model_config, run_config, split_by.value, resume, overwrite,
                       quiet or other_rank, warm_start)
        show_outcome(outcome, run_config.validation_metric, path, draw=not other_rank)


def _refresh(checkpoint: Path, store: Path, journal: str | None) -> None:
    from phr_cli.data.journal import open_journal
    from phr_cli.training.refresh import refresh_checkpoint

    if not checkpoint.is_file():
        fail(f"{printable(checkpoint)}: no checkpoint to refresh; run `phr train --checkpoint "
             f"{printable(checkpoint)}` first")
    try:
        if journal is None:
            done = refresh_checkpoint(checkpoint, store)
        else:
            with open_journal(journal) as opened:
                done = refresh_checkpoint(checkpoint, store, opened)
    except PhrError as error:
        fail(str(error))
    if done.intake is not None:
        err.print(f"journal {printable(journal or '')}: {done.intake.posts} post(s) taken into the store "
                  f"({done.intake.already} there before)", highlight=False, soft_wrap=True)
    out.print(f"refreshed {printable(checkpoint)}: {done.posts} post(s) folded in ({done.users} new user(s), "
              f"{done.hashtags} new hashtag(s), {done.items} new video(s)) in {done.seconds:.1f} s; the network "
              "is as trained", highlight=False, soft_wrap=True)


def show_outcome(outcome: StoreTraining, metric_name: str, checkpoint: Path, draw: bool = True) -> None:
    """The training curve beside the checkpoint (with `draw`), then the summary: `phr train`'s,
    and `phr tune`'s of its final training."""
    from phr_cli.evaluation.plots import curve_path, plot_training_curve

    if draw:
        try:
            plot_training_curve(outcome.result.history, outcome.result.best_epoch, metric_name,
                                curve_path(checkpoint))
        except PhrError as error:
            fail(str(error))
    present.show_training(outcome, metric_name, curve_path(checkpoint))


def _seed_runs(checkpoint: Path, config: TrainConfig, seeds: str, seed_given: bool) -> list[tuple[Path, TrainConfig]]:
    from phr_cli.training.seeds import parse_seeds, seed_runs

    if seed_given:  # even --seed 0: each of --seeds is a seed
        raise ConfigError("give --seed or --seeds, not both")
    return seed_runs(checkpoint, config, parse_seeds(seeds))


def _run(store: Path, checkpoint: Path, model_config: ModelConfig, config: TrainConfig, split_by: str,
         resume: bool, overwrite: bool, quiet: bool, warm_start: Path | None = None) -> StoreTraining:
    """Training under a progress display: reading and building, then the epochs with their
    scores, then the steps after them (PITF, calibration, the re-ranker)."""
    from rich.progress import BarColumn, SpinnerColumn, TextColumn, TimeElapsedColumn

    from phr_cli.progress import CountColumn, EtaColumn, PhaseProgress
    from phr_cli.training.train import train_from_store

    progress = PhaseProgress(
        SpinnerColumn(), TextColumn("{task.description}"), CountColumn(), BarColumn(),
        TextColumn("{task.fields[scores]}"), TimeElapsedColumn(), EtaColumn(),
        console=err, quiet=quiet,
    )
    # No epoch total until the first epoch ends: reading the store and building the graph come first.
    task = progress.add_task("reading the store, building the graph …", total=None, scores="")
    metric_name = config.validation_metric

    def on_epoch(epoch: int, loss: float, metric: float, best: float) -> None:
        scores = present.epoch_scores(loss, metric, best, metric_name)
        if progress.tasks[task].total is None:  # the first epoch (or the first after resuming)
            progress.phase(task, "epoch", config.epochs, completed=epoch, scores=scores)
        else:
            progress.update(task, completed=epoch, scores=scores)

    def on_finishing(step: str, done: int, total: int | None) -> None:
        if done == 0:  # PITF's fit may stop early (on validation): its count then ends below the total
            progress.phase(task, f"{step} …", total, scores="")
        else:
            progress.update(task, completed=done)

    try:
        with progress:
            return train_from_store(store, checkpoint, model_config, config, split_by, on_epoch, resume,
                                    overwrite, on_finishing, warm_start)
    except PhrError as error:
        fail(str(error))
