"""alsoview: recommenders trained with also-viewed items as hard negatives, on Ray."""

__version__ = "0.1.0"
