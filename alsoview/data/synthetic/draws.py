"""Named random streams: one independent generator per step of the world and per field of a record.

Why: with one generator passed through every step, or one bag of random integers per record
indexed by position, adding or changing a field shifts or silently reuses the draws of every
other field. Here each stream is seeded by (seed, scope, name) alone, so a stream's draws do not
depend on which other streams exist or in what order they are asked for, and a name can be asked
for only once, so two fields cannot share a draw by accident.
"""

from __future__ import annotations

import numpy as np

from alsoview.seeds import stable_key


class Streams:
    """The named generators of one ``scope`` (e.g. "world", "files") under one seed."""

    def __init__(self, seed: int, scope: str) -> None:
        self.seed = int(seed)
        self.scope = scope
        self._scope_key = stable_key(scope)
        self._taken: set[str] = set()

    def generator(self, name: str) -> np.random.Generator:
        """The generator of stream ``name``; asking twice for one name is a bug and raises."""
        if name in self._taken:
            raise ValueError(f"random stream {self.scope}/{name} was already taken: give each field its own name")
        self._taken.add(name)
        sequence = np.random.SeedSequence(self.seed, spawn_key=(self._scope_key, stable_key(name)))
        return np.random.default_rng(sequence)


def random_codes(rng: np.random.Generator, n: int, width: int, alphabet: np.ndarray) -> np.ndarray:
    """``n`` random codes of ``width`` characters from ``alphabet``, as uint8 rows."""
    return alphabet[rng.integers(0, len(alphabet), size=(n, width))]


def rows_to_str(rows: np.ndarray) -> list[str]:
    """A uint8 (n, width) array as a list of ASCII strings."""
    rows = np.ascontiguousarray(rows, dtype=np.uint8)
    return [b.decode("ascii") for b in rows.view(f"S{rows.shape[1]}").ravel().tolist()]
