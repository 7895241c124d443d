"""The training losses (`train.loss`), each a function of (model, batch) -> a scalar.

- `bce`: binary cross-entropy of every sample's label (the original design). Rows may be in any
  order; with the relation head or the user sequence, over groups (`GroupedBinaryCrossEntropy`).
- `bpr`: each positive scored above each of its own negatives (-log sigmoid of the difference).
- `softmax`: a sampled softmax: each positive against its own negatives and, with
  `train.in_batch_negatives`, the batch's other positives, logits divided by
  `train.softmax_temperature`. With `train.logq_correction` every candidate's logit is lowered by
  the log of the probability that it was drawn (Yi et al. 2019; Bengio & Senecal 2008), so the
  sampled loss estimates the softmax over every item, which full ranking measures:
  an also-view negative was drawn with probability about 1 / (the positive's also-view list
  length), a random one with the random pool's probability (uniform or popularity-weighted),
  a positive (as itself and as another row's in-batch negative) with its share of the training
  interactions. An in-batch positive that is the row's own positive item is masked out.

The ranking losses read a batch as groups of 1 + k rows, a positive then its k negatives
(`blocks.mix_block(grouped=True)`, batches cut to whole groups by `blocks.rows_per_batch`).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from alsoview.config import Config
from alsoview.data.catalog import Catalog

LossStep = Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]
# The losses that compare a positive with its own negatives: they read batches of whole groups.
GROUPED_LOSSES = ("bpr", "softmax", "full_softmax")
# A loss over every item holds a [positives, items] matrix per batch: beyond this many elements
# the sampled softmax is the loss for the catalog (about 1 GB of logits, gradients and mask).
FULL_SOFTMAX_MAX_ELEMENTS = 1 << 27


def trains_in_groups(config: Config) -> bool:
    """Whether training scores a positive and its own negatives together: the loss compares them
    (`GROUPED_LOSSES`), the choice among a negative's candidates scores them for their positive
    (`HardestCandidates`), or a model part describes a group's user by its positive
    (`ModelConfig.needs_groups`)."""
    return (
        config.train.loss in GROUPED_LOSSES or config.sampling.candidates_per_negative > 1 or config.model.needs_groups
    )


def build_loss(config: Config, catalog: Catalog, device: Any = "cpu") -> LossStep:
    """The configured loss; its tables (logQ) on `device`; with several candidates per negative,
    behind the choice of the hardest (`HardestCandidates`)."""
    k = config.sampling.negatives_per_positive
    t = config.train
    loss: LossStep
    if t.loss == "bce":
        loss = GroupedBinaryCrossEntropy(k) if trains_in_groups(config) else binary_cross_entropy
    elif t.loss == "bpr":
        loss = PairwiseLoss(k)
    elif t.loss == "full_softmax":
        loss = FullSoftmax.of(catalog, config, device)
    else:
        log_q = SamplingLogQ.of(catalog, config, device) if t.logq_correction else None
        loss = SampledSoftmax(k, t.softmax_temperature, log_q, t.in_batch_negatives, t.hard_negative_weight)
    candidates = config.sampling.candidates_per_negative
    return HardestCandidates(loss, k, candidates) if candidates > 1 else loss


def binary_cross_entropy(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(model(batch["user"], batch["item"]), batch["label"])


def groups(batch: dict[str, torch.Tensor], k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(users [G], items [G, 1+k] with the positive first, is_hard [G, 1+k]) of a grouped batch."""
    rows = len(batch["label"])
    if rows % (1 + k):
        raise ValueError(f"a ranking loss needs whole groups of 1 + {k} rows, got a batch of {rows}")
    items = batch["item"].view(-1, 1 + k)
    return batch["user"].view(-1, 1 + k)[:, 0], items, batch["is_hard"].view(-1, 1 + k)


class HardestCandidates:
    """`sampling.candidates_per_negative` = c > 1: the mixing drew c candidates for each of a
    positive's k negatives (c consecutive rows of its group, also-view ones first); the model,
    without gradients, scores them for the group's user and keeps each negative's highest-scored
    candidate (dynamic negative sampling, Zhang et al. 2013): the hardest of several also-view
    items, not the first one drawn. The loss then trains on groups of 1 + k. A softmax's logQ
    correction reads how the kept candidate was drawn, not that it was chosen."""

    def __init__(self, loss: LossStep, k: int, candidates: int) -> None:
        self.loss, self.k, self.candidates = loss, k, candidates

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.loss(model, self.choose(model, batch))

    def choose(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch with each negative's highest-scored candidate: groups of 1 + k rows."""
        k, c = self.k, self.candidates
        users, items, is_hard = groups(batch, k * c)
        with torch.no_grad():
            scores = model.score_groups(users, items)[:, 1:].reshape(-1, k, c)
        pick = scores.argmax(-1, keepdim=True)  # [G, k, 1]

        def kept(column: torch.Tensor) -> torch.Tensor:
            chosen = column[:, 1:].reshape(-1, k, c).gather(2, pick).squeeze(-1)
            return torch.cat([column[:, :1], chosen], dim=1).reshape(-1)

        width = 1 + k * c
        return {
            "user": batch["user"].view(-1, width)[:, : 1 + k].reshape(-1),
            "item": kept(items),
            "label": batch["label"].view(-1, width)[:, : 1 + k].reshape(-1),
            "is_hard": kept(is_hard),
        }


class GroupedBinaryCrossEntropy:
    """Binary cross-entropy over grouped rows, each group scored with its positive left out of
    the user's history and relations (`TowerModel.score_groups`): the relation head's way to
    train with `bce` (a shuffled row does not know which positive its negative was drawn for, and
    an also-view negative would count that positive as a relation)."""

    def __init__(self, k: int) -> None:
        self.k = k

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        users, items, _ = groups(batch, self.k)
        scores = model.score_groups(users, items)
        return F.binary_cross_entropy_with_logits(scores.reshape(-1), batch["label"])


class PairwiseLoss:
    """BPR over each positive and each of its own negatives."""

    def __init__(self, k: int) -> None:
        self.k = k

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        users, items, _ = groups(batch, self.k)
        scores = model.score_groups(users, items)
        return -F.logsigmoid(scores[:, :1] - scores[:, 1:]).mean()


class SamplingLogQ:
    """Log probabilities with which the mixing drew each candidate (see the module docstring)."""

    def __init__(self, positive: torch.Tensor, random: torch.Tensor, also_view: torch.Tensor) -> None:
        self.positive = positive  # [n_items]: log share of the training interactions
        self.random = random  # [n_items]: log probability under the random pool
        self.also_view = also_view  # [n_items]: -log(also-view list length) of a positive item

    @classmethod
    def of(cls, catalog: Catalog, config: Config, device: Any = "cpu") -> "SamplingLogQ":
        tables = catalog.sampling
        popularity = tables.item_popularity.astype(np.float64)
        tiny = np.log(np.finfo(np.float32).tiny)  # item 0 and never-drawn items: never candidates
        with np.errstate(divide="ignore"):
            positive = np.log(popularity / max(popularity.sum(), 1.0))
            if config.sampling.random_pool == "uniform":
                random = np.full(tables.n_items, -np.log(max(tables.n_items - 1, 1)))
            else:
                weights = (popularity + 1.0) ** config.sampling.popularity_exponent
                weights[0] = 0.0
                random = np.log(weights / weights.sum())
            also_view = -np.log(np.maximum(np.diff(tables.also_view_indptr), 1))
        random[0] = tiny

        def tensor(values: np.ndarray) -> torch.Tensor:
            return torch.tensor(np.maximum(values, tiny), dtype=torch.float32, device=device)

        return cls(tensor(positive), tensor(random), tensor(also_view))

    def own(self, items: torch.Tensor, is_hard: torch.Tensor) -> torch.Tensor:
        """[G, 1+k]: the positive's, then each negative's by how it was drawn."""
        drawn = torch.where(
            is_hard[:, 1:] > 0, self.also_view[items[:, :1]].expand_as(items[:, 1:]), self.random[items[:, 1:]]
        )
        return torch.cat([self.positive[items[:, :1]], drawn], dim=1)


def hard_negative_term(scores: torch.Tensor, is_hard: torch.Tensor, weight: float) -> torch.Tensor:
    """`weight` times the mean -log sigmoid(positive - negative) over the groups' also-view
    negatives (`train.hard_negative_weight`): scores [G, 1 + k], the positive first. Zero when a
    batch drew none (short also-view lists fall back to random items)."""
    chosen = is_hard[:, 1:] > 0
    if not bool(chosen.any()):
        return scores.new_zeros(())
    return -weight * F.logsigmoid(scores[:, :1] - scores[:, 1:])[chosen].mean()


class SampledSoftmax:
    """Cross-entropy of each positive among its candidates (see the module docstring), plus
    `hard_weight` times BPR over the group's also-view negatives (`hard_negative_term`), on the
    logits before the logQ correction."""

    def __init__(
        self, k: int, temperature: float, log_q: SamplingLogQ | None, in_batch: bool, hard_weight: float = 0.0
    ) -> None:
        self.k, self.temperature, self.log_q, self.in_batch = k, temperature, log_q, in_batch
        self.hard_weight = hard_weight

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        users, items, is_hard = groups(batch, self.k)
        candidates = items
        if self.in_batch:
            positives = items[:, 0]
            candidates = torch.cat([items, positives.expand(len(users), -1)], dim=1)
        logits = model.score_groups(users, candidates) / self.temperature
        hard = hard_negative_term(logits[:, : 1 + self.k], is_hard, self.hard_weight) if self.hard_weight > 0 else 0.0
        if self.log_q is not None:
            correction = [self.log_q.own(items, is_hard)]
            if self.in_batch:
                correction.append(self.log_q.positive[positives].expand(len(users), -1))
            logits = logits - torch.cat(correction, dim=1)
        if self.in_batch:  # the row's own positive item among the batch's positives is not a negative
            own_item = candidates == items[:, :1]
            own_item[:, : 1 + self.k] = False
            logits = logits.masked_fill(own_item, float("-inf"))
        target = torch.zeros(len(users), dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, target) + hard


class FullSoftmax:
    """Cross-entropy of each positive over every item (Klenitskiy & Vasilev 2023: SASRec trained
    this way beat its binary cross-entropy form): the model scores every item for each group's
    user with the positive left out of the user's tables (`TowerModel.score_every`), and every
    other item the user has in any split is masked out, as the mixing leaves them out of the
    negatives. The group's mixed negatives are read only for `train.hard_negative_weight` (else
    `sampling.negatives_per_positive=1` mixes least): their also-view ones add that weight times
    -log sigmoid(positive - negative) each, on the same logits."""

    def __init__(
        self,
        k: int,
        temperature: float,
        user_items: tuple[torch.Tensor, torch.Tensor],
        n_items: int,
        hard_weight: float = 0.0,
    ) -> None:
        self.k, self.temperature, self.n_items, self.hard_weight = k, temperature, n_items, hard_weight
        self.indptr, self.items = user_items

    @classmethod
    def of(cls, catalog: Catalog, config: Config, device: Any = "cpu") -> "FullSoftmax":
        from alsoview.errors import UserError
        from alsoview.training.batches import rows_per_batch

        positives = rows_per_batch(config, 1) // (1 + config.sampling.drawn_per_positive)
        if positives * catalog.n_items > FULL_SOFTMAX_MAX_ELEMENTS:
            raise UserError(
                f"config: train.loss=full_softmax scores {catalog.n_items:,} items for each of a batch's {positives} "
                f"positives, more than {FULL_SOFTMAX_MAX_ELEMENTS:,} logits a batch; use train.loss=softmax (sampled) "
                "or a smaller train.batch_size"
            )
        tables = catalog.sampling
        # copies: the tables' arrays are read-only (shared through Ray's object store)
        indptr = torch.tensor(tables.user_items_indptr, dtype=torch.int64, device=device)
        items = torch.tensor(tables.user_items_indices, dtype=torch.int64, device=device)
        t = config.train
        return cls(
            config.sampling.drawn_per_positive, t.softmax_temperature, (indptr, items), catalog.n_items,
            t.hard_negative_weight,
        )  # fmt: skip

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        from alsoview.model.ids import expand_ranges

        users, items, is_hard = groups(batch, self.k)
        positives = items[:, 0]
        logits = model.score_every(users, positives if model.training else None) / self.temperature
        hard = hard_negative_term(logits.gather(1, items), is_hard, self.hard_weight) if self.hard_weight > 0 else 0.0
        starts = self.indptr.index_select(0, users)
        rows, flat = expand_ranges(starts, self.indptr.index_select(0, users + 1) - starts)
        known = self.items.index_select(0, flat)
        other = known != positives.index_select(0, rows)
        mask = torch.zeros_like(logits, dtype=torch.bool)
        mask[rows[other], known[other]] = True
        mask[:, 0] = True  # the reserved unknown item is never a candidate
        return F.cross_entropy(logits.masked_fill(mask, float("-inf")), positives) + hard
