"""`phr train`: the store's posts -> a checkpoint (with `--nproc`, under torchrun)."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path

import typer

from phr_cli.cli import present
from phr_cli.cli.app import (
    DEFAULT_CHECKPOINT,
    DEFAULT_STORE,
    SEED_MAX,
    DeviceOption,
    QuietOption,
    app,
    check_device,
    err,
    fail,
    finite,
    out,
    printable,
)
from phr_cli.errors import PhrError


# Choices as enums, so that a bad value is a usage error listing them (exit 2). Their values
# are the library's (model.FUSIONS, model.VARIANTS, registry.PRECISIONS, ...), which import
# torch; tests/test_cli.py checks that both agree.
class Fusion(str, Enum):
    concat = "concat"
    sum = "sum"


class Variant(str, Enum):
    full = "full"
    paper = "paper"
    no_attention = "no_attention"
    no_user_guidance = "no_user_guidance"
    no_hashtag_guidance = "no_hashtag_guidance"


class VideoMessages(str, Enum):
    mean = "mean"
    sum = "sum"


class SplitBy(str, Enum):
    post = "post"
    item = "item"
    time = "time"


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
    store: Path = typer.Option(DEFAULT_STORE, "--store", help="Feature store written by `phr extract`."),
    checkpoint: Path = typer.Option(DEFAULT_CHECKPOINT, "--checkpoint", help="Checkpoint to write (and resume)."),
    device: str = DeviceOption,
    dim: int = typer.Option(64, min=1, help="Latent dimension."),
    layers: int = typer.Option(1, min=1, help="Stacked propagation layers."),
    fusion: Fusion = typer.Option(Fusion.concat, help="concat (Eq. 7) or sum (Eq. 8)."),
    variant: Variant = typer.Option(Variant.full, help="full (phr's default model: GCN-PHR with the count "
                                    "evidence, item IDs and the self-loop), paper (the paper's equations "
                                    "only), or an attention ablation of the default: no_attention "
                                    "(Variant-I), no_user_guidance (Variant-II), no_hashtag_guidance (Variant-III)."),
    content_only: bool = typer.Option(False, "--content-only", help="Drop graph messages (ablation)."),
    residual: bool | None = typer.Option(None, "--residual/--no-residual", help="Keep each node's own embedding "
                                         "beside its messages (a self-loop); default on, off for --variant paper."),
    evidence: bool | None = typer.Option(None, "--evidence/--no-evidence", help="The learned count prior "
                                         "(user, item, popularity, similar items); default on, off for paper."),
    item_ids: bool | None = typer.Option(None, "--item-ids/--no-item-ids", help="ID embeddings for items seen "
                                         "in training; default on, off for paper."),
    item_id_dropout: float | None = typer.Option(None, "--item-id-dropout", min=0.0, max=1.0,
                                                 help="Share of training posts scored without their item's "
                                                 "ID and history; default: the share of validation posts "
                                                 "with a new item."),
    neighbours: int = typer.Option(20, min=1, help="Content neighbours of the similar-items evidence."),
    recency: bool = typer.Option(True, "--recency/--no-recency", help="Weigh the user's past hashtags by how "
                                 "recent they are, beside their counts (an evidence term)."),
    similar_posts: bool = typer.Option(True, "--similar-posts/--no-similar-posts", help="Weigh the user's "
                                       "past hashtags by how alike their items' tags are to this item's "
                                       "(an evidence term)."),
    factors: bool = typer.Option(True, "--factors/--no-factors", help="Fit PITF once the model is trained "
                                 "and add its score as one more calibrated part (with the evidence)."),
    rerank: bool = typer.Option(True, "--rerank/--no-rerank", help="Re-rank each post's leading hashtags "
                                "with gradient-boosted trees fitted on the validation posts (with the "
                                "evidence; kept only if held-out validation P@5 rises)."),
    hard_negatives: float = typer.Option(0.5, "--hard-negatives", min=0.0, max=1.0,
                                         help="Share of negatives drawn from the user's and the item's "
                                         "own hashtags."),
    video_messages: VideoMessages = typer.Option(VideoMessages.mean, "--video-messages",
                                                 help="mean (default: Eq. 6's sum divided "
                                       "by the node's number of groups) or sum (Eq. 6 as printed)."),
    epochs: int = typer.Option(50, min=1, help="Maximum epochs."),
    batch_size: int = typer.Option(1024, "--batch-size", min=1, help="BPR triples per step."),
    lr: float = typer.Option(3e-3, callback=finite(0, inclusive=False), help="Adam learning rate."),
    l2: float = typer.Option(1e-4, callback=finite(0), help="λ of Eq. 11 on the batch's ID embeddings."),
    weight_decay: float = typer.Option(0.0, "--weight-decay", callback=finite(0),
                                       help="Adam weight decay (the paper's code used 0.1)."),
    negatives: int = typer.Option(1, min=1, help="Negative hashtags per positive."),
    patience: int = typer.Option(5, min=1, help="Epochs without validation gain before stopping."),
    seed: int = typer.Option(0, min=0, max=SEED_MAX, help="Seed of the split, initialisation and sampling."),
    split_by: SplitBy = typer.Option(SplitBy.post, "--split-by",
                                     help="post: random posts; item: whole videos held out; "
                                     "time: the latest posts held out (every post needs a time)."),
    resume: bool = typer.Option(True, "--resume/--restart", help="Continue an interrupted checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a finished checkpoint trained with "
                                   "other settings (refused without it)."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Training processes on this machine (torchrun, "
                              "DistributedDataParallel: gloo on CPU, NCCL with one GPU each)."),
    quiet: bool = QuietOption,
) -> None:
    """Train GCN-PHR on the store's posts (8:1:1 split) and write a checkpoint."""
    if nproc > 1:
        from phr_cli.training.distributed import launch

        arguments = sys.argv[sys.argv.index("train") + 1:]
        raise typer.Exit(launch(nproc, ["train", *without_option(arguments, "--nproc")]))
    from rich.progress import BarColumn, SpinnerColumn, TextColumn, TimeElapsedColumn

    from phr_cli.evaluation.plots import curve_path, plot_training_curve
    from phr_cli.model.evidence import EvidenceConfig
    from phr_cli.model.network import Fusion as ConfigFusion
    from phr_cli.model.network import NetworkConfig
    from phr_cli.model.network import Variant as ConfigVariant
    from phr_cli.model.network import VideoMessages as ConfigVideoMessages
    from phr_cli.model.phr import ItemIdConfig, ModelConfig
    from phr_cli.progress import CountColumn, EtaColumn, PhaseProgress
    from phr_cli.training.config import TrainConfig
    from phr_cli.training.distributed import launched_rank
    from phr_cli.training.train import train_from_store

    other_rank = launched_rank() != 0  # under torchrun only rank 0 reports; errors print on every rank
    out.quiet = other_rank
    check_device(device)

    try:
        paper = variant is Variant.paper  # the paper's network alone, unless a part is asked for
        network = NetworkConfig(dim=dim, layers=layers, fusion=ConfigFusion(fusion.value),
                                variant=ConfigVariant("full" if paper else variant.value), propagate=not content_only,
                                video_messages=ConfigVideoMessages(video_messages.value),
                                residual=residual if residual is not None else not paper)
        model_config = ModelConfig(
            network,
            EvidenceConfig(evidence if evidence is not None else not paper, neighbours, recency, similar_posts),
            ItemIdConfig(item_ids if item_ids is not None else not paper, item_id_dropout),
            factors=factors)
        config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, l2=l2,
                             weight_decay=weight_decay, negatives=negatives, patience=patience,
                             seed=seed, device=device, hard_negatives=hard_negatives, rerank=rerank)
    except PhrError as error:
        fail(str(error), code=2)
    if not other_rank:
        err.print(f"training on {printable(store)}; checkpoint {printable(checkpoint)}", highlight=False)
    progress = PhaseProgress(
        SpinnerColumn(), TextColumn("{task.description}"), CountColumn(), BarColumn(),
        TextColumn("{task.fields[scores]}"), TimeElapsedColumn(), EtaColumn(),
        console=err, quiet=quiet or other_rank,
    )
    # No epoch total until the first epoch ends: reading the store and building the graph come first.
    task = progress.add_task("reading the store, building the graph …", total=None, scores="")
    metric_name = config.validation_metric

    def on_epoch(epoch: int, loss: float, metric: float, best: float) -> None:
        scores = present.epoch_scores(loss, metric, best, metric_name)
        if progress.tasks[task].total is None:  # the first epoch (or the first after resuming)
            progress.phase(task, "epoch", epochs, completed=epoch, scores=scores)
        else:
            progress.update(task, completed=epoch, scores=scores)

    def on_finishing(step: str, done: int, total: int | None) -> None:
        if done == 0:  # PITF's fit may stop early (on validation): its count then ends below the total
            progress.phase(task, f"{step} …", total, scores="")
        else:
            progress.update(task, completed=done)

    try:
        with progress:
            outcome = train_from_store(store, checkpoint, model_config, config, split_by.value, on_epoch, resume,
                                       overwrite, on_finishing)
    except PhrError as error:
        fail(str(error))
    if not other_rank:
        try:
            plot_training_curve(outcome.result.history, outcome.result.best_epoch, metric_name,
                                curve_path(checkpoint))
        except PhrError as error:
            fail(str(error))
    present.show_training(outcome, metric_name, curve_path(checkpoint))
