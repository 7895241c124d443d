"""Every random stream of a run, keyed in one place.

Each stream is seeded by the run's seed and a key of its own, so its draws never depend on which
other streams exist or in which order they are asked for: an epoch's negatives do not depend on
the number of workers or on which worker mixes which block, a model part's initial weights not on
which other parts are on, an epoch replayed after a restart draws what it drew the first time.
Pure numpy (Ray Data's mixing tasks import it).
"""

from __future__ import annotations

import hashlib

import numpy as np

# epoch_rng keys beside the block ids (which are far below them)
BLOCK_ORDER_KEY = 2**40  # the epoch's permutation of the blocks of positives (sampling.blocks)
VALIDATION_KEY = BLOCK_ORDER_KEY + 1  # the fixed negatives of the validation AUCs
# torch's seed for one worker's epoch (dropout masks, any draw a loss makes): key + rank
TORCH_EPOCH_KEY = 1 << 30
EVALUATION_NEGATIVES_KEY = 100  # the sampled candidates of the evaluation protocols


def stable_key(text: str) -> int:
    """A 32-bit key of ``text`` that is the same in every process (Python's ``hash`` is salted)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "little")


def epoch_rng(seed: int, epoch: int, key: int) -> np.random.Generator:
    """The generator of one block of one epoch (key: the block id), or of a stream keyed above."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, key]))


def torch_epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """torch's seed for worker `rank`'s epoch: depends on (seed, epoch, rank) only."""
    return int(np.random.SeedSequence([seed, epoch, TORCH_EPOCH_KEY + rank]).generate_state(1)[0])


def part_seed(seed: int, part: str) -> int:
    """torch's seed while the model part `part` (its config path, e.g. "heads.mlp") draws its
    initial weights: turning one part on or off never changes another part's."""
    return int(np.random.SeedSequence(seed, spawn_key=(stable_key("model"), stable_key(part))).generate_state(1)[0])


def evaluation_users_rng(seed: int) -> np.random.Generator:
    """Which users an evaluation of at most N users scores."""
    return np.random.default_rng(seed)


def evaluation_negatives_rng(seed: int) -> np.random.Generator:
    """The sampled candidates each evaluated user's held-out item is ranked among."""
    return np.random.default_rng([seed, EVALUATION_NEGATIVES_KEY])
