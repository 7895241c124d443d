"""alsoview: recommenders trained with also-viewed items as hard negatives, on Ray.

The Python API (`alsoview.api`) is importable from here; it loads Ray and torch on first use
only, so `import alsoview` stays cheap:

    from alsoview import load_config, prepare, train, tune, evaluate, Recommender
"""

from __future__ import annotations

from typing import Any

from alsoview.version import __version__

_API = ("Config", "Recommender", "evaluate", "load_config", "prepare", "train", "tune")
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    """The API's names, imported when first asked for (PEP 562)."""
    if name in _API:
        from alsoview import api

        return getattr(api, name)
    raise AttributeError(f"module 'alsoview' has no attribute {name!r}")
