"""The recommender model, built from parts (`config.py` is their registry, `build.py` builds them):

- the user tower (`towers.py`) sums the vectors of the user parts that are on: `parts/user_id.py`
  (an embedding per user), `parts/history.py` (the bag of their items), `parts/sequence.py`
  (their last items through self-attention);
- the item tower holds an item's id and brand embeddings and its feature tables (`features.py`);
- the heads, each ``score`` and ``score_all`` of (users, items), are summed: `parts/mlp.py` (the
  original design's MLP over the concatenation), `parts/dot.py` (a dot product with an item
  bias), `parts/relation.py` (the user's items' neighbours in an item graph: also-view,
  also-bought), `parts/cooccurrence.py` (the co-occurrence peer's score);
- `scorer.py`: `TowerModel`, the towers scored by the sum of the heads.

With the defaults it is the original design exactly: user, item and brand embeddings (dim 64),
normalised price, a projected description vector -> concat -> Dense(128) -> Dense(64) -> Dense(1).
"""

from alsoview.model.build import build_model
from alsoview.model.config import Heads, ModelConfig, UserParts
from alsoview.model.ids import to_known_ids
from alsoview.model.scorer import MODEL_FORMAT, TowerModel, count_parameters

__all__ = [
    "MODEL_FORMAT",
    "Heads",
    "ModelConfig",
    "TowerModel",
    "UserParts",
    "build_model",
    "count_parameters",
    "to_known_ids",
]
