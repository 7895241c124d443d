"""The typed config: YAML files plus `section.key=value` overrides, validated up front.

A typo in a key or an out-of-range value is a user mistake: it ends the run with one clear line
(UserError), never a traceback deep inside Ray. One file per job:

- `schema.py`: the dataclasses (one per YAML section, `Config` the whole; the model's section is
  the registry of parts in `model/config.py`), their defaults and `validate()`, the choice lists,
  the plain-name and CPU rules;
- `keys.py`: dotted keys resolved against the schema: which exist, which switch a model part on
  or off, a key's value in a config;
- `overrides.py`: the engine: YAML files and overrides typed into a `Config` (`load_config`,
  `with_overrides`, `config_from_dict`), `save_config`;
- `search_space.py`: the grammar of `tune.search_space` (`SEARCH_KINDS`, `flatten_search_space`,
  the checks of each entry, the keys that cannot be searched, the start points);
- `paths.py`: where paths resolve (`storage_root`, `with_absolute_paths`).

Imports go one way: keys <- search_space <- schema <- overrides, paths. Import from the package.
"""

from alsoview.config.names import CPUS_RULE, MAX_CPUS, PLAIN_NAME, PLAIN_NAME_RULE, check_plain_name, is_plain_name
from alsoview.config.overrides import config_from_dict, load_config, save_config, with_overrides
from alsoview.config.paths import DEFAULT_STORAGE, STORAGE_ENV, storage_root, with_absolute_paths
from alsoview.config.schema import (
    LOSSES,
    RANDOM_POOLS,
    TEXT_ENCODERS,
    VALIDATION_METRICS,
    Config,
    DataConfig,
    Loss,
    ModelConfig,
    RandomPool,
    SamplingConfig,
    TextConfig,
    TextEncoder,
    TrackingConfig,
    TrainConfig,
    TuneConfig,
    ValidationMetric,
)
from alsoview.config.search_space import SEARCH_KINDS, UNSEARCHABLE, flatten_search_space, is_search_spec

__all__ = [
    "CPUS_RULE",
    "DEFAULT_STORAGE",
    "MAX_CPUS",
    "PLAIN_NAME",
    "PLAIN_NAME_RULE",
    "LOSSES",
    "RANDOM_POOLS",
    "SEARCH_KINDS",
    "STORAGE_ENV",
    "TEXT_ENCODERS",
    "UNSEARCHABLE",
    "VALIDATION_METRICS",
    "Config",
    "DataConfig",
    "ModelConfig",
    "Loss",
    "RandomPool",
    "SamplingConfig",
    "TextConfig",
    "TextEncoder",
    "TrackingConfig",
    "TrainConfig",
    "TuneConfig",
    "ValidationMetric",
    "check_plain_name",
    "config_from_dict",
    "flatten_search_space",
    "is_plain_name",
    "is_search_spec",
    "load_config",
    "save_config",
    "storage_root",
    "with_absolute_paths",
    "with_overrides",
]
