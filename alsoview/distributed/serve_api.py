"""What `alsoview serve` answers, without Ray: request bodies checked, answers built from a
`Recommender`. The Ray Serve deployment (`serve.py`) only routes requests here.

Every body is bounded and typed before anything reads it: a JSON object of at most
`MAX_BODY_BYTES`, only the keys an endpoint knows, `k` in [1, MAX_K], ids short printable
strings, at most `MAX_VISITOR_ITEMS` items. Nothing a request sends names a file or a run: the
run served is the operator's choice alone (the deployment's user_config).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from alsoview.distributed.recommend import Recommender
from alsoview.errors import UserError

MAX_BODY_BYTES = 64 * 1024  # a visitor's items and a few settings; more is not a recommendation request
MAX_K = 1000  # a page of recommendations, not a dump of the catalog
MAX_VISITOR_ITEMS = 500  # a session's items; longer lists are a client bug or an attack
MAX_ID_CHARS = 256  # asins and reviewer ids are short
SIMILAR_BY = ("vectors", "cooccurrence", "also_view")


class BadRequest(ValueError):
    """A request the server refuses: its message is the one line of the 400 answer."""


@dataclass(frozen=True)
class RecommendQuery:
    """One /recommend request: a known user (`user_id`) or a visitor (`items`, oldest first)."""

    user_id: str | None
    items: tuple[str, ...] | None
    k: int
    exclude_seen: bool


@dataclass(frozen=True)
class SimilarQuery:
    asin: str
    k: int
    by: str


def read_json_object(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or BadRequest saying why not."""
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(f"request body is {len(body):,} bytes; at most {MAX_BODY_BYTES:,}")
    try:
        value = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest("request body is not UTF-8") from None
    except (ValueError, RecursionError):
        raise BadRequest("request body is not JSON") from None
    if not isinstance(value, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(value).__name__}")
    return value


def parse_recommend(body: bytes) -> RecommendQuery:
    """{"user_id": str} or {"items": [asin, ...]}, with optional "k" (10) and "exclude_seen" (true)."""
    fields = read_json_object(body)
    _only_keys(fields, ("user_id", "items", "k", "exclude_seen"))
    if ("user_id" in fields) == ("items" in fields):
        raise BadRequest('give exactly one of "user_id" (a known user) or "items" (a visitor\'s asins)')
    user_id = _identifier(fields["user_id"], "user_id") if "user_id" in fields else None
    items = None
    if "items" in fields:
        listed = fields["items"]
        if not isinstance(listed, list) or not listed:
            raise BadRequest('"items" must be a non-empty list of asins')
        if len(listed) > MAX_VISITOR_ITEMS:
            raise BadRequest(f'"items" holds {len(listed)} asins; at most {MAX_VISITOR_ITEMS}')
        items = tuple(_identifier(asin, "items[]") for asin in listed)
    exclude_seen = fields.get("exclude_seen", True)
    if not isinstance(exclude_seen, bool):
        raise BadRequest('"exclude_seen" must be true or false')
    return RecommendQuery(user_id, items, _k(fields), exclude_seen)


def parse_similar(body: bytes) -> SimilarQuery:
    """{"asin": str}, with optional "k" (10) and "by" ("vectors")."""
    fields = read_json_object(body)
    _only_keys(fields, ("asin", "k", "by"))
    if "asin" not in fields:
        raise BadRequest('"asin" is missing')
    by = fields.get("by", "vectors")
    if by not in SIMILAR_BY:
        raise BadRequest(f'"by" must be one of {", ".join(SIMILAR_BY)}')
    return SimilarQuery(_identifier(fields["asin"], "asin"), _k(fields), by)


def _only_keys(fields: dict[str, Any], known: tuple[str, ...]) -> None:
    unknown = sorted(set(fields) - set(known))
    if unknown:
        shown = ", ".join(json.dumps(key)[:40] for key in unknown[:3])
        plural = "s" if len(unknown) > 1 else ""
        raise BadRequest(f"unknown key{plural} {shown}; this endpoint reads {', '.join(known)}")


def _identifier(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadRequest(f'"{name}" must be a non-empty string')
    if len(value) > MAX_ID_CHARS or not value.isprintable():
        raise BadRequest(f'"{name}" must be a printable string of at most {MAX_ID_CHARS} characters')
    return value


def _k(fields: dict[str, Any]) -> int:
    k = fields.get("k", 10)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise BadRequest(f'"k" must be a whole number in [1, {MAX_K}]')
    return k


def answer_recommend(recommender: Recommender, queries: list[RecommendQuery], model: str) -> list[dict[str, Any]]:
    """Each query's answer, {"items": [{"asin", "title", "score"}], "model", "fallback"}, or
    {"error": ...} for a visitor naming an asin the catalog lacks. The known users of one
    `exclude_seen` setting are scored in one matrix product, and so are the visitors."""
    answers: list[dict[str, Any] | None] = [None] * len(queries)
    for exclude_seen in (True, False):
        users = [i for i, q in enumerate(queries) if q.user_id is not None and q.exclude_seen == exclude_seen]
        if users:
            _answer_users(recommender, queries, users, exclude_seen, model, answers)
        visitors = []
        for i, query in enumerate(queries):
            if query.items is not None and query.exclude_seen == exclude_seen:
                try:
                    visitors.append((i, recommender.item_indices(list(query.items))))
                except UserError as exc:
                    answers[i] = {"error": str(exc)}
        if visitors:
            _answer_visitors(recommender, queries, visitors, exclude_seen, model, answers)
    return answers  # type: ignore[return-value]


def _answer_users(
    recommender: Recommender,
    queries: list[RecommendQuery],
    rows: list[int],
    exclude_seen: bool,
    model: str,
    answers: list,
) -> None:
    ids = recommender.user_index([queries[i].user_id for i in rows])
    top, scores = recommender.top_k(ids, max(queries[i].k for i in rows), exclude_seen)
    for row, (i, user) in enumerate(zip(rows, ids)):
        fallback = None if user > 0 else "popularity (unknown user)"
        answers[i] = _answer(recommender, top[row], scores[row], queries[i].k, model, fallback)


def _answer_visitors(
    recommender: Recommender,
    queries: list[RecommendQuery],
    visitors: list[tuple[int, np.ndarray]],
    exclude_seen: bool,
    model: str,
    answers: list,
) -> None:
    k = max(queries[i].k for i, _ in visitors)
    top, scores, fallback = recommender.top_k_visitors([items for _, items in visitors], k, exclude_seen)
    for row, (i, _) in enumerate(visitors):
        answers[i] = _answer(recommender, top[row], scores[row], queries[i].k, model, fallback)


def _answer(
    recommender: Recommender, top: np.ndarray, scores: np.ndarray, k: int, model: str, fallback: str | None
) -> dict[str, Any]:
    """The first k of a row's ranking (a ranking of more is the same order: `recommend._best`),
    items without a finite score left out."""
    catalog = recommender.catalog
    items = [
        {"asin": str(catalog.item_asin[item]), "title": str(catalog.item_title[item]), "score": float(score)}
        for item, score in zip(top[:k], scores[:k])
        if np.isfinite(score)
    ]
    return {"items": items, "model": model, "fallback": fallback}


def answer_similar(recommender: Recommender, query: SimilarQuery, model: str) -> dict[str, Any]:
    """{"items": [{"asin", "title", "similarity"}], "model", "by"}; an unknown asin raises UserError."""
    frame = recommender.similar(query.asin, query.k, query.by)
    items = [
        {"asin": str(a), "title": str(t), "similarity": float(s)}
        for a, t, s in zip(frame["asin"], frame["title"], frame["similarity"])
    ]
    return {"items": items, "model": model, "by": query.by}
