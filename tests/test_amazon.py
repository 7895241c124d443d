"""Parsing and field cleaning of raw Amazon records (pure, no Ray)."""

import json
import math

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alsoview.data import amazon
from alsoview.data.amazon import RecordError
from alsoview.data.parse import parse_meta_block, parse_review_block


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
            "also_buy": ["B4", " B5 "],
        }
    )
    meta = amazon.parse_meta_line(line)
    assert meta.also_buy == ("B4", "B5")
    assert amazon.parse_meta_line(json.dumps({"asin": "B9"})).also_buy == ()
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
    assert meta.also_buy == ("B1",)  # related.also_bought
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
    with pytest.raises(ValueError, match=r"neither JSON nor CSV \(new-line character seen in unquoted field\)$"):
        amazon.sniff_review_format("noise.gz", ["a\rb,c"])  # csv's own error, as a reason


def test_a_python_literal_too_long_to_read_safely_is_a_counted_drop():
    """literal_eval's memory grows hundreds of times faster than its input: a 2014 line over
    MAX_LITERAL_CHARS is not read as one, and an also-view string that long yields its asins."""
    from alsoview.data.fields import MAX_LITERAL_CHARS, clean_asin_list

    padding = "x" * MAX_LITERAL_CHARS
    with pytest.raises(RecordError, match="too long to read as a Python literal") as dropped:
        amazon.parse_meta_line(f"{{'asin': 'B000000001', 'title': '{padding}'}}")
    assert dropped.value.reason == "malformed_record"
    fits = amazon.parse_meta_line(f"{{'asin': 'B000000001', 'title': '{padding[:1000]}'}}")
    assert fits.asin == "B000000001"
    asins = "[" + ", ".join(f"'B{n:09d}'" for n in range(MAX_LITERAL_CHARS // 10)) + "]"
    assert clean_asin_list(asins) == [f"B{n:09d}" for n in range(MAX_LITERAL_CHARS // 10)]


# ---------------------------------------------------------------- hostile input: counted, never fatal

REVIEW_KEYS = ("reviewerID", "asin", "overall", "unixReviewTime", "reviewTime")
META_KEYS = ("asin", "title", "brand", "price", "description", "also_view", "related")
DROP_REASONS = {*amazon.MALFORMED_REASONS, amazon.BLANK}

HOSTILE_REVIEW_LINES = [
    '{"reviewerID": "A", "asin": "B", "overall": 5, "unixReviewTime": Infinity}',
    '{"reviewerID": "A", "asin": "B", "overall": 5, "unixReviewTime": -Infinity}',
    '{"reviewerID": "A", "asin": "B", "overall": 5, "unixReviewTime": NaN}',
    '{"reviewerID": "A", "asin": "B", "overall": 5, "unixReviewTime": 1e30}',
    '{"reviewerID": "A", "asin": "B", "overall": 5, "unixReviewTime": ' + "9" * 5000 + "}",
    '{"reviewerID": "A", "asin": "B", "overall": 5, "unixReviewTime": ' + "9" * 400 + "}",
    '{"reviewerID": "A", "asin": "B", "overall": ' + "9" * 400 + ', "unixReviewTime": 1}',
    '{"reviewerID": "A", "asin": "B", "overall": 5, "unixReviewTime": -1}',
    '{"reviewerID": "A", "asin": "B", "overall": 5, "unixReviewTime": true}',
    '{"reviewerID": "A", "asin": "B", "overall": 5, "unixReviewTime": [1]}',
    '{"reviewerID": {"x": 1}, "asin": "B", "overall": 5, "unixReviewTime": 1}',
    "[" * 100_000 + "]" * 100_000,
    '{"a": ' * 50_000 + "1" + "}" * 50_000,
    "\x00\x01\x02 binary \ufffd\ufffd",
]


@pytest.mark.parametrize("line", HOSTILE_REVIEW_LINES, ids=range(len(HOSTILE_REVIEW_LINES)))
def test_a_hostile_review_line_is_a_counted_drop(line):
    block = _review_block("reviews_json", [line])
    assert block.column("drop_reason").to_pylist()[0] in DROP_REASONS
    assert len(block.column("detail").to_pylist()[0]) < 200  # a quoted value is cut short


@pytest.mark.parametrize("time", ["inf", "-inf", "nan", "1e400", "9" * 5000, "-5", "soon"])
def test_a_hostile_csv_time_is_bad_time(time):
    block = _review_block("ratings_csv", [json.dumps(["B", "A", "5", time])])
    assert block.column("drop_reason").to_pylist() == ["bad_time"]


@pytest.mark.parametrize("label", ["inf", "nan", "2", "1e400", "-0.5"])
def test_a_hostile_combined_label_is_bad_label(label):
    block = _review_block("combined_csv", [json.dumps(["A", "B", "", "", "", "", label])])
    assert block.column("drop_reason").to_pylist() == ["bad_label"]


def test_hostile_meta_lines_are_counted_or_cleaned():
    lines = [
        '{"asin": "X", "price": ' + "9" * 400 + "}",  # price junk, item kept
        '{"asin": "X", "also_view": "' + "[" * 5000 + '"}',  # unreadable list: no also-views
        "{'asin': 'X', 'related': {'also_viewed': " + "[" * 3000 + "]" * 3000 + "}}",
        "{" * 50_000,
        '{"asin": "X", "description": "cut emoji \\ud83d here", "title": "\\udc00"}',
    ]
    block = _meta_block(lines)
    assert block.column("drop_reason").to_pylist() == [None, None, "malformed_record", "malformed_record", None]
    assert block.column("price_status").to_pylist()[0] == "junk"
    assert block.column("description").to_pylist()[4] == "cut emoji \ufffd here"


def test_a_lone_surrogate_in_a_review_is_replaced_not_fatal():
    line = '{"reviewerID": "A\\ud800", "asin": "B", "overall": 5, "unixReviewTime": 1}'
    block = _review_block("reviews_json", [line])
    assert block.column("drop_reason").to_pylist() == [None]
    assert block.column("user").to_pylist() == ["A\ufffd"]


def _json_values(keys):
    """Any JSON value, with extreme numbers, nested to a few levels, as records with the parsers' keys."""
    scalar = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(10**400), max_value=10**400)
        | st.floats(allow_nan=True, allow_infinity=True)
        | st.text(max_size=30)
    )
    value = st.recursive(
        scalar,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
        max_leaves=12,
    )
    return st.dictionaries(st.sampled_from(keys), value, max_size=len(keys)) | value


@settings(max_examples=300, deadline=None)
@given(record=_json_values(REVIEW_KEYS))
def test_any_json_review_parses_or_is_a_counted_drop(record):
    block = _review_block("reviews_json", [json.dumps(record)])
    reason = block.column("drop_reason").to_pylist()[0]
    assert reason in DROP_REASONS or reason is None
    if reason is None:
        assert 0 <= block.column("rating").to_pylist()[0] <= 5
        assert 0 <= block.column("time").to_pylist()[0] <= 2**53


@settings(max_examples=300, deadline=None)
@given(record=_json_values(META_KEYS))
def test_any_json_meta_parses_or_is_a_counted_drop(record):
    for text in (json.dumps(record), repr(record)):  # 2018 JSON and 2014 Python-literal lines
        reason = _meta_block([text]).column("drop_reason").to_pylist()[0]
        assert reason in DROP_REASONS or reason is None


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_any_text_line_parses_or_is_a_counted_drop(text):
    for fmt in ("reviews_json",):
        assert _review_block(fmt, [text]).column("drop_reason").to_pylist()[0] in DROP_REASONS | {None}
    assert _meta_block([text]).column("drop_reason").to_pylist()[0] in DROP_REASONS | {None}


def _review_block(fmt, texts):
    """Through the Ray Data UDF's pure function, so the typed Arrow schema is checked too."""
    n = len(texts)
    raw = pa.table(
        {
            "source": pa.array([0] * n, pa.int32()),
            "line": pa.array(range(1, n + 1), pa.int64()),
            "format": [fmt] * n,
            "text": texts,
        }
    )
    return parse_review_block(raw)


def _meta_block(texts):
    n = len(texts)
    raw = pa.table(
        {"source": pa.array([0] * n, pa.int32()), "line": pa.array(range(1, n + 1), pa.int64()), "text": texts}
    )
    return parse_meta_block(raw)


def test_a_line_too_long_to_be_a_record_is_read_past_and_counted(tmp_path):
    """A 50 MB line inside a gzip file is never held whole: the reader passes its length on, the
    parser counts it as line_too_long, the lines around it are read as they are."""
    import gzip
    import tracemalloc

    from alsoview.data.formats import MAX_LINE_BYTES
    from alsoview.data.inputs import InputFile, _records, resolve_inputs

    review = '{"overall": 5, "reviewerID": "A", "asin": "B", "unixReviewTime": 3}\n'
    path = tmp_path / "reviews.json.gz"
    path.write_bytes(gzip.compress((review + "{" + "x" * 50_000_000 + "}\n" + review).encode(), 1))
    (checked,) = resolve_inputs([str(path)], "reviews")  # sniffing reads the first lines only
    assert checked.format == "reviews_json"
    tracemalloc.start()
    records = list(_records(InputFile(str(path), "reviews", "reviews_json", 0)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 3 * MAX_LINE_BYTES, peak  # the read buffer, not the line
    assert [number for number, _ in records] == [1, 2, 3]
    out = amazon.parse_review_records(["reviews_json"] * 3, [text for _, text in records], [1, 2, 3])
    assert out["drop_reason"] == [None, "line_too_long", None]
    assert out["detail"][1] == f"a line of 50,000,003 bytes, over the {MAX_LINE_BYTES:,} a record may have"


def test_a_file_that_starts_with_a_line_too_long_is_refused_naming_it(tmp_path):
    import gzip

    from alsoview.data.inputs import resolve_inputs
    from alsoview.errors import UserError

    path = tmp_path / "reviews.json.gz"
    path.write_bytes(gzip.compress(b"{" + b"x" * 20_000_000 + b"}\n", 1))
    with pytest.raises(UserError, match=rf"{path}:1: a line of 20,000,003 bytes, over the 8,388,608 a record"):
        resolve_inputs([str(path)], "reviews")
