"""The item side features: brand id, normalised price with its missing flag, description vector.

They live in registered buffers and are looked up by item id inside the model, so batches carry
only ``user`` and ``item`` ids and the features move to the GPU with ``model.to(device)``. They
are the dataset's, not learned: a model is always built from its run's dataset, so they stay out
of ``state_dict`` (a checkpoint holds the model twice, the latest and the best: the description
vectors were over 40 % of it, and they grow with items x text dim). A state dict of an older version that carries them
still loads; the dataset's features are used.
"""

from __future__ import annotations

import torch
from torch import nn

FEATURE_NAMES = ("brand", "price", "price_missing", "text")


class ItemFeatures(nn.Module):
    """Per-item feature tables, validated once here so a wrong table fails at construction, not mid-epoch."""

    def __init__(
        self,
        n_brands: int,
        item_brand: torch.Tensor,
        item_price: torch.Tensor,
        item_price_missing: torch.Tensor,
        item_text: torch.Tensor | None,
        text_dim: int,
    ) -> None:
        super().__init__()
        brand = torch.as_tensor(item_brand, dtype=torch.int64)
        n = len(brand)
        price = torch.as_tensor(item_price, dtype=torch.float32)
        missing = torch.as_tensor(item_price_missing, dtype=torch.float32)
        text = torch.zeros(n, 0) if item_text is None else torch.as_tensor(item_text, dtype=torch.float32)
        for name, tensor, shape in (
            ("item_price", price, (n,)),
            ("item_price_missing", missing, (n,)),
            ("item_text", text, (n, text_dim)),
        ):
            if tuple(tensor.shape) != shape:
                raise ValueError(f"{name} must have shape {shape}, got {tuple(tensor.shape)}")
        if n and (brand.min() < 0 or brand.max() >= n_brands):
            raise ValueError(f"item_brand values must be brand ids in [0, {n_brands})")
        if not (torch.isfinite(price).all() and torch.isfinite(text).all()):
            raise ValueError("item_price and item_text must be finite (use 0 plus the missing flag for gaps)")
        self.n_items, self.n_brands, self.text_dim = n, n_brands, text_dim
        for name, tensor in zip(FEATURE_NAMES, (brand, price, missing, text), strict=True):
            self.register_buffer(name, tensor.contiguous(), persistent=False)
        self.register_load_state_dict_pre_hook(_drop_saved_features)

    # index_select, not tensor[items]: advanced indexing is ~6x slower on the CPU
    def brands(self, items: torch.Tensor) -> torch.Tensor:
        return self.brand.index_select(0, items)

    def price_pair(self, items: torch.Tensor) -> torch.Tensor:
        """[B, 2]: normalised price and its missing flag."""
        return torch.stack([self.price.index_select(0, items), self.price_missing.index_select(0, items)], dim=-1)

    def texts(self, items: torch.Tensor) -> torch.Tensor:
        return self.text.index_select(0, items)


def _drop_saved_features(module: nn.Module, state_dict: dict, prefix: str, *_: object) -> None:
    """Older run files saved the features with the weights: they are the dataset's, so drop them."""
    for name in FEATURE_NAMES:
        state_dict.pop(prefix + name, None)
