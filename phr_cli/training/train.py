"""Training GCN-PHR with BPR (Eq. 11): model selection on validation, atomic resumable checkpoints.

train.py prints nothing; the CLI draws progress through the `progress` callback.

A run starts fresh, resumes an interrupted checkpoint of the same settings, or extends a
finished one when `epochs` exceeds the epochs it was trained with: from its last epoch's
weights and random streams, Adam's moments anew (a finished checkpoint drops them) and
patience counted afresh (an early-stopped run gets `patience` more epochs to beat its best
epoch), the steps after the epochs run again. A finished run with no more epochs is left as
it is (`Start.FINISHED`).

A fresh run may be warm-started from a checkpoint trained on an earlier state of the store
(training/warm_start.py): its weights are validated before the first epoch as epoch 0, the
best epoch if none beats them. An interrupted warm-started run resumes as any other, and
its checkpoint keeps where it began (`Checkpoint.warm_start`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from phr_cli.choices import Choice, plain_values
from phr_cli.data.cases import TestCases
from phr_cli.data.dataset import Dataset, SplitPosts
from phr_cli.data.graph import MODALITIES, Graph, PostData
from phr_cli.data.provenance import Provenance
from phr_cli.errors import CheckpointError, DataError
from phr_cli.evaluation.baselines import fit_pitf_on_validation
from phr_cli.evaluation.metrics import evaluate, small_data_notices
from phr_cli.files import sha256_of
from phr_cli.model.config import ModelConfig
from phr_cli.model.factors import FittedFactors
from phr_cli.model.network import bpr_loss
from phr_cli.model.phr import PHRModel
from phr_cli.model.pitf import PITF, PITFConfig
from phr_cli.ranking.calibration import calibrate
from phr_cli.ranking.rerank import fit_reranker
from phr_cli.ranking.scorer import ModelScorer
from phr_cli.ranking.validation import MIN_FIT_CASES
from phr_cli.training.checkpoint import (
    READABLE_FORMATS,
    Checkpoint,
    ResumeState,
    WarmStart,
    load_checkpoint,
    read_checkpoint_file,
)
from phr_cli.training.config import TrainConfig, settings
from phr_cli.training.distributed import Ranks, join, leave, mean_over_ranks
from phr_cli.training.warm_start import carry_over, load_origin

# Settings that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = ("epochs", "device", "step_propagation", "adam")

ProgressCallback = Callable[[int, float, float, float], None]
# After the epochs, a model with evidence fits PITF's factors, calibrates its parts and fits
# its re-ranker, which can take minutes on a large store: finishing(step, done, total)
# reports each step as it starts (done 0) and PITF's fit after each of its epochs (total
# None: not counted).
FinishingCallback = Callable[[str, int, int | None], None]
FITTING_FACTORS = "fitting PITF's factors"
CALIBRATING = "calibrating on validation"
RERANKING = "fitting the re-ranker on validation"


class Start(Choice):
    """What a `train` call did with the checkpoint it found."""

    FRESH = "fresh"  # no checkpoint of this run: from the first epoch
    RESUMED = "resumed"  # an interrupted run, continued at its next epoch
    EXTENDED = "extended"  # a finished run, continued up to more epochs
    FINISHED = "finished"  # a finished run with no more epochs to run: nothing done


@dataclass
class TrainResult:
    checkpoint_path: Path
    best_epoch: int  # 1-based; 0: a warm start's weights, which no epoch beat
    best_metric: float
    # per epoch: epoch, loss, metric, seconds (all of it), train_seconds (the training pass alone)
    history: list[dict[str, float]]
    resumed_from_epoch: int | None  # last epoch of the checkpoint a run continued (resumed or extended)
    stopped_early: bool
    device: str
    n_validation_cases: int
    n_validation_dropped: int  # validation posts left without a hashtag known to training
    # How the re-ranker was chosen (`rerank.Reranking` as a dict); None: not fitted (too few
    # validation cases, or a model without it).
    reranking: dict[str, Any] | None = None
    start: Start = Start.FRESH
    epochs: int = 0  # the run's maximum epochs, as its checkpoint records them
    stages: dict[str, str] = field(default_factory=dict)  # `Checkpoint.stages`
    warm_start: WarmStart | None = None  # `Checkpoint.warm_start`


class NegativeSampler:
    """Negatives among the hashtags not on the post (user, item) of each positive triple:
    uniform, or for a `hard` share of them one of the user's or the item's own training
    hashtags. Uniform negatives are mostly hashtags nobody would suggest; the hard ones
    teach what a ranking must get right — which of the user's habitual hashtags fit this
    post (92 % of the hashtags on new posts are ones their user used before)."""

    def __init__(self, triples: np.ndarray, n_hashtags: int, hard: float = 0.0) -> None:
        self.hard = hard
        # Each user's and each item's distinct training hashtags, CSR: the pool of hard negatives.
        self.user_pool = _hashtags_by(triples[:, 0], triples[:, 1], n_hashtags)
        self.item_pool = _hashtags_by(triples[:, 2], triples[:, 1], n_hashtags)
        self.triple_user, self.triple_item = triples[:, 0], triples[:, 2]
        _, post_of_triple, tags_per_post = np.unique(
            triples[:, [0, 2]], axis=0, return_inverse=True, return_counts=True
        )
        self.n_hashtags = n_hashtags
        self.post_of_triple = post_of_triple.reshape(-1)
        self.taken = np.unique(self.post_of_triple * n_hashtags + triples[:, 1])  # sorted keys
        # A post carrying every hashtag has no negative to rank below its positives.
        self.trainable = np.flatnonzero(tags_per_post[self.post_of_triple] < n_hashtags)

    def _is_taken(self, posts: np.ndarray, hashtags: np.ndarray) -> np.ndarray:
        keys = posts * self.n_hashtags + hashtags
        at = np.searchsorted(self.taken, keys).clip(max=len(self.taken) - 1)
        return self.taken[at] == keys

    def sample(self, triple_rows: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
        """(len(triple_rows), count) hashtag indices, by rejection sampling."""
        posts = np.repeat(self.post_of_triple[triple_rows], count)
        negatives = rng.integers(0, self.n_hashtags, size=len(posts))
        if self.hard > 0:
            hard = np.flatnonzero(rng.random(len(posts)) < self.hard)
            rows = np.repeat(triple_rows, count)[hard]
            from_user = rng.random(len(hard)) < 0.5
            # A pool holding only the post's own hashtags yields taken draws: the rejection
            # below replaces them with uniform ones.
            negatives[hard[from_user]] = _draw(self.user_pool, self.triple_user[rows[from_user]], rng)
            negatives[hard[~from_user]] = _draw(self.item_pool, self.triple_item[rows[~from_user]], rng)
        rejected = np.flatnonzero(self._is_taken(posts, negatives))
        while len(rejected):
            negatives[rejected] = rng.integers(0, self.n_hashtags, size=len(rejected))
            rejected = rejected[self._is_taken(posts[rejected], negatives[rejected])]
        return negatives.reshape(len(triple_rows), count)


def _hashtags_by(owners: np.ndarray, hashtags: np.ndarray, n_hashtags: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR (row starts, hashtags) of each owner's distinct hashtags."""
    keys = np.unique(owners.astype(np.int64) * n_hashtags + hashtags)
    owner_of_key, hashtag_of_key = keys // n_hashtags, keys % n_hashtags
    starts = np.zeros(int(owners.max(initial=-1)) + 2, dtype=np.int64)
    np.add.at(starts, owner_of_key + 1, 1)
    return starts.cumsum(), hashtag_of_key


def _draw(pool: tuple[np.ndarray, np.ndarray], owners: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One hashtag drawn uniformly from each owner's pool (every owner has at least one)."""
    starts, hashtags = pool
    sizes = starts[owners + 1] - starts[owners]
    return hashtags[starts[owners] + (rng.random(len(owners)) * sizes).astype(np.int64)]


def new_item_share(posts: PostData, rows: np.ndarray, graph: Graph) -> float:
    """The share of posts (rows) whose item is not in the training graph; 0.5 without posts."""
    if len(rows) == 0:
        return 0.5
    return float(np.mean([posts.items[row] not in graph.item_index for row in rows]))


def _metric_ks(metric: str) -> tuple[int, ...]:
    k = int(metric.split("@")[1])
    return tuple(sorted({5, 10, k}))


def _cpu_state(model: PHRModel) -> dict[str, Tensor]:
    return {name: value.detach().cpu().clone() for name, value in model.state_dict().items()}


def _same_run(saved: Checkpoint, record: Checkpoint) -> bool:
    """Whether a saved checkpoint belongs to this very run (data, split, configuration)."""
    def kept(config: TrainConfig) -> dict[str, Any]:
        return {k: v for k, v in plain_values(config).items() if k not in RESUMABLE_CHANGES}

    return (
        saved.model_config == record.model_config
        and kept(saved.train_config) == kept(record.train_config)
        and (saved.users, saved.hashtags, saved.items) == (record.users, record.hashtags, record.items)
        and saved.modality_widths == record.modality_widths
        and all(np.array_equal(getattr(saved.split, part), getattr(record.split, part))
                for part in ("train", "validation", "test"))
        and (saved.split.seed, saved.split.by) == (record.split.seed, record.split.by)
    )


def _resumable(path: Path, record: Checkpoint) -> Checkpoint | None:
    """The checkpoint at path if it is an interrupted (or finished) run of this record's
    settings; None for a checkpoint of another run or format, which training replaces."""
    raw = read_checkpoint_file(path)  # a file that is no checkpoint at all is an error
    if not isinstance(raw, dict) or raw.get("format") not in READABLE_FORMATS \
            or raw.get("resume") is None:
        return None
    saved = Checkpoint.from_dict(raw)
    return saved if _same_run(saved, record) else None


def train(
    data: SplitPosts,
    model_config: ModelConfig,
    config: TrainConfig,
    checkpoint_path: Path,
    provenance: Provenance | None = None,
    progress: ProgressCallback | None = None,
    resume: bool = True,
    factors: FittedFactors | None = None,
    finishing: FinishingCallback | None = None,
    warm_start: Path | None = None,
) -> TrainResult:
    """Train on data's training graph, select the epoch on its validation cases, checkpoint every epoch.

    `progress(epoch, loss, metric, best_metric)` is called after each epoch is saved (epoch
    1-based, best_metric the best validation value so far); the last epoch of a model with
    evidence is reported before the steps that follow it, and saved with them. With `resume`, a checkpoint of the same
    data, split and configuration (epochs and device may differ) continues at its next epoch,
    or is extended, or left as it is (see the module docstring; `TrainResult.start` says which).
    `provenance` is saved as it is (none: an empty record). A model with PITF's factors
    takes `factors` (a fit on the same posts with the same seed) instead of fitting PITF.
    `finishing` reports the steps after the epochs (see FinishingCallback). With `warm_start`,
    a fresh run begins from that checkpoint's learned parameters (training/warm_start.py); a
    checkpoint at `checkpoint_path` interrupted in a run that did not begin from it is refused
    (resuming it, or `resume` False to replace it, is the caller's choice).
    """
    provenance = provenance or Provenance()
    provenance.to_dict()  # refuses what would not load safely, early
    if warm_start is not None and Path(warm_start).resolve() == Path(checkpoint_path).resolve():
        raise CheckpointError(f"--warm-start {warm_start} is the --checkpoint itself: write the warm-started run to "
                              "another --checkpoint (without --warm-start, a run continues its own checkpoint)")
    ranks, device = join(config.device)
    try:
        return _train(data, model_config, config, Path(checkpoint_path), provenance, progress, resume, ranks, device,
                      factors, finishing or (lambda step, done, total: None), warm_start)
    finally:
        leave(ranks)


@dataclass
class _Run:
    """What one training run works with, from its first epoch to its last step."""

    data: SplitPosts
    config: TrainConfig
    path: Path
    model: PHRModel
    step: nn.Module
    optimizer: torch.optim.Optimizer
    rng: np.random.Generator
    sampler: NegativeSampler
    record: Checkpoint  # kept up to date and saved after every epoch
    ranks: Ranks
    device: torch.device

    def save(self) -> None:
        if self.ranks.main:  # every rank holds the same weights and decisions; one writes them
            self.record.save(self.path)


def check_trainable(data: SplitPosts) -> None:
    """Refuse training posts no model can learn a ranking from (`tune` asks before its first trial)."""
    if data.graph.n_hashtags < 2 or len(data.graph.triples) == 0:
        raise DataError("training posts need at least two distinct hashtags")


def _train(data: SplitPosts, model_config: ModelConfig, config: TrainConfig, checkpoint_path: Path,
           provenance: Provenance, progress: ProgressCallback | None, resume: bool, ranks: Ranks,
           device: torch.device, factors: FittedFactors | None, finishing: FinishingCallback,
           warm_start: Path | None) -> TrainResult:
    check_trainable(data)
    graph = data.graph
    origin = None if warm_start is None else load_origin(Path(warm_start), model_config, config, provenance)
    if model_config.item_ids.dropout is None:
        model_config = model_config.with_item_id_dropout(new_item_share(data.posts, data.split.validation, graph))
    id_dropout = model_config.item_ids.dropout
    assert id_dropout is not None

    fork_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):  # seeded without touching the caller's RNG
        torch.manual_seed(config.seed)
        model = PHRModel.from_graph(model_config, graph).to(device)
        warm = None if origin is None else carry_over(origin, model, graph, provenance)
        if model.evidence is not None:
            model.evidence.prepare_training()
        step: nn.Module = BatchScores(model, config.step_propagation, id_dropout)
        if ranks.distributed:
            # Some parameters (a missing modality's vector) may sit out a batch.
            step = DistributedDataParallel(step, device_ids=[device] if device.type == "cuda" else None,
                                           find_unused_parameters=True)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                     fused=config.adam == "fused", foreach=config.adam == "foreach")
        record = Checkpoint(model_config, config, data.split, graph.users, graph.hashtags, graph.items,
                            dict(model.network.item_encoder.widths), provenance, warm_start=warm)
        run = _Run(data, config, checkpoint_path, model, step, optimizer, np.random.default_rng(config.seed),
                   NegativeSampler(graph.triples, graph.n_hashtags, config.hard_negatives), record, ranks, device)
        start, start_epoch, bad_epochs, resumed_from = Start.FRESH, 1, 0, None
        saved = _resumable(checkpoint_path, record) if resume and checkpoint_path.exists() else None
        if saved is not None and warm is not None and (saved.warm_start is None
                                                       or saved.warm_start.sha256 != warm.sha256):
            if not saved.completed:
                began = "afresh" if saved.warm_start is None else f"from {saved.warm_start.path}"
                raise CheckpointError(f"{checkpoint_path} holds an interrupted run that began {began}, not from "
                                      f"--warm-start {warm_start}: pass --restart to replace it with a warm start, "
                                      "or leave out --warm-start to resume it")
            saved = None  # a finished run that began elsewhere: the warm start replaces it
        if saved is not None:
            assert saved.resume is not None
            done = saved.resume.epoch
            if saved.completed and config.epochs <= saved.train_config.epochs:
                return _result(checkpoint_path, saved, device, data.validation, None, Start.FINISHED)
            if not saved.completed and done >= config.epochs:
                raise CheckpointError(f"{checkpoint_path}: an interrupted run already past --epochs {config.epochs} "
                                      f"(epoch {done} of {saved.train_config.epochs}); pass --epochs "
                                      f"{saved.train_config.epochs} to finish it, or --restart")
            _restore(saved.resume, run)
            record.history = list(saved.history)
            record.state_dict, record.best_epoch, record.best_metric = (saved.state_dict, saved.best_epoch,
                                                                        saved.best_metric)
            record.user_representations = saved.user_representations
            record.hashtag_representations = saved.hashtag_representations
            record.warm_start = saved.warm_start  # where the continued run began, with or without --warm-start
            # An extension counts patience afresh: a run stopped early gets `patience` more epochs.
            start = Start.EXTENDED if saved.completed else Start.RESUMED
            bad_epochs = 0 if saved.completed else saved.resume.bad_epochs
            start_epoch, resumed_from = done + 1, done
        if start is Start.FRESH and warm is not None:
            # The carried-over weights are a trained model: validated as "epoch 0", they stay the
            # result unless an epoch beats them, and patience counts from them.
            warm.validation_metric = _validate(run, 0)
        _run_epochs(run, start_epoch, bad_epochs, progress, factors, finishing)
    return _result(checkpoint_path, record, device, data.validation, resumed_from, start)


def _run_epochs(run: _Run, start_epoch: int, bad_epochs: int, progress: ProgressCallback | None,
                factors: FittedFactors | None, finishing: FinishingCallback) -> None:
    """Epochs from start_epoch on, each validated and saved; the steps after the last one."""
    config, model, record = run.config, run.model, run.record
    for epoch in range(start_epoch, config.epochs + 1):
        started = time.perf_counter()
        loss = _train_epoch(model, run.step, run.optimizer, run.data.graph, run.sampler, config, run.rng, run.device,
                            run.ranks)
        trained = time.perf_counter()
        metric = _validate(run, epoch)
        bad_epochs = 0 if epoch == record.best_epoch else bad_epochs + 1
        stopped_early = bad_epochs >= config.patience and epoch < config.epochs
        record.history.append({"epoch": epoch, "loss": loss, "metric": metric,
                               "seconds": time.perf_counter() - started, "train_seconds": trained - started})
        record.completed = stopped_early or epoch == config.epochs
        record.stopped_early = stopped_early
        current = _cpu_state(model)
        finishes = record.completed and model.evidence is not None
        if finishes and run.ranks.main and progress is not None:
            # The last epoch shows before the steps after it, which report through `finishing`.
            progress(epoch, loss, metric, record.best_metric)
        if finishes:
            # Saved with the last epoch, so that a kill cannot leave a finished, uncalibrated run.
            _finish(run, factors, finishing)
        elif record.completed:
            without = "skipped (the model has no evidence)"
            record.stages = {"calibration": without, **({"re-ranker": without} if config.rerank else {})}
        record.resume = ResumeState(
            # Adam's moments only while resumable: an extension starts them afresh, and they
            # are twice the weights' size.
            epoch=epoch, bad_epochs=bad_epochs, model=current,
            optimizer=None if record.completed else run.optimizer.state_dict(),
            torch_rng=torch.get_rng_state(),
            cuda_rng=torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None,
            numpy_rng=dict(run.rng.bit_generator.state))
        run.save()
        if run.ranks.main and progress is not None and not finishes:
            progress(epoch, loss, metric, record.best_metric)
        if stopped_early:
            break


def _validate(run: _Run, epoch: int) -> float:
    """The epoch's validation metric (full ranking); the epoch becomes the record's best if it
    beats the best so far (NaN without validation cases: the latest epoch is kept). Epoch 0:
    a warm start's weights before training."""
    model, record, validation = run.model, run.record, run.data.validation
    model.eval()
    with torch.no_grad():
        user_reps, hashtag_reps = model.network.propagate()
        metric = math.nan
        if len(validation):
            # Full ranking, a batch of cases at a time: no (cases x hashtags) matrix is held.
            scorer = ModelScorer(model, user_reps, hashtag_reps, run.data.graph.item_index)
            metrics = evaluate(scorer, run.data.posts, validation, protocol="full",
                               ks=_metric_ks(run.config.validation_metric), seed=run.config.seed)
            metric = float(metrics["full"]["all"][run.config.validation_metric])
    if math.isnan(metric) or metric > record.best_metric:
        record.best_epoch, record.best_metric = epoch, metric
        record.state_dict = _cpu_state(model)
        record.user_representations = user_reps.detach().cpu().clone()
        record.hashtag_representations = hashtag_reps.detach().cpu().clone()
    return metric


def _finish(run: _Run, factors: FittedFactors | None, finishing: FinishingCallback) -> None:
    """The steps after the epochs of a model with evidence, on the best epoch's weights: PITF's
    factors beside them, their parts scaled to the validation posts, the re-ranker."""
    model, record = run.model, run.record
    model.load_state_dict(record.state_dict)
    model.eval()
    record.stages = {}
    if model.factors is not None and factors is not None:
        model.factors.load_state_dict(factors.state)
        record.pitf_epoch = factors.epoch
        record.stages["PITF's factors"] = f"taken from the given fit (epoch {factors.epoch})"
    elif model.factors is not None:
        pitf = fit_pitf(run.data, model, run.device, run.config.seed, finishing)
        model.factors.load_fitted(pitf)
        record.pitf_epoch = pitf.best_epoch
        record.stages["PITF's factors"] = f"fitted (epoch {pitf.best_epoch} of at most {pitf.config.epochs})"
    assert record.user_representations is not None and record.hashtag_representations is not None
    scorer = ModelScorer(model, record.user_representations.to(run.device),
                         record.hashtag_representations.to(run.device), run.data.graph.item_index)
    posts, validation, config = run.data.posts, run.data.validation, run.config
    calibration = calibrate(scorer, posts, validation, metric=config.validation_metric, seed=config.seed,
                            on_start=lambda: finishing(CALIBRATING, 0, None))
    record.calibration = None if calibration is None else asdict(calibration)
    too_few = f"skipped ({len(validation)} validation case{'s' * (len(validation) != 1)} < {MIN_FIT_CASES})"
    record.stages["calibration"] = too_few if calibration is None else _verdict(
        calibration.kept, "the trained scales rank as well", calibration.metric, calibration.held_out_before,
        calibration.held_out_after)
    if not config.rerank:
        record.stages["re-ranker"] = "off (--no-rerank)"
    elif run.ranks.main:  # only the main rank saves the checkpoint
        reranker, reranking = fit_reranker(scorer, posts, validation, run.data.graph, config.validation_metric,
                                           config.seed, on_start=lambda: finishing(RERANKING, 0, None))
        record.reranker = reranker
        record.reranking = None if reranking is None else asdict(reranking)
        record.stages["re-ranker"] = too_few if reranking is None else _verdict(
            reranking.kept, "the calibrated model ranks as well", reranking.metric, reranking.held_out_before,
            reranking.held_out_after)
    record.state_dict = _cpu_state(model)


def _verdict(kept: bool, why_not: str, metric: str, before: float, after: float) -> str:
    """A step chosen on held-out validation cases: kept or left out, and the figures why."""
    return (f"{'kept' if kept else f'left out ({why_not})'}; held-out validation {metric} "
            f"{before:.4f} → {after:.4f}")


def _restore(state: ResumeState, run: _Run) -> None:
    """Weights, optimizer moments and random streams as they were after the saved epoch."""
    run.model.load_state_dict(state.model)
    if state.optimizer is not None:  # a finished run's were dropped: Adam starts afresh
        run.optimizer.load_state_dict(state.optimizer)
    torch.set_rng_state(state.torch_rng)
    if run.device.type == "cuda" and state.cuda_rng is not None:
        torch.cuda.set_rng_state(state.cuda_rng, run.device)
    run.rng.bit_generator.state = state.numpy_rng


def fit_pitf(data: SplitPosts, model: PHRModel, device: torch.device, seed: int, finishing: FinishingCallback) -> PITF:
    """PITF on data's training graph, as `phr evaluate` fits the baseline (its epoch chosen on
    validation P@5 when there are validation cases), its content map over the model's modalities."""
    graph = data.graph
    present = [m for m in MODALITIES if m in graph.item_features and np.asarray(graph.item_masks[m]).any()]
    config = PITFConfig(device=device, seed=seed,
                        modalities="present" if list(model.network.item_encoder.widths) == present else "all")
    finishing(FITTING_FACTORS, 0, config.epochs)
    return fit_pitf_on_validation(PITF(graph, config), data.posts, data.validation, seed,
                                  on_epoch=lambda epoch, loss: finishing(FITTING_FACTORS, epoch + 1, config.epochs))


def _result(path: Path, record: Checkpoint, device: torch.device, validation: TestCases,
            resumed_from: int | None, start: Start) -> TrainResult:
    return TrainResult(
        checkpoint_path=path,
        best_epoch=record.best_epoch,
        best_metric=record.best_metric,
        history=list(record.history),
        resumed_from_epoch=resumed_from,
        stopped_early=record.stopped_early,
        device=str(device),
        n_validation_cases=len(validation),
        n_validation_dropped=validation.n_dropped_cases,
        reranking=record.reranking,
        start=start,
        epochs=record.train_config.epochs,
        stages=dict(record.stages),
        warm_start=record.warm_start,
    )


class BatchScores(nn.Module):
    """A training step's scores as a module's forward, which DistributedDataParallel wraps."""

    def __init__(self, model: PHRModel, step_propagation: str, item_id_dropout: float) -> None:
        super().__init__()
        self.model = model
        self.step_propagation = step_propagation
        self.item_id_dropout = item_id_dropout  # the model config's, once `train` resolved it

    def forward(self, users: Tensor, items: Tensor, hashtags: Tensor) -> Tensor:
        """`PHRModel.training_scores`, with this step's item-ID dropout drawn."""
        keep_ids = torch.rand(len(items), device=items.device) >= self.item_id_dropout
        return self.model.training_scores(users, items, hashtags, keep_ids, self.step_propagation)


def _train_epoch(
    model: PHRModel,
    step: nn.Module,
    optimizer: torch.optim.Optimizer,
    graph: Graph,
    sampler: NegativeSampler,
    config: TrainConfig,
    rng: np.random.Generator,
    device: torch.device,
    ranks: Ranks,
) -> float:
    """One pass over the training triples in random order; returns the mean batch loss.

    With several ranks, every rank draws the same order and negatives (same seed) and takes
    its share of each batch; each rank's loss is weighted by its share, so that the
    gradients DistributedDataParallel averages are those of the whole batch.
    """
    model.train()
    order = sampler.trainable[rng.permutation(len(sampler.trainable))]
    negatives = torch.as_tensor(sampler.sample(order, config.negatives, rng), device=device)
    triples = torch.as_tensor(graph.triples[order], device=device)
    # Summed on the device: reading each batch's loss would make the host wait for the GPU every step.
    loss_sum, n_batches = torch.zeros((), dtype=torch.float64, device=device), 0
    for start in range(0, len(order), config.batch_size):
        batch = triples[start : start + config.batch_size]
        batch_negatives = negatives[start : start + config.batch_size]
        whole = len(batch)
        if ranks.distributed:
            if whole < ranks.world:  # a last batch too small to share: every rank skips it
                continue
            share = torch.tensor_split(torch.arange(whole, device=device), ranks.world)[ranks.rank]
            batch, batch_negatives = batch[share], batch_negatives[share]
        users, positives, items = batch[:, 0], batch[:, 1], batch[:, 2]
        hashtags = torch.cat([positives.unsqueeze(1), batch_negatives], dim=1)
        scores = step(users, items, hashtags)
        loss = bpr_loss(scores[:, 0], scores[:, 1:]) + config.l2 * model.network.embedding_l2(users, hashtags)
        if ranks.distributed:
            loss = loss * (len(batch) * ranks.world / whole)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach()
        n_batches += 1
    return mean_over_ranks(float(loss_sum) / n_batches if n_batches else math.nan, ranks, device)


@dataclass
class StoreTraining:
    """What `phr train` did: the data it saw and the training result."""

    result: TrainResult
    n_posts: int
    skipped: dict[str, int]
    split_sizes: tuple[int, int, int]
    notices: list[str] = field(default_factory=list)  # figures that mean little (too few posts)


def _settings(model: ModelConfig, training: TrainConfig, split_by: str) -> dict[str, Any]:
    """What a finished checkpoint was trained with, by option name (`config.settings`), resumable changes left out."""
    kept = {name: value for name, value in settings(model, training).items() if name not in RESUMABLE_CHANGES}
    return {**kept, "split_by": split_by}


def _refuse_overwriting(checkpoint_path: Path, model_config: ModelConfig, config: TrainConfig, split_by: str,
                        warm_start: Path | None) -> None:
    """A finished checkpoint is a result: one trained with other settings, or that did not begin
    from `warm_start` when one is given, is never replaced silently."""
    try:
        existing = load_checkpoint(checkpoint_path) if Path(checkpoint_path).is_file() else None
    except CheckpointError:  # not a checkpoint: training says so as before
        return
    if existing is None or not existing.completed:
        return
    saved = _settings(existing.model_config, existing.train_config, existing.split.by)
    wanted = _settings(model_config, config, split_by)
    if model_config.item_ids.dropout is None:  # a default training resolves (and the checkpoint records)
        wanted.pop("item_ids.dropout", None)
    changed = [f"{name} {saved.get(name)} → {value}" for name, value in wanted.items() if saved.get(name) != value]
    began = existing.warm_start
    if warm_start is not None and (began is None or began.path != str(Path(warm_start).resolve())
                                   or began.sha256 != sha256_of(Path(warm_start))):
        changed.append(f"warm start {'none' if began is None else began.path} → {Path(warm_start).resolve()}")
    if changed:
        raise CheckpointError(f"{checkpoint_path}: a finished checkpoint trained with other settings "
                              f"({', '.join(changed)}); write to another --checkpoint, or pass --overwrite "
                              "to replace it")


def train_from_store(
    store_path: Path,
    checkpoint_path: Path,
    model_config: ModelConfig,
    config: TrainConfig,
    split_by: str = "post",
    progress: ProgressCallback | None = None,
    resume: bool = True,
    overwrite: bool = False,
    finishing: FinishingCallback | None = None,
    warm_start: Path | None = None,
) -> StoreTraining:
    """Read the store's trainable posts, split them 8:1:1 with the seed, train and checkpoint.

    The checkpoint's provenance records the store (its absolute path; the checkpoint adds
    the path relative to its own folder), its encoders and text projection, so that
    `recommend` encodes a new clip exactly as the store's videos were, and the ids of its
    posts, so that `evaluate` finds them again in a store that grew. A finished checkpoint
    of other settings is replaced only with `overwrite`. `warm_start`: see `train`.
    """
    if not overwrite:
        _refuse_overwriting(checkpoint_path, model_config, config, split_by, warm_start)
    dataset = Dataset.from_store(store_path, split_by, config.seed)
    result = train(dataset, model_config, config, checkpoint_path, dataset.provenance(), progress, resume,
                   finishing=finishing, warm_start=warm_start)
    _, n_validation, n_test = dataset.split_sizes
    return StoreTraining(result, len(dataset.posts), dataset.skipped, dataset.split_sizes,
                         small_data_notices({"validation": n_validation, "test": n_test}))
