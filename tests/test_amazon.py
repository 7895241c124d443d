"""Parsing and field cleaning of raw Amazon records (pure, no Ray)."""

import json
import math

import pytest

from alsoview.data import amazon
from alsoview.data.amazon import RecordError


@pytest.mark.parametrize(
    "raw, price, status",
    [
        ("$19.99", 19.99, "ok"),
        ("$1,299.00", 1299.0, "ok"),
        ("$9.99 - $19.99", 14.99, "range"),
        ("$5 to $7", 6.0, "range"),
        ("", None, "missing"),
        ("\n\t\t   \r\n", None, "missing"),
        (None, None, "missing"),
        (".a-box-inner{background-color:#fff}#alohaBuyBoxWidget", None, "junk"),
        ('<span class="a-price">$3</span>', None, "junk"),
        ("free", None, "junk"),
        (12.5, 12.5, "ok"),  # 2014 meta stores numbers
        (-3.0, None, "junk"),
        ("$250000.00", None, "junk"),
    ],
)
def test_parse_price(raw, price, status):
    value, got_status = amazon.parse_price(raw)
    assert got_status == status
    assert value == pytest.approx(price) if price is not None else value is None


@pytest.mark.parametrize(
    "raw, text",
    [
        ("<b>Great</b> &amp; fun<br/>to play", "Great & fun to play"),
        ('<span class="a-size-medium a-color-secondary"', ""),
        ("&lt;p&gt;escaped twice&lt;/p&gt;", "escaped twice"),
        (["First part.", "<p>Second</p>"], "First part. Second"),
        (None, ""),
        ("  many   \n spaces ", "many spaces"),
    ],
)
def test_strip_html(raw, text):
    assert amazon.strip_html(raw) == text


def test_brand_normalisation_and_key():
    assert amazon.normalize_brand("by\n    \n    Nintendo") == "Nintendo"
    assert amazon.normalize_brand("  Unknown ") == ""
    assert amazon.normalize_brand("") == ""
    assert amazon.normalize_brand("<b>SEGA</b>") == "SEGA"
    assert amazon.brand_key("Electronic Arts") == amazon.brand_key("electronic arts")


def test_review_json_fields_and_time_fallback():
    line = json.dumps({"overall": 4.0, "reviewerID": "A1", "asin": "B01", "unixReviewTime": 1500000000})
    review = amazon.parse_review_json(line)
    assert (review.user, review.item, review.rating, review.time) == ("A1", "B01", 4.0, 1500000000)
    no_unix = amazon.parse_review_json(
        json.dumps({"overall": 5, "reviewerID": "A", "asin": "B", "reviewTime": "06 2, 2018"})
    )
    assert no_unix.time == 1527897600  # 2018-06-02 00:00 UTC, as the real files pair them


@pytest.mark.parametrize(
    "line, reason",
    [
        ('{"overall": 5.0, "reviewerID": "A1"', "malformed_record"),
        ("[1, 2]", "malformed_record"),
        ('{"overall": 5.0, "asin": "B1", "unixReviewTime": 1}', "missing_field"),
        ('{"overall": 5.0, "reviewerID": "", "asin": "B1", "unixReviewTime": 1}', "missing_field"),
        ('{"overall": "great", "reviewerID": "A", "asin": "B1", "unixReviewTime": 1}', "bad_rating"),
        ('{"overall": 7, "reviewerID": "A", "asin": "B1", "unixReviewTime": 1}', "bad_rating"),
        ('{"overall": 5, "reviewerID": "A", "asin": "B1"}', "bad_time"),
        ('{"overall": 5, "reviewerID": "A", "asin": "B1", "reviewTime": "yesterday"}', "bad_time"),
    ],
)
def test_review_json_errors_name_a_reason(line, reason):
    with pytest.raises(RecordError) as info:
        amazon.parse_review_json(line)
    assert info.value.reason == reason


def test_meta_2018_json():
    line = json.dumps(
        {
            "asin": "B1",
            "title": "<span>Halo</span>",
            "brand": "by\n  Microsoft",
            "price": "$9.99 - $19.99",
            "description": ["An <b>epic</b> shooter", "for Xbox"],
            "also_view": ["B2", "B3", ""],
        }
    )
    meta = amazon.parse_meta_line(line)
    assert meta.asin == "B1" and meta.title == "Halo" and meta.brand == "Microsoft"
    assert meta.price == pytest.approx(14.99) and meta.price_status == "range"
    assert meta.description == "An epic shooter for Xbox"
    assert meta.also_view == ("B2", "B3")


def test_meta_2014_python_literal():
    line = (
        "{'asin': '0000031852', 'title': 'Girls Ballet Tutu', 'price': 3.17, 'brand': 'Coxlist', "
        "'related': {'also_bought': ['B1'], 'also_viewed': ['B00JHONN1S', 'B002BZX8Z6']}, "
        "'description': 'A tutu &amp; more', 'salesRank': {'Toys & Games': 211836}}"
    )
    meta = amazon.parse_meta_line(line)
    assert meta.asin == "0000031852" and meta.price == pytest.approx(3.17)
    assert meta.also_view == ("B00JHONN1S", "B002BZX8Z6")
    assert meta.description == "A tutu & more"


def test_meta_errors():
    with pytest.raises(RecordError, match="neither JSON") as info:
        amazon.parse_meta_line("{'asin': 'B1', 'title': ")
    assert info.value.reason == "malformed_record"
    with pytest.raises(RecordError) as info:
        amazon.parse_meta_line('{"title": "no asin"}')
    assert info.value.reason == "missing_field"


def test_batches_keep_every_record_with_a_reason():
    texts = ['{"overall": 5, "reviewerID": "A", "asin": "B", "unixReviewTime": 3}', "", "{oops"]
    out = amazon.parse_review_records(["reviews_json"] * 3, texts, [1, 2, 3])
    assert out["drop_reason"] == [None, amazon.BLANK, "malformed_record"]
    assert out["user"][0] == "A" and len(out["user"]) == 3
    meta = amazon.parse_meta_records(['{"asin": "B"}', "  "])
    assert meta["drop_reason"] == [None, amazon.BLANK]


def test_ratings_csv_and_combined_rows():
    review = amazon.parse_ratings_csv(["B01", "A9", "4.0", "1400000000"])
    assert (review.item, review.user, review.rating, review.time) == ("B01", "A9", 4.0, 1400000000)
    with pytest.raises(RecordError):
        amazon.parse_ratings_csv(["B01", "A9", "4.0"])
    row = amazon.parse_combined_csv(["A9", "B01", "Nintendo", "$20.00", "<p>Fun</p>", "['B02', 'B03']", "1"], line=7)
    assert row.label == 1 and row.time == 7 and math.isnan(row.rating)
    assert row.also_view == ("B02", "B03") and row.price == 20.0 and row.description == "Fun"
    with pytest.raises(RecordError) as info:
        amazon.parse_combined_csv(["A9", "B01", "", "", "", "", "maybe"], line=8)
    assert info.value.reason == "bad_label"


def test_csv_records_span_quoted_newlines():
    lines = ["a,b\n", '"multi\n', 'line",c\n', "d,e\n"]
    assert list(amazon.split_csv_records(lines)) == [(1, ["a", "b"]), (2, ["multi\nline", "c"]), (4, ["d", "e"])]


def test_sniffing_tells_reviews_from_meta():
    review = '{"overall": 5.0, "reviewerID": "A", "asin": "B"}'
    meta = '{"asin": "B", "title": "x", "also_view": []}'
    assert amazon.sniff_review_format("r.json", [review]) == "reviews_json"
    assert amazon.sniff_review_format("r.csv", ["B01,A9,5.0,1400000000"]) == "ratings_csv"
    header = "reviewerID,asin,brand,price,description,also_view,label"
    assert amazon.sniff_review_format("c.csv", [header]) == "combined_csv"
    assert amazon.sniff_meta_format([meta]) == "meta_json"
    assert amazon.sniff_meta_format(["{'asin': 'B', 'related': {}}"]) == "meta_json"
    with pytest.raises(ValueError, match="item metadata"):
        amazon.sniff_review_format("m.json", [meta])
    with pytest.raises(ValueError, match="looks like reviews"):
        amazon.sniff_meta_format([review])
    with pytest.raises(ValueError, match="not a known review format"):
        amazon.sniff_review_format("x.txt", ["hello world"])
