"""``synthesize``: the planted world drawn step by step, each step from its own named stream.

The steps live in ``world`` (items and users), ``reviews`` and ``links``; this module only
checks the arguments and runs them in order, so those modules need not import each other.
"""

from __future__ import annotations

import numpy as np

from alsoview.data.synthetic.draws import Streams
from alsoview.data.synthetic.links import also_view_lists, similar_reviewable
from alsoview.data.synthetic.reviews import (
    add_repeats,
    draw_days,
    draw_ratings,
    ensure_item_minimum,
    order_reviews,
    sample_reviews,
)
from alsoview.data.synthetic.world import (
    CATALOG_FACTOR,
    SyntheticWorld,
    draw_asins,
    draw_brands,
    draw_item_kinds,
    draw_popularity,
    draw_reviewer_ids,
    draw_users,
    item_latent,
)
from alsoview.errors import UserError


def validate(users: int, items: int, seed: int) -> None:
    """Reject sizes too small for a 5-core and non-integer arguments, with a clear message."""
    for name, value in (("users", users), ("items", items), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise UserError(f"synthetic data: {name} must be an integer, got {value!r}")
    if users < 10:
        raise UserError(f"synthetic data: users must be >= 10 (every user needs 5 reviews), got {users}")
    if items < 20:
        raise UserError(f"synthetic data: items must be >= 20 reviewable items, got {items}")
    if seed < 0:
        raise UserError(f"synthetic data: seed must be >= 0, got {seed}")


def synthesize(users: int = 2000, items: int = 600, seed: int = 0) -> SyntheticWorld:
    """Draw the planted world: catalog, users, reviews and also-view lists.

    ``items`` is the number of reviewable items; the catalog adds 4x as many
    catalog-only items that appear only in meta (as in real Video Games data).
    """
    validate(users, items, seed)
    streams = Streams(seed, "world")
    n_total = items * (1 + CATALOG_FACTOR)
    kinds = draw_item_kinds(streams.generator("item_kinds"), n_total)
    popularity = draw_popularity(streams.generator("popularity"), n_total, items)
    latent = item_latent(streams.generator("latent"), kinds)
    asins, ghosts = draw_asins(streams.generator("asins"), n_total, n_ghost=max(10, n_total // 3))
    publisher, brand = draw_brands(streams.generator("brands"), kinds)
    tastes = draw_users(streams.generator("users"), users)
    user_ids = draw_reviewer_ids(streams.generator("reviewer_ids"), users)
    reviewable = kinds.head(items)
    reviewers, reviewed = sample_reviews(streams.generator("reviews"), reviewable, popularity[:items], tastes)
    reviewers, reviewed = ensure_item_minimum(
        streams.generator("item_minimum"), reviewers, reviewed, reviewable, tastes
    )
    days = draw_days(streams.generator("days"), reviewers, users)
    reviewers, reviewed, days = add_repeats(streams.generator("repeats"), reviewers, reviewed, days)
    rating = draw_ratings(streams.generator("ratings"), reviewers, reviewed, reviewable, popularity[:items], tastes)
    reviews = order_reviews(reviewers, reviewed, days, rating, asins[:items])
    neighbours = similar_reviewable(streams.generator("also_view_neighbours"), latent, kinds.genre, items)
    also_view = also_view_lists(streams.generator("also_view"), neighbours, kinds, popularity, items, asins, ghosts)
    return SyntheticWorld(
        seed=seed,
        item_asin=asins,
        n_reviewable=items,
        item_platform=kinds.platform,
        item_genre=kinds.genre,
        item_style=kinds.style,
        item_publisher=publisher,
        item_brand=brand,
        item_popularity=popularity,
        item_latent=latent,
        user_id=user_ids,
        user_platforms=tastes.platforms,
        user_genres=tastes.genres,
        user_style=tastes.style,
        reviews=reviews,
        also_view=also_view,
        ghost_asins=ghosts,
    )
