"""The references every trained model must beat: popularity, random, item co-occurrence, and the
matrix-factorisation peers ALS and BPR (from the `implicit` library).

All share the `Scorer` interface: `score(users [B], items [B, C]) -> [B, C]`, higher = more
recommended. Scores are deterministic and depend only on (user, item), never on which other rows
share a batch, so evaluation can be split across Ray actors freely; every scorer pickles.
Ids are dense ints: 0 is unknown/padding (its score is meaningless; callers mask it).
"""

from __future__ import annotations

import time
from typing import Callable, Literal, Protocol, runtime_checkable

import numpy as np

from alsoview.data.relations import Neighbours, relation_rows, user_item_csr

try:  # scipy is optional: the co-occurrence scorer falls back to dense numpy on small catalogs
    import scipy.sparse as _sparse
except ImportError:  # pragma: no cover - exercised only where scipy is absent
    _sparse = None

DENSE_MAX_ITEMS = 5000  # a dense n_items^2 float64 co-occurrence matrix stays <= 200 MB
_CHUNK_ELEMENTS = 1 << 22  # dense user x item block materialised at once (32 MB of float64)


@runtime_checkable
class Scorer(Protocol):
    """Anything that scores candidate items per user; higher = more recommended."""

    name: str

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """users int64 [B]; items int64 [B, C] (0 = padding) -> float [B, C]."""
        ...


def _check_ids(ids: np.ndarray, n: int, what: str) -> np.ndarray:
    """Ids as int64, refusing out-of-range values (numpy would wrap negatives silently)."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        raise IndexError(f"{what} ids must lie in [0, {n}), got [{ids.min()}, {ids.max()}]")
    return ids


def _check_batch(
    users: np.ndarray, items: np.ndarray, n_users: int | None, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validated (users [B], items [B, C]); n_users None means any non-negative user id."""
    users = np.asarray(users, dtype=np.int64).reshape(-1)
    items = _check_ids(items, n_items, "item")
    if items.ndim != 2 or items.shape[0] != users.shape[0]:
        raise ValueError(f"items must be [B, C] with B={users.shape[0]}, got {items.shape}")
    if n_users is not None:
        users = _check_ids(users, n_users, "user")
    elif users.size and users.min() < 0:
        raise IndexError("user ids must be non-negative")
    return users, items


def _interactions(
    train_users: np.ndarray, train_items: np.ndarray, n_users: int | None, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validated training pairs with padding ids (user 0 or item 0) dropped."""
    users = np.asarray(train_users, dtype=np.int64).reshape(-1)
    items = np.asarray(train_items, dtype=np.int64).reshape(-1)
    if users.shape != items.shape:
        raise ValueError(f"train users and items must align: {users.shape} vs {items.shape}")
    items = _check_ids(items, n_items, "train item")
    users = _check_ids(users, n_users, "train user") if n_users is not None else users
    keep = (users > 0) & (items > 0)
    return users[keep], items[keep]


class PopularityScorer:
    """Score = number of training interactions of the item (repeats count; ties are real; id-0 pairs ignored)."""

    name = "popularity"

    def __init__(self, train_users: np.ndarray, train_items: np.ndarray, n_items: int) -> None:
        _, items = _interactions(train_users, train_items, None, n_items)
        self.n_items = int(n_items)
        self.counts = np.bincount(items, minlength=self.n_items).astype(np.float64)

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        _, items = _check_batch(users, items, None, self.n_items)
        return self.counts[items]

    def score_all(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(users), self.n_items))


class RelatedItemsScorer:
    """Items also viewed with the user's items: score = log(1 + how many of the user's training
    items are also-view neighbours of the item, either direction), popularity breaking ties
    below one relation (`relations.py`). Uses the item metadata, no learning."""

    name = "related"

    def __init__(
        self, train_users: np.ndarray, train_items: np.ndarray, n_users: int, n_items: int, neighbours: Neighbours
    ) -> None:
        users, items = _interactions(train_users, train_items, n_users, n_items)
        self.n_items = int(n_items)
        self.history, self.neighbours = user_item_csr(users, items, n_users, n_items), neighbours
        popularity = np.bincount(items, minlength=self.n_items).astype(np.float32)
        self.tie_break = 0.5 * popularity / (popularity.max(initial=0) + 1)  # < log(2), one relation

    def score_all(self, users: np.ndarray) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        return np.log1p(relation_rows(*self.history, self.neighbours, users)) + self.tie_break

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        users, items = _check_batch(users, items, None, self.n_items)
        return np.take_along_axis(self.score_all(users), items, axis=1)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on uint64 arrays (wrapping arithmetic): a good 64-bit hash."""
    z = np.asarray(x, dtype=np.uint64) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


class RandomScorer:
    """Uniform [0, 1) scores from a counter-based hash of (seed, user, item).

    The score of a pair depends on nothing else, so it is identical across batchings, workers and
    pickling -- a reproducible chance-level reference.
    """

    name = "random"

    def __init__(self, n_items: int, seed: int) -> None:
        self.n_items = int(n_items)
        self.seed = int(seed)

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        users, items = _check_batch(users, items, None, self.n_items)
        key = splitmix64(np.array([self.seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
        h = splitmix64(key ^ users.astype(np.uint64))[:, None]
        h = splitmix64(h ^ items.astype(np.uint64))
        return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


Normalize = Literal["cosine", "none"]
Backend = Literal["auto", "sparse", "dense"]


class CooccurrenceScorer:
    """Item-to-item co-occurrence: score(u, i) = sum over u's train items j of C[j, i].

    C = X^T X over the binary user x item matrix X (repeat interactions count once), diagonal
    zeroed; with normalize="cosine" C[i, j] / sqrt(n_i n_j), n_i = users who had item i. Users
    without history (incl. unknown user 0) score 0 everywhere. Backend "sparse" needs scipy;
    "dense" keeps C as an n_items^2 array and is limited to DENSE_MAX_ITEMS items; "auto" picks
    sparse when scipy is importable. Each user's row is computed alone, so scores do not depend
    on the batch.
    """

    name = "cooccurrence"

    def __init__(
        self,
        train_users: np.ndarray,
        train_items: np.ndarray,
        n_users: int,
        n_items: int,
        normalize: Normalize = "cosine",
        backend: Backend = "auto",
    ) -> None:
        if normalize not in ("cosine", "none"):
            raise ValueError(f"normalize must be 'cosine' or 'none', got {normalize!r}")
        self.n_users, self.n_items, self.normalize = int(n_users), int(n_items), normalize
        self.backend = self._pick_backend(backend, self.n_items)
        users, items = _interactions(train_users, train_items, self.n_users, self.n_items)
        pairs = np.unique(users * self.n_items + items)  # dedupe, sorted by (user, item)
        users, items = pairs // self.n_items, pairs % self.n_items
        self.indptr = np.searchsorted(users, np.arange(self.n_users + 1)).astype(np.int64)
        self.indices = items
        if self.backend == "sparse":
            self._history = _sparse.csr_matrix(
                (np.ones(items.size), items, self.indptr), shape=(self.n_users, self.n_items)
            )
            self._cooc = self._sparse_cooc(self._history)
        else:
            self._cooc = self._dense_cooc(users, items)

    @staticmethod
    def _pick_backend(backend: Backend, n_items: int) -> str:
        """Resolve "auto" and refuse a dense matrix too big to hold."""
        if backend not in ("auto", "sparse", "dense"):
            raise ValueError(f"backend must be 'auto', 'sparse' or 'dense', got {backend!r}")
        if backend == "sparse" and _sparse is None:
            raise ImportError("backend='sparse' needs scipy, which is not installed")
        if backend == "auto":
            backend = "sparse" if _sparse is not None else "dense"
        if backend == "dense" and n_items > DENSE_MAX_ITEMS:
            raise ValueError(
                f"dense co-occurrence is limited to {DENSE_MAX_ITEMS} items (got {n_items}); "
                "install scipy for the sparse backend"
            )
        return backend

    def _item_norm(self, counts: np.ndarray) -> np.ndarray:
        """Per-item factor 1/sqrt(n_i) for cosine (0 for unseen items), or 1 for raw counts."""
        if self.normalize == "none":
            return np.ones(self.n_items)
        with np.errstate(divide="ignore"):
            return np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1)), 0.0)

    def _sparse_cooc(self, history):  # scipy.sparse.csr_matrix -> csr_matrix
        """C = D X^T X D with zero diagonal, D = diag(1/sqrt(n_i)) for cosine."""
        cooc = (history.T @ history).tocsr()
        norm = _sparse.diags(self._item_norm(cooc.diagonal()))
        cooc = (norm @ cooc @ norm).tocsr()
        cooc.setdiag(0.0)
        cooc.eliminate_zeros()
        cooc.sort_indices()
        return cooc

    def _dense_cooc(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The same C as `_sparse_cooc`, accumulated pair by pair per user into a dense array."""
        cooc = np.zeros((self.n_items, self.n_items))
        for u in np.unique(users):
            hist = self.indices[self.indptr[u] : self.indptr[u + 1]]
            cooc[np.ix_(hist, hist)] += 1.0
        norm = self._item_norm(np.diag(cooc).copy())
        cooc *= norm[:, None] * norm[None, :]
        np.fill_diagonal(cooc, 0.0)
        return cooc

    def history(self, user: int) -> np.ndarray:
        """The distinct train items of one user, sorted."""
        return self.indices[self.indptr[user] : self.indptr[user + 1]]

    def user_rows(self, users: np.ndarray) -> np.ndarray:
        """Dense score rows [len(users), n_items] for the given users (each row independent)."""
        users = _check_ids(users, self.n_users, "user").reshape(-1)
        if self.backend == "sparse":
            return (self._history[users] @ self._cooc).toarray()
        rows = np.zeros((users.size, self.n_items))
        for r, u in enumerate(users):
            hist = self.history(int(u))
            if hist.size:
                rows[r] = self._cooc[hist].sum(axis=0)
        return rows

    def score_all(self, users: np.ndarray) -> np.ndarray:
        return self.user_rows(users)

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        users, items = _check_batch(users, items, self.n_users, self.n_items)
        out = np.zeros(items.shape)
        unique, inverse = np.unique(users, return_inverse=True)
        chunk = max(1, _CHUNK_ELEMENTS // max(self.n_items, 1))
        for lo in range(0, unique.size, chunk):
            rows = self.user_rows(unique[lo : lo + chunk])
            sel = np.flatnonzero((inverse >= lo) & (inverse < lo + chunk))
            out[sel] = rows[(inverse[sel] - lo)[:, None], items[sel]]
        return out


class FactorScorer:
    """A matrix-factorisation model as a scorer: score(u, i) = user_factors[u] . item_factors[i]."""

    def __init__(
        self, name: str, user_factors: np.ndarray, item_factors: np.ndarray, fit_seconds: float = float("nan")
    ) -> None:
        self.name = name
        self.fit_seconds = fit_seconds  # wall-clock of the fit (benchmarks/time_to_quality.py)
        self.user_factors = np.ascontiguousarray(user_factors, dtype=np.float32)
        self.item_factors = np.ascontiguousarray(item_factors, dtype=np.float32)

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        users, items = _check_batch(users, items, len(self.user_factors), len(self.item_factors))
        return np.einsum("bd,bcd->bc", self.user_factors[users], self.item_factors[items])

    def score_all(self, users: np.ndarray) -> np.ndarray:
        users = _check_ids(users, len(self.user_factors), "user")
        return self.user_factors[users] @ self.item_factors.T


# The peers' settings: the `implicit` library's usual ones, untuned, as in the real-data README.
ALS_SETTINGS = {"factors": 64, "regularization": 0.05, "iterations": 20}
BPR_SETTINGS = {"factors": 64, "learning_rate": 0.05, "regularization": 0.01, "iterations": 100}


def matrix_factorisation_peers(
    train_users: np.ndarray, train_items: np.ndarray, n_users: int, n_items: int, seed: int
) -> tuple[dict[str, FactorScorer], dict[str, str]]:
    """ALS and BPR fitted on the binary training matrix with `implicit` (CPU), and the peers that
    could not be fitted with the reason (e.g. `implicit` not installed)."""
    try:
        import implicit
        import scipy.sparse as sparse
        from threadpoolctl import threadpool_limits
    except ImportError as exc:
        reason = f"not installed ({exc.name}; pip install implicit)"
        return {}, {"als": reason, "bpr": reason}
    users, items = _interactions(train_users, train_items, n_users, n_items)
    matrix = sparse.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=(n_users, n_items))
    matrix.data[:] = 1.0  # repeats count once, as for co-occurrence
    scorers: dict[str, FactorScorer] = {}
    with threadpool_limits(1, "blas"):  # implicit runs its own threads; BLAS threads on top slow it down
        models = {
            "als": implicit.als.AlternatingLeastSquares(**ALS_SETTINGS, random_state=seed, use_gpu=False),
            "bpr": implicit.bpr.BayesianPersonalizedRanking(**BPR_SETTINGS, random_state=seed, use_gpu=False),
        }
        for name, model in models.items():
            begin = time.perf_counter()
            model.fit(matrix, show_progress=False)
            seconds = time.perf_counter() - begin
            scorers[name] = FactorScorer(name, model.user_factors, model.item_factors, seconds)
    return scorers, {}


def baseline_builders(
    train_users: np.ndarray, train_items: np.ndarray, n_users: int, n_items: int, seed: int
) -> dict[str, Callable[[], Scorer]]:
    """How to fit each of the three reference scorers, keyed by name ("popularity", "random",
    "cooccurrence"), not yet called: so a caller can time each fit."""
    return {
        "popularity": lambda: PopularityScorer(train_users, train_items, n_items),
        "random": lambda: RandomScorer(n_items, seed),
        "cooccurrence": lambda: CooccurrenceScorer(train_users, train_items, n_users, n_items),
    }


def build_baselines(
    train_users: np.ndarray, train_items: np.ndarray, n_users: int, n_items: int, seed: int
) -> dict[str, Scorer]:
    """The three reference scorers keyed by name: "popularity", "random", "cooccurrence"."""
    builders = baseline_builders(train_users, train_items, n_users, n_items, seed)
    return {name: build() for name, build in builders.items()}
