"""The recommender model, built from parts (`build.py` maps the config to them):

- towers (`towers.py`): a user as one vector (id embedding and/or the bag of their items,
  `history.py`); an item as its parts (id and brand embeddings, `features.py`' tables);
- heads, one file each, each with ``score`` and ``score_all``: `mlp_head.py` (the original
  design's MLP over the concatenation), `dot_head.py` (a dot product with an item bias) and
  `relation_head.py` (how many of the user's items are also-view neighbours of the item; it reads
  user ids, ``uses_user_ids``);
- `scorer.py`: `TowerModel`, the towers scored by the sum of the heads.

With the defaults it is the original design exactly: user, item and brand embeddings (dim 64),
normalised price, a projected description vector -> concat -> Dense(128) -> Dense(64) -> Dense(1).
"""

from alsoview.config import ModelConfig
from alsoview.model.build import build_model, build_tower_model, count_parameters
from alsoview.model.dot_head import DotHead
from alsoview.model.ids import to_known_ids
from alsoview.model.mlp_head import FastDropout, MLPHead
from alsoview.model.relation_head import RelationHead
from alsoview.model.scorer import MODEL_FORMAT, TowerModel
from alsoview.model.towers import ItemTower, UserTower

__all__ = [
    "MODEL_FORMAT",
    "DotHead",
    "FastDropout",
    "ItemTower",
    "MLPHead",
    "RelationHead",
    "ModelConfig",
    "TowerModel",
    "UserTower",
    "build_model",
    "build_tower_model",
    "count_parameters",
    "to_known_ids",
]
