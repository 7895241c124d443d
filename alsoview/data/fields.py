"""Cleaning one field of a raw Amazon record: scraped HTML, prices, brands, lists of asins.
Pure functions, no Ray; `amazon.py`'s record parsers and `clean.py` use them.
"""

from __future__ import annotations

import ast
import html
import re
from typing import Any

_TAG = re.compile(r"<[^>]*(?:>|$)")  # an unclosed tag at the end is cut too
_SPACE = re.compile(r"\s+")
_NUMBER = r"(\d[\d,]*(?:\.\d+)?|\.\d+)"
_PRICE_ONE = re.compile(rf"^\$?\s*{_NUMBER}$")
_PRICE_RANGE = re.compile(rf"^\$?\s*{_NUMBER}\s*(?:-|–|to)\s*\$?\s*{_NUMBER}$")
_MAX_PRICE = 100_000.0
_UNKNOWN_BRANDS = {"", "unknown", "n/a", "na", "none", "null", "-", ".", "not applicable"}


def strip_html(text: Any) -> str:
    """Plain text from scraped HTML: entities decoded, tags removed, whitespace collapsed."""
    if text is None:
        return ""
    if isinstance(text, (list, tuple)):
        text = " ".join(str(t) for t in text if t is not None)
    text = html.unescape(_TAG.sub(" ", str(text)))
    # Unescaping can reveal tags that were escaped twice (&lt;b&gt;).
    if "<" in text:
        text = _TAG.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


def parse_price(value: Any) -> tuple[float | None, str]:
    """A price string to (dollars, status); status is ok | range | missing | junk.

    Ranges ("$9.99 - $19.99") become their midpoint; empty means missing; anything else that
    is not a plain dollar amount (scraped CSS, HTML, words) is junk and also missing.
    """
    if value is None:
        return None, "missing"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not 0 <= value < _MAX_PRICE:  # compared before float(): a 400-digit int overflows it
            return None, "junk"
        return float(value), "ok"
    text = str(value).strip()
    if not text:
        return None, "missing"
    match = _PRICE_ONE.match(text)
    if match:
        return _checked(_to_float(match.group(1)), "ok")
    match = _PRICE_RANGE.match(text)
    if match:
        low, high = _to_float(match.group(1)), _to_float(match.group(2))
        return _checked((low + high) / 2, "range")
    return None, "junk"


def _to_float(text: str) -> float:
    return float(text.replace(",", ""))


def _checked(price: float, status: str) -> tuple[float | None, str]:
    return (price, status) if 0 <= price < _MAX_PRICE else (None, "junk")


def normalize_brand(value: Any) -> str:
    """The brand as displayed, cleaned; "" means unknown (vocabulary id 0).

    Scraped brands come as "by\\n    \\n    Nintendo", with HTML, or as placeholders like
    "Unknown"; these all normalise so the same publisher gets one id (see `brand_key`).
    """
    text = strip_html(value)
    if text.lower().startswith("by "):
        text = text[3:].strip()
    return "" if text.casefold() in _UNKNOWN_BRANDS else text


def brand_key(brand: str) -> str:
    """Vocabulary key: case and spacing differences of one publisher map to one id."""
    return brand.casefold()


# ast.literal_eval's memory peaks at hundreds of times its input's size: a text is read as a
# Python literal only below this length. A 2014 metadata line is a few thousand characters.
MAX_LITERAL_CHARS = 100_000


def python_literal(text: str) -> Any:
    """`text` read as a Python literal, or None: not one, or longer than MAX_LITERAL_CHARS."""
    if len(text) > MAX_LITERAL_CHARS:
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def clean_asin_list(value: Any) -> list[str]:
    """A list of asins from a JSON list, a Python-literal string, or a delimited string."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            value = python_literal(text)
            if value is None:  # not a literal, or too long to read as one: the asins in it
                value = re.findall(r"[A-Za-z0-9]{10}", text)
        else:
            value = re.split(r"[\s,;|]+", text)
    if not isinstance(value, (list, tuple)):
        return []
    return [str(a).strip() for a in value if isinstance(a, (str, int)) and str(a).strip()]
