"""Warm starts (`phr train --warm-start OLD.pt`): a model for a grown store that begins from the
learned parameters of a checkpoint trained on an earlier state of it.

The model is built for the grown store exactly as a fresh run builds it: the same seeded
initialisation, and every fitted statistic of the data — the item normalisation, the
evidence's count tables, PITF's factors, the part scales — fitted on the grown store (they
are the model's buffers, and no buffer is copied). Then each learned parameter whose meaning
carries over is copied from OLD:
- the per-row tables (`ROW_TABLES`) row by row, matched by the user's, hashtag's or item's
  name; the rows of new ones (and of those a refresh of OLD added) keep their fresh
  initialisation;
- the weights that read the item vector v_k (`reads_item_vectors`) and the learned vectors of
  missing modalities, re-expressed for the grown store's v_k (`_feature_maps`): each modality
  is standardised with the grown store's statistics, and the store refitted its caption PCA
  when it grew, so the textual columns are turned into the new PCA's basis;
- every other parameter whole.
A checkpoint of another model configuration, other encoders or other modalities is refused.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import torch
from torch import Tensor

from phr_cli.data.graph import Graph
from phr_cli.data.provenance import Provenance
from phr_cli.errors import CheckpointError
from phr_cli.files import sha256_of
from phr_cli.model.config import ModelConfig
from phr_cli.model.phr import PHRModel
from phr_cli.training.checkpoint import Checkpoint, WarmStart, load_checkpoint
from phr_cli.training.config import TrainConfig, settings

# The model's parameters with one row per user, hashtag or item: the vocabulary of their rows.
ROW_TABLES = {
    "network.user_embedding.weight": "users",
    "network.hashtag_embedding.weight": "hashtags",
    "item_embedding.weight": "items",
    "evidence.user_weights": "users",
    "evidence.hashtag_weights": "hashtags",
    "evidence.bias": "hashtags",
}
VOCABULARIES = ("users", "hashtags", "items")
MISSING_VECTORS = "network.item_encoder.missing."  # + modality: the learned vector of a missing modality
TEXTUAL = "textual"  # the modality whose features are the store's caption PCA
# A model setting that may differ: the item-ID dropout is a regulariser resolved from each
# store's validation posts (`train.new_item_share`), not part of what the parameters mean.
FREE_MODEL_SETTINGS = ("item_ids.dropout",)


def reads_item_vectors(name: str) -> bool:
    """Whether a parameter is a weight applied to the item vector v_k (its columns follow v_k's blocks)."""
    return name == "network.scorer.item.weight" or (
        name.startswith("network.layers.") and name.endswith(".item_projection.weight"))


def load_origin(path: Path, model_config: ModelConfig, training: TrainConfig,
                provenance: Provenance) -> Checkpoint:
    """The checkpoint to warm-start from; a one-line CheckpointError for one of another model
    configuration or trained on a store of other encoders."""
    old = load_checkpoint(path)
    train_fields = {f.name for f in fields(TrainConfig)}
    wanted = {k: v for k, v in settings(model_config, training).items() if k not in train_fields}
    saved = settings(old.model_config, training)
    changed = [f"{name} {saved.get(name)} → {value}" for name, value in wanted.items()
               if name not in FREE_MODEL_SETTINGS and saved.get(name) != value]
    if changed:
        raise CheckpointError(f"--warm-start {path}: trained with another model configuration ({', '.join(changed)}); "
                              "a warm start keeps the model's configuration: pass its options, or train afresh")
    encoders = sorted(name for name in set(old.provenance.encoders) | set(provenance.encoders)
                      if old.provenance.encoders.get(name) != provenance.encoders.get(name))
    if encoders:
        raise CheckpointError(f"--warm-start {path}: trained on a store of other encoders ({', '.join(encoders)} "
                              "differ); a warm start needs features of the same encoders: train afresh")
    return old


def carry_over(old: Checkpoint, model: PHRModel, graph: Graph, provenance: Provenance) -> WarmStart:
    """Copy into `model` (built for `graph` with `provenance`'s store) the learned parameters of
    `old` whose meaning carries over (see the module docstring); what was carried, for the record."""
    path = old.path or Path("the checkpoint")
    widths = dict(model.network.item_encoder.widths)
    if widths != dict(old.modality_widths):
        raise CheckpointError(f"--warm-start {path}: its items have other modalities ({_widths(old.modality_widths)} "
                              f"there, {_widths(widths)} here); train afresh")
    names = {"users": graph.users, "hashtags": graph.hashtags, "items": graph.items}
    # A refreshed OLD (`phr train --refresh`) appended rows for names first seen since its
    # training, filled in without training: they start afresh, as in a fresh run.
    trained_items = old.items[: old.refreshed["trained"][2]] if old.refreshed else old.items
    old_names = {"users": old.trained_users, "hashtags": old.trained_hashtags, "items": trained_items}
    matches = {vocabulary: _matching_rows(old_names[vocabulary], names[vocabulary]) for vocabulary in VOCABULARIES}
    maps = _feature_maps(old, model, provenance)
    blocks = [stop - start for _, start, stop in model.network.item_encoder.blocks()]
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name not in old.state_dict:  # a part OLD's format did not have: fresh
                continue
            value = old.state_dict[name].to(parameter.device, parameter.dtype)
            if name in ROW_TABLES:
                new_rows, old_rows = (rows.to(parameter.device) for rows in matches[ROW_TABLES[name]])
                parameter[new_rows] = value[old_rows]
                continue
            if value.shape != parameter.shape:
                raise CheckpointError(f"--warm-start {path}: its {name} is {tuple(value.shape)}, this model's "
                                      f"{tuple(parameter.shape)}; train afresh")
            if reads_item_vectors(name):
                value = torch.cat([block @ maps[m].to(value).T
                                   for block, m in zip(value.split(blocks, dim=1), widths)], dim=1)
            elif name.startswith(MISSING_VECTORS):
                value = value @ torch.linalg.pinv(maps[name[len(MISSING_VECTORS):]].to(value))
            parameter.copy_(value)
    carried = {vocabulary: [len(matches[vocabulary][0]), len(names[vocabulary])] for vocabulary in VOCABULARIES}
    return WarmStart(str(path.resolve()), sha256_of(path), carried)


def _matching_rows(old_names: list[str], new_names: list[str]) -> tuple[Tensor, Tensor]:
    """(rows in the new vocabulary, their rows in the old) of the names both hold."""
    old_row = {name: row for row, name in enumerate(old_names)}
    pairs = [(row, old_row[name]) for row, name in enumerate(new_names) if name in old_row]
    return torch.tensor([new for new, _ in pairs], dtype=torch.long), torch.tensor([o for _, o in pairs],
                                                                                   dtype=torch.long)


def _feature_maps(old: Checkpoint, model: PHRModel, provenance: Provenance) -> dict[str, Tensor]:
    """Per modality, M (w, w) with z_old ≈ z_new M for an item's standardised features as the
    old model and the new one see them.

    z = (x − μ) / σ with each store's own μ, σ (buffers of the item encoder); for the textual
    block x = (e − mean) Cᵀ, the caption embedding e in each store's PCA (rows of C), so
    x_old ≈ x_new C_new C_oldᵀ + const (e as the new PCA reconstructs it, which is all the new
    model sees of it). The constant offsets are left out: both standardisations centre on the
    training items, which the grown store's include, and the projections of v_k have no bias
    to take them.
    """
    encoder = model.network.item_encoder
    maps = {}
    for modality in encoder.widths:
        old_std = old.state_dict[f"network.item_encoder.std_{modality}"].to(torch.float64)
        new_std = getattr(encoder, f"std_{modality}").detach().cpu().to(torch.float64)
        basis = torch.eye(len(new_std), dtype=torch.float64)
        if modality == TEXTUAL:
            basis = _text_basis_change(old.provenance, provenance, len(new_std), basis)
        maps[modality] = (new_std[:, None] * basis / old_std[None, :]).float()
    return maps


def _text_basis_change(old: Provenance, new: Provenance, width: int, same: Tensor) -> Tensor:
    """C_new C_oldᵀ (width, width) between the stores' caption PCAs; `same` when they have the
    same components or either is unknown (a model not trained on a store)."""
    if old.text_projection_components is None or new.text_projection_components is None:
        return same
    old_components = old.text_projection_components.to(torch.float64)
    new_components = new.text_projection_components.to(torch.float64)
    if old_components.shape != new_components.shape or old_components.shape[0] != width:
        return same
    if torch.equal(old_components, new_components):  # (C Cᵀ is I only where C has full rank)
        return same
    return new_components @ old_components.T


def _widths(widths: dict[str, int]) -> str:
    return ", ".join(f"{modality} {width}" for modality, width in widths.items()) or "none"
