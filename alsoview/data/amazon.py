"""Parse raw Amazon records into typed rows: pure functions, no Ray.

Formats read:
- `reviews_json`: 2018 review JSON lines (`reviewerID`, `asin`, `overall`, `unixReviewTime`);
- `ratings_csv`: the ratings-only CSV `asin,reviewerID,rating,unixTime` (no header);
- `combined_csv`: the original design's `combined_samples.csv` (reviewerID, asin, brand, price,
  description, also_view, label), label 1 = interaction, label 0 = a logged negative;
- `meta_json`: 2018 metadata JSON lines; `meta_literal`: 2014 Python-literal lines with
  `related.also_viewed` (detected per line, so a file may mix them).

Every record yields a row: either parsed values, or a `drop_reason` with a short detail, so
the prepare step can account for every raw line.

One field's cleaning lives in `fields.py`, telling a file's format and splitting CSV records in
`formats.py`; the names callers use from them (`brand_key`, `sniff_review_format`,
`sniff_meta_format`, `split_csv_records`) are re-exported here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterable, Sequence

from alsoview.data.fields import MAX_LITERAL_CHARS, clean_asin_list, normalize_brand, parse_price, strip_html
from alsoview.data.fields import brand_key as brand_key
from alsoview.data.formats import COMBINED_COLUMNS, MAX_LINE_BYTES, _literal_or_none, too_long_length
from alsoview.data.formats import sniff_meta_format as sniff_meta_format
from alsoview.data.formats import sniff_review_format as sniff_review_format
from alsoview.data.formats import split_csv_records as split_csv_records
from alsoview.errors import first_line

# Drop reasons of the parse stage: malformed input (fatal with --strict).
MALFORMED_REASONS = ("malformed_record", "line_too_long", "missing_field", "bad_rating", "bad_time", "bad_label")
BLANK = "blank_line"  # an empty line: counted, never fatal

_SURROGATE = re.compile("[\ud800-\udfff]")  # json.loads pairs valid ones: only lone ones remain
_MAX_TIME = 2**53  # beyond any real timestamp; int64 and float64 hold it exactly
_DETAIL_CHARS = 60  # a bad value is quoted in drop details up to this length


class RecordError(ValueError):
    """One record that cannot be used; `reason` is the manifest's drop-reason key."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# ---------------------------------------------------------------- review records


@dataclass(frozen=True)
class Review:
    user: str
    item: str
    rating: float
    time: int  # unix seconds; the line number for files without timestamps
    label: int = 1  # 0: a logged negative (combined_samples.csv only)
    brand: str = ""
    price: float | None = None
    price_status: str = "missing"
    description: str = ""
    also_view: tuple[str, ...] = ()


def parse_review_json(text: str) -> Review:
    """One 2018 review JSON line."""
    record = _load_json_object(text)
    user = _required_str(record, "reviewerID")
    item = _required_str(record, "asin")
    rating = _rating(record.get("overall"))
    return Review(user=user, item=item, rating=rating, time=_review_time(record))


def parse_ratings_csv(fields: Sequence[str]) -> Review:
    """One ratings-only CSV row: asin, reviewerID, rating, unixTime."""
    if len(fields) != 4:
        raise RecordError("malformed_record", f"expected 4 comma-separated fields, got {len(fields)}")
    item, user, rating, time = (f.strip() for f in fields)
    if not item or not user:
        raise RecordError("missing_field", "empty asin or reviewerID")
    return Review(user=user, item=item, rating=_rating(rating), time=_unix_time(time, "unixTime"))


def parse_combined_csv(fields: Sequence[str], line: int) -> Review:
    """One combined_samples.csv row (already split into the COMBINED_COLUMNS order).

    The file has no timestamps: the line number stands in, so a user's later rows count as later.
    """
    if len(fields) != len(COMBINED_COLUMNS):
        raise RecordError("malformed_record", f"expected {len(COMBINED_COLUMNS)} fields, got {len(fields)}")
    user, item, brand, price, description, also_view, label = fields
    if not user.strip() or not item.strip():
        raise RecordError("missing_field", "empty reviewerID or asin")
    try:
        label_value = float(label)
    except ValueError:
        raise RecordError("bad_label", f"label {_quoted(label)} is not 0 or 1") from None
    if label_value not in (0.0, 1.0):  # inf and nan included
        raise RecordError("bad_label", f"label {_quoted(label)} is not 0 or 1")
    price_value, price_status = parse_price(price)
    return Review(
        user=user.strip(),
        item=item.strip(),
        rating=math.nan,
        time=line,
        label=int(label_value),
        brand=normalize_brand(brand),
        price=price_value,
        price_status=price_status,
        description=strip_html(description),
        also_view=tuple(clean_asin_list(also_view)),
    )


def _load_json_object(text: str) -> dict[str, Any]:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError("malformed_record", f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except ValueError as exc:  # a number of more than 4,300 digits (Python's int conversion limit)
        raise RecordError("malformed_record", f"not readable JSON ({first_line(exc, _DETAIL_CHARS)})") from None
    except RecursionError:
        raise RecordError("malformed_record", "JSON nested too deeply to read") from None
    if not isinstance(record, dict):
        raise RecordError("malformed_record", f"expected a JSON object, got {type(record).__name__}")
    return record


def _required_str(record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RecordError("missing_field", f"no {key}")
    if not isinstance(value, (str, int)):
        raise RecordError("missing_field", f"{key} is not a string")
    return str(value).strip()


def _rating(value: Any) -> float:
    try:
        rating = float(value)
    except (TypeError, ValueError, OverflowError):
        raise RecordError("bad_rating", f"rating {_quoted(value)} is not a number") from None
    if not 0 <= rating <= 5:
        raise RecordError("bad_rating", f"rating {rating} is outside [0, 5]")
    return rating


def _review_time(record: dict[str, Any]) -> int:
    """unixReviewTime, or reviewTime ("MM D, YYYY") when the number is absent."""
    value = record.get("unixReviewTime")
    if value is not None:
        return _unix_time(value, "unixReviewTime")
    text = record.get("reviewTime")
    if not text:
        raise RecordError("bad_time", "no unixReviewTime or reviewTime")
    try:
        day = dt.datetime.strptime(str(text).strip(), "%m %d, %Y").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        raise RecordError("bad_time", f"reviewTime {_quoted(text)} is not 'MM D, YYYY'") from None
    return int(day.timestamp())


def _unix_time(value: Any, name: str) -> int:
    """Seconds as a whole number in [0, 2**53]; NaN, infinities, huge or negative values are bad_time."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise RecordError("bad_time", f"{name} {_quoted(value)} is not a number")
    number = value
    if isinstance(value, str):
        try:
            number = float(value.strip())  # float() of a long digit string gives inf, never an error
        except ValueError:
            raise RecordError("bad_time", f"{name} {_quoted(value)} is not a number") from None
    if isinstance(number, float) and not math.isfinite(number):
        raise RecordError("bad_time", f"{name} {_quoted(value)} is not a finite number")
    if not 0 <= number <= _MAX_TIME:
        raise RecordError("bad_time", f"{name} {_quoted(value)} is outside [0, 2**53]")
    return int(number)


def _quoted(value: Any) -> str:
    """A bad value for a drop detail, cut short: a hostile line can hold megabytes in one field."""
    text = repr(value)
    return text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 3] + "..."


# ---------------------------------------------------------------- meta records


@dataclass(frozen=True)
class ItemMeta:
    asin: str
    title: str
    brand: str
    price: float | None
    price_status: str
    description: str
    also_view: tuple[str, ...]
    also_buy: tuple[str, ...] = ()


def parse_meta_line(text: str) -> ItemMeta:
    """One metadata line: 2018 JSON, or a 2014 Python-literal dict (detected per line)."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        record = _literal_or_none(text)
        if record is None and len(text) > MAX_LITERAL_CHARS and text.lstrip().startswith("{"):
            detail = f"not JSON ({exc.msg}), and too long to read as a Python literal (> {MAX_LITERAL_CHARS:,} chars)"
            raise RecordError("malformed_record", detail) from None
        if record is None:
            raise RecordError("malformed_record", f"neither JSON nor a Python literal ({exc.msg})") from None
    if not isinstance(record, dict):
        raise RecordError("malformed_record", f"expected an object, got {type(record).__name__}")
    asin = _required_str(record, "asin")
    also_view = record.get("also_view")
    also_buy = record.get("also_buy")
    if isinstance(record.get("related"), dict):  # the 2014 layout
        also_view = record["related"].get("also_viewed") if also_view is None else also_view
        also_buy = record["related"].get("also_bought") if also_buy is None else also_buy
    price, status = parse_price(record.get("price"))
    return ItemMeta(
        asin=asin,
        title=strip_html(record.get("title")),
        brand=normalize_brand(record.get("brand")),
        price=price,
        price_status=status,
        description=strip_html(record.get("description")),
        also_view=tuple(clean_asin_list(also_view)),
        also_buy=tuple(clean_asin_list(also_buy)),
    )


# ---------------------------------------------------------------- batches


REVIEW_COLUMNS = (
    "user",
    "item",
    "rating",
    "time",
    "label",
    "brand",
    "price",
    "price_status",
    "description",
    "also_view",
)
META_COLUMNS = ("asin", "title", "brand", "price", "price_status", "description", "also_view", "also_buy")


def parse_review_records(formats: Sequence[str], texts: Sequence[str], lines: Sequence[int]) -> dict[str, list]:
    """Parse a batch of raw review records into columns plus drop_reason/detail per record.

    CSV records arrive as JSON-encoded field lists (the reader split them, quoted newlines
    included), so this function never needs the file.
    """
    out: dict[str, list] = {name: [] for name in REVIEW_COLUMNS + ("drop_reason", "detail")}
    empty = Review(user="", item="", rating=math.nan, time=0)
    for fmt, text, line in zip(formats, texts, lines):
        review, reason, detail = _parse_one(partial(_parse_review, fmt, text, int(line)), text, empty)
        _append_row(out, review, REVIEW_COLUMNS, reason, detail)
    return out


def _parse_review(fmt: str, text: str, line: int) -> Review:
    if fmt == "reviews_json":
        return parse_review_json(text)
    fields = json.loads(text)
    if fmt == "ratings_csv":
        return parse_ratings_csv(fields)
    if fmt == "combined_csv":
        return parse_combined_csv(fields, line)
    raise ValueError(f"unknown review format {fmt!r}")


def parse_meta_records(texts: Sequence[str]) -> dict[str, list]:
    """Parse a batch of raw meta lines into columns plus drop_reason/detail per line."""
    out: dict[str, list] = {name: [] for name in META_COLUMNS + ("drop_reason", "detail")}
    empty = ItemMeta("", "", "", None, "missing", "", ())
    for text in texts:
        meta, reason, detail = _parse_one(partial(parse_meta_line, text), text, empty)
        _append_row(out, meta, META_COLUMNS, reason, detail)
    return out


def _without_lone_surrogates(record: Any) -> Any:
    """An escaped lone UTF-16 surrogate ("\\ud83d" of a cut emoji) is not storable as UTF-8: it
    becomes U+FFFD, as undecodable bytes do when the file is read, and the record is kept."""
    changes = {}
    for name, value in vars(record).items():
        values = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, str) and not _encodable(v) for v in values):
            fixed = tuple(_replace_surrogates(v) for v in values)
            changes[name] = fixed if isinstance(value, tuple) else fixed[0]
    return dataclasses.replace(record, **changes) if changes else record


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _replace_surrogates(value: str) -> str:
    return _SURROGATE.sub("\ufffd", value)


def _parse_one(parse: Callable[[], Any], text: str, empty: Any) -> tuple[Any, str | None, str | None]:
    """(record, None, None), or (empty, drop reason, detail): no line can stop a whole file.

    The parsers raise RecordError for what they check; any other exception is a line they did not
    foresee, and it is counted as malformed with its type, never raised.
    """
    if not text.strip():
        return empty, BLANK, "empty line"
    length = too_long_length(text)
    if length is not None:
        return empty, "line_too_long", f"a line of {length:,} bytes, over the {MAX_LINE_BYTES:,} a record may have"
    try:
        record = parse()
        return (_without_lone_surrogates(record) if "\\" in text else record), None, None
    except RecordError as exc:
        return empty, exc.reason, exc.detail
    except Exception as exc:  # see the docstring
        return empty, "malformed_record", f"unreadable ({type(exc).__name__}: {first_line(exc, _DETAIL_CHARS)})"


def _append_row(
    out: dict[str, list], record: Any, columns: Iterable[str], reason: str | None, detail: str | None
) -> None:
    for name in columns:
        value = getattr(record, name)
        out[name].append(list(value) if isinstance(value, tuple) else value)
    out["drop_reason"].append(reason)
    out["detail"].append(detail)
