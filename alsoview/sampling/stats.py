"""What one mixing drew: counts per batch, merged over blocks, and the line that tells the user."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class MixStats:
    """Counts to report per epoch; merge across batches and shards with :meth:`merge`."""

    positives: int = 0
    negatives: int = 0
    hard_requested: int = 0
    hard_drawn: int = 0
    hard_shortfall: int = 0  # requested but filled from random: the usable also-view list was too short
    random_redraws: int = 0  # random candidates rejected because the user had interacted with them
    # With `related`: candidates left out as neighbours of the user's other items, and random
    # negatives that stayed such neighbours (the user's free items were nearly all related)
    related_left_out: int = 0
    related_kept: int = 0

    def merge(self, other: "MixStats") -> "MixStats":
        """Field-wise sum (a new object; neither input changes)."""
        return MixStats(**{k: v + getattr(other, k) for k, v in asdict(self).items()})

    @property
    def hard_share(self) -> float:
        """Realised share of hard negatives among all negatives (0.0 when there are none)."""
        return self.hard_drawn / self.negatives if self.negatives else 0.0

    def to_dict(self) -> dict:
        """Plain dict for metrics reporting, incl. the derived ``hard_share``."""
        return {**asdict(self), "hard_share": self.hard_share}

    def describe(self, fraction: float, warmup_epochs: int = 0) -> str:
        """One line for the user: the also-view share asked for, the share drawn, and why they
        differ; with `sampling.exclude_related`, what that left out."""
        line = self._describe_share(fraction, warmup_epochs)
        if self.related_left_out:
            line += (
                f"; {self.related_left_out:,} drawn candidates left out as also-view neighbours of the user's"
                f" other items, {self.related_kept:,} negatives kept although related (nothing unrelated was left)"
            )
        return line

    def _describe_share(self, fraction: float, warmup_epochs: int) -> str:
        if fraction == 0 or self.negatives == 0:
            return f"also-view share {fraction:.2f}"
        if warmup_epochs:
            then = self._describe_share(fraction, 0)
            return f"also-view share rising from 0 to {fraction:.2f} over {warmup_epochs} epochs; then {then}"
        short = self.hard_shortfall / max(self.hard_requested, 1)
        line = f"also-view share {fraction:.2f} asked, {self.hard_share:.2f} drawn"
        if short > 0.005:
            left_out = "the user's own items" + (" and their also-view neighbours" if self.related_left_out else "")
            line += (
                f" ({short:.0%} of the asked also-view draws came from random items:"
                f" lists too short once {left_out} are left out)"
            )
        return line
