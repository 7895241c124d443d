"""What the server answers, without a server: request bodies checked in one line each, and
answers equal to the Recommender's own top-k for the same input, batched or not."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alsoview.distributed.recommend import Recommender, _best
from alsoview.distributed.serve_api import (
    MAX_BODY_BYTES,
    MAX_K,
    MAX_VISITOR_ITEMS,
    BadRequest,
    RecommendQuery,
    answer_recommend,
    answer_similar,
    parse_recommend,
    parse_similar,
)
from alsoview.evaluation.baselines import PopularityScorer
from alsoview.evaluation.protocols import ModelScorer
from alsoview.model import build_model
from tests.factories import model_config, tiny_catalog


def _body(value) -> bytes:
    return json.dumps(value).encode()


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "at most"),  # too big before it is parsed
        (b"[" * 5_000 + b"]" * 5_000, "not JSON"),  # nesting deeper than the parser goes
        (_body([1, 2]), "must be a JSON object, got list"),
        (_body({}), "exactly one of"),
        (_body({"user_id": "A", "items": ["B"]}), "exactly one of"),
        (_body({"user_id": "A", "path": "/etc/passwd"}), 'unknown key "path"'),
        (_body({"user_id": 5}), '"user_id" must be a non-empty string'),
        (_body({"user_id": "A\x00B"}), "printable"),
        (_body({"user_id": "A" * 300}), "at most 256"),
        (_body({"items": []}), "non-empty list"),
        (_body({"items": "B01"}), "non-empty list"),
        (_body({"items": ["B01", 7]}), '"items[]" must be a non-empty string'),
        (_body({"items": ["B"] * (MAX_VISITOR_ITEMS + 1)}), f"at most {MAX_VISITOR_ITEMS}"),
        (_body({"user_id": "A", "k": 0}), '"k" must be a whole number'),
        (_body({"user_id": "A", "k": MAX_K + 1}), '"k" must be a whole number'),
        (_body({"user_id": "A", "k": True}), '"k" must be a whole number'),
        (_body({"user_id": "A", "k": "5"}), '"k" must be a whole number'),
        (_body({"user_id": "A", "k": 2.5}), '"k" must be a whole number'),
        (_body({"user_id": "A", "exclude_seen": "no"}), '"exclude_seen" must be true or false'),
    ],
)
def test_a_bad_recommend_body_is_refused_in_one_line(body, says):
    with pytest.raises(BadRequest, match=None) as refused:
        parse_recommend(body)
    message = str(refused.value)
    assert says in message and "\n" not in message and len(message) < 200


def test_a_good_recommend_body_is_read_with_its_defaults():
    assert parse_recommend(_body({"user_id": "A1"})) == RecommendQuery("A1", None, 10, True)
    query = parse_recommend(_body({"items": ["B2", "B1"], "k": 3, "exclude_seen": False}))
    assert query == RecommendQuery(None, ("B2", "B1"), 3, False)
    assert len(_body({"items": ["B0123456789"] * MAX_VISITOR_ITEMS})) < MAX_BODY_BYTES  # the limits agree


def test_similar_bodies():
    assert parse_similar(_body({"asin": "B1"})).by == "vectors"
    for body, says in [({}, '"asin" is missing'), ({"asin": "B1", "by": "magic"}, '"by" must be one of')]:
        with pytest.raises(BadRequest, match=says):
            parse_similar(_body(body))


@pytest.fixture(scope="module")
def recommender() -> Recommender:
    catalog = tiny_catalog()
    settings = ("user.id=false", "user.history=true", "heads.mlp=false", "heads.dot=true", "heads.also_view=true")
    model = build_model(catalog, model_config(*settings), seed=3)
    popularity = PopularityScorer(catalog.train.users, catalog.train.items, catalog.n_items)
    return Recommender(catalog, ModelScorer(model), popularity, catalog)


def _items(frame) -> list[str]:
    return list(frame["asin"])


def test_a_batch_answers_each_query_as_the_recommender_does_alone(recommender):
    queries = [
        RecommendQuery("U2", None, 2, True),
        RecommendQuery(None, ("I4", "I1"), 3, True),
        RecommendQuery("U3", None, 5, False),
        RecommendQuery("nobody", None, 4, True),
        RecommendQuery(None, ("I6",), 1, False),
        RecommendQuery(None, ("I6", "NOPE"), 1, True),
    ]
    answers = answer_recommend(recommender, queries, "run-a")
    assert _answered(answers[0]) == _items(recommender.recommend(["U2"], 2))
    assert _answered(answers[1]) == _items(recommender.recommend_items(["I4", "I1"], 3)[0])
    assert _answered(answers[2]) == _items(recommender.recommend(["U3"], 5, exclude_seen=False))
    assert answers[3]["fallback"] == "popularity (unknown user)"
    assert _answered(answers[3]) == _items(recommender.recommend(["nobody"], 4))
    assert _answered(answers[4]) == _items(recommender.recommend_items(["I6"], 1, exclude_seen=False)[0])
    assert answers[5] == {"error": "unknown asin 'NOPE': not an item of this run's catalog"}
    assert all(a.get("model") == "run-a" and a.get("fallback") is None for a in answers[:3])
    seen = set(recommender.catalog.item_asin[recommender._seen_by(2)])
    assert seen and not seen & set(_answered(answers[0]))
    assert {"I4", "I1"}.isdisjoint(_answered(answers[1]))


def _answered(answer) -> list[str]:
    return [item["asin"] for item in answer["items"]]


def test_the_first_k_of_a_longer_ranking_are_the_top_k_even_among_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, size=(20, 40)).astype(np.float64)  # many ties, as popularity has
    longest, _ = _best(scores.copy(), 30, None)
    for k in (1, 5, 17):
        top, values = _best(scores.copy(), k, None)
        assert (top == longest[:, :k]).all()
        assert (np.diff(values, axis=1) <= 0).all() and (top != 0).all()


def test_similar_answers_as_the_recommender(recommender):
    query = parse_similar(_body({"asin": "I2", "k": 3, "by": "also_view"}))
    answer = answer_similar(recommender, query, "run-a")
    assert [i["asin"] for i in answer["items"]] == list(recommender.similar("I2", 3, "also_view")["asin"])


@pytest.mark.parametrize(
    ("words", "says"),
    [
        (["--run", "no-such-run"], "no-such-run"),
        (["--run", "no-such-run", "--port", "0"], "--port must be in [1, 65535]"),
        (["--run", "no-such-run", "--max-batch-size", "0"], "--max-batch-size must be in [1, 1024]"),
    ],
)
def test_serve_refuses_what_it_cannot_serve_in_one_line_before_starting_ray(words, says, capsys, tmp_path):
    import os

    from alsoview.cli import main

    os.environ.setdefault("ALSOVIEW_HOME", str(tmp_path))
    assert main(["serve", *words]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
